"""Cross views: a new object's extent along the walk's axis, read off the two slices across its first mask."""
from __future__ import annotations

import numpy as np
import pytest

pytest.importorskip("torch")

from tests.engines.slice2d.fake_sam2d import FakeSam2D  # noqa: E402
from tests.engines.slice2d.test_slice2d_engine import _ball_volume  # noqa: E402
from voxsam.engines.slice2d import Slice2DEngine  # noqa: E402
from voxsam.engines.slice2d.extent import cross_view_extent, deepest_point  # noqa: E402
from voxsam.engines.slice2d.slices import prepare_volume  # noqa: E402
from voxsam.io.volume import Volume  # noqa: E402
from voxsam.session import Session  # noqa: E402


def test_run_through() -> None:
    from voxsam.engines.slice2d.extent import _run_through

    line = np.array([0, 1, 1, 1, 0, 1, 1], bool)
    assert [_run_through(line, i) for i in range(7)] == [0, 3, 3, 3, 0, 2, 2]


def test_deepest_point_lies_inside_a_concave_mask() -> None:
    u = np.zeros((30, 30), bool)
    u[5:25, 5:10] = u[5:25, 20:25] = u[20:25, 5:25] = True  # a U: its bounding box's centre is outside it
    r, c = deepest_point(u)
    assert u[r, c] and not u[15, 15]


def _truth_segmenter(prepared, truth):
    """Cross slices answered from the truth: the display slice of `truth`, as a perfect model would."""
    calls = []

    def segment(axis: int, k: int, rc: np.ndarray) -> np.ndarray:
        calls.append((axis, k))
        return prepared.view(axis).take(truth, k), None
    return segment, calls


def test_cross_view_extent_is_the_part_holding_the_centre() -> None:
    vol = Volume(np.zeros((40, 36, 30), np.float32), np.diag([1.0, 1.0, 2.0, 1.0]), modality="MR")
    prepared = prepare_volume(vol, 64)
    truth = np.zeros(vol.shape, bool)
    truth[10:20, 8:18, 6:15] = True  # the object: slices 6..14 of axis 2
    truth[10:20, 8:18, 18:25] = True  # another one in line with it, beyond a gap
    segment, calls = _truth_segmenter(prepared, truth)
    span = cross_view_extent(prepared, 2, 10, truth[:, :, 10], segment)
    assert span == (6, 14)
    assert sorted(a for a, _ in calls) == [0, 1] and {k for _, k in calls} <= {14, 15, 12, 13}  # through the centre
    # a cross view that found something narrower (or wider) than the first mask on their shared line is not the
    # object: it is passed over (here both are, so there is no bound)
    thin = np.zeros(vol.shape, bool)
    thin[14:16, 12:14, 2:28] = True  # a thread through the centre: 2 voxels wide where the first mask has 10
    segment, _ = _truth_segmenter(prepared, thin)
    assert cross_view_extent(prepared, 2, 10, truth[:, :, 10], segment) is None
    assert cross_view_extent(prepared, 2, 10, truth[:, :, 10], segment, agreement=0.1) == (2, 27)
    # a cross slice that misses the object (empty) is passed over; none holding it gives no bound
    assert cross_view_extent(prepared, 2, 10, truth[:, :, 10], lambda a, k, rc: (np.zeros(prepared.view(a).display_shape(vol.shape), bool), None)) is None


def _bounded(monkeypatch, span):
    import voxsam.engines.slice2d.engine as engine_module

    monkeypatch.setattr(engine_module, "cross_view_extent", lambda *a, **kw: span)


