"""Checks every reader applies, so that a bad file fails at the door with one clear line."""
from __future__ import annotations

from pathlib import Path

import numpy as np

from voxsam.errors import InvalidGeometryError, InvalidImageError


def squeeze_to_volume(array: np.ndarray, path: Path | str) -> np.ndarray:
    """Return (X, Y, Z) or (X, Y, Z, C); refuse 2D and 5D+ images.

    Trailing singleton axes beyond the third are dropped ((X, Y, Z, 1) -> (X, Y, Z)); a grid that is one
    voxel thick along any axis is a 2D image.
    """
    arr = array
    while arr.ndim > 3 and arr.shape[-1] == 1:
        arr = arr[..., 0]
    if arr.ndim < 3 or min(arr.shape[:3]) == 1:
        raise InvalidImageError(f"{path}: is a 2D image (shape {tuple(array.shape)}); voxsam needs a 3D volume")
    if arr.ndim > 4:
        raise InvalidImageError(
            f"{path}: has {arr.ndim} dimensions (shape {tuple(array.shape)}); voxsam reads 3D volumes and 3D+channels"
        )
    return arr


def check_finite(array: np.ndarray, path: Path | str) -> None:
    """Refuse NaN or infinite voxels (only float arrays can hold them)."""
    if np.issubdtype(array.dtype, np.floating):
        bad = int(array.size - np.count_nonzero(np.isfinite(array)))
        if bad:
            raise InvalidImageError(f"{path}: {bad} voxels are NaN or infinite")


def check_affine(affine: np.ndarray, path: Path | str, spacing: tuple[float, ...] | None = None) -> None:
    """Refuse zero, negative or non-finite spacing and singular affines."""
    if not np.all(np.isfinite(affine)):
        raise InvalidGeometryError(f"{path}: the voxel-to-world matrix has NaN or infinite entries")
    if spacing is not None and any(not np.isfinite(s) or s <= 0 for s in spacing):
        raise InvalidGeometryError(f"{path}: voxel spacing {tuple(float(s) for s in spacing)} must be positive")
    norms = np.linalg.norm(affine[:3, :3], axis=0)
    if np.any(norms <= 1e-8) or abs(np.linalg.det(affine[:3, :3])) <= 1e-12:
        raise InvalidGeometryError(
            f"{path}: zero voxel spacing (spacing {tuple(round(float(s), 6) for s in norms)}); the geometry is unusable"
        )
