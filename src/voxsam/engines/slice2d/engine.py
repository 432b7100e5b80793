"""`slice2d` engine: RadSAM's way to a 3D mask with a 2D promptable model (LiteMedSAM).

Segmenting (no mask yet):
  0. The object's intensity window: `ct_window`, unless the prompted CT tissue is darker than it (lung): then
     the lung window whose mask the model rates best (`window.py`), kept for the object's later predictions.
  1. The prompted slice: the change's slice on the engine's axis (a 2D prompt's own slice; a 3D click's
     slice along the axis). Its points, its latest box and its painted mask (a painted mask is taken as
     is and locked) give that slice's mask.
  2. Propagation, both directions at once (the viewer sees the object grow both ways): each decided slice
     prompts the next with its bounding box (of its parts of at least `box_min_part` of the largest: stray
     pixels do not widen it; grown by `box_expand_px`), its binary mask, or both (`propagation_prompt`), plus
     any clicks the user put on that slice. Painted slices are kept as given
     and prompt their neighbours.
  3. A direction ends where the object ends: an empty mask, fewer than `min_area_px` pixels, a predicted
     IoU under `stop_iou`, a mask stability under `min_stability` (SAM's stability score: the model is
     unsure where the edge is; not judged on the first `stability_grace` slices), an area jump over `max_area_ratio` or too few pixels in the prompted
     slice's intensity band (`intensity_agreement`) (a leak); and never beyond the object's extent in the two
     slices across the first mask (`cross_views`, `extent.py`; past it only while the model is sure, if
     `past_views_stability` is set: off by default, it measured no gain).
Editing (the object already has a mask, from this or any engine, or a file through `Session.set_mask`):
  the corrected slice is re-predicted (a painted mask replaces it; clicks are added to the old slice's box
  or mask), then each direction re-propagates from it and stops after two consecutive slices whose new
  mask agrees with the old one (Dice >= `edit_agreement`) or where the object ends; slices beyond keep
  their old mask. User-painted slices stay locked.
Each slice is encoded once (cached per volume, memory-bounded) and only when propagation visits it. On thin
slices the walk decides every n-th slice (`slice_step`, default as many as fit in `step_mm`) and interpolates the
shapes between; a jump that fails a stopping rule is retried slice by slice, so an object ends where it would.
With `step_max_mm` the stride doubles (up to that many mm) while each jump's mask agrees with the one before
(Dice >= `step_grow_dice`: a long steady object needs fewer encodings), or, with `step_grow_steady` on slices
thin enough that the base stride jumps, while the shape changes steadily (the middle of the last two decided
jumps comes back from interpolating across both), and halves where neither holds; a failed jump of such a walk
is retried at half the stride, down to single slices (a bisection of where the object ends).
"""
from __future__ import annotations

import logging
from collections.abc import Generator
from typing import Any

import numpy as np

from voxsam.engines.base import Capabilities, Engine, Prediction, ProgressFn, SliceAxisRule, acquisition_axis
from voxsam.engines.options import validate_options
from voxsam.engines.slice2d.extent import cross_view_extent, intensity_band
from voxsam.engines.slice2d.interpolation import interpolate_masks
from voxsam.engines.slice2d.loading import BUNDLED_DECODER, load_decoder, load_model
from voxsam.engines.slice2d.options import Slice2DOptions
from voxsam.engines.slice2d.slices import (PreparedVolume, SliceModel, SliceResult, bbox_rc, dice2d, grow_box_to, main_parts_box,
                                           prepare_volume, reaches_border)
from voxsam.engines.slice2d.steps import Chain, anchor_slice, check_axis, interleave, next_visit, slice_prompts, visit_always
from voxsam.engines.slice2d.window import candidate_windows, prompted_intensity
from voxsam.errors import PromptError
from voxsam.io.volume import Volume
from voxsam.prompts import Box, Change, Point, PromptKind, PromptSet, SliceMask

log = logging.getLogger(__name__)

__all__ = ["BUNDLED_DECODER", "Slice2DEngine", "load_decoder"]


