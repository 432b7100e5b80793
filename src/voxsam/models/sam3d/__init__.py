"""SAM-Med3D (``sam3d``): the released ``vit_b_ori`` architecture, written from the interface spec.

    from voxsam.models.sam3d import build_sam3d, load_sam3d_checkpoint
    model, report = load_sam3d_checkpoint("sam_med3d_turbo.pth", trust=True)
    with torch.inference_mode():
        emb = model.encode(image)                              # (1, 1, 128, 128, 128) float
        logits, iou = model.decode(emb, points, labels, mask_input=prev_logits)

Submodules are imported lazily so that ``import voxsam.models.sam3d`` does not load torch.
"""
from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

__all__ = [
    "Sam3DConfig", "PRESETS", "get_config",
    "Sam3D", "build_sam3d", "BOX_PROMPT_KEYS",
    "LoadReport", "load_sam3d_checkpoint", "save_sam3d_checkpoint", "infer_config",
]

_WHERE = {
    "Sam3DConfig": "config", "PRESETS": "config", "get_config": "config",
    "Sam3D": "build", "build_sam3d": "build", "BOX_PROMPT_KEYS": "build",
    "LoadReport": "checkpoint", "load_sam3d_checkpoint": "checkpoint",
    "save_sam3d_checkpoint": "checkpoint", "infer_config": "checkpoint",
}

if TYPE_CHECKING:  # pragma: no cover
    from voxsam.models.sam3d.build import BOX_PROMPT_KEYS, Sam3D, build_sam3d
    from voxsam.models.sam3d.checkpoint import (LoadReport, infer_config, load_sam3d_checkpoint,
                                                save_sam3d_checkpoint)
    from voxsam.models.sam3d.config import PRESETS, Sam3DConfig, get_config


def __getattr__(name: str) -> Any:
    if name in _WHERE:
        return getattr(importlib.import_module(f"{__name__}.{_WHERE[name]}"), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
