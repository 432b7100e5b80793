"""Engine grids: a fixed-size crop at a fixed spacing, axis-aligned to the volume's closest RAS axes.

A model like SAM-Med3D sees a 128³ patch at 1.5 mm in RAS orientation. Instead of resampling the whole
volume and cropping, `CropGrid` defines that patch directly as a grid (shape + affine) and samples the
volume into it, which gives the same voxels (the grid's phase is anchored at the volume's first voxel,
as a whole-volume resampling would be) at a fraction of the cost.
"""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from voxsam.transforms.geometry import apply_affine, resample_to_grid

Region = tuple[slice, slice, slice]


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


def volume_box(grid: CropGrid, volume_shape: tuple[int, ...], volume_affine: np.ndarray) -> tuple[np.ndarray, np.ndarray] | None:
    """(lo, hi): the box of volume voxels around the crop, one voxel wider below and two above its corners'
    voxel coordinates (every voxel that linear sampling into the crop reads, and every voxel a paste-back
    can reach), clipped to the volume; None when it misses the volume."""
    shape = np.array(volume_shape[:3])
    s = np.array(grid.shape) - 1
    corners = np.array([[i, j, k] for i in (0, s[0]) for j in (0, s[1]) for k in (0, s[2])], float)
    vox = apply_affine(np.linalg.inv(volume_affine) @ grid.affine, corners)
    lo = np.clip(np.floor(vox.min(0)).astype(int) - 1, 0, shape)
    hi = np.clip(np.ceil(vox.max(0)).astype(int) + 2, 0, shape)
    return None if np.any(hi <= lo) else (lo, hi)


def sample_block_into(
    array: np.ndarray, affine: np.ndarray, grid: CropGrid, voxelwise: Callable[[np.ndarray], np.ndarray] | None = None
) -> np.ndarray:
    """`sample_into` (linear, float32, 0 outside) of `voxelwise(array)` that converts only the voxels the crop
    reads: e.g. the CT clamp at the cost of the crop, not of the volume.

    The block around the crop is converted into a volume-sized float32 array that is otherwise never written
    (zero pages the system maps on demand, so it costs the block's memory only), and sampled exactly as
    `sample_into` samples the whole converted volume: the same arithmetic, so the same values, bit for bit.
    """
    box = volume_box(grid, array.shape, affine)
    if box is None:
        return np.zeros(grid.shape, dtype=np.float32)
    lo, hi = box
    block = (slice(int(lo[0]), int(hi[0])), slice(int(lo[1]), int(hi[1])), slice(int(lo[2]), int(hi[2])))
    # in the source's memory order, so the block is copied along its rows (a CT from nibabel is Fortran order)
    sparse = np.zeros(array.shape[:3], dtype=np.float32, order="F" if np.isfortran(array) else "C")
    sparse[block] = voxelwise(array[block]) if voxelwise is not None else array[block]
    return resample_to_grid(sparse, affine, grid.shape, grid.affine, order=1, cval=0.0)


def paste_into(out: np.ndarray, crop_mask: np.ndarray, grid: CropGrid, volume_affine: np.ndarray) -> Region | None:
    """OR a crop-grid mask (S, S, S) into the (X, Y, Z) bool volume mask `out`, nearest neighbour; returns
    the box of `out` it wrote (None: the crop misses the volume). Only that box is looked up."""
    box = volume_box(grid, out.shape, volume_affine)
    if box is None:
        return None
    lo, hi = box
    sub_affine = volume_affine.copy()
    sub_affine[:3, 3] = apply_affine(volume_affine, lo.astype(float))
    shape = (int(hi[0] - lo[0]), int(hi[1] - lo[1]), int(hi[2] - lo[2]))
    region: Region = (slice(int(lo[0]), int(hi[0])), slice(int(lo[1]), int(hi[1])), slice(int(lo[2]), int(hi[2])))
    m = np.linalg.inv(grid.affine) @ sub_affine  # box voxel -> crop voxel, as `resample_to_grid` computes it
    if np.all(m[:3, :3][~np.eye(3, dtype=bool)] == 0.0):
        _or_nearest_axis_aligned(out[region], crop_mask, m)
    else:
        out[region] |= resample_to_grid(crop_mask.astype(np.uint8), grid.affine, shape, sub_affine, order=0) > 0
    return region


def _or_nearest_axis_aligned(out: np.ndarray, crop_mask: np.ndarray, m: np.ndarray) -> None:
    """`out |= resample_to_grid(crop_mask, ..., order=0) > 0` for a diagonal `m` (crop axes along the volume's,
    flips allowed): nearest neighbour is then separable, one index per axis, with the same arithmetic as
    `resample_to_grid` (coordinate m_aa·i + m_a3 in float64, index floor(c + 0.5) clipped to the crop, voxels
    beyond 1e-3 crop voxel outside it left alone); tests/transforms/test_crop_blocks.py checks the equality."""
    index, inside = [], []
    for a in range(3):
        c = m[a, a] * np.arange(out.shape[a], dtype=np.float64) + m[a, 3]
        n = crop_mask.shape[a]
        ok = np.flatnonzero((c >= -1e-3) & (c <= n - 1 + 1e-3))
        if ok.size == 0:
            return
        index.append(np.clip(np.floor(c[ok] + 0.5), 0, n - 1).astype(np.intp))
        inside.append(slice(int(ok[0]), int(ok[-1]) + 1))  # c is monotonic: the voxels inside are one run
    out[inside[0], inside[1], inside[2]] |= crop_mask[np.ix_(index[0], index[1], index[2])].astype(bool)


def paste_back(
    crop_mask: np.ndarray, grid: CropGrid, volume_shape: tuple[int, int, int], volume_affine: np.ndarray
) -> np.ndarray:
    """Map a crop-grid mask (S, S, S) to the volume grid (X, Y, Z) bool, nearest neighbour.

    Only the volume voxels inside the crop's bounding box are looked up (fast for large volumes).
    """
    out = np.zeros(volume_shape, dtype=bool)
    paste_into(out, crop_mask, grid, volume_affine)
    return out
