"""Overlap and surface metrics of a predicted mask against a reference mask.

All functions take two boolean arrays of the same shape, indexed (x, y, z) like `Volume.array`, and
(where distances matter) the voxel spacing (3,) in mm along x, y, z.

Definitions (the ones this project reports, stated once here):

- Dice = 2|A∩B| / (|A| + |B|);  IoU = |A∩B| / |A∪B|.
- Surface of a mask = its boundary voxels: voxels of the mask with at least one of their 6 face
  neighbours outside the mask; the image border counts as outside (a mask touching the border has
  surface there). This is what `scipy.ndimage.binary_erosion` with the 6-neighbour cross and
  `border_value=0` gives, and what MONAI uses when it is not asked for sub-voxel surfaces.
- Surface distances A→B: for every surface voxel of A, the Euclidean distance in mm (voxel centres,
  anisotropic spacing) to the nearest surface voxel of B. Computed with an exact anisotropic Euclidean
  distance transform (`edt`) of the complement of B's surface, on the bounding box of A ∪ B plus a
  one-voxel margin (every surface voxel of either mask lies in that box, so cropping changes nothing).
- HD95 = max(P95(A→B), P95(B→A)): the larger of the two one-way 95th percentiles, as
  `monai.metrics.compute_hausdorff_distance(percentile=95, directed=False)` computes it. (Other tools use
  the 95th percentile of the pooled distances, or of the one-way distances averaged: different numbers.)
  Percentiles are `numpy.percentile` with its default linear interpolation.
- NSD at tolerance τ (normalised surface Dice, Nikolov et al.) =
  (#{a ∈ S_A : d(a, S_B) ≤ τ} + #{b ∈ S_B : d(b, S_A) ≤ τ}) / (|S_A| + |S_B|), surfaces counted in voxels
  (MONAI's `compute_surface_dice(use_subvoxels=False)`).

Empty masks (explicit rules, not NaN):
  both empty  -> dice = iou = nsd = 1.0, hd95 = 0.0  (a correct "nothing here");
  one empty   -> dice = iou = nsd = 0.0, hd95 = inf.
"""
from __future__ import annotations

from collections.abc import Sequence

import numpy as np

__all__ = ["dice", "iou", "nsd", "hd95", "surface", "surface_distances", "all_metrics"]