class Slice2DEngine(Engine):
    """A 2D SAM propagated slice by slice (RadSAM). Options: `Slice2DOptions`; `model` overrides the weights."""

    name = "slice2d"
    capabilities = Capabilities(
        frozenset({PromptKind.POINT, PromptKind.SLICE_POINT, PromptKind.SLICE_BOX, PromptKind.SLICE_MASK}),
        propagates=True,
        slice_axis=SliceAxisRule.PROMPTED,
        edits_masks=True,
    )

    def __init__(self, options: Slice2DOptions | None = None, model: Any = None, **overrides: Any) -> None:
        if options is None:
            options = validate_options("slice2d", Slice2DOptions, overrides)  # type: ignore[assignment]
        elif overrides:
            options = options.model_copy(update=dict(validate_options("slice2d", Slice2DOptions, overrides).model_dump(exclude_unset=True)))
        assert options is not None
        self.options = options
        if model is None:
            model = load_model(options)
        self.slices = SliceModel(model, options.precision)

    # ------------------------------------------------------------------ Engine API
    def prepare(self, volume: Volume, progress: ProgressFn | None = None) -> PreparedVolume:
        prepared = prepare_volume(volume, self.options.cache_mb, self.options.ct_window)
        if progress:
            progress(1.0, "intensity mapping ready; slices are encoded as propagation reaches them")
        return prepared

    def propagation_axis(self, prepared: Any, prompts: PromptSet, change: Change | None = None) -> int:
        if self.options.axis is not None:
            return int(self.options.axis)
        every: list[Point | Box | SliceMask] = [*prompts.slice_masks, *prompts.boxes, *prompts.points]
        for prompt in every:
            ref = prompt.slice
            if ref is not None:
                return ref.axis
        return acquisition_axis(prepared.affine)

    def propagate(
        self, prepared: Any, prompts: PromptSet, previous: Prediction | None, change: Change | None = None
    ) -> Generator[tuple[int, np.ndarray], None, Prediction]:
        axis = self.propagation_axis(prepared, prompts, change)
        check_axis(prompts, axis, prepared.shape)
        view = prepared.view(axis)
        old = previous.mask if previous is not None and previous.mask.any() else None
        anchor = anchor_slice(prompts, change, axis)
        mask = old.copy() if old is not None else np.zeros(prepared.shape, dtype=bool)
        locked = {m.index: view.to_display(m.mask) for m in prompts.slice_masks}
        old_slice = None if old is None else view.take(old, anchor)
        prepared, window, start = self._windowed_anchor(prepared, axis, anchor, prompts, locked, old_slice, previous)
        _write(mask, axis, anchor, view.from_display(start))
        lo = hi = anchor  # the slices written: outside them the mask is the previous one
        yield anchor, view.from_display(start)
        if start.any():
            band = intensity_band(prepared.display(axis, anchor), start)
            context = self._chain_context(prepared, axis, anchor, start, locked, prompts, old)
            bound = self._walk_bound(prepared, axis, anchor, start, prompts, locked, old)
            chains = [self._chain(prepared, axis, anchor, start, step, prompts, locked, old, band, context, bound) for step in (-1, 1)]
            for k, m in interleave(chains):
                plane = view.from_display(m)
                _write(mask, axis, k, plane)
                lo, hi = min(lo, k), max(hi, k)
                yield k, plane
        region: list[slice] = [slice(0, n) for n in prepared.shape]
        region[axis] = slice(lo, hi + 1)
        return Prediction(mask, state={"axis": axis, "window": window}, region=(region[0], region[1], region[2]))

    # ------------------------------------------------------------------ slices
    def _windowed_anchor(
        self, prepared: PreparedVolume, axis: int, k: int, prompts: PromptSet, locked: dict[int, np.ndarray],
        old_slice: np.ndarray | None, previous: Prediction | None,
    ) -> tuple[PreparedVolume, tuple[float, float], np.ndarray]:
        """The object's intensity window (kept from its last prediction, else chosen: `window.py`), the volume
        under it and the prompted slice's mask."""
        kept = previous.state.get("window") if previous is not None and isinstance(previous.state, dict) else None
        tried = [] if kept is not None or not self.options.lung_windows else candidate_windows(
            prepared.is_ct, (prepared.lo, prepared.hi),
            prompted_intensity(prepared.display(axis, k), *slice_prompts(prepared, axis, k, prompts), locked.get(k, old_slice)))
        if not tried:
            window = tuple(kept) if kept is not None else (prepared.lo, prepared.hi)
            prepared = prepared.windowed(*window)
            return prepared, (prepared.lo, prepared.hi), self._predict_anchor(prepared, axis, k, prompts, locked, old_slice)[0]
        scored = []
        for w in tried:
            under = prepared.windowed(*w)
            start, rating = self._predict_anchor(under, axis, k, prompts, locked, old_slice)
            if k in locked:  # painted: how well the model redraws it from its box under this window
                box = bbox_rc(start)
                rating = 0.0 if box is None else dice2d(self.slices.segment(under, axis, k, None, None, box)[0], start)
            scored.append((rating, w, start))
        _, window, start = max(scored, key=lambda s: s[0])
        return prepared.windowed(*window), window, start

    def _predict_anchor(
        self, prepared: PreparedVolume, axis: int, k: int, prompts: PromptSet, locked: dict[int, np.ndarray], old_slice: np.ndarray | None
    ) -> tuple[np.ndarray, float]:
        """The prompted slice's mask and the model's predicted IoU for it (1 for a painted slice)."""
        if k in locked:
            return locked[k], 1.0
        points, labels, box = slice_prompts(prepared, axis, k, prompts)
        mask_prompt = None
        if box is None and old_slice is not None and old_slice.any():
            # a click correcting an existing slice keeps its extent (grown to reach the clicks) as context
            box = grow_box_to(bbox_rc(old_slice), points, labels)
            if self.options.propagation_prompt != "box":
                mask_prompt = old_slice
        if box is None and points is None:
            raise PromptError(f"slice {k} of axis {axis} has no prompt to start from")
        if box is None and labels is not None and not labels.any():
            raise PromptError("negative clicks alone cannot start an object; add a positive click or a box")
        if box is None and points is not None and labels is not None:
            out, _, iou = self._from_clicks(prepared, axis, k, points, labels)
            return out, iou
        return self.slices.segment(prepared, axis, k, points, labels, box, mask_prompt)

    def _from_clicks(
        self, prepared: PreparedVolume, axis: int, k: int, points: np.ndarray, labels: np.ndarray
    ) -> tuple[np.ndarray, np.ndarray | None, float]:
        """Clicks alone: the clicks, and the clicks with boxes of `click_box_mm` sizes around the positive ones
        (LiteMedSAM as released answers boxes far better than lone clicks). Of the masks holding every positive
        click and no negative one, the best predicted IoU wins; if its box cut the object (the mask reaches the
        box's border: slice2d's IoU head still rates such masks well), larger boxes (`click_box_mm` and
        `click_grow_mm`) are tried in turn and the first whose mask holds the clicks and is not cut replaces
        it when its predicted IoU is at most `click_grow_iou` lower. Returns the mask, the box it came from and
        its predicted IoU."""
        o = self.options
        spacing = np.asarray(prepared.view(axis).spacing_rc)
        centre = points[labels == 1].mean(axis=0)

        def candidate(size_mm: float | None) -> tuple[np.ndarray | None, np.ndarray, float, bool]:
            box = None if size_mm is None else grow_box_to(np.concatenate([centre - size_mm / 2 / spacing, centre + size_mm / 2 / spacing]), points, labels)
            out, iou = self.slices.segment(prepared, axis, k, points, labels, box)
            rc = np.clip(np.round(points).astype(int), 0, np.array(out.shape) - 1)
            return box, out, iou, bool(np.all(out[rc[:, 0], rc[:, 1]] == (labels == 1)))

        sizes: list[float | None] = [None, *sorted(o.click_box_mm)]
        held = [(size, *c[:3]) for size in sizes for c in [candidate(size)] if c[3]]
        if not held:
            return np.zeros(prepared.view(axis).display_shape(prepared.shape), dtype=bool), None, 0.0
        size, box, best, best_iou = max(held, key=lambda c: c[3])
        if o.click_grow_iou > 0 and size is not None and box is not None and reaches_border(best, box):
            for larger in sorted({v for v in (*o.click_box_mm, *o.click_grow_mm) if v > size}):
                grown, out, iou, holds = candidate(larger)  # decoded again if also in click_box_mm: ~35 ms
                if holds and grown is not None and iou >= best_iou - o.click_grow_iou and not reaches_border(out, grown):
                    return out, grown, iou
        return best, box, best_iou

    def _chain(
        self,
        prepared: PreparedVolume,
        axis: int,
        start: int,
        first: np.ndarray,
        step: int,
        prompts: PromptSet,
        locked: dict[int, np.ndarray],
        old: np.ndarray | None,
        band: tuple[float, float],
        context: Any = None,
        bound: tuple[int, int] | None = None,
    ) -> Chain:
        """Slices start+step, start+2·step, ... each prompted by the one before, until the object ends
        (or, when editing, until two consecutive slices agree with the old mask).

        Segmenting with `slice_step` n > 1 (edits always walk every slice: they stay local and reuse the
        cached neighbours), the walk decides every n-th slice (and every locked or prompted one) and
        interpolates the shapes between; where a jump fails a stopping rule, it goes back to single slices
        so the object ends where it would have ended. With `step_max_mm` the stride grows along a steady shape
        (doubling while consecutive decided masks keep Dice >= `step_grow_dice` or, with `step_grow_steady`,
        while interpolation across the last two jumps gives back the mask between them; halving otherwise; a
        failed jump halves it, down to single slices). A walk never decides a slice outside `bound`."""
        o = self.options
        view = prepared.view(axis)
        stops = visit_always(prompts, locked, axis)
        stride = 1 if old is not None else self.slice_step(prepared, axis)  # an edit stays local: every slice
        base, top = stride, stride if old is not None else self.max_slice_step(prepared, axis, stride)
        bisect = top > base
        # thin slices only (the walk already jumps there): on thicker ones, where it decides every slice,
        # longer jumps over changing shapes cost Dice on CT (docs/benchmarks.md)
        steady_rule = o.step_grow_steady and bisect and base > 1
        prev, agreeing, here, decided, past = first, 0, start, 0, False
        before: tuple[int, np.ndarray] | None = None  # the decided slice before `here` (the steady-shape rule)
        while 0 <= here + step < prepared.shape[axis]:
            k = next_visit(here, step, stride, prepared.shape[axis], stops)
            if bound is not None and not past:
                edge = bound[1] if step > 0 else bound[0]
                if (edge - here) * step <= 0:
                    if o.past_views_stability <= 0:
                        return
                    past, stride, k = True, 1, here + step  # on only while the model is sure (past_views_*)
                    base = top = 1
                else:
                    k = min(k, edge) if step > 0 else max(k, edge)
            if k in locked:
                current = locked[k]
            else:
                points, labels, user_box = slice_prompts(prepared, axis, k, prompts)
                box = user_box if user_box is not None or o.propagation_prompt == "mask" else main_parts_box(prev, o.box_min_part)
                if user_box is None and box is not None and steady_rule and before is not None and abs(k - here) > 1:
                    box = self._box_ahead(box, before, here, k)
                mask_prompt = prev if o.propagation_prompt != "box" else None
                expand = 0.0 if user_box is not None else o.box_expand_px
                result = self._segment_next(context, prepared, axis, k, points, labels, box, mask_prompt, expand)
                current = result.mask
                area = int(current.sum())
                prompted = user_box is not None or (labels is not None and bool(labels.any()))
                leak = area > o.max_area_ratio * max(int(prev.sum()), 64)
                if area and not leak and o.intensity_agreement > 0:
                    pixels = prepared.display(axis, k)[current]
                    leak = float(np.mean((pixels >= band[0]) & (pixels <= band[1]))) < o.intensity_agreement
                judged = o.min_stability > 0 and decided >= o.stability_grace
                unsure = result.iou < o.stop_iou or (judged and result.stability < o.min_stability)
                unsure = unsure or (past and (result.stability < o.past_views_stability or result.iou < o.past_views_iou))
                if not prompted and (area < max(1, o.min_area_px) or unsure or leak):
                    if abs(k - here) > 1:
                        # the object may end between: the stride halves (no more growth); a walk that may
                        # grow bisects down to single slices, a fixed one walks on slice by slice from its base
                        stride = top = max(1, stride // 2) if bisect or stride > base else 1
                        base = min(base, stride)
                        continue
                    return
                self._accept(context, k, result)
            decided += 1
            gap = abs(k - here)
            if top > base and gap == stride:  # a full jump: the next one grows while the shape holds still
                steady = dice2d(prev, current) >= o.step_grow_dice or (steady_rule and self._interpolates(before, here, prev, k, current, view.spacing_rc))
                stride = min(top, 2 * stride) if steady else max(base, stride // 2)
            if gap > 1:
                between = interpolate_masks(prev, current, [i / gap for i in range(1, gap)], view.spacing_rc)
                for i, plane in enumerate(between, start=1):
                    yield here + i * step, plane
            yield k, current
            if old is not None:
                agreeing = agreeing + 1 if dice2d(current, view.take(old, k)) >= o.edit_agreement else 0
                if agreeing >= 2:
                    return
            before, prev, here = (here, prev), current, k

    def _interpolates(
        self, before: tuple[int, np.ndarray] | None, here: int, prev: np.ndarray, k: int, current: np.ndarray,
        spacing: tuple[float, float],
    ) -> bool:
        """`step_grow_steady`: does the shape change steadily over the last two jumps, i.e. does the middle
        decided mask (`prev`, slice `here`) come back when interpolated from its neighbours (the slice `before`
        and slice `k`'s `current`) with Dice >= `step_grow_dice`? Then a jump as long as both interpolates well."""
        if before is None or not before[1].any() or not current.any():
            return False
        back, ahead = abs(here - before[0]), abs(k - here)
        (middle,) = interpolate_masks(before[1], current, [back / (back + ahead)], spacing)
        return dice2d(middle, prev) >= self.options.step_grow_dice

    def _box_ahead(self, box: np.ndarray, before: tuple[int, np.ndarray], here: int, k: int) -> np.ndarray:
        """`step_grow_steady`: the box (row0, col0, row1, col1) prompting slice k from slice `here`, widened
        where the object widened between the slice `before` and `here`, at the same rate per slice over the
        jump: a long jump along a widening object would otherwise cut its mask at the last slice's box."""
        back = main_parts_box(before[1], self.options.box_min_part)
        if back is None:
            return box
        ahead = box + (box - back) * (abs(k - here) / max(abs(here - before[0]), 1))
        grown = np.concatenate([np.minimum(box[:2], ahead[:2]), np.maximum(box[2:], ahead[2:])])
        return np.clip(grown, 0, np.array(before[1].shape * 2, dtype=np.float64) - 1)

    def _walk_bound(
        self, prepared: PreparedVolume, axis: int, anchor: int, start: np.ndarray, prompts: PromptSet,
        locked: dict[int, np.ndarray], old: np.ndarray | None,
    ) -> tuple[int, int] | None:
        """A new object's last slices each way (`cross_views`): its extent in the two slices across the first
        mask, `cross_view_margin` slices wider, and never short of a prompted or painted slice; None to walk on
        until the stopping rules end it (edits, or the option off, or neither view holding the object)."""
        if not self.options.cross_views or old is not None:
            return None
        span = self._cross_extent(prepared, axis, anchor, prepared.view(axis).from_display(start))
        if span is None:
            return None
        margin = self.options.cross_view_margin
        keep = visit_always(prompts, locked, axis) | {anchor}
        return min(span[0] - margin, *keep), max(span[1] + margin, *keep)

    def _cross_extent(self, prepared: PreparedVolume, axis: int, index: int, plane: np.ndarray) -> tuple[int, int] | None:
        """The object's extent along `axis` in the two slices across `plane` (slice `index`'s mask, array order)."""
        one = np.ones(1, dtype=np.int64)
        return cross_view_extent(prepared, axis, index, plane,
                                 lambda a, k, rc: self._from_clicks(prepared, a, k, rc, one)[:2],
                                 lambda a, k, rc, box: self.slices.segment(prepared, a, k, rc, one, box)[0])

    def slice_step(self, prepared: PreparedVolume, axis: int) -> int:
        """How many slices one propagation step advances on `axis`: `slice_step`, else as many as fit in `step_mm`."""
        if self.options.slice_step is not None:
            return int(self.options.slice_step)
        spacing = float(np.linalg.norm(np.asarray(prepared.affine, dtype=np.float64)[:3, axis]))
        return max(1, int(np.floor(self.options.step_mm / spacing + 1e-6)))

    def max_slice_step(self, prepared: PreparedVolume, axis: int, base: int) -> int:
        """The largest stride the walk may grow to (`step_max_mm`; never below `base`, at most 16 slices)."""
        if self.options.step_max_mm is None:
            return base
        spacing = float(np.linalg.norm(np.asarray(prepared.affine, dtype=np.float64)[:3, axis]))
        return max(base, min(16, int(np.floor(self.options.step_max_mm / spacing + 1e-6))))

    # ------------------------------------------------------------------ hooks (memory3d overrides them)
    def _chain_context(
        self, prepared: PreparedVolume, axis: int, anchor: int, start: np.ndarray, locked: dict[int, np.ndarray],
        prompts: PromptSet, old: np.ndarray | None,
    ) -> Any:
        """State shared by one propagation's chains (none here: each slice sees only its prompts)."""
        return None

    def _segment_next(
        self, context: Any, prepared: PreparedVolume, axis: int, k: int, points: np.ndarray | None, labels: np.ndarray | None,
        box: np.ndarray | None, mask_prompt: np.ndarray | None, expand: float,
    ) -> SliceResult:
        """One propagated slice: its mask, predicted IoU, logits (for the stability rule) and embedding."""
        return self.slices.segment_with(prepared, axis, k, points, labels, box, mask_prompt, expand)

    def _accept(self, context: Any, k: int, result: SliceResult) -> None:
        """A propagated slice passed the stopping rules."""


def _write(mask: np.ndarray, axis: int, k: int, plane: np.ndarray) -> None:
    index: list[Any] = [slice(None)] * 3
    index[axis] = k
    mask[tuple(index)] = plane
