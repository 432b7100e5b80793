"""Session: prompts and their change, multi-object label maps, reset, undo/redo, set_mask, prepare, locking."""
from __future__ import annotations

import threading

import numpy as np
import pytest

from tests.session.fakes import CubeEngine, DiscPropagator
from voxsam.errors import PromptError
from voxsam.io.volume import Volume
from voxsam.prompts import Point, PromptKind
from voxsam.session import Session


def _volume(shape: tuple[int, int, int] = (20, 20, 12)) -> Volume:
    return Volume(np.zeros(shape, np.float32), np.diag([1.0, 1.0, 2.0, 1.0]))


def test_prepare_is_public_idempotent_and_reports_progress() -> None:
    engine = CubeEngine()
    s = Session(_volume(), engine)
    seen: list[tuple[float, str]] = []
    s.prepare(lambda f, msg: seen.append((f, msg)))
    s.prepare()
    s.add_point((5, 5, 5))
    assert engine.prepare_calls == 1 and seen == [(1.0, "ready")] and s.is_prepared


def test_predict_is_told_the_change() -> None:
    engine = CubeEngine()
    s = Session(_volume(), engine)
    s.add_point((5, 5, 5))
    s.add_point((9, 9, 5), positive=False)
    first, second = engine.changes
    assert first is not None and second is not None
    assert first.added == (Point((5.0, 5.0, 5.0), True),)
    assert second.added == (Point((9.0, 9.0, 5.0), False),) and second.replaced == ()


def test_multi_object_label_map_most_recent_wins() -> None:
    s = Session(_volume(), CubeEngine(r=2))
    s.add_point((5, 5, 5), object_id=1)
    s.add_point((7, 7, 5), object_id=2)
    lm = s.label_map
    assert lm.dtype == np.uint8 and lm[7, 7, 5] == 2 and lm[5, 5, 5] == 2 and lm[3, 3, 5] == 1
    s.add_point((3, 3, 4), object_id=1)  # object 1 edited last: wins the overlap now
    assert s.label_map[5, 5, 5] == 1
    assert s.objects == [1, 2]
    assert set(np.unique(s.mask)) == {0, 1}
    s.add_point((15, 15, 5), object_id=300)
    assert s.label_map.dtype == np.uint16


def test_reset_one_and_all_objects_is_undoable() -> None:
    s = Session(_volume(), CubeEngine())
    s.add_point((5, 5, 5), object_id=1)
    s.add_point((14, 14, 5), object_id=2)
    both = s.label_map.copy()
    s.reset(2)
    assert s.objects == [1] and s.object_mask(2).sum() == 0
    s.reset()
    assert s.objects == [] and s.mask.sum() == 0
    assert s.undo() and s.objects == [1]
    assert s.undo()
    np.testing.assert_array_equal(s.label_map, both)
    assert s.redo() and s.redo() and s.objects == []


def test_undo_redo_restore_masks_prompts_and_state() -> None:
    s = Session(_volume(), CubeEngine())
    masks = []
    for ijk in [(5, 5, 5), (9, 9, 6), (14, 4, 2)]:
        masks.append(s.add_point(ijk).copy())
    assert s.undo() and s.undo()
    np.testing.assert_array_equal(s.mask, masks[0])
    assert len(s.prompts().points) == 1
    assert s.redo()
    np.testing.assert_array_equal(s.mask, masks[1])
    s.add_point((1, 1, 1))  # a new action clears redo
    assert not s.redo()
    while s.undo():
        pass
    assert s.objects == [] and s.mask.sum() == 0


def test_set_mask_then_correct() -> None:
    vol = _volume()
    start = np.zeros(vol.shape, bool)
    start[2:6, 2:6, 2:6] = True
    s = Session(vol, CubeEngine(r=1))
    s.set_mask(start)
    np.testing.assert_array_equal(s.mask, start)
    s.add_point((4, 4, 4), positive=False)
    assert s.mask[4, 4, 4] == 0 and s.mask[2, 2, 2] == 1
    with pytest.raises(PromptError, match="differs from the volume grid"):
        s.set_mask(np.zeros((3, 3, 3)))


