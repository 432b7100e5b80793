"""The `Volume` type: a voxel array on a grid with a RAS affine, plus what is needed to write back."""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np


@dataclass
class Volume:
    """A 3D image (or label map) on a voxel grid.

    Attributes:
        array: voxel values, shape (X, Y, Z) for one channel or (X, Y, Z, C) for C channels,
            indexed (i, j, k) exactly as stored in the source file (no reorientation at read time).
        affine: (4, 4) float64 matrix mapping voxel index (i, j, k, 1) to RAS+ world mm.
        source_format: one of "nifti", "nrrd", "mha", "mgz", "dicom" (or "array" when built in memory).
        path: the file or folder it was read from (None for in-memory volumes).
        meta: format-specific facts needed to write in the source's format (e.g. the DICOM files in
            slice order, the NIfTI header). Never holds voxel data.
        modality: "CT", "MR" or None when unknown; decides CT-specific intensity handling.
        channel_names: one name per channel when known.
    """

    array: np.ndarray
    affine: np.ndarray
    source_format: str = "array"
    path: Path | None = None
    meta: dict[str, Any] = field(default_factory=dict)
    modality: str | None = None
    channel_names: list[str] | None = None

    def __post_init__(self) -> None:
        self.affine = np.asarray(self.affine, dtype=np.float64)
        if self.affine.shape != (4, 4):
            raise ValueError(f"affine must be 4x4, got {self.affine.shape}")
        if self.array.ndim not in (3, 4):
            raise ValueError(f"array must be (X,Y,Z) or (X,Y,Z,C), got shape {self.array.shape}")

    @property
    def shape(self) -> tuple[int, int, int]:
        """Spatial shape (X, Y, Z) in voxels."""
        return tuple(int(s) for s in self.array.shape[:3])  # type: ignore[return-value]

    @property
    def n_channels(self) -> int:
        return 1 if self.array.ndim == 3 else int(self.array.shape[3])

    @property
    def spacing(self) -> tuple[float, float, float]:
        """Voxel size along i, j, k in mm (norms of the affine's columns)."""
        return tuple(float(s) for s in np.linalg.norm(self.affine[:3, :3], axis=0))  # type: ignore[return-value]

    @property
    def orientation(self) -> str:
        """Three-letter code of the anatomical direction each voxel axis points to, e.g. "RAS", "LPS"."""
        from voxsam.transforms.geometry import orientation_code

        return orientation_code(self.affine)

    def channel(self, index: int = 0) -> np.ndarray:
        """One channel as an (X, Y, Z) array."""
        if self.array.ndim == 3:
            if index != 0:
                raise IndexError(f"volume has 1 channel, asked for channel {index}")
            return self.array
        return self.array[..., index]

    def with_array(self, array: np.ndarray, **changes: Any) -> Volume:
        """A volume on the same grid (same affine, format and metadata) holding other voxels."""
        if tuple(array.shape[:3]) != self.shape:
            raise ValueError(f"array shape {array.shape[:3]} differs from the grid {self.shape}")
        kwargs: dict[str, Any] = dict(  # the Volume fields other than array; `changes` override them
            affine=self.affine.copy(),
            source_format=self.source_format,
            path=self.path,
            meta=dict(self.meta),
            modality=self.modality,
            channel_names=None,
        )
        kwargs.update(changes)
        return Volume(array=array, **kwargs)

    def voxel_to_world(self, ijk: np.ndarray) -> np.ndarray:
        """(N, 3) voxel coordinates -> (N, 3) RAS mm."""
        from voxsam.transforms.geometry import apply_affine

        return apply_affine(self.affine, ijk)

    def world_to_voxel(self, xyz: np.ndarray) -> np.ndarray:
        """(N, 3) RAS mm -> (N, 3) continuous voxel coordinates."""
        from voxsam.transforms.geometry import apply_affine

        return apply_affine(np.linalg.inv(self.affine), xyz)

    def describe(self) -> str:
        return (
            f"{self.source_format} {self.shape} x{self.n_channels}ch spacing "
            + "x".join(f"{s:.3g}" for s in self.spacing)
            + f" mm {self.orientation}"
        )
