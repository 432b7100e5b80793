"""Engine grids: a fixed-size crop at a fixed spacing, axis-aligned to the volume's closest RAS axes.

A model like SAM-Med3D sees a 128³ patch at 1.5 mm in RAS orientation. Instead of resampling the whole
volume and cropping, `CropGrid` defines that patch directly as a grid (shape + affine) and samples the
volume into it, which gives the same voxels (the grid's phase is anchored at the volume's first voxel,
as a whole-volume resampling would be) at a fraction of the cost.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from voxsam.transforms.geometry import apply_affine, resample_to_grid


def canonical_axes(affine: np.ndarray) -> np.ndarray:
    """(3, 3) unit direction columns of the volume's axes, permuted and flipped to the closest RAS order."""
    import nibabel as nib

    ornt = nib.orientations.io_orientation(affine)  # for each voxel axis: (world axis, flip)
    directions = affine[:3, :3] / np.linalg.norm(affine[:3, :3], axis=0)
    out = np.zeros((3, 3))
    for vox_axis, (world_axis, flip) in enumerate(ornt):
        out[:, int(world_axis)] = directions[:, vox_axis] * flip
    return out


@dataclass(frozen=True)
class CropGrid:
    """A (size, size, size) grid of `spacing` mm voxels.

    Attributes:
        affine: (4, 4) crop voxel -> RAS mm.
        shape: (S, S, S).
        start: integer index of the crop's first voxel on the volume's canonical fine grid.
    """

    affine: np.ndarray
    shape: tuple[int, int, int]
    start: tuple[int, int, int]


def canonical_grid_affine(volume_shape: tuple[int, int, int], volume_affine: np.ndarray, spacing: float) -> np.ndarray:
    """Affine of the whole volume resampled to `spacing` mm on its closest-RAS axes.

    Anchored at the corner of the volume's bounding box that is lowest along each canonical axis.
    """
    axes = canonical_axes(volume_affine)
    x, y, z = (s - 1 for s in volume_shape)
    corners = apply_affine(volume_affine, np.array([[i, j, k] for i in (0, x) for j in (0, y) for k in (0, z)], float))
    along = corners @ axes  # coordinates along each canonical axis
    origin = axes @ along.min(axis=0)
    aff = np.eye(4)
    aff[:3, :3] = axes * spacing
    aff[:3, 3] = origin
    return aff


def crop_around(
    volume_shape: tuple[int, int, int],
    volume_affine: np.ndarray,
    center_world: np.ndarray,
    size: int = 128,
    spacing: float = 1.5,
    shift: tuple[int, int, int] = (0, 0, 0),
) -> CropGrid:
    """The crop of `size`³ voxels at `spacing` mm centred (to the nearest fine voxel) on a world point.

    Args:
        center_world: (3,) RAS mm.
        shift: extra offset in crop voxels (e.g. (64, 0, 0) for a 50%-overlap neighbour window).
    """
    base = canonical_grid_affine(volume_shape, volume_affine, spacing)
    center_idx = apply_affine(np.linalg.inv(base), np.asarray(center_world, float))
    start = np.round(center_idx).astype(int) - size // 2 + np.asarray(shift, int)
    aff = base.copy()
    aff[:3, 3] = apply_affine(base, start.astype(float))
    return CropGrid(affine=aff, shape=(size, size, size), start=tuple(int(v) for v in start))  # type: ignore[arg-type]


def sample_into(array: np.ndarray, affine: np.ndarray, grid: CropGrid, order: int = 1) -> np.ndarray:
    """Sample an (X, Y, Z) volume into the crop grid (linear for images, nearest for labels; 0 outside)."""
    return resample_to_grid(array, affine, grid.shape, grid.affine, order=order, cval=0.0)


def paste_back(
    crop_mask: np.ndarray, grid: CropGrid, volume_shape: tuple[int, int, int], volume_affine: np.ndarray
) -> np.ndarray:
    """Map a crop-grid mask (S, S, S) to the volume grid (X, Y, Z) bool, nearest neighbour.

    Only the volume voxels inside the crop's bounding box are looked up (fast for large volumes).
    """
    out = np.zeros(volume_shape, dtype=bool)
    s = np.array(grid.shape) - 1
    corners = np.array([[i, j, k] for i in (0, s[0]) for j in (0, s[1]) for k in (0, s[2])], float)
    vox = apply_affine(np.linalg.inv(volume_affine) @ grid.affine, corners)
    lo = np.clip(np.floor(vox.min(0)).astype(int) - 1, 0, np.array(volume_shape))
    hi = np.clip(np.ceil(vox.max(0)).astype(int) + 2, 0, np.array(volume_shape))
    if np.any(hi <= lo):
        return out
    sub_affine = volume_affine.copy()
    sub_affine[:3, 3] = apply_affine(volume_affine, lo.astype(float))
    sub = resample_to_grid(crop_mask.astype(np.uint8), grid.affine, tuple(hi - lo), sub_affine, order=0)
    out[lo[0]:hi[0], lo[1]:hi[1], lo[2]:hi[2]] = sub > 0
    return out
