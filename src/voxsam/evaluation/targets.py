"""Where simulated prompts go on a ground-truth target: interior points, bounding boxes, error components."""
from __future__ import annotations

import numpy as np


def edt_mm(mask: np.ndarray, spacing: tuple[float, ...]) -> np.ndarray:
    """Distance (mm) from every voxel of `mask` to the nearest voxel outside it; the border counts as outside."""
    import edt

    padded = np.pad(np.ascontiguousarray(mask, dtype=bool), 1, constant_values=False)
    dist = edt.edt(padded, anisotropy=spacing, black_border=False)
    return np.asarray(dist[tuple(slice(1, -1) for _ in range(mask.ndim))])


def bbox(mask: np.ndarray) -> tuple[slice, ...]:
    out = []
    for axis in range(mask.ndim):
        other = tuple(i for i in range(mask.ndim) if i != axis)
        hit = np.flatnonzero(mask.any(axis=other))
        out.append(slice(int(hit[0]), int(hit[-1]) + 1))
    return tuple(out)


def interior_point(mask: np.ndarray, spacing: tuple[float, ...]) -> np.ndarray:
    """Voxel index (ndim,) of the maximum of the spacing-aware distance transform inside a non-empty mask.

    Ties go to the first voxel in C order (deterministic). Works on 2D and 3D masks.
    """
    box = bbox(mask)
    dist = edt_mm(mask[box], spacing)
    local = np.unravel_index(int(np.argmax(dist)), dist.shape)
    return np.array([int(l) + s.start for l, s in zip(local, box)], dtype=int)


def largest_error_component(mask: np.ndarray, target: np.ndarray) -> tuple[np.ndarray, bool] | None:
    """The largest 6-connected component of FN (target & ~mask) or FP (mask & ~target).

    Returns (component bool (X, Y, Z), positive) where positive is True for a FN component, or None when
    the mask equals the target.
    """
    import cc3d

    fn = target & ~mask
    fp = mask & ~target
    if not (fn.any() or fp.any()):
        return None
    kinds = np.zeros(target.shape, dtype=np.uint8)
    kinds[fn] = 1
    kinds[fp] = 2
    box = bbox(kinds > 0)
    labels = cc3d.connected_components(kinds[box], connectivity=6)
    counts = np.bincount(labels.ravel())
    counts[0] = 0
    best = int(np.argmax(counts))
    comp = np.zeros(target.shape, dtype=bool)
    comp[box] = labels == best
    positive = bool(fn[box][labels == best][0])
    return comp, positive
