"""Training checkpoints: the full state of a run (last.pt, step_XXXXXXX.pt) and its exported weights (model.pt).

A training checkpoint is a dict: format "voxsam.train", format_version 1, family (absent in files written
before families: sam3d), step, config (`TrainConfig.to_dict()`), model (state dict), model_config (the
family's typed model config), optimizer, scheduler, scaler, rng (torch / numpy / python / cuda states).
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from torch import nn

from voxsam.errors import CheckpointError
from voxsam.training.config import DEFAULT_FAMILY, TrainConfig
from voxsam.training.family import ModelFamily
from voxsam.training.runtime import rng_state

TRAIN_FORMAT = "voxsam.train"


def save_training_state(out_dir: Path, step: int, cfg: TrainConfig, family: ModelFamily[Any], model: nn.Module,
                        optimizer: torch.optim.Optimizer, scheduler: torch.optim.lr_scheduler.LRScheduler,
                        scaler: torch.amp.GradScaler | None, keep: int) -> Path:
    """Write last.pt and step_XXXXXXX.pt (atomically), prune old step files, refresh model.pt."""
    from voxsam.io.atomic import save_torch_atomic

    state = {
        "format": TRAIN_FORMAT, "format_version": 1, "family": family.name, "step": step, "config": cfg.to_dict(),
        "model": {k: v.detach().cpu() for k, v in model.state_dict().items()},
        "model_config": family.model_config(model),
        "optimizer": optimizer.state_dict(), "scheduler": scheduler.state_dict(),
        "scaler": scaler.state_dict() if scaler is not None else None,
        "rng": rng_state(),
    }
    step_file = out_dir / f"step_{step:07d}.pt"
    save_torch_atomic(state, step_file)
    save_torch_atomic(state, out_dir / "last.pt")
    for old in sorted(out_dir.glob("step_*.pt"))[:-keep]:
        old.unlink(missing_ok=True)
    family.save_weights(model, out_dir / "model.pt", extra={"step": step, "trained_by": "voxsam train"})
    return step_file


def load_training_state(path: Path) -> dict[str, Any]:
    """Read a training checkpoint (our own files: weights_only=False is needed for RNG states)."""
    try:
        state = torch.load(path, map_location="cpu", weights_only=False)
    except Exception as exc:  # noqa: BLE001 - any unpickling failure means a damaged file
        raise CheckpointError(f"{path}: cannot read training checkpoint ({type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''})") from None
    if not isinstance(state, dict) or state.get("format") != TRAIN_FORMAT:
        raise CheckpointError(f"{path}: not a voxsam training checkpoint")
    return state


def checkpoint_family(state: dict[str, Any]) -> str:
    """The family a training checkpoint belongs to (files from before families: sam3d)."""
    name = state.get("family") or (state.get("config") or {}).get("family") or DEFAULT_FAMILY
    return str(name)
