"""Request bodies of the API (pydantic): unknown fields are refused, coordinates are voxel indices."""
from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

Vec3 = tuple[float, float, float]


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class OpenPath(Strict):
    path: str = Field(description="a file or DICOM folder under one of the server's data roots")


class NewSession(Strict):
    volume_id: str
    engine: str = "classic"
    options: dict[str, Any] = Field(default_factory=dict, description="engine options (GET /api/engines lists them)")


class SliceMaskIn(Strict):
    axis: int = Field(ge=0, le=2)
    index: int = Field(ge=0)
    shape: tuple[int, int]
    bits: str = Field(description="base64 of the mask's bits, row-major, most significant bit first")


class PromptIn(Strict):
    object_id: int = Field(1, ge=1, le=65535)
    kind: Literal["point", "box", "slice_mask"]
    point: Vec3 | None = Field(None, description="voxel (i, j, k) of a click")
    positive: bool = True
    box: tuple[Vec3, Vec3] | None = Field(None, description="two opposite voxel corners")
    axis: int | None = Field(None, ge=0, le=2, description="a 2D prompt on this axis's slice; null = 3D")
    mask: SliceMaskIn | None = None
    run: bool = Field(True, description="apply now; false queues it for /propagate")


class PropagateIn(Strict):
    object_id: int | None = Field(None, ge=1, le=65535)


class SaveIn(Strict):
    format: Literal["nifti", "source", "dicom-seg"] = "nifti"
    path: str | None = Field(default=None, description="write under a data root instead of answering with the file")
    overwrite: bool = False
