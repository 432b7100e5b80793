"""slice2d propagation, editing and prompt rules with a deterministic stand-in model (no weights)."""
from __future__ import annotations

from typing import Any

import numpy as np
import pytest

pytest.importorskip("torch")

from tests.engines.slice2d.fake_sam2d import FakeSam2D  # noqa: E402
from voxsam.engines.slice2d import Slice2DEngine  # noqa: E402
from voxsam.errors import ConfigError, PromptError  # noqa: E402
from voxsam.io.volume import Volume  # noqa: E402
from voxsam.session import Session  # noqa: E402


def _ball_volume(shape: tuple[int, int, int] = (48, 40, 30), centre: tuple[int, int, int] = (24, 20, 15), radius: float = 8.0) -> tuple[Volume, np.ndarray]:
    grid = np.indices(shape).astype(float)
    d = np.sqrt(sum((g - c) ** 2 for g, c in zip(grid, centre)))
    ball = d <= radius
    image = np.where(ball, 100.0, 0.0).astype(np.float32) + 1.0
    image[0, 0, 0] = 0.0
    return Volume(image, np.diag([1.0, 1.0, 2.0, 1.0]), modality="MR"), ball


def _engine(**options: object) -> Slice2DEngine:
    options.setdefault("min_area_px", 1)  # the ball's one-pixel tips count as object
    options.setdefault("cross_views", False)  # the stand-in's cross slices lose those tips (tested on their own below)
    options.setdefault("step_max_mm", None)  # a fixed stride: the tests count decided slices (growth: its own test)
    return Slice2DEngine(model=FakeSam2D(), **options)


def test_one_click_propagates_both_ways_until_the_object_ends() -> None:
    vol, ball = _ball_volume()
    s = Session(vol, _engine())
    s.add_point((24, 20, 15), axis=2, propagate=False)
    run = s.propagate()
    order = [k for k, _ in run]
    assert run.axis == 2 and order[0] == 15
    assert order[1:3] in ([14, 16], [16, 14])  # both directions interleaved
    z = np.flatnonzero(ball.any(axis=(0, 1)))
    assert sorted(order) == list(range(z.min(), z.max() + 1))
    dice = 2 * (s.mask.astype(bool) & ball).sum() / (s.mask.sum() + ball.sum())
    assert dice > 0.9


def test_unstable_masks_end_the_object() -> None:
    """Masks whose logits never pass 1 (stability 0) end each direction after the prompted slice - or after
    `stability_grace` slices each way - unless the stability rule is off. (The grace counts decided slices: a
    stride grown along a steady shape, `step_max_mm`, would stretch it over more; pinned off here.)"""
    vol, ball = _ball_volume()
    for min_stability, grace, expect in ((0.7, 0, 1), (0.7, 2, 5), (0.0, 0, 15)):  # off: the ball's 15 thickest slices
        engine = Slice2DEngine(model=FakeSam2D(logit=0.5), min_area_px=1, min_stability=min_stability, stability_grace=grace,
                               step_max_mm=None)
        s = Session(vol, engine)
        s.add_point((24, 20, 15), axis=2, propagate=False)
        order = [k for k, _ in s.propagate()]
        assert len(order) == expect, (min_stability, grace, order)


def test_stability_score() -> None:
    import torch

    from voxsam.engines.slice2d.slices import SliceInput, SliceResult

    low = torch.full((1, 1, 256, 256), -5.0)
    low[..., :10, :10] = 3.0  # sure: 100 pixels
    low[..., 10:20, :10] = 0.0  # unsure: 100 more above -1
    low[..., 200:, 200:] = 3.0  # outside the image region (zero padding): not counted
    geom = SliceInput((64, 32), (128, 64))
    result = SliceResult(np.zeros((64, 32), bool), 0.9, low, None, geom)
    assert result.stability == pytest.approx(0.5)
    assert SliceResult(np.zeros((64, 32), bool), 0.9, torch.full((1, 1, 256, 256), -5.0), None, geom).stability == 1.0


def test_a_3d_click_uses_the_acquisition_axis() -> None:
    vol, ball = _ball_volume()
    s = Session(vol, _engine())
    s.add_point((24, 20, 15), propagate=False)  # spacing 1, 1, 2 mm: slices along axis 2
    order = [k for k, _ in s.propagate()]
    assert 17 in order and 13 in order


