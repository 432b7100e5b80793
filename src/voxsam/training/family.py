"""The model-family protocol: everything `voxsam train`'s loop needs to know about a model.

The loop (`voxsam.training.trainer`) owns what every family shares - AdamW, the lr schedule, gradient
accumulation and clipping, AMP, DDP, checkpoints, SIGTERM, resume, logging - and asks a `ModelFamily` for the
rest: its config type, the model (fresh or from `model.init`), its exported weights file, its parameter groups,
its training samples and its loss. Families are looked up by the config's `family:` field in
`voxsam.training.registry.FAMILIES`.

Rules a family keeps so that resume and DDP stay exact:

- `dataset(cfg).samples[i]` is a pure function of (`cfg.run.seed`, i): the loop reads global sample
  ((step * accumulate + micro) * world + rank) * batch + slot, and a resumed run needs nothing but the step;
- `loss` draws its randomness from `StepInfo` (seed, step, micro-batch, the rows' global sample numbers),
  never from a global RNG;
- `build` is deterministic given the config (seed a fresh model from `cfg.run.seed`).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Mapping, Protocol, TypeVar

from torch import Tensor, nn
from torch.utils.data import Dataset

from voxsam.training.config import OptimSection, TrainConfig

C = TypeVar("C", bound=TrainConfig)

Batch = Mapping[str, Any]
"""What a family's `collate` returns and its `loss` receives; the loop moves its tensor values to the device."""

CacheProgress = Callable[[int, int, str], None]
"""progress(i, n, what): item i of n of a data-preparation pass (e.g. filling a cache) is `what`."""


@dataclass(frozen=True)
class StepInfo:
    """Where a micro-batch sits in the run: the only source of a loss's randomness."""

    seed: int  # run.seed
    step: int  # the optimiser step being computed (0-based)
    micro: int  # the micro-batch within it (gradient accumulation)
    indices: tuple[int, ...]  # the global sample number of each row of the batch


@dataclass
class TrainData:
    """A family's training samples."""

    samples: Dataset[Any]  # map-style: samples[i] is a pure function of (run.seed, i), i up to 2**62
    collate: Callable[[list[Any]], Batch]  # a list of samples -> one batch
    summary: str = ""  # one line for the start-of-run message (what the samples are drawn from)
    problems: list[str] = field(default_factory=list)  # skipped sources/cases, already logged as warnings


class ModelFamily(Protocol[C]):
    """What the training loop needs from a model family (C: the family's config type)."""

    @property
    def name(self) -> str:
        """The registry key, the value of the config's `family:` field."""
        ...

    @property
    def config_type(self) -> type[C]:
        """The pydantic type that validates the whole config file: a `TrainConfig` subclass whose `family`
        is `Literal[name]` and that adds the family's own sections."""
        ...

    def build(self, cfg: C) -> nn.Module:
        """The model to train, float32 on the CPU: fresh (seeded from cfg.run.seed) or from cfg.model.init.
        Raises ConfigError / CheckpointError for a config or an init file that does not fit."""
        ...

    def load_weights(self, path: Path, *, trust: bool = False) -> tuple[nn.Module, dict[str, Any]]:
        """(model float32 on the CPU, the file's metadata) from an exported weights file (what `save_weights`
        writes: its `extra` come back as the metadata)."""
        ...

    def save_weights(self, model: nn.Module, path: Path, *, extra: Mapping[str, Any] | None = None,
                     half: bool = False) -> None:
        """Write the exported weights file (atomically): the run's `model.pt`, what engines load. `half`
        stores float16 (shipping); `extra` is small metadata (step, ...)."""
        ...

    def model_config(self, model: nn.Module) -> dict[str, Any]:
        """The model's typed config as a JSON-ready dict, stored in every training checkpoint."""
        ...

    def parameter_groups(self, model: nn.Module, optim: OptimSection) -> list[dict[str, Any]]:
        """AdamW parameter groups (each with "params", "lr", "weight_decay" and a "name")."""
        ...

    def dataset(self, cfg: C, progress: CacheProgress | None = None) -> TrainData:
        """The training samples. Called on rank 0 first (it may fill a cache, reporting through `progress`),
        then, after a barrier, on the other ranks (which read it)."""
        ...

    def loss(self, cfg: C, model: nn.Module, batch: Batch, step: StepInfo) -> tuple[Tensor, dict[str, float]]:
        """(loss, metrics) of one micro-batch: a scalar to minimise (mean over the batch) and floats to log
        (means over the batch; the loop averages them over micro-batches and processes). Runs inside the
        DDP-wrapped forward and the AMP autocast of the loop; `model` is the bare model."""
        ...

    def pretrained_weights(self, model: nn.Module) -> nn.Module | None:
        """The pretrained model `model`'s training started from, holding every tensor of `model`'s state under
        the same name (it may hold more), for `voxsam.training.export --pretrained-share`; None when the
        family has none (trained from scratch, or its trained parts are new)."""
        ...

    def export_check(self, model: nn.Module, stored: nn.Module) -> dict[str, float]:
        """Facts about the rounding of an export (`stored` = `model` saved half and read back), e.g. the
        agreement of their masks on a random input; {} when there is nothing to add."""
        ...


def plain_parameter_groups(model: nn.Module, optim: OptimSection) -> list[dict[str, Any]]:
    """Two groups at optim.lr: weight decay on matrices and kernels, none on norms, biases and embeddings."""
    decay: list[nn.Parameter] = []
    no_decay: list[nn.Parameter] = []
    for name, p in model.named_parameters():
        if p.requires_grad:
            (no_decay if p.ndim <= 1 or "embed" in name else decay).append(p)
    groups = [{"params": decay, "lr": optim.lr, "weight_decay": optim.weight_decay, "name": "decay"},
              {"params": no_decay, "lr": optim.lr, "weight_decay": 0.0, "name": "no_decay"}]
    return [g for g in groups if g["params"]]
