"""Where a new object ends along the walk's axis, read off the two slices across it (cross views).

A slice-by-slice walk cannot see an organ end: past it, the box of the last mask still frames some
tissue, and the model segments that with as much confidence (predicted IoU, stability, intensities) as
it had inside. The two orthogonal slices through the first slice's mask show the object lengthwise, so
the walk can be told where it stops. On head-and-neck CT, with 2.5–5 mm slices that an organ spans 5–10
of, this kept walks from running 5–10 slices past organ ends (docs/benchmarks.md, "Cross views").
"""
from __future__ import annotations

from collections.abc import Callable

import numpy as np

from voxsam.engines.slice2d.slices import PreparedVolume

#: (axis, index, (N, 2) display clicks) -> (H, W) bool display mask of that slice (the engine's click rule)
ClickSegmenter = Callable[[int, int, np.ndarray], np.ndarray]


def deepest_point(plane: np.ndarray) -> tuple[int, int]:
    """The pixel of a 2D mask farthest from its outside (its centre, for convex and concave shapes alike)."""
    from scipy import ndimage

    depth = ndimage.distance_transform_edt(np.pad(plane, 1))[1:-1, 1:-1]
    flat = int(np.argmax(depth))
    return int(flat // plane.shape[1]), int(flat % plane.shape[1])


def cross_view_extent(
    prepared: PreparedVolume, axis: int, anchor: int, plane: np.ndarray, segment_click: ClickSegmenter,
    agreement: float = 0.5,
) -> tuple[int, int] | None:
    """The slices of `axis` the object covers in the two slices across it, or None when neither view holds it.

    Args:
        prepared: the volume.
        axis: the walk's slice axis; anchor: the first decided slice.
        plane: that slice's mask in volume order (the (X, Y, Z) array without `axis`), not empty.
        segment_click: segments one slice of another axis from one positive click.
        agreement: a cross view counts only where it agrees with `plane` on the line both slices share: the
            object's width there, through the point, within this ratio of `plane`'s (a view that found another,
            smaller or larger thing says nothing about where this one ends).
    Returns:
        (first, last) slice indices along `axis`: the union, over the agreeing orthogonal slices through the
        mask's deepest point, of the connected part of their mask that holds that point.
    """
    from scipy import ndimage

    u, v = deepest_point(plane)
    point = [u, v]
    point.insert(axis, anchor)
    spans = []
    for across in (a for a in range(3) if a != axis):
        view = prepared.view(across)
        click = np.array([view.point_to_display(np.array(point, dtype=np.float64), prepared.shape)])
        seen = view.from_display(segment_click(across, point[across], click))  # volume order, without `across`
        parts, _ = ndimage.label(seen)
        kept = [point[a] for a in range(3) if a != across]
        part = parts[kept[0], kept[1]]
        if part == 0:
            continue
        lengthwise = [a for a in range(3) if a != across].index(axis)
        component = parts == part
        shared = [a for a in range(3) if a not in (axis, across)][0]
        width_here = _run_through(np.take(component, anchor, axis=lengthwise), point[shared])
        width_start = _run_through(np.take(plane, point[across], axis=[a for a in range(3) if a != axis].index(across)), point[shared])
        if not agreement * width_start <= width_here <= width_start / agreement:
            continue
        covered = np.flatnonzero(component.any(axis=1 - lengthwise))
        spans.append((int(covered[0]), int(covered[-1])))
    if not spans:
        return None
    return min(s[0] for s in spans), max(s[1] for s in spans)


def _run_through(line: np.ndarray, at: int) -> int:
    """Length of the run of True in a 1D mask that holds index `at` (0 when `at` is False)."""
    if not line[at]:
        return 0
    off = np.flatnonzero(~line)
    before, after = off[off < at], off[off > at]
    return int((after[0] if after.size else line.size) - (before[-1] + 1 if before.size else 0))


def intensity_band(image: np.ndarray, mask: np.ndarray) -> tuple[float, float]:
    """The intensities of the prompted slice's object: its 5th-95th percentiles widened by half their spread."""
    pixels = image[mask]
    lo, hi = (float(v) for v in np.percentile(pixels, [5, 95]))
    pad = 0.5 * (hi - lo) + 1e-6 * max(abs(lo), abs(hi), 1.0)
    return lo - pad, hi + pad