def test_box_and_painted_mask_start_slices() -> None:
    vol, ball = _ball_volume()
    s = Session(vol, _engine())
    mask = s.add_box((14, 10, 15), (34, 30, 15), axis=2)
    assert (mask.astype(bool) & ball).sum() > 0.9 * ball.sum()
    s2 = Session(vol, _engine())
    painted = ball[:, :, 15]
    m2 = s2.set_slice_mask(2, 15, painted)
    np.testing.assert_array_equal(m2[:, :, 15].astype(bool), painted)
    assert m2[:, :, 10].any()


def test_editing_a_mask_from_elsewhere_relocks_and_stops_where_old_agrees() -> None:
    vol, ball = _ball_volume()
    model = FakeSam2D()
    s = Session(vol, Slice2DEngine(model=model, min_area_px=1))
    start = ball.copy()
    start[:, :, 15] = False  # a hole on one slice
    s.set_mask(start)
    calls_before = len(model.decode_calls)
    s.add_point((24, 20, 15), axis=2)
    out = s.mask.astype(bool)
    assert out[:, :, 15].sum() > 0.9 * ball[:, :, 15].sum()
    # the clicked slice tries the clicks alone and with 4 box sizes; then two agreeing slices per side stop it
    assert len(model.decode_calls) - calls_before <= 1 + len(s.engine.options.click_box_mm) + 2 + 2
    np.testing.assert_array_equal(out[:, :, :12], ball[:, :, :12])


def test_painted_correction_is_locked_and_undoable() -> None:
    vol, ball = _ball_volume()
    s = Session(vol, _engine())
    s.add_point((24, 20, 15), axis=2)
    first = s.mask.copy()
    fix = np.zeros(vol.shape[:2], bool)
    fix[20:28, 16:24] = True
    s.set_slice_mask(2, 15, fix)
    np.testing.assert_array_equal(s.mask[:, :, 15].astype(bool), fix)
    s.undo()
    np.testing.assert_array_equal(s.mask, first)


def test_bad_prompts_and_volumes() -> None:
    vol, _ = _ball_volume()
    s = Session(vol, _engine())
    with pytest.raises(PromptError, match="does not take box prompts"):
        s.add_box((14, 10, 12), (34, 30, 18))
    s.add_point((24, 20, 15), axis=2)
    with pytest.raises(PromptError, match="axis 0 does not fit"):
        s.add_point((24, 20, 15), axis=0)
    with pytest.raises(PromptError, match="negative clicks alone"):
        Session(vol, _engine()).add_point((24, 20, 15), positive=False, axis=2)
    with pytest.raises(PromptError, match="empty"):
        Session(vol, _engine()).set_slice_mask(2, 3, np.zeros(vol.shape[:2], bool))
    with pytest.raises(PromptError, match="outside"):
        Session(vol, _engine()).set_slice_mask(2, 30, np.ones(vol.shape[:2], bool))
    flat = Volume(np.ones((20, 20, 1), np.float32), np.eye(4))
    with pytest.raises(Exception, match="at least 2 voxels|single slice"):
        Session(flat, _engine()).add_point((5, 5, 0), axis=2)
    with pytest.raises(ConfigError, match="propagation_prompt"):
        _engine(propagation_prompt="logits")


def test_only_visited_slices_are_encoded_once() -> None:
    vol, ball = _ball_volume()
    model = FakeSam2D()
    s = Session(vol, Slice2DEngine(model=model, min_area_px=1, cross_views=False, step_max_mm=None))
    s.add_point((24, 20, 15), axis=2)
    z = np.flatnonzero(ball.any(axis=(0, 1)))
    visited = len(z) + 2  # the object's slices plus the empty slice that ends each direction
    assert model.encode_calls == visited
    s.add_point((24, 20, 15), axis=2, positive=True)
    assert model.encode_calls == visited  # cached


