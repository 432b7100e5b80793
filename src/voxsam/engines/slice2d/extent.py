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

#: (axis, index, (N, 2) display clicks) -> (H, W) bool display mask of that slice (the engine's click rule) and the
#: display box (row0, col0, row1, col1) that framed it, or None
ClickSegmenter = Callable[[int, int, np.ndarray], "tuple[np.ndarray, np.ndarray | None]"]
#: (axis, index, (N, 2) display clicks, display box) -> (H, W) bool display mask
BoxSegmenter = Callable[[int, int, np.ndarray, np.ndarray], np.ndarray]
#: how many times longer a box that cut the object lengthwise is made, in turn, before that side is left open
STRETCHES = (2.0, 4.0)


def deepest_point(plane: np.ndarray) -> tuple[int, int]:
    """The pixel of a 2D mask farthest from its outside (its centre, for convex and concave shapes alike)."""
    from scipy import ndimage

    depth = ndimage.distance_transform_edt(np.pad(plane, 1))[1:-1, 1:-1]
    flat = int(np.argmax(depth))
    return int(flat // plane.shape[1]), int(flat % plane.shape[1])


def cross_view_extent(
    prepared: PreparedVolume, axis: int, anchor: int, plane: np.ndarray, segment_click: ClickSegmenter,
    segment_box: BoxSegmenter | None = None, agreement: float = 0.5,
) -> tuple[int, int] | None:
    """The slices of `axis` the object covers in the two slices across it, or None when neither view holds it.

    Args:
        prepared: the volume.
        axis: the walk's slice axis; anchor: the first decided slice.
        plane: that slice's mask in volume order (the (X, Y, Z) array without `axis`), not empty.
        segment_click: segments one slice of another axis from one positive click (mask and framing box).
        segment_box: segments it from the click and a given box: where the click's box cut the object
            lengthwise, the box is made `STRETCHES` times longer that way, in turn, until the mask fits in it.
        agreement: a cross view counts only where it agrees with `plane` on the line both slices share: the
            object's width there, through the point, within this ratio of `plane`'s (a view that found another,
            smaller or larger thing says nothing about where this one ends).
    Returns:
        (first, last) slice indices along `axis`: the union, over the agreeing orthogonal slices through the
        mask's deepest point, of the connected part of their mask that holds that point. A side where that part
        still reaches its box (inside the slice) is open - the object may go on - and gives the volume's end.
    """
    u, v = deepest_point(plane)
    point = [u, v]
    point.insert(axis, anchor)
    spans = []
    for across in (a for a in range(3) if a != axis):
        view = prepared.view(across)
        click = np.array([view.point_to_display(np.array(point, dtype=np.float64), prepared.shape)])
        shown, box = segment_click(across, point[across], click)
        seen = _lengthwise(prepared, axis, across, anchor, point, plane, shown, box, agreement)
        lengthwise_dim = 0 if axis == view.plane_axes[1 if view.transpose else 0] else 1
        for stretch in STRETCHES if segment_box is not None else ():
            if seen is None or box is None or not (seen[2] or seen[3]):
                break
            centre, half = (box[lengthwise_dim] + box[lengthwise_dim + 2]) / 2, (box[lengthwise_dim + 2] - box[lengthwise_dim]) / 2
            longer = box.copy()
            longer[[lengthwise_dim, lengthwise_dim + 2]] = centre - stretch * half, centre + stretch * half
            assert segment_box is not None
            shown, box = segment_box(across, point[across], click, longer), longer
            seen = _lengthwise(prepared, axis, across, anchor, point, plane, shown, box, agreement)
        if seen is not None:
            spans.append((0 if seen[2] else seen[0], prepared.shape[axis] - 1 if seen[3] else seen[1]))
    if not spans:
        return None
    return min(s[0] for s in spans), max(s[1] for s in spans)


def _lengthwise(
    prepared: PreparedVolume, axis: int, across: int, anchor: int, point: list[int], plane: np.ndarray,
    shown: np.ndarray, box: np.ndarray | None, agreement: float,
) -> tuple[int, int, bool, bool] | None:
    """One cross view's (first, last) slice along `axis` of its part holding `point`, and whether its box cuts
    that part at the first / last end; None when no part holds the point or its width disagrees with `plane`."""
    from scipy import ndimage

    view = prepared.view(across)
    parts, _ = ndimage.label(view.from_display(shown))  # volume order, without `across`
    kept = [point[a] for a in range(3) if a != across]
    part = parts[kept[0], kept[1]]
    if part == 0:
        return None
    lengthwise = [a for a in range(3) if a != across].index(axis)
    component = parts == part
    shared = [a for a in range(3) if a not in (axis, across)][0]
    width_here = _run_through(np.take(component, anchor, axis=lengthwise), point[shared])
    width_start = _run_through(np.take(plane, point[across], axis=[a for a in range(3) if a != axis].index(across)), point[shared])
    if not agreement * width_start <= width_here <= width_start / agreement:
        return None
    covered = np.flatnonzero(component.any(axis=1 - lengthwise))
    first, last = int(covered[0]), int(covered[-1])
    if box is None:
        return first, last, False, False
    framed = np.zeros(shown.shape, dtype=bool)
    r0, c0 = np.clip(np.floor(box[:2]).astype(int), 0, None)
    r1, c1 = np.ceil(box[2:]).astype(int)
    framed[r0 : r1 + 1, c0 : c1 + 1] = True
    frame = np.flatnonzero(view.from_display(framed).any(axis=1 - lengthwise))
    if frame.size == 0:
        return first, last, False, False
    return first, last, bool(frame[0] > 0 and first <= frame[0] + 1), bool(frame[-1] < prepared.shape[axis] - 1 and last >= frame[-1] - 1)


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
