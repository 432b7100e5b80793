"""SAM2-3dMed memory model over slices on LiteMedSAM embeddings (``memory3d``), written in this project.

    from voxsam.models.memory3d import build_memory3d, select_memories, save_memory3d, load_memory3d
    model = build_memory3d("litemedsam_mem", sam2d=load_litemedsam()).eval()   # decoder from LiteMedSAM
    with torch.inference_mode():
        cond = model.condition(emb, select_memories(bank, k), k)    # (B, 256, 64, 64) -> same
        logits, iou = model.decode(cond, boxes=boxes)                # (B, 1, 256, 256), (B, 1)
        bank.append(model.memorize(emb, logits, k))                  # Memory: (B, 64, 64, 64) features
        edges = model.boundary(cond)                                 # (B, 1, 256, 256) boundary logits

The frozen LiteMedSAM image encoder is not part of the model: embeddings come from
`voxsam.engines.slice2d.slices.SliceModel` (or its cache). Architecture and numbers: docs/models/memory3d.md.
Submodules are imported lazily so that ``import voxsam.models.memory3d`` does not load torch.
"""
from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

__all__ = [
    "Memory3DConfig", "PRESETS", "get_config",
    "Memory3D", "build_memory3d", "DECODER_PREFIXES",
    "Memory", "select_memories",
    "MemoryEncoder", "MemoryAttention", "SliceOffsetEncoding", "sine_position_encoding",
    "SRPPHead", "BoundaryHead", "pool_features", "boundary_target", "boundary_loss",
    "save_memory3d", "load_memory3d", "read_memory3d_file",
    "BUNDLED_SLICE2D_DECODER", "read_decoder_file", "load_decoder_weights",
    "read_encoder_tail", "apply_encoder_tail", "tail_digest",
]

_WHERE = {
    "Memory3DConfig": "config", "PRESETS": "config", "get_config": "config",
    "Memory3D": "build", "build_memory3d": "build", "DECODER_PREFIXES": "build",
    "Memory": "bank", "select_memories": "bank",
    "MemoryEncoder": "memory_encoder", "MemoryAttention": "memory_attention",
    "SliceOffsetEncoding": "position", "sine_position_encoding": "position",
    **{name: "heads" for name in ("SRPPHead", "BoundaryHead", "pool_features", "boundary_target", "boundary_loss")},
    **{name: "checkpoint" for name in ("save_memory3d", "load_memory3d", "read_memory3d_file")},
    **{name: "decoder_weights" for name in ("BUNDLED_SLICE2D_DECODER", "read_decoder_file", "load_decoder_weights",
                                            "read_encoder_tail", "apply_encoder_tail", "tail_digest")},
}

if TYPE_CHECKING:  # pragma: no cover
    from voxsam.models.memory3d.bank import Memory, select_memories
    from voxsam.models.memory3d.build import DECODER_PREFIXES, Memory3D, build_memory3d
    from voxsam.models.memory3d.checkpoint import load_memory3d, read_memory3d_file, save_memory3d
    from voxsam.models.memory3d.config import PRESETS, Memory3DConfig, get_config
    from voxsam.models.memory3d.decoder_weights import (BUNDLED_SLICE2D_DECODER, apply_encoder_tail, load_decoder_weights,
                                                         read_decoder_file, read_encoder_tail, tail_digest)
    from voxsam.models.memory3d.heads import BoundaryHead, SRPPHead, boundary_loss, boundary_target, pool_features
    from voxsam.models.memory3d.memory_attention import MemoryAttention
    from voxsam.models.memory3d.memory_encoder import MemoryEncoder
    from voxsam.models.memory3d.position import SliceOffsetEncoding, sine_position_encoding


def __getattr__(name: str) -> Any:
    if name in _WHERE:
        return getattr(importlib.import_module(f"{__name__}.{_WHERE[name]}"), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
