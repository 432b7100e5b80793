"""How a training run reports progress to its caller (the CLI draws a progress bar from it).

The library never prints: `train(cfg, on_progress=callback)` calls `callback(TrainingProgress(...))` on rank 0,
and logs through `logging` (logger names under `voxsam.training`).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable, Literal, Mapping

ProgressKind = Literal["cache", "start", "step", "end"]


@dataclass(frozen=True)
class TrainingProgress:
    """One progress event.

    kind:
        "cache"  data preparation (rank 0 filling a cache): item `step` (1-based) of `total`, named by `message`
        "start"  the run begins at `step` (its start or resume step) of `total` steps; `message` describes
                 it, `problems` lists the skipped sources/cases
        "step"   optimiser step `step` of `total` is done; `metrics` holds what metrics.jsonl logs for it
                 (loss, the family's metrics, grad_norm, lr, seconds, samples_per_s, elapsed_s, world)
        "end"    the run stopped at `step`; `message` is the reason ("finished", "signal SIGTERM", ...)
    """

    kind: ProgressKind
    step: int
    total: int
    metrics: Mapping[str, float] = field(default_factory=dict)
    message: str = ""
    problems: tuple[str, ...] = ()


ProgressCallback = Callable[[TrainingProgress], None]
