"""Shape-based interpolation between two decided slices (propagation with `slice_step` > 1).

A slice between slices a and b gets the zero level of the linear blend of their signed distance maps
(positive inside, in mm on the slice's own spacing): a shape that moves and grows smoothly from one mask to
the other, where a blend of the masks themselves would only fade. Exact on the bounding box of both masks
grown by one pixel, the only place the blend can be positive.
"""
from __future__ import annotations

import numpy as np


def signed_distance(mask: np.ndarray, spacing: tuple[float, float] = (1.0, 1.0)) -> np.ndarray:
    """(H, W) bool -> (H, W) float64: signed distance to the mask's edge (mm), > 0 inside.

    The edge lies half a pixel beyond the last pixel of each kind, so a pixel's distance to the nearest pixel
    of the other kind is shortened by half a (smallest) pixel: without it every blend would be ~1 px too big.
    """
    from scipy import ndimage

    half = 0.5 * min(spacing)
    inside = ndimage.distance_transform_edt(mask, sampling=spacing) - half
    outside = ndimage.distance_transform_edt(~mask, sampling=spacing) - half
    return np.where(mask, inside, -outside)


def interpolate_masks(a: np.ndarray, b: np.ndarray, fractions: list[float], spacing: tuple[float, float] = (1.0, 1.0)) -> list[np.ndarray]:
    """Masks between `a` (fraction 0) and `b` (fraction 1), one per fraction in (0, 1).

    Args:
        a, b: (H, W) bool, both non-empty (the decided slices on either side).
        fractions: where each wanted slice lies between them (e.g. [1/3, 2/3] for a step of 3).
        spacing: (row, column) pixel spacing in mm, so distances are isotropic on anisotropic pixels.
    Returns:
        one (H, W) bool mask per fraction.
    """
    if a.shape != b.shape:
        raise ValueError(f"masks of shapes {a.shape} and {b.shape} cannot be interpolated")
    out = [np.zeros(a.shape, dtype=bool) for _ in fractions]
    both = a | b
    if not a.any() or not b.any():
        # no shape to blend from: keep the nearer mask
        return [(a if t < 0.5 else b).copy() for t in fractions]
    rows, cols = np.nonzero(both)
    r0, r1 = max(int(rows.min()) - 1, 0), min(int(rows.max()) + 2, a.shape[0])
    c0, c1 = max(int(cols.min()) - 1, 0), min(int(cols.max()) + 2, a.shape[1])
    crop = (slice(r0, r1), slice(c0, c1))
    da, db = signed_distance(a[crop], spacing), signed_distance(b[crop], spacing)
    for mask, t in zip(out, fractions):
        mask[crop] = (1.0 - t) * da + t * db > 0
    return out
