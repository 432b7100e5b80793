"""Options of the `memory3d` engine: slice2d's (prompts, stopping rules, cache) plus the memory model's."""
from __future__ import annotations

from pathlib import Path
from typing import Optional

from pydantic import Field

from voxsam.engines.slice2d.options import Slice2DOptions


class Memory3DOptions(Slice2DOptions):
    """slice2d's options, and which memory model conditions each propagated slice."""

    memory_weights: Optional[Path] = Field(None, description="memory3d weights (voxsam train, family memory3d); default the bundled src/voxsam/weights/memory3d.pt")
    stop_iou: float = Field(0.35, ge=0, le=1, allow_inf_nan=False, description="the object has ended when the predicted IoU of a slice falls below this (lower than slice2d's 0.55: training on propagated slices taught the IoU head lower values; docs/benchmarks.md)")
    use_memory: bool = Field(True, description="condition propagated slices on the memory bank (false: the memory3d decoder alone, for comparison)")
