"""Further GrowCut clicks update the previous solve (issue 19): the same masks as a full solve on the same ROI."""
from __future__ import annotations

import json

import numpy as np
import pytest

import voxsam.engines.classic.engine as classic_engine
from voxsam.engines.classic import ClassicEngine
from voxsam.engines.classic.grid import Roi, resize, resize_block
from voxsam.engines.classic.growcut import add_seeds, growcut_solve
from voxsam.engines.classic.incremental import SolveCaches
from voxsam.io import read_volume
from voxsam.session import Session
from tests.engines.classic.helpers import ball, volume


@pytest.fixture
def solves(monkeypatch):
    """Counts full GrowCut solves."""
    calls = []
    inner = classic_engine.growcut_solve

    def counted(*a, **k):
        calls.append(1)
        return inner(*a, **k)

    monkeypatch.setattr(classic_engine, "growcut_solve", counted)
    return calls


def _organs() -> tuple:
    """A bright ellipsoid touching a dimmer one, a third blob apart, in noise: 70 x 64 x 40 at 1 x 1 x 1.5 mm."""
    shape, sp = (70, 64, 40), (1.0, 1.0, 1.5)
    g = np.indices(shape, dtype=np.float64)
    a = ((g[0] - 30) / 14) ** 2 + ((g[1] - 32) / 10) ** 2 + ((g[2] - 20) * 1.5 / 15) ** 2 <= 1
    b = ((g[0] - 48) / 8) ** 2 + ((g[1] - 32) / 12) ** 2 + ((g[2] - 20) * 1.5 / 12) ** 2 <= 1
    c = ball(shape, (20, 52, 14), 5.0, sp)
    img = 100.0 * a + 70.0 * (b & ~a) + 90.0 * c + np.random.default_rng(4).normal(0, 9, shape)
    return volume(img, sp), sp


def _uncounted(solves: list, fn):
    """fn() without counting its solves (the reference engines share the patched module)."""
    n = len(solves)
    try:
        return fn()
    finally:
        del solves[n:]


def _reference(engine: ClassicEngine, vol, session: Session) -> np.ndarray:
    """A full solve, without any cache, on the ROI the session's last answer used."""
    state = session._objects[1].engine_state
    roi = Roi(np.asarray(state["roi"][0]), np.asarray(state["roi"][1]), tuple(state["work_shape"]))
    points = session.prompts(1).points
    pos = np.array([p.ijk for p in points if p.positive], dtype=np.float64).reshape(-1, 3)
    neg = np.array([p.ijk for p in points if not p.positive], dtype=np.float64).reshape(-1, 3)
    return engine.solve_in(engine.prepare(vol), roi, pos, neg, None).mask


def _clicks_match(vol, first, clicks, solves, **options) -> None:
    session = Session(vol, "classic", **options)
    reference = ClassicEngine(incremental=False, **options)
    previous = session.add_point(first).astype(bool)
    assert len(solves) == 1
    changes = 0
    for ijk, positive in clicks:
        mask = session.add_point(ijk, positive=positive).astype(bool)
        assert np.array_equal(mask, _uncounted(solves, lambda: _reference(reference, vol, session))), (ijk, positive)
        changes += int(np.count_nonzero(mask != previous) > 0)
        previous = mask
    assert len(solves) == 1, "every further click should have updated the first solve"
    assert changes >= 2, "the clicks should change the mask"


@pytest.mark.parametrize("options", [{}, {"growcut_max_voxels": 20**3}])
def test_positive_and_negative_further_clicks_equal_a_full_solve(solves, options):
    vol, _ = _organs()
    clicks = [((36, 32, 20), True), ((46, 32, 20), False), ((24, 30, 22), True), ((30, 40, 20), True), ((52, 30, 18), False)]
    _clicks_match(vol, (30, 32, 20), clicks, solves, **options)


def test_further_clicks_on_a_real_ct(solves, shared_data):
    """Right kidney of the TotalSegmentator example CT (3 mm), a crop around it; working grid resampled."""
    nib = pytest.importorskip("nibabel")
    ct = shared_data / "totalseg_ct" / "example_ct.nii.gz"
    seg = shared_data / "totalseg_ct" / "example_ct_seg_fast_force_split.nii.gz"
    if not ct.is_file() or not seg.is_file():
        pytest.skip("totalseg_ct example absent")
    names = json.loads((shared_data / "totalseg_ct" / "class_map_total_v2.json").read_text())
    assert "kidney" in json.dumps(names)
    full = read_volume(ct)
    kidney = np.asarray(nib.load(str(seg)).dataobj) == 2
    where = np.argwhere(kidney)
    lo, hi = np.maximum(where.min(0) - 12, 0), np.minimum(where.max(0) + 13, kidney.shape)
    crop = tuple(slice(int(a), int(b)) for a, b in zip(lo, hi))
    vol = volume(full.channel(0)[crop].astype(np.float32), tuple(float(s) for s in full.spacing))
    target = kidney[crop]
    centre = np.round(np.argwhere(target).mean(0)).astype(int)
    offset = np.abs(np.indices(target.shape) - centre[:, None, None, None]).max(0)
    inside = np.argwhere(target & (offset <= 4))  # within the ROI's inner part: no full solve
    outside = np.argwhere(~target & (offset <= 6))
    rng = np.random.default_rng(0)
    clicks = [(tuple(int(v) for v in inside[rng.integers(len(inside))]), True) for _ in range(3)]
    clicks += [(tuple(int(v) for v in outside[rng.integers(len(outside))]), False) for _ in range(3)]
    clicks = [clicks[i] for i in (0, 3, 1, 4, 2, 5)]
    _clicks_match(vol, tuple(int(v) for v in centre), clicks, solves, growcut_max_voxels=16**3, margin_mm=30.0, reuse_margin_mm=10.0)


