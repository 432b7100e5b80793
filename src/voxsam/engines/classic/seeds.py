"""Seeds on the working grid: balls around clicks, the box, and the ROI faces (with the image-border rule).

Labels: 0 free, 1 foreground, 2 background. See step 3 of the method in `voxsam.engines.classic.engine`.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass

import numpy as np

from voxsam.engines.classic.grid import Roi
from voxsam.prompts import Box

log = logging.getLogger(__name__)

FREE, FOREGROUND, BACKGROUND = 0, 1, 2


@dataclass
class Seeds:
    """What the solvers and the clean-up need from the prompts.

    Attributes:
        labels: int8 working-grid map (0 free, 1 foreground, 2 background).
        fg_work: (N, 3) int working-grid voxels of the positive clicks (or of the box centre).
        fg_median, fg_sd: the target's intensity model (median, robust SD of the normalised intensities
            around the positive seeds).
    """

    labels: np.ndarray
    fg_work: np.ndarray
    fg_median: float
    fg_sd: float


def box_bounds(box: Box) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(lo (3,), hi (3,), flat (3,) bool): a box's corners, and the axes along which it is flat (< 1 voxel)."""
    blo, bhi = np.asarray(box.lo, dtype=np.float64), np.asarray(box.hi, dtype=np.float64)
    return blo, bhi, (bhi - blo) < 1.0


def flat_axis(box: Box, flat: np.ndarray) -> int | None:
    """The slice axis of a 2D box: the axis of its slice (a slice box), else its first flat axis; None in 3D."""
    if box.slice is not None:
        return int(box.slice.axis)
    return int(np.argmax(flat)) if flat.any() else None


def positive_points(pos: np.ndarray, box: Box | None) -> np.ndarray:
    """(N, 3) volume coordinates of the foreground seeds: the positive clicks, or the box centre without any."""
    if len(pos) == 0 and box is not None:
        blo, bhi, _ = box_bounds(box)
        return ((blo + bhi) / 2.0)[None, :]
    return pos


def balls(shape: tuple[int, ...], centres: np.ndarray, radius_mm: float, spacing: np.ndarray) -> np.ndarray:
    """Bool (X, Y, Z) union of ellipsoidal balls of radius_mm around integer voxel centres (N, 3)."""
    out = np.zeros(shape, dtype=bool)
    if len(centres) == 0:
        return out
    r = np.floor(radius_mm / spacing).astype(int)
    offs = np.stack(np.meshgrid(*[np.arange(-ri, ri + 1) for ri in r], indexing="ij"), axis=-1).reshape(-1, 3)
    offs = offs[((offs * spacing) ** 2).sum(axis=1) <= radius_mm**2 + 1e-9]
    pts = (centres[:, None, :] + offs[None, :, :]).reshape(-1, 3)
    pts = pts[np.all((pts >= 0) & (pts < np.asarray(shape)), axis=1)]
    out[tuple(pts.T)] = True
    for c in centres:
        out[tuple(c)] = True
    return out


def box_inside(roi: Roi, blo: np.ndarray, bhi: np.ndarray, work_shape: tuple[int, ...]) -> np.ndarray:
    """Bool working-grid array: True where the voxel centre lies in the box (half a voxel of tolerance)."""
    lo_w = roi.to_work((blo - 0.5)[None])[0]
    hi_w = roi.to_work((bhi + 0.5)[None])[0]
    ok = [(np.arange(work_shape[a]) >= lo_w[a] - 1e-6) & (np.arange(work_shape[a]) <= hi_w[a] + 1e-6) for a in range(3)]
    return ok[0][:, None, None] & ok[1][None, :, None] & ok[2][None, None, :]


def mark_faces(seeds: np.ndarray, which: list[bool], value: int, keep: int | None) -> None:
    """Set the 6 faces (x-lo, x-hi, y-lo, y-hi, z-lo, z-hi) selected by `which` to `value`, sparing `keep`."""
    for f, on in enumerate(which):
        if not on:
            continue
        axis, side = divmod(f, 2)
        sl = [slice(None)] * 3
        sl[axis] = slice(0, 1) if side == 0 else slice(seeds.shape[axis] - 1, seeds.shape[axis])
        face = seeds[tuple(sl)]
        if keep is None:
            face[...] = value
        else:
            face[face != keep] = value


