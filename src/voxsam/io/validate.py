"""Checks every reader applies, so that a bad file fails at the door with one clear line."""
from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from voxsam.errors import InvalidGeometryError, InvalidImageError


def squeeze_to_volume(array: np.ndarray, path: Path | str) -> np.ndarray:
    """Return (X, Y, Z) or (X, Y, Z, C); refuse 2D and 5D+ images.

    Trailing singleton axes beyond the third are dropped ((X, Y, Z, 1) -> (X, Y, Z)); a grid that is one
    voxel thick along any axis is a 2D image.
    """
    arr = array
    if arr.size == 0:
        raise InvalidImageError(f"{path}: holds no voxels (shape {tuple(array.shape)}); the header is corrupt")
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


# voxel sizes outside this range (mm) are a broken header, not a CT or MRI scan
MIN_SPACING_MM = 1e-3
MAX_SPACING_MM = 100.0


def _fmt_spacing(values: object) -> str:
    return "(" + ", ".join(f"{float(v):.6g}" for v in values) + ")"  # type: ignore[attr-defined]


def check_spacing(spacing: tuple[float, ...] | np.ndarray, path: Path | str) -> None:
    """Refuse zero, negative, non-finite and implausible voxel sizes (outside 0.001-100 mm)."""
    values = [float(s) for s in spacing]
    if any(not np.isfinite(s) or s <= 0 for s in values):
        raise InvalidGeometryError(f"{path}: voxel spacing {tuple(values)} must be positive")
    bad = [s for s in values if not MIN_SPACING_MM <= s <= MAX_SPACING_MM]
    if bad:
        raise InvalidGeometryError(
            f"{path}: voxel spacing {_fmt_spacing(values)} mm is implausible for a CT or MRI volume "
            f"(allowed {MIN_SPACING_MM:g} to {MAX_SPACING_MM:g} mm per voxel); the header is probably wrong"
        )


def check_affine(affine: np.ndarray, path: Path | str, spacing: tuple[float, ...] | None = None) -> None:
    """Refuse zero, negative, non-finite or implausible spacing and singular affines."""
    if not np.all(np.isfinite(affine)):
        raise InvalidGeometryError(f"{path}: the voxel-to-world matrix has NaN or infinite entries")
    if spacing is not None:
        check_spacing(spacing, path)
    m = np.asarray(affine, dtype=np.float64)[:3, :3]
    norms = np.linalg.norm(m, axis=0)
    zero = [i for i in range(3) if norms[i] <= 1e-8]
    if zero:
        raise InvalidGeometryError(
            f"{path}: zero voxel spacing along axis {', '.join(map(str, zero))} (spacing {_fmt_spacing(norms)}); "
            "the geometry is unusable"
        )
    # scale-free test: the determinant of the unit direction vectors (1 for orthogonal axes, 0 for parallel)
    if abs(np.linalg.det(m / norms)) <= 1e-6:
        raise InvalidGeometryError(
            f"{path}: the voxel-to-world matrix is singular: its axis directions are linearly dependent "
            f"(columns {np.round(m.T, 4).tolist()}); the geometry is unusable"
        )
    check_spacing(norms, path)


def check_real(array: np.ndarray, path: Path | str) -> None:
    """Refuse complex voxels: voxsam segments real-valued intensities."""
    if np.iscomplexobj(array):
        raise InvalidImageError(
            f"{path}: holds complex voxels ({array.dtype}); voxsam needs real-valued intensities (store the magnitude)"
        )


def memory_limit_bytes() -> int:
    """This machine's physical memory (what one volume may at most take), 64 GiB when unknown."""
    try:
        return int(os.sysconf("SC_PAGE_SIZE")) * int(os.sysconf("SC_PHYS_PAGES"))
    except (AttributeError, OSError, ValueError):  # pragma: no cover - non-POSIX
        return 64 * 2**30


def check_declared_size(shape: tuple[int, ...] | list[int], bytes_per_voxel: int, path: Path | str) -> None:
    """Refuse a header that declares more voxels than this machine could hold (a corrupt or absurd header)."""
    dims = [int(d) for d in shape]
    if any(d < 0 for d in dims):
        raise InvalidImageError(f"{path}: the header declares a negative size {tuple(dims)}; the file is corrupt")
    voxels = int(np.prod([max(d, 1) for d in dims], dtype=object))
    size = voxels * max(int(bytes_per_voxel), 1)
    limit = memory_limit_bytes()
    if size > limit:
        raise InvalidImageError(
            f"{path}: the header declares {voxels:.3g} voxels ({size / 1e9:.3g} GB, shape {tuple(dims)}), more than this "
            f"machine's memory ({limit / 1e9:.3g} GB); the header is implausible or the volume too large"
        )
