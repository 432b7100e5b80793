"""Typed training configuration: one YAML file, validated, overridable from the command line, saved into
every checkpoint.

    family:    which model family trains (`voxsam.training.registry.FAMILIES`; default "sam3d", so configs
               and checkpoints written before families existed load unchanged)
    model:     the weights to start from (`init`, --init) and, per family, the architecture
    optim:     AdamW, schedule, batch, accumulation, clipping, AMP
    run:       steps, checkpoints, logging, device, seed

`TrainConfig` holds what the loop reads (family, model.init, optim, run); each family validates the whole
file with its own subclass. sam3d's (`Sam3DTrainConfig`) adds:

    model:     which sam3d (preset + field overrides)
    data:      the sources (MSD folders, image/label pairs, label-map-only files), their weights, the
               held-out cases, crop geometry, synthesis and augmentation
    interaction: the simulated clicks of one training sample (SAM-Med3D recipe)

Data paths (sources, `model.init`, `model.encoder_tail`) are relative to the YAML file's folder, so a config travels with its data;
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


DEFAULT_FAMILY = "sam3d"


class ModelSectionBase(_Strict):
    """What every family's `model` section has: the weights a run starts from."""

    init: Path | None = Field(default=None, description="Checkpoint to start from (released SAM-Med3D or voxsam).")
    trust_init: bool = Field(default=False, description="Allow pickled checkpoints (the released training files).")


class ModelSection(ModelSectionBase):
    """sam3d's model section."""

    preset: Literal["tiny", "small", "vit_b_ori"] = "small"
    overrides: dict[str, Any] = Field(default_factory=dict, description="Sam3DConfig fields changed from the preset.")


class SourceSection(_Strict):
    """One data source. Exactly one of `path` (MSD / nnU-Net folder), `pairs` or `label_maps`."""

    name: str
    path: Path | None = None
    pairs: list[tuple[Path, Path]] = Field(default_factory=list, description="[image, label] file pairs.")
    label_maps: list[Path] = Field(default_factory=list, description="Label maps without images (synthesis only).")
    weight: float = Field(default=1.0, gt=0, description="Relative sampling weight of this source.")
    modality: Literal["CT", "MR"] | None = Field(default=None, description="Override; else dataset.json, else MR.")
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
    spacing_mm: float = Field(default=1.5, gt=0)
    crop_size: int = Field(default=128, ge=16, description="Must equal the model's image_size.")
    min_voxels: int = Field(default=100, ge=1, description="Targets with fewer voxels at spacing_mm are skipped.")
    offset_range: tuple[float, float] = Field(
        default=(0.2, 0.8), description="Where a random target voxel lands in the crop, as a fraction of its side.")
    synth_prob: float = Field(default=0.2, ge=0, le=1, description="Chance a labelled case's image is replaced by synthesis.")
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
    rounds: int = Field(default=5, ge=1, description="Prompt rounds per sample; the loss is summed over them.")
    mask_only_prob: float = Field(default=0.2, ge=0, le=1, description="Chance a later round adds no click (mask only).")
    box_prob: float = Field(default=0.3, ge=0, le=1, description="Chance a step starts from a jittered 3D box.")
    box_jitter: float = Field(default=0.1, ge=0, le=0.5, description="Box corner jitter, fraction of the box side.")
    iou_loss_weight: float = Field(default=1.0, ge=0)


class OptimSection(_Strict):
    lr: float = Field(default=4e-4, gt=0)
    decoder_lr_scale: float = Field(default=0.1, gt=0, le=1, description="Prompt encoder + mask decoder lr = lr * this.")
    weight_decay: float = Field(default=0.1, ge=0)
    betas: tuple[float, float] = (0.9, 0.999)
    schedule: Literal["cosine", "step", "constant"] = "cosine"
    warmup_steps: int = Field(default=100, ge=0)
    min_lr_ratio: float = Field(default=0.05, ge=0, le=1)
    step_milestones: list[int] = Field(default_factory=list, description="Steps where the step schedule decays.")
    step_gamma: float = Field(default=0.1, gt=0, le=1)
    batch_size: int = Field(default=2, ge=1, description="Samples per micro-batch per process.")
    accumulate: int = Field(default=1, ge=1, description="Micro-batches per optimiser step.")
    clip_grad_norm: float | None = Field(default=1.0, gt=0)
    amp: Literal["off", "bf16", "fp16"] = Field(default="off", description="Mixed precision (CUDA only; CPU runs fp32).")


class RunSection(_Strict):
    out_dir: Path = Path("runs/train")
    steps: int = Field(default=1000, ge=1)
    seed: int = 0
    start_step: int = Field(default=0, ge=0, description=(
        "Continue a run from exported weights (model.init) taken at this step: the data order, the interaction "
        "plan and the lr schedule go on from it; the optimiser moments start fresh, under a new warm-up."))
    device: str = "cpu"
    threads: int | None = Field(default=None, ge=1, description="torch CPU threads (default: torch's choice).")
    num_workers: int = Field(default=0, ge=0, description="DataLoader worker processes.")
    checkpoint_every: int = Field(default=50, ge=1)
    keep_checkpoints: int = Field(default=3, ge=1, description="Periodic step_*.pt files kept besides last.pt.")
    log_every: int = Field(default=1, ge=1)
    tensorboard: bool = False
    flush_denormals: bool = Field(default=True, description=(
        "Flush denormal floats to zero: x86 CPUs slow down on the ones a trained model's loss produces."))


class TrainConfig(_Strict):
    """The family-agnostic part of a training config: what the loop reads. A family validates the whole file
    with a subclass that narrows `family` to its name and adds its own sections."""

    family: str = Field(default=DEFAULT_FAMILY, description="Model family (a key of the family registry).")
    model: ModelSectionBase = Field(default_factory=ModelSectionBase)
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
        """JSON-ready dict (paths as strings): what checkpoints store. Order: family, model, the family's
        own sections, optim, run."""
        d = self.model_dump(mode="json")
        head, tail = ("family", "model"), ("optim", "run")
        return {**{k: d[k] for k in head}, **{k: v for k, v in d.items() if k not in head + tail},
                **{k: d[k] for k in tail}}


class Sam3DTrainConfig(TrainConfig):
    """The config of the `sam3d` family (the default: a file without `family:` is one)."""

    family: Literal["sam3d"] = "sam3d"
    model: ModelSection = Field(default_factory=ModelSection)
    data: DataSection
    interaction: InteractionSection = Field(default_factory=InteractionSection)


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
    if model.get("encoder_tail") and model["encoder_tail"] != "bundled":
        model["encoder_tail"] = fix(model["encoder_tail"])
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
    import yaml  # type: ignore[import-untyped]  # no PyYAML stubs (types-PyYAML) in the environment

    if "=" not in text:
        raise ConfigError(f"override {text!r}: expected key.path=value")
    key, value = text.split("=", 1)
    try:
        return key.strip(), yaml.safe_load(value)
    except yaml.YAMLError:
        raise ConfigError(f"override {text!r}: value is not valid YAML") from None
