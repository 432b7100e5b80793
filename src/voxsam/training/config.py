"""Typed training configuration: one YAML file, validated, overridable from the command line, saved into
every checkpoint.

    model:     which sam3d (preset + field overrides) and an optional checkpoint to start from (--init)
    data:      the sources (MSD folders, image/label pairs, label-map-only files), their weights, the
               held-out cases, crop geometry, synthesis and augmentation
    interaction: the simulated clicks of one training sample (SAM-Med3D recipe)
    optim:     AdamW, schedule, batch, accumulation, clipping, AMP
    run:       steps, checkpoints, logging, device, seed

Data paths (sources, `model.init`) are relative to the YAML file's folder, so a config travels with its data;
`run.out_dir` and `data.cache_dir` are relative to the working directory, like any output.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from voxsam.errors import ConfigError
from voxsam.training.augment import AugmentConfig
from voxsam.training.synthesis import SynthConfig


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class ModelSection(_Strict):
    preset: Literal["tiny", "small", "vit_b_ori"] = "small"
    overrides: dict[str, Any] = Field(default_factory=dict, description="Sam3DConfig fields changed from the preset.")
    init: Path | None = Field(None, description="Checkpoint to start from (released SAM-Med3D or voxsam).")
    trust_init: bool = Field(False, description="Allow pickled checkpoints (the released training files).")


class SourceSection(_Strict):
    """One data source. Exactly one of `path` (MSD / nnU-Net folder), `pairs` or `label_maps`."""

    name: str
    path: Path | None = None
    pairs: list[tuple[Path, Path]] = Field(default_factory=list, description="[image, label] file pairs.")
    label_maps: list[Path] = Field(default_factory=list, description="Label maps without images (synthesis only).")
    weight: float = Field(1.0, gt=0, description="Relative sampling weight of this source.")
    modality: Literal["CT", "MR"] | None = Field(None, description="Override; else dataset.json, else MR.")
    exclude: list[str] = Field(default_factory=list, description="Case-id glob patterns held out (validation).")
    include: list[str] = Field(default_factory=list, description="Case-id glob patterns kept (empty = all).")
    labels: list[int] = Field(default_factory=list, description="Label values used as targets (empty = all).")

    @model_validator(mode="after")
    def _one_kind(self) -> "SourceSection":
        kinds = [self.path is not None, bool(self.pairs), bool(self.label_maps)]
        if sum(kinds) != 1:
            raise ValueError(f"source {self.name!r}: give exactly one of path, pairs, label_maps")
        return self


class DataSection(_Strict):
    sources: list[SourceSection] = Field(min_length=1)
    spacing_mm: float = Field(1.5, gt=0)
    crop_size: int = Field(128, ge=16, description="Must equal the model's image_size.")
    min_voxels: int = Field(100, ge=1, description="Targets with fewer voxels at spacing_mm are skipped.")
    offset_range: tuple[float, float] = Field(
        (0.2, 0.8), description="Where a random target voxel lands in the crop, as a fraction of its side.")
    synth_prob: float = Field(0.2, ge=0, le=1, description="Chance a labelled case's image is replaced by synthesis.")
    cache_dir: Path = Path("cache/train")
    synthesis: SynthConfig = Field(default_factory=SynthConfig)
    augment: AugmentConfig = Field(default_factory=AugmentConfig)

    @field_validator("offset_range")
    @classmethod
    def _offsets(cls, v: tuple[float, float]) -> tuple[float, float]:
        if not 0.0 <= v[0] <= v[1] <= 1.0:
            raise ValueError("offset_range must satisfy 0 <= lo <= hi <= 1")
        return v


class InteractionSection(_Strict):
    rounds: int = Field(5, ge=1, description="Prompt rounds per sample; the loss is summed over them.")
    mask_only_prob: float = Field(0.2, ge=0, le=1, description="Chance a later round adds no click (mask only).")
    box_prob: float = Field(0.3, ge=0, le=1, description="Chance a step starts from a jittered 3D box.")
    box_jitter: float = Field(0.1, ge=0, le=0.5, description="Box corner jitter, fraction of the box side.")
    iou_loss_weight: float = Field(1.0, ge=0)


class OptimSection(_Strict):
    lr: float = Field(4e-4, gt=0)
    decoder_lr_scale: float = Field(0.1, gt=0, le=1, description="Prompt encoder + mask decoder lr = lr * this.")
    weight_decay: float = Field(0.1, ge=0)
    betas: tuple[float, float] = (0.9, 0.999)
    schedule: Literal["cosine", "step", "constant"] = "cosine"
    warmup_steps: int = Field(100, ge=0)
    min_lr_ratio: float = Field(0.05, ge=0, le=1)
    step_milestones: list[int] = Field(default_factory=list, description="Steps where the step schedule decays.")
    step_gamma: float = Field(0.1, gt=0, le=1)
    batch_size: int = Field(2, ge=1, description="Samples per micro-batch per process.")
    accumulate: int = Field(1, ge=1, description="Micro-batches per optimiser step.")
    clip_grad_norm: float | None = Field(1.0, gt=0)
    amp: Literal["off", "bf16", "fp16"] = Field("off", description="Mixed precision (CUDA only; CPU runs fp32).")


class RunSection(_Strict):
    out_dir: Path = Path("runs/train")
    steps: int = Field(1000, ge=1)
    seed: int = 0
    start_step: int = Field(0, ge=0, description=(
        "Continue a run from exported weights (model.init) taken at this step: the data order, the interaction "
        "plan and the lr schedule go on from it; the optimiser moments start fresh, under a new warm-up."))
    device: str = "cpu"
    threads: int | None = Field(None, ge=1, description="torch CPU threads (default: torch's choice).")
    num_workers: int = Field(0, ge=0, description="DataLoader worker processes.")
    checkpoint_every: int = Field(50, ge=1)
    keep_checkpoints: int = Field(3, ge=1, description="Periodic step_*.pt files kept besides last.pt.")
    log_every: int = Field(1, ge=1)
    tensorboard: bool = False
    flush_denormals: bool = Field(True, description=(
        "Flush denormal floats to zero: x86 CPUs slow down on the ones a trained model's loss produces."))


class TrainConfig(_Strict):
    model: ModelSection = Field(default_factory=ModelSection)
    data: DataSection
    interaction: InteractionSection = Field(default_factory=InteractionSection)
    optim: OptimSection = Field(default_factory=OptimSection)
    run: RunSection = Field(default_factory=RunSection)

    @model_validator(mode="after")
    def _start_needs_init(self) -> "TrainConfig":
        if self.run.start_step and self.model.init is None:
            raise ValueError("run.start_step continues from exported weights: it needs model.init (--init PATH)")
        if self.run.start_step >= self.run.steps:
            raise ValueError(f"run.start_step {self.run.start_step} must be below run.steps {self.run.steps}")
        return self

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready dict (paths as strings): what checkpoints store."""
        return self.model_dump(mode="json")


