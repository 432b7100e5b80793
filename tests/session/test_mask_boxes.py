"""Masks kept at the cost of their box (`session.masks`): every result equals the full-grid one voxel for voxel.

Each scenario runs twice: with the engine's `Prediction.region` (the session compares, copies and pastes
only boxes) and with the region stripped (the session compares whole grids, as before boxes existed).
"""
from __future__ import annotations

from typing import Any

import numpy as np
import pytest

from tests.session.fakes import CubeEngine, DiscPropagator
from voxsam.engines.base import Engine, Prediction
from voxsam.io.volume import Volume
from voxsam.session import Session
from voxsam.session.masks import as_uint8, bounding_box, union


class NoRegion(Engine):
    """Wraps an engine and forgets its regions: the session must then compare whole grids."""

    def __init__(self, inner: Engine) -> None:
        self.inner = inner
        self.name = inner.name  # type: ignore[misc]
        self.capabilities = inner.capabilities  # type: ignore[misc]

    def prepare(self, volume: Volume, progress: Any = None) -> Any:
        return self.inner.prepare(volume, progress)

    def predict(self, prepared: Any, prompts: Any, previous: Any, change: Any = None) -> Prediction:
        p = self.inner.predict(prepared, prompts, previous, change)
        return Prediction(p.mask, p.state, None)

    def propagate(self, prepared: Any, prompts: Any, previous: Any, change: Any = None) -> Any:
        p = yield from self.inner.propagate(prepared, prompts, previous, change)
        return Prediction(p.mask, p.state, None)

    def propagation_axis(self, prepared: Any, prompts: Any, change: Any = None) -> int:
        return self.inner.propagation_axis(prepared, prompts, change)


def _volume() -> Volume:
    return Volume(np.zeros((30, 26, 18), np.float32), np.diag([1.0, 1.0, 2.0, 1.0]))


def _snapshot(s: Session) -> tuple[np.ndarray, ...]:
    return (s.mask, s.label_map, s.object_mask(1), s.object_mask(2))


def _scenario(make: Any) -> list[tuple[np.ndarray, ...]]:
    s = Session(_volume(), make())
    out = [(s.add_point((5, 5, 5)),), _snapshot(s)]
    out.append((s.add_point((6, 7, 5)),))
    out.append((s.add_point((5, 5, 5), positive=False),))
    out.append((s.add_point((20, 20, 10), object_id=2),))
    out.append((s.add_point((21, 19, 11), object_id=2),))
    out.append(_snapshot(s))
    for _ in range(3):
        s.undo()
        out.append(_snapshot(s))
    s.redo()
    out.append(_snapshot(s))
    s.reset(2)
    out.append(_snapshot(s))
    s.undo()
    out.append(_snapshot(s))
    out.append((s.set_mask(np.pad(np.ones((3, 3, 3), bool), ((10, 17), (10, 13), (2, 13)))),))
    out.append((s.add_point((28, 24, 16)),))  # at the grid's corner
    out.append(_snapshot(s))
    s.reset()
    out.append(_snapshot(s))
    return out


def _propagating(make: Any) -> list[tuple[np.ndarray, ...]]:
    s = Session(_volume(), make())
    out = [(s.add_point((10, 10, 9), axis=2),), _snapshot(s)]
    out.append((s.add_point((15, 12, 4), axis=2),))
    s.add_point((12, 12, 6), axis=2, propagate=False)
    run = s.propagate()
    for i, _ in enumerate(run):
        out.append(_snapshot(s))  # mid-propagation readers see the slices so far
        if i == 2:
            run.cancel()
    out.append(_snapshot(s))
    s.undo()
    out.append(_snapshot(s))
    s.redo()
    out.append(_snapshot(s))
    return out


@pytest.mark.parametrize("scenario, engine", [(_scenario, CubeEngine), (_propagating, DiscPropagator)])
def test_box_masks_equal_full_grid_masks(scenario: Any, engine: Any) -> None:
    boxed = scenario(lambda: engine())
    full = scenario(lambda: NoRegion(engine()))
    assert len(boxed) == len(full)
    for a, b in zip(boxed, full):
        for x, y in zip(a, b):
            assert x.dtype == y.dtype and x.shape == y.shape
            np.testing.assert_array_equal(x, y)


def test_returned_masks_are_independent_writable_copies() -> None:
    s = Session(_volume(), CubeEngine())
    first = s.add_point((5, 5, 5))
    assert first.dtype == np.uint8 and first.flags.writeable and first.sum() == 125
    first[...] = 7  # the caller's copy: the session is not affected
    second = s.add_point((15, 15, 9))
    assert second.sum() == 250 and first.min() == 7
    np.testing.assert_array_equal(s.mask, second)


def test_bounding_box_union_and_copy_match_the_full_grid() -> None:
    rng = np.random.default_rng(0)
    for _ in range(20):
        mask = np.zeros((17, 13, 9), bool)
        n = int(rng.integers(0, 6))
        mask[tuple(rng.integers(0, s, n) for s in mask.shape)] = True
        box = bounding_box(mask)
        if n == 0:
            assert box is None
            assert not as_uint8(mask, box, mask.shape).any()
            continue
        assert box is not None
        where = np.argwhere(mask)
        assert [(s.start, s.stop) for s in box] == list(zip(where.min(0).tolist(), (where.max(0) + 1).tolist()))
        np.testing.assert_array_equal(as_uint8(mask, box, mask.shape), mask.astype(np.uint8))
        within = union(box, (slice(0, 2), slice(0, 2), slice(0, 2)), mask.shape)
        assert bounding_box(mask, within) == box
    assert union(None, None, (4, 4, 4)) is None
    assert union((slice(0, 0), slice(0, 4), slice(0, 4)), (slice(1, 2), slice(1, 2), slice(1, 2)), (4, 4, 4)) == (slice(1, 2),) * 3
