"""`ClassicEngine` directly (no session): capabilities, 2D prompts, `Prediction.region`."""
from __future__ import annotations

import numpy as np
import pytest

from voxsam.engines.base import Prediction, SliceAxisRule, changed_region
from voxsam.engines.classic import ClassicEngine
from voxsam.prompts import Box, Point, PromptKind, PromptSet, SliceRef
from tests.engines.classic.helpers import two_blobs

METHODS = ["growcut", "random_walker"]


@pytest.fixture(scope="module")
def blobs():
    return two_blobs()


def test_capabilities():
    caps = ClassicEngine.capabilities
    assert caps.prompts == {PromptKind.POINT, PromptKind.BOX, PromptKind.SLICE_POINT, PromptKind.SLICE_BOX}
    assert not caps.propagates and caps.slice_axis is SliceAxisRule.NONE and not caps.edits_masks


def test_prepare_reports_progress(blobs):
    vol, _, _ = blobs
    calls = []
    ClassicEngine().prepare(vol, progress=lambda f, msg: calls.append(f))
    assert calls and calls[-1] == 1.0


@pytest.mark.parametrize("method", METHODS)
@pytest.mark.parametrize("axis", [0, 1, 2])
def test_slice_box_is_the_flat_box(blobs, method, axis):
    """A box drawn on a slice gives exactly the mask of the same flat 3D box (the 2D-box rule)."""
    vol, a, _ = blobs
    engine = ClassicEngine(method=method)
    prep = engine.prepare(vol)
    k = (15, 22, 15)[axis]
    lo, hi = [7.0, 14.0, 10.0], [23.0, 30.0, 20.0]
    lo[axis] = hi[axis] = float(k)
    flat = engine.predict(prep, PromptSet(boxes=(Box(tuple(lo), tuple(hi)),)), None)  # type: ignore[arg-type]
    sliced = Box(tuple(lo), tuple(hi), slice=SliceRef(axis, k))  # type: ignore[arg-type]
    assert sliced.kind is PromptKind.SLICE_BOX
    got = engine.predict(prep, PromptSet(boxes=(sliced,)), None)
    assert got.mask.any() and np.array_equal(got.mask, flat.mask)
    assert got.state == flat.state


@pytest.mark.parametrize("method", METHODS)
def test_slice_point_is_a_point(blobs, method):
    vol, _, _ = blobs
    engine = ClassicEngine(method=method)
    prep = engine.prepare(vol)
    clicks = PromptSet((Point((15.0, 22.0, 15.0)), Point((20.0, 22.0, 15.0), positive=False)))
    on_slice = PromptSet(
        (Point((15.0, 22.0, 15.0), slice=SliceRef(2, 15)), Point((20.0, 22.0, 15.0), False, SliceRef(2, 15)))
    )
    assert on_slice.kinds == {PromptKind.SLICE_POINT}
    assert np.array_equal(engine.predict(prep, clicks, None).mask, engine.predict(prep, on_slice, None).mask)


def test_the_most_recent_box_is_used(blobs):
    vol, _, _ = blobs
    engine = ClassicEngine()
    prep = engine.prepare(vol)
    first, last = Box((27.0, 14.0, 10.0), (43.0, 30.0, 20.0)), Box((7.0, 14.0, 10.0), (23.0, 30.0, 20.0))
    both = engine.predict(prep, PromptSet(boxes=(first, last)), None)
    assert np.array_equal(both.mask, engine.predict(prep, PromptSet(boxes=(last,)), None).mask)


def _roi_slices(prediction: Prediction) -> tuple[slice, ...]:
    lo, hi = prediction.state["roi"]
    return tuple(slice(a, b) for a, b in zip(lo, hi))


def _inside(inner, outer) -> bool:
    return all(o.start <= i.start and i.stop <= o.stop for i, o in zip(inner, outer))


@pytest.mark.parametrize("method", METHODS)
def test_region_bounds_every_change(blobs, method):
    """Outside `region` the new mask equals the previous one, along a sequence that moves, grows, shrinks
    and empties the ROI."""
    vol, _, _ = blobs
    engine = ClassicEngine(method=method, margin_mm=12.0)
    prep = engine.prepare(vol)
    big_box = Box((5.0, 10.0, 5.0), (45.0, 34.0, 25.0))
    small_box = Box((9.0, 16.0, 11.0), (21.0, 28.0, 19.0))
    steps = [
        PromptSet((Point((15.0, 22.0, 15.0)),)),
        PromptSet((Point((15.0, 22.0, 15.0)), Point((35.0, 22.0, 15.0)))),  # a far click: the ROI grows
        PromptSet((Point((35.0, 22.0, 15.0)),)),  # the ROI shrinks to the other blob
        PromptSet((Point((5.0, 5.0, 5.0), positive=False),)),  # only a negative click: empty
        PromptSet((Point((5.0, 5.0, 5.0), positive=False),)),  # empty again
        PromptSet(boxes=(big_box,)),
        PromptSet(boxes=(big_box, small_box)),  # a smaller box replaces the big one
    ]
    previous: Prediction | None = None
    for i, prompts in enumerate(steps):
        new = engine.predict(prep, prompts, previous)
        old_mask = previous.mask if previous is not None else np.zeros(vol.shape, bool)
        assert new.region is not None, i
        outside = np.ones(vol.shape, bool)
        outside[new.region] = False
        assert np.array_equal(new.mask[outside], old_mask[outside]), i
        diff = changed_region(old_mask, new.mask)
        assert diff is None or _inside(diff, new.region), i
        if new.state is not None:
            assert _inside(_roi_slices(new), new.region)
            if previous is None:
                assert new.region == _roi_slices(new)
            elif previous.state is not None:
                assert _inside(_roi_slices(previous), new.region)
        previous = new
    assert previous is not None and previous.mask.any()


def test_region_of_an_empty_result():
    vol, _, _ = two_blobs()
    engine = ClassicEngine()
    prep = engine.prepare(vol)
    neg = PromptSet((Point((5.0, 5.0, 5.0), positive=False),))
    first = engine.predict(prep, neg, None)
    assert not first.mask.any() and first.region is not None and first.mask[first.region].size == 0
    clicked = engine.predict(prep, PromptSet((Point((15.0, 22.0, 15.0)),)), None)
    cleared = engine.predict(prep, neg, clicked)
    assert cleared.region == _roi_slices(clicked)


def test_region_is_anywhere_after_a_foreign_mask(blobs):
    """A previous mask the engine did not make (no ROI in its state) may lie anywhere."""
    vol, _, _ = blobs
    engine = ClassicEngine()
    prep = engine.prepare(vol)
    foreign = np.zeros(vol.shape, bool)
    foreign[0, 0, 0] = True
    new = engine.predict(prep, PromptSet((Point((15.0, 22.0, 15.0)),)), Prediction(foreign, state=None))
    assert new.region is None
