"""Click protocols over a Session with a scripted engine."""
from __future__ import annotations

import numpy as np
import pytest

from voxsam.errors import ConfigError
from voxsam.evaluation import protocols as P
from voxsam.prompts import PromptKind as K
from voxsam.session import Session

from ._helpers import BallEngine, ball, make_volume

SHAPE = (30, 28, 20)


@pytest.fixture
def target():
    t = ball(SHAPE, (14, 13, 10), 6.0)
    t |= ball(SHAPE, (24, 22, 14), 3.0)  # a second component
    return t


@pytest.fixture
def volume():
    return make_volume(np.zeros(SHAPE, np.float32), (1.0, 1.0, 1.0))


def run(name, volume, target, n=6, seed=0, **engine_kw):
    engine = BallEngine(**engine_kw)
    session = Session(volume, engine)
    return P.get_protocol(name)(session, target, n, seed=seed), engine, session


def test_registry_and_unknown_names():
    assert {"sammed3d", "center", "box+center", "slice"} <= set(P.PROTOCOLS)
    with pytest.raises(ConfigError, match="unknown protocol"):
        P.get_protocol("nope")
    with pytest.raises(ConfigError, match="needs box prompts; the engine takes only point"):
        P.check_protocol("box+center", frozenset({K.POINT}))
    with pytest.raises(ConfigError):
        P.check_protocol("slice", frozenset({"scribble"}))
    # 3D prompts do not make a slice protocol, nor 2D ones a 3D protocol
    with pytest.raises(ConfigError, match="slice_box, slice_mask, slice_point"):
        P.check_protocol("slice", frozenset({K.POINT, K.BOX}))
    with pytest.raises(ConfigError, match="needs slice_box"):
        P.check_protocol("slice-box", frozenset({K.BOX, K.POINT}))
    with pytest.raises(ConfigError, match="needs point"):
        P.check_protocol("center", frozenset({K.SLICE_POINT}))
    P.check_protocol("slice", frozenset({K.SLICE_POINT}))
    P.check_protocol("slice", frozenset({"slice_point"}))  # plain strings still work
    P.check_protocol("box+center", frozenset({K.BOX}))
    assert P.required_prompts("slice-mask") == (K.SLICE_MASK,)


def test_sammed3d_clicks_follow_the_errors(volume, target):
    res, engine, session = run("sammed3d", volume, target, n=8, seed=3)
    assert len(res.masks) == len(res.seconds) == len(res.prompts) == 8
    first = res.prompts[0]
    assert first["positive"] and target[tuple(first["ijk"])]
    for k in range(1, 8):
        p = res.prompts[k]
        if p is None:
            break
        prev = res.masks[k - 1]
        ijk = tuple(p["ijk"])
        assert prev[ijk] != target[ijk], "click must fall in FN or FP of the previous mask"
        assert p["positive"] == bool(target[ijk])
    # the session keeps every click
    assert len(session.prompts().points) == sum(p is not None for p in res.prompts)
    # the same seed gives the same clicks, another seed others
    again, _, _ = run("sammed3d", volume, target, n=8, seed=3)
    other, _, _ = run("sammed3d", volume, target, n=8, seed=4)
    assert [p and p["ijk"] for p in again.prompts] == [p and p["ijk"] for p in res.prompts]
    assert [p and p["ijk"] for p in other.prompts] != [p and p["ijk"] for p in res.prompts]
    assert all(s >= 0 for s in res.seconds)


def test_center_clicks_at_distance_maxima(volume, target):
    res, _, _ = run("center", volume, target, n=5)
    assert res.prompts[0]["ijk"] == [14, 13, 10] and res.prompts[0]["positive"]
    # click 2: the largest error component after a radius-2 ball is the big sphere's shell (FN) ... or the small
    # sphere; either way it is a positive click inside the target at a distance maximum of that component
    for k in range(1, 5):
        p = res.prompts[k]
        prev, ijk = res.masks[k - 1], tuple(p["ijk"])
        comp, positive = P.largest_error_component(prev, target)
        assert comp[ijk] and positive == p["positive"]
        assert list(P.interior_point(comp, (1.0, 1.0, 1.0))) == p["ijk"]


def test_center_negative_click_on_false_positive(volume):
    target = ball(SHAPE, (14, 13, 10), 2.0)
    res, _, _ = run("center", volume, target, n=3, r=5.0)  # the engine over-segments
    assert res.prompts[1]["positive"] is False
    assert not target[tuple(res.prompts[1]["ijk"])]


def test_interior_point_respects_spacing():
    m = np.zeros((41, 41, 9), bool)
    m[2:39, 2:39, 1:8] = True
    # with 5 mm slices only the middle slice is 20 mm from the outside in z (in-plane: 19 mm)
    assert list(P.interior_point(m, (1.0, 1.0, 5.0))) == [20, 20, 4]
    dist = P.edt_mm(m, (1.0, 1.0, 5.0))
    assert dist[20, 20, 4] == pytest.approx(19.0) and dist[20, 20, 1] == pytest.approx(5.0)
    assert dist[2, 20, 4] == pytest.approx(1.0) and dist[0, 0, 0] == 0.0
    m2 = np.zeros((5, 20), bool)
    m2[1:4, 2:18] = True
    p = P.interior_point(m2, (1.0, 1.0))
    assert m2[tuple(p)]