def _set_dotted(tree: dict[str, Any], dotted: str, value: Any) -> None:
    keys = dotted.split(".")
    node = tree
    for k in keys[:-1]:
        if not isinstance(node.get(k), dict):
            node[k] = {}
        node = node[k]
    node[keys[-1]] = value


def _resolve_paths(raw: dict[str, Any], base: Path) -> None:
    """Make the file's relative paths relative to the file's folder (not to the working directory)."""

    def fix(p: Any) -> Any:
        return str(base / p) if isinstance(p, str) and p and not Path(p).expanduser().is_absolute() else p

    model = raw.get("model") or {}
    if model.get("init"):
        model["init"] = fix(model["init"])
    data = raw.get("data") or {}
    for src in list(data.get("sources") or []):
        if not isinstance(src, dict):
            continue
        if src.get("path"):
            src["path"] = fix(src["path"])
        src["pairs"] = [[fix(a) for a in pair] for pair in src.get("pairs") or []]
        src["label_maps"] = [fix(p) for p in src.get("label_maps") or []]


def _format_validation(exc: ValidationError) -> str:
    first = exc.errors()[0]
    where = ".".join(str(p) for p in first["loc"]) or "config"
    more = f" (+{exc.error_count() - 1} more)" if exc.error_count() > 1 else ""
    return f"{where}: {first['msg']}{more}"


def parse_override(text: str) -> tuple[str, Any]:
    """"optim.lr=1e-4" -> ("optim.lr", 0.0001); the value is parsed as YAML (numbers, lists, bools)."""
    import yaml

    if "=" not in text:
        raise ConfigError(f"override {text!r}: expected key.path=value")
    key, value = text.split("=", 1)
    try:
        return key.strip(), yaml.safe_load(value)
    except yaml.YAMLError:
        raise ConfigError(f"override {text!r}: value is not valid YAML") from None


def build_config(raw: dict[str, Any], overrides: list[str] | tuple[str, ...] = (), base: Path | None = None) -> TrainConfig:
    """Validate a config dict (+ "a.b=value" overrides). Raises ConfigError with the first problem."""
    import copy

    raw = copy.deepcopy(raw)
    for text in overrides:
        key, value = parse_override(text)
        _set_dotted(raw, key, value)
    if base is not None:
        _resolve_paths(raw, base)
    try:
        return TrainConfig.model_validate(raw)
    except ValidationError as exc:
        raise ConfigError(f"training config: {_format_validation(exc)}") from None


def load_config(path: str | Path, overrides: list[str] | tuple[str, ...] = ()) -> TrainConfig:
    """Read a YAML training config; relative paths are taken from the file's folder."""
    import yaml

    p = Path(path).expanduser()
    if not p.is_file():
        raise ConfigError(f"{p}: no such config file")
    try:
        raw = yaml.safe_load(p.read_text())
    except yaml.YAMLError as exc:
        raise ConfigError(f"{p}: invalid YAML ({str(exc).splitlines()[0]})") from None
    if not isinstance(raw, dict):
        raise ConfigError(f"{p}: expected a mapping at the top level")
    return build_config(raw, overrides, base=p.resolve().parent)