def test_a_new_walk_stays_within_the_cross_view_extent(monkeypatch) -> None:
    vol, ball = _ball_volume()  # the ball covers slices 7..23 of axis 2
    _bounded(monkeypatch, (12, 18))
    s = Session(vol, Slice2DEngine(model=FakeSam2D(), min_area_px=1))
    s.add_point((24, 20, 15), axis=2, propagate=False)
    order = [k for k, _ in s.propagate()]
    assert sorted(order) == list(range(12, 19))
    assert not s.mask[:, :, :12].any() and not s.mask[:, :, 19:].any()
    # with the option off the stopping rules alone end it
    s = Session(vol, Slice2DEngine(model=FakeSam2D(), min_area_px=1, cross_views=False))
    s.add_point((24, 20, 15), axis=2, propagate=False)
    assert sorted(k for k, _ in s.propagate()) == list(range(7, 24))


def test_past_the_views_the_walk_goes_on_only_while_the_model_is_sure(monkeypatch) -> None:
    vol, ball = _ball_volume()  # slices 7..23 of axis 2
    _bounded(monkeypatch, (12, 18))  # a view that saw only part of the object

    def walked(**options) -> list[int]:
        s = Session(vol, Slice2DEngine(model=FakeSam2D(iou=0.9), min_area_px=1, **options))
        s.add_point((24, 20, 15), axis=2, propagate=False)
        return sorted(k for k, _ in s.propagate())

    assert walked(past_views_stability=0.9) == list(range(7, 24))  # the stand-in's masks are stable (logits +-4)
    assert walked(past_views_stability=0.9, past_views_iou=0.95) == list(range(12, 19))  # its IoU 0.9 is not enough
    assert walked() == list(range(12, 19))  # off by default


def test_the_bound_never_cuts_off_a_prompted_slice_nor_an_edit(monkeypatch) -> None:
    vol, ball = _ball_volume()
    _bounded(monkeypatch, (13, 17))
    s = Session(vol, Slice2DEngine(model=FakeSam2D(), min_area_px=1))
    s.add_point((24, 20, 20), axis=2, propagate=False)  # a click on slice 20, outside the bound
    s.add_point((24, 20, 15), axis=2, propagate=False)  # the walk starts here
    assert sorted(k for k, _ in s.propagate()) == list(range(13, 21))
    # an edit of the mask re-walks from the corrected slice as far as the old mask disagrees, bound or not
    _bounded(monkeypatch, (15, 15))
    s.add_point((24, 21, 17), axis=2, propagate=False)
    assert 18 in [k for k, _ in s.propagate()]


def test_cross_views_cost_two_encodings_and_bound_the_ball() -> None:
    vol, ball = _ball_volume()
    model = FakeSam2D()
    s = Session(vol, Slice2DEngine(model=model, min_area_px=1, step_max_mm=None))  # every slice decided
    s.add_point((24, 20, 15), axis=2, propagate=False)
    order = sorted(k for k, _ in s.propagate())
    z = np.flatnonzero(ball.any(axis=(0, 1)))
    assert z.min() <= order[0] <= z.min() + 1 and z.max() - 1 <= order[-1] <= z.max()  # the stand-in loses 1-voxel tips
    assert model.encode_calls == len(order) + 2  # the walked slices and the two cross slices (no slice past the ends)


def test_a_side_the_framing_box_cuts_stays_open() -> None:
    """A long object seen through a box shorter than it: the view cannot say where it ends on that side."""
    from voxsam.engines.slice2d.slices import bbox_rc

    vol = Volume(np.zeros((40, 36, 30), np.float32), np.diag([1.0, 1.0, 2.0, 1.0]), modality="MR")
    prepared = prepare_volume(vol, 64)
    truth = np.zeros(vol.shape, bool)
    truth[10:20, 8:18, 6:15] = True
    frame = np.zeros(vol.shape, bool)
    frame[:, :, 4:12] = True  # the box frames slices 4..11: the object's top (12..14) lies beyond it

    def segment(axis: int, k: int, rc: np.ndarray):
        view = prepared.view(axis)
        framed = view.take(frame, k)
        return view.take(truth, k) & framed, bbox_rc(framed)

    assert cross_view_extent(prepared, 2, 10, truth[:, :, 10], segment) == (6, 29)