def test_slice_step_decides_every_nth_slice_and_ends_where_the_object_ends() -> None:
    vol, ball = _ball_volume()
    z = np.flatnonzero(ball.any(axis=(0, 1)))
    masks, encodings = {}, {}
    for step in (1, 3):
        model = FakeSam2D()
        s = Session(vol, Slice2DEngine(model=model, min_area_px=1, slice_step=step, cross_views=False, step_max_mm=None))
        s.add_point((24, 20, 15), axis=2, propagate=False)
        order = [k for k, _ in s.propagate()]
        assert sorted(order) == list(range(z.min(), z.max() + 1)), (step, order)  # every slice, each once
        masks[step], encodings[step] = s.mask.astype(bool), model.encode_calls
    assert encodings[3] < 0.7 * encodings[1], encodings
    dice = 2 * (masks[3] & masks[1]).sum() / (masks[3].sum() + masks[1].sum())
    assert dice > 0.95, dice
    # an edit of the mask walks every slice (local, on cached neighbours), whatever the step
    engine = Slice2DEngine(model=FakeSam2D(), min_area_px=1, slice_step=3)
    s = Session(vol, engine)
    s.add_point((24, 20, 15), axis=2)
    decided: list[int] = []
    segment_with = engine.slices.segment_with
    engine.slices.segment_with = lambda prep, ax, k, *a, **kw: (decided.append(k), segment_with(prep, ax, k, *a, **kw))[1]  # type: ignore[method-assign]
    s.add_point((24, 20, 18), axis=2)
    assert sorted(decided) == sorted(set(decided)) and {17, 19} <= set(decided) and not {15, 21} & set(decided), decided


def test_a_click_passes_over_masks_cut_by_their_box() -> None:
    """A big object clicked once: small candidate boxes cut it (their masks reach the box border), so the
    answer comes from a larger box that holds it, though the stand-in rates the tight boxes' masks higher."""
    from voxsam.engines.slice2d.slices import reaches_border

    box = np.array([10.0, 10.0, 30.0, 30.0])
    inside, cut = np.zeros((64, 64), bool), np.zeros((64, 64), bool)
    inside[15:25, 14:26], cut[10:31, 12:20] = True, True
    assert not reaches_border(inside, box) and reaches_border(cut, box)
    assert not reaches_border(cut, np.array([0.0, 0.0, 63.0, 63.0]))  # the slice's edges cut nothing
    vol, ball = _ball_volume(shape=(80, 80, 30), centre=(40, 40, 15), radius=12.0)  # 24 mm across
    engine = _engine(click_box_mm=(10.0, 20.0, 40.0), click_grow_iou=0.1)
    truth = ball[:, :, 15]

    def segment(prepared, axis, k, points, labels, box, mask=None):  # a model that prefers tight boxes
        if box is None:
            return np.zeros_like(truth), 0.99  # misses the click: never chosen
        r0, c0, r1, c1 = (int(round(v)) for v in box)
        out = np.zeros_like(truth)
        out[r0 : r1 + 1, c0 : c1 + 1] = truth[r0 : r1 + 1, c0 : c1 + 1]
        return out, 1.0 - (r1 - r0) / 400  # the smaller the box, the higher the predicted IoU (by < 0.1)

    engine.slices.segment = segment  # type: ignore[method-assign]
    prepared = engine.prepare(vol)
    first, _, _ = engine._from_clicks(prepared, 2, 15, np.array([[40.0, 40.0]]), np.array([1]))
    np.testing.assert_array_equal(first, truth)  # the 40 mm box: the 10 and 20 mm ones cut the ball
    engine.options = engine.options.model_copy(update={"click_grow_iou": 0.0})
    kept, _, _ = engine._from_clicks(prepared, 2, 15, np.array([[40.0, 40.0]]), np.array([1]))
    assert kept.sum() < 0.5 * truth.sum()  # growing off: the tightest box's cut mask


def test_default_slice_step_follows_the_slice_spacing() -> None:
    vol, _ = _ball_volume()
    engine = _engine()
    for spacing, want in ((0.625, 4), (1.0, 2), (1.25, 2), (2.0, 1), (2.5, 1), (3.0, 1), (5.0, 1)):
        affine = np.diag([0.8, 0.8, spacing, 1.0])
        prepared = engine.prepare(Volume(vol.array, affine, modality="MR"))
        assert engine.slice_step(prepared, 2) == want, spacing
        assert engine.slice_step(prepared, 0) == 3  # 0.8 mm rows
    fixed = _engine(slice_step=1)
    assert fixed.slice_step(fixed.prepare(Volume(vol.array, np.diag([1.0, 1.0, 0.5, 1.0]), modality="MR")), 2) == 1


