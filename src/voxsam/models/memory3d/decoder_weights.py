"""Prompt encoder + mask decoder weights from a slice2d decoder file (the format the slice2d engine loads).

A decoder file is a plain state dict (optionally ``{"state_dict": ...}``) whose keys all start with
``prompt_encoder.`` or ``mask_decoder.`` (float16 when shipped): `voxsam/weights/slice2d_decoder.pt`
(`BUNDLED_SLICE2D_DECODER`, LiteMedSAM's decoder fine-tuned by the slice2d family) or one exported by
``voxsam train`` for slice2d. Read with ``torch.load(weights_only=True)``. A file trained with the encoder's
last stage (slice2d's ``model.train_last_stage``) also holds that stage and the neck (``image_encoder.layers.*``,
``image_encoder.neck.*``): the *encoder tail*, which memory3d can encode its slices with (`read_encoder_tail`,
`apply_encoder_tail`).
"""
from __future__ import annotations

import hashlib
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from voxsam.errors import CheckpointError

#: slice2d's fine-tuned prompt encoder + mask decoder shipped with voxsam (weights/SLICE2D_MODEL_CARD.md)
BUNDLED_SLICE2D_DECODER = Path(__file__).resolve().parents[2] / "weights" / "slice2d_decoder.pt"
PREFIXES = ("prompt_encoder.", "mask_decoder.")
TAIL_PREFIXES = ("image_encoder.layers.", "image_encoder.neck.")


def load_checked(path: Path, what: str) -> Any:
    """`torch.load(weights_only=True)` of `path` on the CPU; CheckpointError naming `what` for a missing or
    unreadable file (truncated zip, garbage, pickled objects)."""
    if not path.is_file():
        raise CheckpointError(f"{path}: no such {what} file")
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001 - any unreadable file is a bad checkpoint
        first = (str(exc).strip().splitlines() or [""])[0][:160]
        raise CheckpointError(f"{path}: cannot read {what} (corrupt or truncated file): "
                              f"{type(exc).__name__}{': ' + first if first else ''}") from None


def _read_state(p: Path) -> dict[str, Tensor]:
    """Every tensor of a decoder file as stored, or a CheckpointError."""
    state = load_checked(p, "decoder weights")
    state = state.get("state_dict", state) if isinstance(state, dict) else state
    if not isinstance(state, dict) or not any(isinstance(k, str) and k.startswith(PREFIXES) for k in state) or not all(
            isinstance(k, str) and k.startswith(PREFIXES + TAIL_PREFIXES) and isinstance(v, Tensor) for k, v in state.items()):
        raise CheckpointError(f"{p}: not a slice2d decoder file (expected prompt_encoder.* and mask_decoder.* weights)")
    return state


def _bundled_or(path: Any) -> Path:
    return BUNDLED_SLICE2D_DECODER if isinstance(path, str) and path == "bundled" else Path(path)


def read_decoder_file(path: str | os.PathLike[str]) -> dict[str, Tensor]:
    """The ``prompt_encoder.*`` + ``mask_decoder.*`` tensors of a decoder file, as float32 (an encoder tail
    the file may also hold is left out: `read_encoder_tail` reads it).

    Raises:
        CheckpointError: missing, unreadable, or not a decoder file.
    """
    return {k: v.float() for k, v in _read_state(Path(path)).items() if k.startswith(PREFIXES)}


def read_encoder_tail(path: Any) -> dict[str, Tensor]:
    """The encoder tail (``image_encoder.layers.*`` + ``image_encoder.neck.*``) of a decoder file, as float32.

    Args:
        path: a decoder file, or "bundled" for `BUNDLED_SLICE2D_DECODER`.
    Raises:
        CheckpointError: missing, unreadable, not a decoder file, or one without an encoder tail.
    """
    p = _bundled_or(path)
    tail = {k: v.float() for k, v in _read_state(p).items() if k.startswith(TAIL_PREFIXES)}
    if not tail:
        raise CheckpointError(f"{p}: this decoder file holds no encoder tail (image_encoder.layers.* / "
                              f"image_encoder.neck.*: trained with slice2d's model.train_last_stage)")
    return tail


def check_encoder_tail(tail: Any, where: str) -> dict[str, Tensor]:
    """`tail` as a float32 state dict of encoder-tail tensors, or a CheckpointError naming `where`."""
    if not isinstance(tail, Mapping) or not tail or not all(
            isinstance(k, str) and k.startswith(TAIL_PREFIXES) and isinstance(v, Tensor) for k, v in tail.items()):
        raise CheckpointError(f"{where}: the encoder tail must map image_encoder.layers.* / image_encoder.neck.* "
                              f"names to tensors")
    return {k: v.float() for k, v in tail.items()}


def apply_encoder_tail(sam2d: nn.Module, tail: Mapping[str, Tensor], where: str = "encoder tail") -> None:
    """Load an encoder tail into a `Sam2D` (before its first encoding: a fast encoder snapshots the weights).

    Raises:
        CheckpointError: a tensor the model lacks or of another shape.
    """
    own = sam2d.state_dict()
    bad = [k for k in tail if k not in own or tuple(own[k].shape) != tuple(tail[k].shape)]
    if bad:
        raise CheckpointError(f"{where}: {len(bad)} encoder-tail weights do not fit this encoder, e.g. {bad[0]}")
    sam2d.load_state_dict({k: v.to(own[k].dtype) for k, v in tail.items()}, strict=False)


def tail_digest(tail: Mapping[str, Tensor]) -> str:
    """12 hex digits naming an encoder tail by its float16 values (the embedding cache's folder name)."""
    h = hashlib.sha256()
    for k in sorted(tail):
        v = tail[k].detach().to("cpu", torch.float16).contiguous()
        h.update(k.encode())
        h.update(str(tuple(v.shape)).encode())
        h.update(v.numpy().tobytes())
    return h.hexdigest()[:12]


def load_decoder_weights(model: nn.Module, path: Any) -> None:
    """Load a decoder file into ``model.prompt_encoder`` and ``model.mask_decoder`` (strictly).

    Args:
        model: a `Memory3D` (or any module with those two children).
        path: a file path, or "bundled" for `BUNDLED_SLICE2D_DECODER`.
    Raises:
        CheckpointError: unreadable file, or weights missing / extra / of another shape.
    """
    p = _bundled_or(path)
    state = read_decoder_file(p)
    own = {k: v for k, v in model.state_dict().items() if k.startswith(PREFIXES)}
    missing = sorted(set(own) - set(state))
    extra = sorted(set(state) - set(own))
    if missing or extra:
        what = f"{len(missing)} missing, e.g. {missing[0]}" if missing else f"{len(extra)} unexpected, e.g. {extra[0]}"
        raise CheckpointError(f"{p}: decoder weights do not fit this model ({what})")
    bad = [k for k in own if tuple(own[k].shape) != tuple(state[k].shape)]
    if bad:
        raise CheckpointError(f"{p}: {bad[0]} has shape {tuple(state[bad[0]].shape)}, the model needs "
                              f"{tuple(own[bad[0]].shape)}")
    model.load_state_dict(state, strict=False)