def test_a_click_that_needs_a_bigger_roi_solves_again(solves):
    vol, _ = _organs()
    session = Session(vol, "classic", margin_mm=20.0, reuse_margin_mm=10.0)
    session.add_point((30, 32, 20))
    session.add_point((34, 32, 20))  # 4 mm from the first: inside the ROI's inner part
    assert len(solves) == 1
    mask = session.add_point((42, 32, 20)).astype(bool)  # 12 mm: within 10 mm of the ROI face -> full solve
    assert len(solves) == 2
    want = Session(vol, ClassicEngine(incremental=False, margin_mm=20.0))
    expected = _uncounted(solves, lambda: [want.add_point(p) for p in [(30, 32, 20), (34, 32, 20), (42, 32, 20)]][-1])
    assert np.array_equal(mask, expected.astype(bool))


def test_a_removed_seed_or_undo_never_reuses_a_stale_solve(solves):
    vol, _ = _organs()
    session = Session(vol, "classic")
    session.add_point((30, 32, 20))
    session.add_point((36, 32, 20))
    assert len(solves) == 1
    session.undo()  # back to the first click's state, whose cached solve the second click consumed
    mask = session.add_point((24, 30, 22)).astype(bool)
    assert len(solves) == 2
    want = Session(vol, ClassicEngine(incremental=False))
    expected = _uncounted(solves, lambda: [want.add_point(p) for p in [(30, 32, 20), (24, 30, 22)]][-1])
    assert np.array_equal(mask, expected.astype(bool))
    session.add_point((24, 31, 22), positive=False)  # its ball clears the positive ball around (24, 30, 22)
    assert len(solves) == 3


def test_add_seeds_equals_a_full_solve():
    rng = np.random.default_rng(1)
    from scipy import ndimage

    norm = ndimage.gaussian_filter(rng.random((30, 26, 22)), 1.5).astype(np.float32)
    spacing = np.array([1.0, 1.2, 2.0])
    seeds = np.zeros(norm.shape, dtype=np.int8)
    seeds[0], seeds[-1], seeds[14, 13, 11] = 2, 2, 1
    sol = growcut_solve(norm, seeds, spacing, 0.01, 1.0)
    extra = np.zeros(norm.size, dtype=np.int8)
    idx = rng.choice(np.flatnonzero(seeds.ravel() == 0), 12, replace=False)
    extra[idx] = rng.integers(1, 3, idx.size)
    before = sol.labels.copy()
    changed = add_seeds(sol, idx, extra[idx])
    both = seeds.copy().ravel()
    both[idx] = extra[idx]
    full = growcut_solve(norm, both.reshape(norm.shape), spacing, 0.01, 1.0)
    assert np.array_equal(sol.dist, full.dist)
    assert np.array_equal(sol.labels, full.labels)
    assert np.array_equal(sol.field, full.field)
    g = sol.guard
    assert np.array_equal(changed, np.flatnonzero(sol.labels[g:-g] != before[g:-g]))


def test_resize_block_is_the_block_of_a_full_resize():
    rng = np.random.default_rng(2)
    for _ in range(12):
        src = tuple(int(v) for v in rng.integers(4, 30, 3))
        dst = tuple(int(s * f) for s, f in zip(src, rng.uniform(1.0, 2.6, 3)))
        field = (rng.random(src) > 0.5).astype(np.float32)
        full = resize(field, dst)
        lo = [int(rng.integers(0, d)) for d in dst]
        block = tuple(slice(a, int(rng.integers(a + 1, d + 1))) for a, d in zip(lo, dst))
        assert np.array_equal(resize_block(field, dst, block), full[block])


def test_the_cache_is_bounded():
    vol, _ = _organs()
    engine = ClassicEngine()
    prepared = engine.prepare(vol)
    assert prepared.solves.max_bytes == 4 * int(np.prod(vol.shape))  # what a server counts for a prepared volume
    session = Session(vol, engine)
    session._prepared = prepared
    for oid in range(1, 4):
        session.add_point((30, 32, 20), object_id=oid)
    assert len(prepared.solves) == 1  # one solve is more than the budget of this small volume: only the latest
    prepared.solves = SolveCaches(max_bytes=2**40)
    for oid in range(1, 8):
        session.add_point((31, 32, 20), object_id=oid)
    assert len(prepared.solves) == prepared.solves.max_entries