def test_slice_step_never_jumps_over_a_painted_or_prompted_slice() -> None:
    from voxsam.engines.slice2d.steps import next_visit

    assert next_visit(10, 1, 4, 30, set()) == 14
    assert next_visit(10, -1, 4, 30, {8}) == 8
    assert next_visit(27, 1, 4, 30, set()) == 29  # no further than the last slice
    assert next_visit(2, -1, 4, 30, {5}) == 0
    vol, ball = _ball_volume()
    painted = np.zeros(vol.shape[:2], dtype=bool)
    painted[18:30, 14:26] = True  # a square where the ball is round: kept exactly as painted
    s = Session(vol, Slice2DEngine(model=FakeSam2D(), min_area_px=1, slice_step=4))
    s.set_slice_mask(2, 17, painted, propagate=False)
    s.add_point((24, 20, 15), axis=2, propagate=False)  # the walk starts here: 17 lies inside its first jump
    order = [k for k, _ in s.propagate()]
    assert 17 in order and 13 in order
    np.testing.assert_array_equal(s.mask[:, :, 17].astype(bool), painted)


def test_region_holds_every_changed_voxel() -> None:
    """The prediction's region (the slab of written slices) holds every voxel that differs from the previous
    mask, so the session compares only that slab."""
    vol, ball = _ball_volume()
    engine = _engine()
    prepared = engine.prepare(vol)
    from voxsam.prompts import Point, PromptSet

    prompts, previous = PromptSet(), None
    for ijk, positive in [((24, 20, 15), True), ((24, 20, 18), False), ((30, 20, 12), True)]:
        prompts, _ = prompts.with_prompt(Point(ijk, positive))
        before = previous.mask if previous is not None else np.zeros(vol.shape, bool)
        previous = engine.predict(prepared, prompts, previous)
        assert previous.region is not None
        outside = np.ones(vol.shape, bool)
        outside[previous.region] = False
        np.testing.assert_array_equal(previous.mask[outside], before[outside])


def test_slices_converted_on_use_equal_a_float32_copy() -> None:
    """prepare copies nothing: an int16 Fortran-order CT gives the masks of its float32 C-order copy."""
    vol, _ = _ball_volume()
    hu = np.asfortranarray(np.rint(vol.array * 7 - 300).astype(np.int16))
    stored = Volume(hu, vol.affine, modality="CT")
    copied = Volume(np.ascontiguousarray(hu, dtype=np.float32), vol.affine, modality="CT")
    engine = _engine()
    prepared = engine.prepare(stored)
    assert np.shares_memory(prepared.source, hu)
    reference = engine.prepare(copied)
    assert (prepared.lo, prepared.hi) == (reference.lo, reference.hi)
    np.testing.assert_array_equal(prepared.display(2, 15), reference.display(2, 15))
    mr_stored, mr_copied = Volume(hu, vol.affine, modality="MR"), Volume(np.ascontiguousarray(hu, dtype=np.float32), vol.affine, modality="MR")
    assert (engine.prepare(mr_stored).lo, engine.prepare(mr_stored).hi) == (engine.prepare(mr_copied).lo, engine.prepare(mr_copied).hi)
    a, b = Session(stored, _engine()), Session(copied, _engine())
    for click, positive in [((24, 20, 15), True), ((30, 20, 16), False), ((20, 22, 12), True)]:
        np.testing.assert_array_equal(a.add_point(click, positive, axis=2), b.add_point(click, positive, axis=2))


def _walk_once(vol: Volume, engine: Slice2DEngine, click: tuple[int, int, int]) -> tuple[Session, list[int], list[int]]:
    """One axial click propagated: the session, the slices the walk gave (in order) and those it decoded."""
    decided: list[int] = []
    segment_with = engine.slices.segment_with

    def counted(prepared: Any, axis: int, k: int, *args: Any, **kwargs: Any) -> Any:
        decided.append(k)
        return segment_with(prepared, axis, k, *args, **kwargs)

    engine.slices.segment_with = counted  # type: ignore[method-assign]
    s = Session(vol, engine)
    s.add_point(click, axis=2, propagate=False)
    return s, [k for k, _ in s.propagate()], decided