def test_early_stop_repeats_the_mask(volume, target):
    res, engine, _ = run("center", volume, target, n=4, oracle=target)
    assert res.stopped_at == 1
    assert len(engine.calls) == 1
    assert res.prompts[1:] == [None, None, None] and res.seconds[1:] == [0.0, 0.0, 0.0]
    assert all(np.array_equal(m, target) for m in res.masks)


def test_box_center(volume, target):
    res, engine, session = run("box+center", volume, target, n=3)
    box = res.prompts[0]
    assert box["kind"] == "box"
    nz = np.argwhere(target)
    assert box["lo"] == nz.min(axis=0).tolist() and box["hi"] == nz.max(axis=0).tolist()
    assert session.prompts().box is not None
    assert all(p["kind"] == "point" for p in res.prompts[1:] if p)
    with pytest.raises(ConfigError, match="box"):
        run("box+center", volume, target, n=3, supports={K.POINT, K.SLICE_BOX})


@pytest.mark.parametrize(
    "supports,kind",
    [
        ({K.SLICE_MASK, K.SLICE_BOX, K.SLICE_POINT, K.POINT}, K.SLICE_MASK),
        ({K.SLICE_BOX, K.SLICE_POINT, K.POINT, K.BOX}, K.SLICE_BOX),
        ({K.SLICE_POINT, K.POINT, K.BOX}, K.SLICE_POINT),
    ],
)
def test_slice_picks_the_prompt_the_engine_takes(volume, target, supports, kind):
    res, engine, session = run("slice", volume, target, n=2, supports=supports)
    first = res.prompts[0]
    assert first["kind"] == kind.value
    # the slice of largest target area along the slice axis (z here: isotropic -> last axis)
    best = int(np.argmax(target.sum(axis=(0, 1))))
    assert first["axis"] == 2 and first["index"] == best
    given = session.prompts()
    if kind is K.SLICE_MASK:
        assert np.array_equal(given.slice_masks[0].mask, target[:, :, best])
    elif kind is K.SLICE_BOX:
        assert first["lo"][2] == first["hi"][2] == best
        nz = np.argwhere(target[:, :, best])
        assert first["lo"][:2] == nz.min(axis=0).tolist() and first["hi"][:2] == nz.max(axis=0).tolist()
        (box,) = given.boxes
        assert box.kind is K.SLICE_BOX and box.slice.axis == 2 and box.slice.index == best  # a real 2D box
    else:
        assert first["ijk"][2] == best and target[tuple(first["ijk"])]
        assert given.points[0].kind is K.SLICE_POINT and given.points[0].slice.index == best  # a real 2D click
    assert res.prompts[1]["kind"] == "point"  # 3D center corrections afterwards
    assert given.points[-1].kind is K.POINT


def test_slice_kinds_forced(volume, target):
    for name, kind in (("slice-mask", K.SLICE_MASK), ("slice-box", K.SLICE_BOX), ("slice-point", K.SLICE_POINT)):
        res, _, _ = run(name, volume, target, n=1)
        assert res.prompts[0]["kind"] == kind.value
    # without 3D points there are no corrections: the first mask is repeated
    res, engine, _ = run("slice-box", volume, target, n=3, supports={K.SLICE_BOX})
    assert len(engine.calls) == 1 and res.prompts[1:] == [None, None]
    assert all(np.array_equal(m, res.masks[0]) for m in res.masks)


def test_slice_axis_follows_spacing(target):
    vol = make_volume(np.zeros(SHAPE, np.float32), (1.0, 4.0, 1.0))
    res, _, _ = run("slice-mask", vol, target, n=1)
    assert res.prompts[0]["axis"] == 1


def test_slice_axis_is_the_engines_acquisition_axis(target):
    """Two equal largest spacings: the protocol's 2D prompt goes on the axis a slice engine picks for a 3D
    click (one rule, `acquisition_axis`), not on another of the tied axes."""
    from voxsam.engines.base import acquisition_axis

    vol = make_volume(np.zeros(SHAPE, np.float32), (4.5, 4.5, 3.0))
    res, _, session = run("slice-mask", vol, target, n=1)
    assert res.prompts[0]["axis"] == acquisition_axis(session.volume.affine) == 0


def test_slice_without_any_supported_prompt(volume, target):
    with pytest.raises(ConfigError):
        run("slice", volume, target, n=1, supports={"scribble"})
    with pytest.raises(ConfigError):
        run("slice-mask", volume, target, n=1, supports={K.POINT, K.BOX, K.SLICE_BOX})
    with pytest.raises(ConfigError, match="slice_point"):
        run("slice-point", volume, target, n=1, supports={K.POINT})


def test_bad_arguments(volume, target):
    with pytest.raises(ConfigError, match="empty"):
        run("center", volume, np.zeros(SHAPE, bool))
    with pytest.raises(ConfigError):
        run("center", volume, target, n=0)
    with pytest.raises(ConfigError, match="shape"):
        run("center", volume, target[:-1])
