"""Object masks at the cost of their bounding box, not of the grid.

The session keeps each object's mask as a full (X, Y, Z) bool grid plus a box that holds every True voxel
of it (not always the tightest one; None: the mask is empty). Building the uint8 mask a caller gets, the
label map, or the box after an edit then touches only boxes: a fresh `np.zeros` grid costs nothing until
written (the allocator maps zeroed pages on demand), so a 512 x 512 x 300 mask with a small object is
returned in about the time it takes to copy the object's box.
"""
from __future__ import annotations

import numpy as np

from voxsam.engines.base import Region

#: the whole grid of a given shape as a region
def full_region(shape: tuple[int, ...]) -> Region:
    return (slice(0, int(shape[0])), slice(0, int(shape[1])), slice(0, int(shape[2])))


def normalised(region: Region, shape: tuple[int, ...]) -> Region:
    """The region with explicit, clipped starts and stops."""
    out = []
    for s, n in zip(region, shape):
        start, stop, _ = s.indices(int(n))
        out.append(slice(start, max(start, stop)))
    return (out[0], out[1], out[2])


def union(a: Region | None, b: Region | None, shape: tuple[int, ...]) -> Region | None:
    """The bounding box of two regions (None: empty)."""
    if a is None or _empty(a, shape):
        return None if b is None or _empty(b, shape) else normalised(b, shape)
    if b is None or _empty(b, shape):
        return normalised(a, shape)
    a, b = normalised(a, shape), normalised(b, shape)
    return tuple(slice(min(x.start, y.start), max(x.stop, y.stop)) for x, y in zip(a, b))  # type: ignore[return-value]


def intersection(a: Region, b: Region) -> Region | None:
    """The common block of two normalised regions (None: they do not overlap)."""
    out = [slice(max(x.start, y.start), min(x.stop, y.stop)) for x, y in zip(a, b)]
    if any(s.stop <= s.start for s in out):
        return None
    return (out[0], out[1], out[2])


def _empty(region: Region, shape: tuple[int, ...]) -> bool:
    return any(s.stop <= s.start for s in normalised(region, shape))


def bounding_box(mask: np.ndarray, within: Region | None = None) -> Region | None:
    """The bounding box of the True voxels of an (X, Y, Z) mask, searched inside `within` (None: the grid);
    None when there are none."""
    within = full_region(mask.shape) if within is None else normalised(within, mask.shape)
    if _empty(within, mask.shape):
        return None
    part = mask[within]
    plane = np.any(part, axis=2)  # two passes over the block: (X, Y) projection, then the Z profile
    hits = (np.flatnonzero(plane.any(axis=1)), np.flatnonzero(plane.any(axis=0)), np.flatnonzero(part.any(axis=(0, 1))))
    if hits[0].size == 0:
        return None
    bounds = []
    for axis, hit in enumerate(hits):
        start = within[axis].start + int(hit[0])
        bounds.append(slice(start, within[axis].start + int(hit[-1]) + 1))
    return (bounds[0], bounds[1], bounds[2])


def as_uint8(mask: np.ndarray | None, box: Region | None, shape: tuple[int, int, int]) -> np.ndarray:
    """A new (X, Y, Z) uint8 copy of `mask`, whose True voxels all lie in `box`: only the box is copied."""
    out = np.zeros(shape, dtype=np.uint8)
    if mask is not None and box is not None:
        out[box] = mask[box]
    return out


def slab(shape: tuple[int, int, int], axis: int, lo: int, hi: int) -> Region:
    """Slices lo..hi (inclusive) along `axis`, whole along the others."""
    region = [slice(0, n) for n in shape]
    region[axis] = slice(lo, hi + 1)
    return (region[0], region[1], region[2])
