"""Saving and loading `Memory3D` weights with their configuration.

File format (only tensors, strings, numbers, bools, lists and dicts: it loads with
``torch.load(weights_only=True)``, no code from the file runs)::

    {"format": "voxsam.memory3d", "format_version": 1,
     "config": Memory3DConfig.to_dict(), "dtype": "float16",
     "model": Memory3D.trainable_state_dict() (floating tensors stored in ``dtype``),
     "extra": {...},
     "encoder_tail": {...}}   # only when the model has one (Memory3D.encoder_tail), stored in ``dtype``

Floating tensors are stored in float16 by default (the default config: ~8M parameters, ~16 MB; in
float32 it would be ~32 MB, over the 25 MB a bundled file may take) and loaded back as float32.
`save_memory3d` writes a temporary file beside the target and renames it, so a failed save leaves
no partial file. Every problem on loading (missing, truncated or corrupt file, another format, an
invalid config, missing or mis-shaped tensors) raises `voxsam.errors.CheckpointError`.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Mapping

import torch
from torch import Tensor

from voxsam.errors import CheckpointError, ConfigError, OutputPathError
from voxsam.io.atomic import save_torch_atomic
from voxsam.models.memory3d.build import Memory3D, build_memory3d
from voxsam.models.memory3d.config import Memory3DConfig
from voxsam.models.memory3d.decoder_weights import check_encoder_tail, load_checked

FORMAT_TAG = "voxsam.memory3d"
FORMAT_VERSION = 1
_DTYPES = {"float16": torch.float16, "bfloat16": torch.bfloat16, "float32": torch.float32}


def save_memory3d(model: Memory3D, path: str | os.PathLike[str], dtype: str = "float16",
                  extra: Mapping[str, Any] | None = None) -> Path:
    """Write ``model``'s weights and config to ``path`` (atomically: temporary file, then rename).

    Args:
        model: the model.
        path: target file (its folder must exist).
        dtype: storage of floating tensors: "float16" (default), "bfloat16" or "float32" (exact).
        extra: JSON-like metadata stored under ``"extra"`` (epoch, metrics, ...).
    Returns:
        the path.
    Raises:
        ConfigError: unknown dtype. OutputPathError: the folder does not exist or cannot be written.
    """
    if dtype not in _DTYPES:
        raise ConfigError(f"save_memory3d: dtype must be one of {', '.join(_DTYPES)}, got {dtype!r}")
    target = Path(path)
    if not target.parent.is_dir():
        raise OutputPathError(f"{target}: folder {target.parent} does not exist")
    store = _DTYPES[dtype]
    state = {k: (v.to("cpu", store) if v.is_floating_point() else v.to("cpu")).clone()
             for k, v in model.trainable_state_dict().items()}
    payload: dict[str, Any] = {"format": FORMAT_TAG, "format_version": FORMAT_VERSION, "config": model.config.to_dict(),
                               "dtype": dtype, "model": state, "extra": dict(extra or {})}
    if model.encoder_tail is not None:
        payload["encoder_tail"] = {k: v.detach().to("cpu", store).clone() for k, v in model.encoder_tail.items()}
    save_torch_atomic(payload, target)  # temp file + fsync + rename, permissions from the umask
    return target


def read_memory3d_file(path: str | os.PathLike[str]) -> dict[str, Any]:
    """The checked payload of a `save_memory3d` file (tensors as stored).

    Raises:
        CheckpointError: missing, unreadable, or not a memory3d file.
    """
    p = Path(path)
    payload = load_checked(p, "memory3d weights")
    if not isinstance(payload, dict) or payload.get("format") != FORMAT_TAG:
        got = payload.get("format") if isinstance(payload, dict) else type(payload).__name__
        raise CheckpointError(f"{p}: not a memory3d weights file (format {got!r}, expected {FORMAT_TAG!r})")
    if payload.get("format_version") != FORMAT_VERSION:
        raise CheckpointError(f"{p}: memory3d format version {payload.get('format_version')!r}, this voxsam "
                              f"reads {FORMAT_VERSION}")
    if not isinstance(payload.get("config"), dict) or not isinstance(payload.get("model"), dict):
        raise CheckpointError(f"{p}: memory3d weights file lacks its config or model state")
    return payload


def load_memory3d(path: str | os.PathLike[str], device: Any = "cpu") -> Memory3D:
    """Rebuild the saved model and load its weights strictly (as float32).

    Args:
        path: a file written by `save_memory3d`.
        device: torch device for the model.
    Returns:
        the `Memory3D` in eval mode on ``device`` (its ``encoder_tail`` on the CPU, as float32, when the file has one).
    Raises:
        CheckpointError: missing / corrupt / foreign file, invalid config, or weights that do not fit.
    """
    p = Path(path)
    payload = read_memory3d_file(p)
    try:
        config = Memory3DConfig.from_dict(payload["config"])
    except (ConfigError, TypeError) as e:
        raise CheckpointError(f"{p}: invalid memory3d config: {e}") from None
    state: dict[str, Tensor] = payload["model"]
    if not all(isinstance(v, Tensor) for v in state.values()):
        raise CheckpointError(f"{p}: memory3d model state holds non-tensor values")
    model = build_memory3d(config)
    own = model.state_dict()
    missing = sorted(set(own) - set(state))
    extra = sorted(set(state) - set(own))
    if missing or extra:
        what = f"{len(missing)} tensors missing, e.g. {missing[0]}" if missing else \
            f"{len(extra)} unexpected tensors, e.g. {extra[0]}"
        raise CheckpointError(f"{p}: weights do not fit the stored config ({what})")
    for k, v in own.items():
        if tuple(v.shape) != tuple(state[k].shape):
            raise CheckpointError(f"{p}: {k} has shape {tuple(state[k].shape)}, the config needs {tuple(v.shape)}")
    model.load_state_dict({k: v.to(own[k].dtype) for k, v in state.items()}, strict=True)
    if payload.get("encoder_tail") is not None:
        model.encoder_tail = check_encoder_tail(payload["encoder_tail"], str(p))
    return model.to(device).eval()