def _pair(pred: np.ndarray, gt: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    a = np.asarray(pred).astype(bool, copy=False)
    b = np.asarray(gt).astype(bool, copy=False)
    if a.shape != b.shape:
        raise ValueError(f"pred shape {a.shape} differs from gt shape {b.shape}")
    return a, b


def _spacing(spacing: Sequence[float] | np.ndarray | None, ndim: int) -> np.ndarray:
    if spacing is None:
        return np.ones(ndim, dtype=np.float64)
    s = np.asarray(spacing, dtype=np.float64).reshape(-1)
    if s.size == 1:
        s = np.repeat(s, ndim)
    if s.size != ndim or not np.all(np.isfinite(s)) or np.any(s <= 0):
        raise ValueError(f"spacing must be {ndim} positive numbers (mm), got {list(s)}")
    return s


def dice(pred: np.ndarray, gt: np.ndarray) -> float:
    """Dice coefficient of two boolean (x, y, z) masks; 1.0 when both are empty."""
    a, b = _pair(pred, gt)
    sa, sb = int(np.count_nonzero(a)), int(np.count_nonzero(b))
    if sa + sb == 0:
        return 1.0
    return 2.0 * int(np.count_nonzero(a & b)) / (sa + sb)


def iou(pred: np.ndarray, gt: np.ndarray) -> float:
    """Intersection over union (Jaccard) of two boolean (x, y, z) masks; 1.0 when both are empty."""
    a, b = _pair(pred, gt)
    union = int(np.count_nonzero(a | b))
    if union == 0:
        return 1.0
    return int(np.count_nonzero(a & b)) / union


def surface(mask: np.ndarray) -> np.ndarray:
    """Boundary voxels of a boolean mask (same shape, bool): in the mask with a 6-neighbour outside it.

    The image border counts as outside.
    """
    from scipy import ndimage

    m = np.asarray(mask).astype(bool, copy=False)
    if not m.any():
        return np.zeros(m.shape, dtype=bool)
    structure = ndimage.generate_binary_structure(m.ndim, 1)
    return m & ~ndimage.binary_erosion(m, structure=structure, border_value=0)


def _union_box(a: np.ndarray, b: np.ndarray, margin: int = 1) -> tuple[slice, ...]:
    union = a | b
    box = []
    for axis in range(union.ndim):
        other = tuple(i for i in range(union.ndim) if i != axis)
        hit = np.flatnonzero(union.any(axis=other))
        lo = max(int(hit[0]) - margin, 0)
        hi = min(int(hit[-1]) + margin + 1, union.shape[axis])
        box.append(slice(lo, hi))
    return tuple(box)


def _distance_to(target_surface: np.ndarray, spacing: np.ndarray) -> np.ndarray:
    """Distance in mm from every voxel to the nearest True voxel of `target_surface` (float64)."""
    try:
        import edt as edt_pkg

        field = edt_pkg.edt(
            np.ascontiguousarray(~target_surface), anisotropy=tuple(float(s) for s in spacing), black_border=False
        )
        return np.asarray(field, dtype=np.float64)
    except ImportError:  # pragma: no cover - edt is a declared dependency
        from scipy import ndimage

        return ndimage.distance_transform_edt(~target_surface, sampling=spacing)


def surface_distances(
    pred: np.ndarray, gt: np.ndarray, spacing: Sequence[float] | np.ndarray | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """One-way surface distances in mm: (pred surface -> gt surface, gt surface -> pred surface).

    Args:
        pred, gt: boolean (x, y, z) masks on the same grid, both non-empty.
        spacing: voxel size (3,) in mm along x, y, z (None: 1 mm).
    Returns: two float64 vectors, one distance per surface voxel of pred, resp. of gt.
    Raises: ValueError when a mask is empty (use the metric functions, which apply the empty rules).
    """
    a, b = _pair(pred, gt)
    s = _spacing(spacing, a.ndim)
    if not a.any() or not b.any():
        raise ValueError("surface distances need two non-empty masks")
    box = _union_box(a, b, margin=1)
    # Crop keeps a one-voxel margin unless the mask reaches the image border, where the border itself
    # is the crop edge: erosion's border_value=0 then treats it as outside, exactly as on the full grid.
    sa, sb = surface(a[box]), surface(b[box])
    d_ab = _distance_to(sb, s)[sa]
    d_ba = _distance_to(sa, s)[sb]
    return d_ab, d_ba


def hd95(pred: np.ndarray, gt: np.ndarray, spacing: Sequence[float] | np.ndarray | None = None) -> float:
    """95th-percentile Hausdorff distance in mm, MONAI's symmetric definition.

    max(P95 of pred-surface→gt-surface distances, P95 of gt-surface→pred-surface distances), percentiles by
    `numpy.percentile` (linear interpolation). Both empty -> 0.0; exactly one empty -> inf.

    Args:
        pred, gt: boolean (x, y, z) masks on one grid.
        spacing: voxel size (3,) in mm along x, y, z.
    """
    a, b = _pair(pred, gt)
    ea, eb = not a.any(), not b.any()
    if ea and eb:
        return 0.0
    if ea or eb:
        return float("inf")
    d_ab, d_ba = surface_distances(a, b, spacing)
    return float(max(np.percentile(d_ab, 95), np.percentile(d_ba, 95)))


def nsd(
    pred: np.ndarray, gt: np.ndarray, spacing: Sequence[float] | np.ndarray | None = None, tolerance_mm: float = 2.0
) -> float:
    """Normalised surface Dice at `tolerance_mm` (distances ≤ tolerance count as correct), in [0, 1].

    (|S_pred within tol of S_gt| + |S_gt within tol of S_pred|) / (|S_pred| + |S_gt|), surfaces in voxels.
    Both empty -> 1.0; exactly one empty -> 0.0.

    Args:
        pred, gt: boolean (x, y, z) masks on one grid.
        spacing: voxel size (3,) in mm along x, y, z.
        tolerance_mm: accepted boundary deviation in mm (2 mm in the CVPR 2025 challenge).
    """
    if not np.isfinite(tolerance_mm) or tolerance_mm < 0:
        raise ValueError(f"tolerance_mm must be a finite number >= 0, got {tolerance_mm}")
    a, b = _pair(pred, gt)
    ea, eb = not a.any(), not b.any()
    if ea and eb:
        return 1.0
    if ea or eb:
        return 0.0
    d_ab, d_ba = surface_distances(a, b, spacing)
    good = int(np.count_nonzero(d_ab <= tolerance_mm)) + int(np.count_nonzero(d_ba <= tolerance_mm))
    return good / (d_ab.size + d_ba.size)


def all_metrics(
    pred: np.ndarray, gt: np.ndarray, spacing: Sequence[float] | np.ndarray | None = None, tolerance_mm: float = 2.0
) -> dict[str, float]:
    """{"dice", "iou", "nsd", "hd95"} in one pass (surface distances computed once)."""
    a, b = _pair(pred, gt)
    out = {"dice": dice(a, b), "iou": iou(a, b)}
    ea, eb = not a.any(), not b.any()
    if ea or eb:
        out["nsd"] = 1.0 if ea and eb else 0.0
        out["hd95"] = 0.0 if ea and eb else float("inf")
        return out
    d_ab, d_ba = surface_distances(a, b, spacing)
    good = int(np.count_nonzero(d_ab <= tolerance_mm)) + int(np.count_nonzero(d_ba <= tolerance_mm))
    out["nsd"] = good / (d_ab.size + d_ba.size)
    out["hd95"] = float(max(np.percentile(d_ab, 95), np.percentile(d_ba, 95)))
    return out