def test_the_stride_grows_along_a_smooth_object_and_falls_back_where_it_changes() -> None:
    """`step_max_mm`: on a straight cylinder (1 mm slices, base stride 2) the jumps double up to 8 slices and
    fewer slices are encoded for the same mask; where the cross-section changes (a cone) the stride stays at
    its base; the object still ends where it ends."""
    shape = (48, 40, 100)
    grid = np.indices(shape).astype(float)
    radial = np.sqrt((grid[0] - 24) ** 2 + (grid[1] - 20) ** 2)
    z = grid[2]
    objects = {"cylinder": (radial <= 8) & (z >= 10) & (z < 90), "cone": (radial <= (z - 10) * 0.25) & (z >= 10) & (z < 90)}
    for name, truth in objects.items():
        image = np.where(truth, 100.0, 0.0).astype(np.float32) + 1.0
        image[0, 0, 0] = 0.0
        vol = Volume(image, np.diag([1.0, 1.0, 1.0, 1.0]), modality="MR")
        runs = {}
        for grow in (None, 8.0):
            s, order, decided = _walk_once(vol, _engine(slice_step=2, step_max_mm=grow, step_grow_dice=0.9), (24, 20, 60))
            zs = np.flatnonzero(truth.any(axis=(0, 1)))
            assert sorted(order) == list(range(zs.min(), zs.max() + 1)), (name, grow, order)
            gaps = np.diff(sorted(decided + [60]))
            runs[grow] = (s.mask.astype(bool), len(set(decided)), int(gaps.max()))  # slices encoded, widest jump
        (fixed, n_fixed, gap_fixed), (grown, n_grown, gap_grown) = runs[None], runs[8.0]
        dice = 2 * (fixed & grown).sum() / (fixed.sum() + grown.sum())
        assert gap_fixed == 2 and dice > 0.97, (name, gap_fixed, dice)
        if name == "cylinder":
            assert gap_grown == 8 and n_grown < 0.5 * n_fixed, (n_grown, n_fixed)
        else:  # the cone's slices keep changing (Dice < 0.9 from 2 slices on): no growth where that holds
            assert n_grown > 0.6 * n_fixed, (n_grown, n_fixed)


def test_a_steadily_widening_object_grows_the_stride_under_step_grow_steady_and_its_ends_are_bisected() -> None:
    """`step_grow_steady`: a cone widens at an even rate, so consecutive decided masks differ (no growth by
    Dice with the one before) but interpolation across two jumps gives the middle one back: the stride grows,
    fewer slices are encoded, the mask stays that of a fixed stride, and the walk still finds both ends
    (a failed jump halves down to single slices)."""
    shape = (64, 64, 100)
    grid = np.indices(shape).astype(float)
    radial = np.sqrt((grid[0] - 32) ** 2 + (grid[1] - 32) ** 2)
    z = grid[2]
    truth = (radial <= 3 + (z - 10) * 0.3) & (z >= 10) & (z < 87)
    image = np.where(truth, 100.0, 0.0).astype(np.float32) + 1.0
    image[0, 0, 0] = 0.0
    vol = Volume(image, np.diag([1.0, 1.0, 0.625, 1.0]), modality="MR")
    runs = {}
    for steady in (None, False, True):
        options: dict[str, object] = {"step_max_mm": None} if steady is None else {"step_max_mm": 10.0, "step_grow_steady": steady}
        s, order, decided = _walk_once(vol, _engine(step_grow_dice=0.95, **options), (32, 32, 50))  # base stride 4 (2.5 mm), up to 16
        assert sorted(order) == list(range(10, 87)), (steady, order)
        runs[steady] = (s.mask.astype(bool), len(set(decided)), int(np.diff(sorted(decided + [50])).max()))
    (fixed, n_fixed, _), (_, n_dice, _), (grown, n_steady, widest) = runs[None], runs[False], runs[True]
    dice = 2 * (fixed & grown).sum() / (fixed.sum() + grown.sum())
    assert dice > 0.97 and widest == 16, (dice, widest)
    assert n_steady <= 0.8 * min(n_dice, n_fixed), (n_steady, n_dice, n_fixed)  # 19 vs 25 and 24 when written