def test_prompt_kind_refused_with_the_kinds_taken() -> None:
    s = Session(_volume(), CubeEngine())
    with pytest.raises(PromptError, match="does not take slice_mask prompts"):
        s.set_slice_mask(2, 3, np.ones((20, 20)))


@pytest.mark.parametrize("object_id", [0, -1, 70000, 1.5, True, "a"])
def test_bad_object_ids(object_id: object) -> None:
    with pytest.raises(PromptError, match="object_id"):
        Session(_volume(), CubeEngine()).add_point((5, 5, 5), object_id=object_id)  # type: ignore[arg-type]


def test_engine_options_need_an_engine_name() -> None:
    with pytest.raises(PromptError, match="engine name"):
        Session(_volume(), CubeEngine(), margin_mm=3)


def test_propagation_streams_updates_mask_and_undoes() -> None:
    s = Session(_volume(), DiscPropagator(r=3, span=3))
    s.add_point((10, 10, 6), axis=2, propagate=False)
    assert s.mask.sum() == 0
    run = s.propagate()
    assert run.axis == 2
    seen = []
    for k, m2d in run:
        seen.append(k)
        assert s.mask[:, :, k].sum() == m2d.sum()  # the session's mask follows the stream
    assert seen == [6, 5, 7, 4, 8, 3, 9]
    full = s.mask.copy()
    assert s.undo() and s.mask.sum() == 0
    assert s.redo()
    np.testing.assert_array_equal(s.mask, full)
    assert list(s.propagate()) == []  # nothing queued


def test_propagation_cancel_keeps_decided_slices_and_frees_the_lock() -> None:
    s = Session(_volume(), DiscPropagator(r=3, span=5))
    s.add_point((10, 10, 6), axis=2, propagate=False)
    run = s.propagate()
    for i, _ in enumerate(run):
        if i == 1:
            run.cancel()
    assert run.slices_done == 2
    assert sorted(np.flatnonzero(s.mask.any(axis=(0, 1)))) == [5, 6]
    s.add_point((3, 3, 3), axis=2)  # the lock was released
    assert s.undo() and s.undo() and s.mask.sum() == 0


def test_breaking_out_of_a_propagation_releases_the_lock() -> None:
    s = Session(_volume(), DiscPropagator())
    s.add_point((10, 10, 6), axis=2, propagate=False)
    with s.propagate() as run:
        for _ in run:
            break
    assert s.mask[:, :, 6].any()
    s.add_point((5, 5, 2), axis=2)


def test_propagating_engine_through_add_point_runs_to_the_end() -> None:
    s = Session(_volume(), DiscPropagator(r=2, span=2))
    mask = s.add_point((10, 10, 6), axis=2)
    assert sorted(np.flatnonzero(mask.any(axis=(0, 1)))) == [4, 5, 6, 7, 8]


def test_non_propagating_engine_streams_changed_slices() -> None:
    s = Session(_volume(), CubeEngine(r=1))
    s.add_point((5, 5, 5), propagate=False)
    run = s.propagate()
    assert [k for k, _ in run] == [4, 5, 6] and run.axis == 2


def test_a_second_thread_waits_for_the_propagation() -> None:
    s = Session(_volume(), DiscPropagator(span=3))
    s.add_point((10, 10, 6), axis=2, propagate=False)
    run = s.propagate()
    next(run)  # lock held from here
    done = threading.Event()

    def other() -> None:
        s.add_point((2, 2, 2), axis=2, object_id=2)
        done.set()

    t = threading.Thread(target=other)
    t.start()
    assert not done.wait(0.2)
    run.run()
    t.join(5)
    assert done.is_set() and s.objects == [1, 2]


def test_empty_slice_mask_needs_a_mask_to_correct() -> None:
    s = Session(_volume(), DiscPropagator())
    with pytest.raises(PromptError, match="empty"):
        s.set_slice_mask(2, 3, np.zeros((20, 20), bool))
    assert PromptKind.SLICE_MASK in s.engine.supports
