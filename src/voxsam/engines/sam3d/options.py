"""Options of the `sam3d` engine (validated; `voxsam engines` prints them with their defaults)."""
from __future__ import annotations

from pathlib import Path
from typing import Literal, Optional

from pydantic import Field

from voxsam.engines.options import EngineOptions


class Sam3DOptions(EngineOptions):
    """Weights, crop rules and arithmetic of the sam3d engine."""

    checkpoint: Optional[Path] = Field(None, description="SAM-Med3D weights (released .pth, plain state dict or voxsam file); default the bundled small weights")
    trust_checkpoint: bool = Field(False, description="allow pickled checkpoints (the released files need it); only for files you trust")
    spacing: float = Field(1.5, gt=0, allow_inf_nan=False, description="engine voxel size, mm")
    max_windows: int = Field(6, ge=1, description="crop windows per object (1 disables extension toward touched faces)")
    device: str = Field("cpu", description="torch device")
    precision: Optional[Literal["float32", "int8", "bfloat16"]] = Field(None, description="image-encoder arithmetic; default the model's (float32)")