def _box_seeds(seeds: np.ndarray, roi: Roi, box: Box) -> None:
    """Background outside the box: the whole working grid for a 3D box, its slice's plane for a 2D box."""
    blo, bhi, flat = box_bounds(box)
    inside = box_inside(roi, blo, bhi, seeds.shape)
    axis = flat_axis(box, flat)
    if axis is None:
        seeds[~inside] = BACKGROUND
        return
    k = int(np.clip(np.rint(roi.to_work(blo[None])[0][axis]), 0, seeds.shape[axis] - 1))
    plane = [slice(None)] * 3
    plane[axis] = slice(k, k + 1)
    seeds[tuple(plane)][~inside[tuple(plane)]] = BACKGROUND


def _border_seeds(
    seeds: np.ndarray, norm: np.ndarray, at_border: list[bool], med: float, sd: float, contrast: float
) -> None:
    """Image-border ROI faces: background only where unlike the target (beyond `contrast` robust SDs, at least
    0.1 of the normalised range) and two voxels away from anything like it, so the partial-volume rim of a
    target cut by the border stays free."""
    from scipy import ndimage

    like = np.abs(norm - med) <= max(contrast * sd, 0.1)
    faces = np.zeros(norm.shape, dtype=bool)
    mark_faces(faces, at_border, value=True, keep=None)
    near_like = ndimage.binary_dilation(like, iterations=2, mask=None) if like.any() else like
    seeds[faces & ~near_like & (seeds == FREE)] = BACKGROUND


def build_seeds(
    norm: np.ndarray,
    roi: Roi,
    work_spacing: np.ndarray,
    shape: tuple[int, int, int],
    pos: np.ndarray,
    neg: np.ndarray,
    box: Box | None,
    radius_mm: float,
    border_contrast: float,
) -> Seeds:
    """Working-grid seeds of one prediction.

    Args:
        norm: the normalised working-grid image.
        roi: the ROI (its lo/hi on the volume grid tell which faces are image border).
        work_spacing: (3,) working-grid voxel size, mm.
        shape: the volume's shape.
        pos, neg: (N, 3) volume coordinates of the positive and negative clicks.
        box: the box prompt or None.
        radius_mm: seed ball radius (`seed_radius_mm`).
        border_contrast: the image-border rule's threshold in robust SDs.
    """
    seeds = np.zeros(norm.shape, dtype=np.int8)
    wshape = np.asarray(norm.shape)
    if box is not None:
        _box_seeds(seeds, roi, box)
    fg_work = np.rint(roi.to_work(positive_points(pos, box))).astype(int).clip(0, wshape - 1)
    ng_work = np.rint(roi.to_work(neg)).astype(int).clip(0, wshape - 1) if len(neg) else np.zeros((0, 3), int)
    in_roi = np.all((neg >= roi.lo - 0.5) & (neg <= roi.hi - 0.5), axis=1) if len(neg) else np.zeros(0, bool)
    ng_work = ng_work[in_roi]
    fg_ball = balls(norm.shape, fg_work, radius_mm, work_spacing)
    ng_ball = balls(norm.shape, ng_work, radius_mm, work_spacing)
    both = fg_ball & ng_ball
    seeds[fg_ball & ~both] = FOREGROUND
    seeds[ng_ball & ~both] = BACKGROUND
    # the click voxels themselves always hold their label (later clicks win on the same voxel)
    for p in fg_work:
        seeds[tuple(p)] = FOREGROUND
    for p in ng_work:
        seeds[tuple(p)] = BACKGROUND
    # ROI faces: inside the image -> background; on the image border -> background only where unlike the target
    at_border = [roi.lo[a] == 0 if side == 0 else roi.hi[a] == shape[a] for a in range(3) for side in (0, 1)]
    mark_faces(seeds, [not b for b in at_border], value=BACKGROUND, keep=FOREGROUND)
    sample = norm[balls(norm.shape, fg_work, max(radius_mm, 3.0), work_spacing)]
    med = float(np.median(sample))
    sd = max(1.4826 * float(np.median(np.abs(sample - med))), 0.02)
    if any(at_border):
        _border_seeds(seeds, norm, at_border, med, sd, border_contrast)
    if not (seeds == BACKGROUND).any():
        # nothing looks unlike the target on the image border and no other background: use the whole border
        log.info("classic: no background seeds from the prompts; using the whole ROI border")
        mark_faces(seeds, [True] * 6, value=BACKGROUND, keep=FOREGROUND)
    return Seeds(seeds, fg_work, med, sd)
