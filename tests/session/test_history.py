"""Undo/redo stores differences within a memory budget: 200 steps on a 512×512×300 grid."""
from __future__ import annotations

import numpy as np

from tests.session.fakes import CubeEngine
from voxsam.io.volume import Volume
from voxsam.session import Session
from voxsam.session.history import Patch


def test_patch_round_trip() -> None:
    rng = np.random.default_rng(0)
    mask = rng.random((7, 9, 5)) > 0.5
    region = (slice(1, 6), slice(2, 9), slice(0, 3))
    p = Patch.take(mask, region)
    np.testing.assert_array_equal(p.values(), mask[region])
    assert p.nbytes == (5 * 7 * 3 + 7) // 8


def test_200_steps_on_a_big_grid_stay_within_budget() -> None:
    shape = (512, 512, 300)
    vol = Volume(np.broadcast_to(np.zeros((1, 1, 1), np.float32), shape), np.eye(4))  # no 300 MB image needed
    budget = 2 * 2**20
    s = Session(vol, CubeEngine(r=8), history_bytes=budget)
    rng = np.random.default_rng(1)
    points = [tuple(int(v) for v in rng.integers(10, np.array(shape) - 10)) for _ in range(200)]
    snapshots = {}
    for n, ijk in enumerate(points, 1):
        s.add_point(ijk, positive=bool(n % 7))
        assert s.history_bytes <= budget
        if n in (150, 199):
            snapshots[n] = np.flatnonzero(s._masks[1])  # sparse fingerprint of the mask
    # 17³ voxels per step, bit-packed: ~615 bytes each, so all 200 fit the budget
    assert s.undo_depth == 200
    assert s.undo()
    np.testing.assert_array_equal(np.flatnonzero(s._masks[1]), snapshots[199])
    for _ in range(49):
        assert s.undo()
    np.testing.assert_array_equal(np.flatnonzero(s._masks[1]), snapshots[150])
    for _ in range(50):
        assert s.redo()
    assert len(s.prompts().points) == 200


def test_budget_drops_the_oldest_steps() -> None:
    vol = Volume(np.zeros((64, 64, 64), np.float32), np.eye(4))
    s = Session(vol, CubeEngine(r=20), history_bytes=3 * 2**10 * 8)  # a 41³ patch is ~8.6 kB
    for ijk in [(20, 20, 20), (40, 40, 40), (25, 40, 30), (40, 20, 22), (30, 30, 30)]:
        s.add_point(ijk)
        assert s.history_bytes <= s._history.budget_bytes or s.undo_depth == 1
    assert s.undo_depth < 5 and s._history.dropped == 5 - s.undo_depth
    while s.undo():
        pass
    assert len(s.prompts().points) == s._history.dropped  # the state the oldest kept step started from
