"""`Session`: one volume, one engine, several objects, each refined by prompts, with bounded undo/redo.

    from voxsam import Session
    from voxsam.io import read_volume
    s = Session(read_volume("ct.nii.gz"), "classic")
    s.prepare()                                     # optional: otherwise the first prompt prepares
    s.add_point((120, 96, 40))                      # voxel (i, j, k), positive: returns the 3D mask
    s.add_point((-31.2, 10.0, 55.5), positive=False, space="world")   # RAS mm
    s.add_box((10, 20, 40), (60, 80, 40), axis=2)   # a 2D box on axial slice 40
    s.add_point((30, 40, 41), axis=2, propagate=False)   # queue a prompt, then stream the propagation:
    for k, mask2d in s.propagate(): ...             # (slice index, 2D mask); run.cancel() stops it
    s.undo(); s.redo()
    s.label_map                                     # label map of all objects

Thread safety: every method that changes the session holds the session's lock, so a web server may drive
one session from several threads; a propagation holds it from its first slice until it ends or is
cancelled. Reading `mask` / `label_map` during a propagation shows the slices decided so far.

Overlap rule of `label_map`: where objects overlap, the object edited most recently wins.
"""
from __future__ import annotations

import logging
import threading
from collections.abc import Generator
from typing import Any

import numpy as np

from voxsam.engines.base import Engine, Prediction, ProgressFn, Region, acquisition_axis, changed_region
from voxsam.errors import PromptError
from voxsam.io.volume import Volume
from voxsam.prompts import Change, Prompt, PromptSet, SliceMask
from voxsam.session.history import History, ObjectEdit, ObjectState, Patch, Pending, Step, union_regions
from voxsam.session.masks import as_uint8, bounding_box, full_region, intersection, normalised, slab, union
from voxsam.session.propagation import Propagation
from voxsam.session.prompting import PromptBuilders, check_object_id

log = logging.getLogger(__name__)

DEFAULT_HISTORY_BYTES = 512 * 2**20


class Session(PromptBuilders):
    """Interactive segmentation of one volume with one engine.

    Args:
        volume: the image; never modified.
        engine: an `Engine` instance or a registered engine name ("classic", "sam3d", ...).
        history_bytes: memory budget of undo/redo (patches + engine states); the oldest steps go first.
        engine_options: options of the engine when `engine` is a name (validated by its options class).
    """

    def __init__(self, volume: Volume, engine: Engine | str, history_bytes: int = DEFAULT_HISTORY_BYTES, **engine_options: Any) -> None:
        if isinstance(engine, str):
            from voxsam.engines import create_engine

            engine = create_engine(engine, **engine_options)
        elif engine_options:
            raise PromptError("engine options go with an engine name, not with an engine instance")
        self.volume = volume
        self.engine = engine
        self._lock = threading.Lock()
        self._prepared: Any = None
        self._objects: dict[int, ObjectState] = {}
        self._masks: dict[int, np.ndarray] = {}  # (X, Y, Z) bool per object
        self._boxes: dict[int, Region | None] = {}  # per object: a box holding every True voxel (None: empty)
        self._pending: dict[int, Pending] = {}
        self._order: list[int] = []  # object ids, least recently edited first
        self._history = History(history_bytes)
        self._last_region: Region | None = None

    # ------------------------------------------------------------------ preparation
    def prepare(self, progress: ProgressFn | None = None) -> None:
        """Do the engine's per-volume work now (otherwise the first prompt does it). Idempotent."""
        with self._lock:
            self._prepare(progress)

    @property
    def is_prepared(self) -> bool:
        return self._prepared is not None

    # ------------------------------------------------------------------ prompts
    def add_prompt(self, prompt: Prompt, object_id: int = 1, *, propagate: bool = True) -> np.ndarray:
        """Add a voxel-space prompt object (`Point`, `Box`, `SliceMask`) and return the object's mask."""
        check_object_id(object_id)
        if prompt.kind not in self.engine.capabilities.prompts:
            takes = ", ".join(sorted(k.value for k in self.engine.capabilities.prompts))
            raise PromptError(f"engine {self.engine.name!r} does not take {prompt.kind.value} prompts (it takes: {takes})")
        if isinstance(prompt, SliceMask) and not prompt.mask.any() and not self._has_mask(object_id):
            raise PromptError(f"the mask on slice {prompt.index} of axis {prompt.axis} is empty and the object has no mask to correct")
        with self._lock:
            base = self._pending[object_id].prompts if object_id in self._pending else self._state(object_id).prompts
            prompts, replaced = base.with_prompt(prompt)
            change = Change((prompt,), (replaced,) if replaced is not None else ())
            if object_id in self._pending:
                change = self._pending[object_id].change.then(change)
            self._pending[object_id] = Pending(prompts, change)
            if propagate:
                self._run_to_end(object_id)
            return self._mask_u8(object_id)

    def set_mask(self, mask3d: np.ndarray, object_id: int = 1) -> np.ndarray:
        """Replace an object's mask by `mask3d` (X, Y, Z), e.g. one read from a file, to correct it with
        prompts; its earlier prompts are forgotten. Undoable."""
        check_object_id(object_id)
        m = np.asarray(mask3d)
        if m.shape != self.volume.shape:
            raise PromptError(f"mask shape {m.shape} differs from the volume grid {self.volume.shape}")
        with self._lock:
            self._pending.pop(object_id, None)
            self._commit(object_id, ObjectState(), m.astype(bool).copy(), None)
            return self._mask_u8(object_id)

    # ------------------------------------------------------------------ propagation
    def propagate(self, object_id: int | None = None) -> Propagation:
        """Apply the queued prompts of an object (default: the only object with queued prompts) and stream
        the result as `(slice_index, mask2d)` along `Propagation.axis`.

        Propagating engines yield slices as they decide them; other engines predict at once and yield the
        slices whose mask changed. Nothing queued: yields nothing.
        """
        if object_id is None:
            queued = sorted(self._pending)
            object_id = queued[0] if len(queued) == 1 else (queued[0] if queued else 1)
        check_object_id(object_id)
        cancelled = threading.Event()
        axis = self._axis_for(object_id)
        return Propagation(self._propagation(object_id, cancelled, axis), axis, object_id, cancelled)

    def _axis_for(self, object_id: int) -> int:
        pending = self._pending.get(object_id)
        if pending is not None and self.engine.capabilities.propagates:
            with self._lock:
                return self.engine.propagation_axis(self._prepare(None), pending.prompts, pending.change)
        return acquisition_axis(self.volume.affine)

    def _propagation(self, object_id: int, cancelled: threading.Event, axis: int) -> Generator[tuple[int, np.ndarray], None, None]:
        with self._lock:
            if object_id not in self._pending:
                return
            yield from self._steps(object_id, cancelled, axis)

    def _run_to_end(self, object_id: int) -> None:
        """Apply the queued prompts without streaming (lock held)."""
        pending = self._pending.pop(object_id)
        prepared = self._prepare(None)
        previous = self._previous(object_id)
        prediction = self.engine.predict(prepared, pending.prompts, previous, pending.change)
        self._check_prediction(prediction)
        self._commit(object_id, ObjectState(pending.prompts, prediction.state), prediction.mask, prediction.region)

    def _steps(self, object_id: int, cancelled: threading.Event, axis: int) -> Generator[tuple[int, np.ndarray], None, None]:
        """The body of a propagation (lock held by the caller for its whole life)."""
        pending = self._pending.pop(object_id)
        prepared = self._prepare(None)
        previous = self._previous(object_id)
        old = self._masks.get(object_id)
        if not self.engine.capabilities.propagates:
            answer = self.engine.predict(prepared, pending.prompts, previous, pending.change)
            self._check_prediction(answer)
            region = self._commit(object_id, ObjectState(pending.prompts, answer.state), answer.mask, answer.region, old)
            if region is not None:
                mask = self._masks[object_id]
                for k in range(region[axis].start, region[axis].stop):
                    if cancelled.is_set():
                        return
                    yield k, np.take(mask, k, axis=axis)
            return
        work = old.copy() if old is not None else np.zeros(self.volume.shape, dtype=bool)
        old_box = self._boxes.get(object_id)
        self._masks[object_id] = work  # readers see the slices as they come
        touched: list[int] = []
        steps = self.engine.propagate(prepared, pending.prompts, previous, pending.change)
        prediction: Prediction | None = None
        try:
            while True:
                if cancelled.is_set():
                    log.info("propagation of object %d cancelled after %d slices", object_id, len(touched))
                    break
                try:
                    k, mask2d = next(steps)
                except StopIteration as done:
                    prediction = done.value
                    break
                plane = [slice(None)] * 3
                plane[axis] = slice(int(k), int(k) + 1)
                work[tuple(plane)] = np.expand_dims(np.asarray(mask2d, dtype=bool), axis)
                touched.append(int(k))
                self._boxes[object_id] = union(self._boxes.get(object_id), slab(self.volume.shape, axis, int(k), int(k)), self.volume.shape)
                yield int(k), mask2d
        except GeneratorExit:
            pass  # the caller stopped iterating: keep the slices decided so far, as a cancel does
        except BaseException:
            self._restore_mask(object_id, old, old_box)  # an engine error changes nothing
            raise
        finally:
            steps.close()
        state = previous.state if previous is not None else None
        final, region = work, slab(self.volume.shape, axis, min(touched), max(touched)) if touched else None
        if prediction is not None:
            self._check_prediction(prediction)
            final, region, state = prediction.mask, prediction.region, prediction.state
        self._restore_mask(object_id, old, old_box)
        if region is None and prediction is None:
            region = (slice(0, 0), slice(0, 0), slice(0, 0))  # cancelled before the first slice
        self._commit(object_id, ObjectState(pending.prompts, state), final, region, old)

    def _restore_mask(self, object_id: int, mask: np.ndarray | None, box: Region | None) -> None:
        if mask is None:
            self._masks.pop(object_id, None)
            self._boxes.pop(object_id, None)
        else:
            self._masks[object_id] = mask
            self._boxes[object_id] = box

    # ------------------------------------------------------------------ history
    def undo(self) -> bool:
        """Take back the last action (queued prompts first). Returns False when there is nothing to undo."""
        with self._lock:
            self._last_region = None
            if self._pending:
                self._pending.popitem()
                return True
            step = self._history.pop_undo()
            if step is None:
                return False
            self._history.redo.append(self._apply(step, step.order_before))
            return True

    def redo(self) -> bool:
        """Re-apply the last undone action without recomputing it."""
        with self._lock:
            self._last_region = None
            if not self._history.redo:
                return False
            step = self._history.redo.pop()
            self._history.push_undo(self._apply(step, step.order_before))
            return True

    def reset(self, object_id: int | None = None) -> None:
        """Forget one object's prompts and mask, or every object's (None). Undoable as one step."""
        with self._lock:
            ids = list(self._objects) if object_id is None else [object_id]
            edits = []
            order_before = list(self._order)
            for oid in ids:
                self._pending.pop(oid, None)
                if oid not in self._objects:
                    continue
                mask = self._masks.pop(oid)
                box = self._boxes.pop(oid, None)
                region = bounding_box(mask, box) if box is not None else None
                edits.append(ObjectEdit(oid, self._objects.pop(oid), None, Patch.take(mask, region) if region else None))
                self._order.remove(oid)
            self._last_region = union_regions([e.patch.region for e in edits if e.patch is not None])
            if edits:
                self._history.push(Step(edits, order_before, list(self._order)))

    @property
    def last_region(self) -> Region | None:
        """The block of the grid the last change (prompt, propagation, set_mask, undo, redo, reset) altered, as
        three slices; None when it altered nothing. Lets a viewer fetch only that block again."""
        return self._last_region

    @property
    def history_bytes(self) -> int:
        """Memory the undo/redo history holds now (bytes)."""
        return self._history.nbytes

    @property
    def undo_depth(self) -> int:
        return len(self._history.undo)

    # ------------------------------------------------------------------ results
    @property
    def objects(self) -> list[int]:
        """Ids of the objects that have a mask or prompts, ascending."""
        return sorted(self._objects)

    def prompts(self, object_id: int = 1) -> PromptSet:
        """The applied prompts of an object (queued ones excluded)."""
        return self._state(object_id).prompts

    def object_mask(self, object_id: int = 1) -> np.ndarray:
        """(X, Y, Z) uint8 mask of one object (all zeros when it has none)."""
        return self._mask_u8(object_id)

    @property
    def mask(self) -> np.ndarray:
        """(X, Y, Z) uint8: the mask of the single object, or the union of all objects."""
        if len(self._objects) <= 1:
            return self._mask_u8(next(iter(self._objects), 1))
        out = np.zeros(self.volume.shape, dtype=np.uint8)
        for oid in list(self._order):
            mask, box = self._masks.get(oid), self._boxes.get(oid)
            if mask is not None and box is not None:
                out[box] |= mask[box]
        return out

    @property
    def label_map(self) -> np.ndarray:
        """(X, Y, Z) label map: voxel value = object id; on overlap the most recently edited object wins."""
        return self.label_block(full_region(self.volume.shape))

    def label_block(self, region: Region) -> np.ndarray:
        """`label_map[region]` at the cost of the objects' boxes inside `region` (same overlap rule)."""
        top = max(self._objects, default=0)
        block = normalised(region, self.volume.shape)
        out = np.zeros(tuple(b.stop - b.start for b in block), dtype=np.uint8 if top < 256 else np.uint16)
        for oid in list(self._order):  # later writes win
            mask, box = self._masks.get(oid), self._boxes.get(oid)
            common = intersection(box, block) if mask is not None and box is not None else None
            if common is not None:
                inside = tuple(slice(c.start - b.start, c.stop - b.start) for c, b in zip(common, block))
                part = out[inside]
                part[mask[common]] = oid  # type: ignore[index]
        return out

    # ------------------------------------------------------------------ internals
    def _prepare(self, progress: ProgressFn | None) -> Any:
        if self._prepared is None:
            self._prepared = self.engine.prepare(self.volume, progress)
        return self._prepared

    def _state(self, object_id: int) -> ObjectState:
        return self._objects.get(object_id) or ObjectState()

    def _has_mask(self, object_id: int) -> bool:
        mask = self._masks.get(object_id)
        box = self._boxes.get(object_id)
        return mask is not None and box is not None and bounding_box(mask, box) is not None

    def _mask_u8(self, object_id: int) -> np.ndarray:
        """A new uint8 copy of the object's mask, at the cost of its box (`session.masks`)."""
        return as_uint8(self._masks.get(object_id), self._boxes.get(object_id), self.volume.shape)

    def _previous(self, object_id: int) -> Prediction | None:
        if object_id not in self._objects:
            return None
        mask = self._masks[object_id].view()
        mask.flags.writeable = False
        return Prediction(mask, self._objects[object_id].engine_state)

    def _check_prediction(self, prediction: Prediction) -> None:
        if prediction.mask.shape != self.volume.shape:
            raise RuntimeError(f"engine {self.engine.name} returned shape {prediction.mask.shape}, grid is {self.volume.shape}")

    def _commit(
        self, object_id: int, state: ObjectState, mask: np.ndarray, region: Region | None, old: np.ndarray | None = None
    ) -> Region | None:
        """Make (state, mask) the object's current version and record the difference as one undo step."""
        if old is None:
            old = self._masks.get(object_id)
        new = np.asarray(mask, dtype=bool)
        if old is not None and new is old:
            new = new.copy()  # the engine returned the previous mask itself: keep ours separate
        reference = old if old is not None else np.zeros((1, 1, 1), dtype=bool)
        changed = changed_region(np.broadcast_to(reference, new.shape), new, region)
        patch = Patch.take(np.broadcast_to(reference, new.shape), changed) if changed is not None else None
        old_box = self._boxes.get(object_id) if old is not None else None
        order_before = list(self._order)
        before = self._objects.get(object_id)
        self._objects[object_id] = state
        self._masks[object_id] = new if new.flags.writeable else new.copy()
        # the new mask's True voxels lie in the old box or where the masks differ
        self._boxes[object_id] = old_box if changed is None else bounding_box(new, union(old_box, changed, new.shape))
        if object_id in self._order:
            self._order.remove(object_id)
        self._order.append(object_id)
        self._history.push(Step([ObjectEdit(object_id, before, state, patch)], order_before, list(self._order)))
        self._last_region = changed
        return changed

    def _apply(self, step: Step, order: list[int]) -> Step:
        """Swap every edit of `step` in (undo or redo); returns the step that reverses it."""
        reversed_edits = []
        for edit in reversed(step.edits):
            oid = edit.object_id
            mask = self._masks.get(oid)
            if mask is None:
                mask = np.zeros(self.volume.shape, dtype=bool)
            other = None
            box = self._boxes.get(oid)
            if edit.patch is not None:
                other = Patch.take(mask, edit.patch.region)
                mask[edit.patch.region] = edit.patch.values()
                box = bounding_box(mask, union(box, edit.patch.region, mask.shape))
            if edit.before is None:
                self._objects.pop(oid, None)
                self._masks.pop(oid, None)
                self._boxes.pop(oid, None)
            else:
                self._objects[oid] = edit.before
                self._masks[oid] = mask
                self._boxes[oid] = box
            reversed_edits.append(edit.reversed(other))
        self._order = [oid for oid in order if oid in self._objects]
        self._last_region = union_regions([e.patch.region for e in step.edits if e.patch is not None])
        return Step(list(reversed(reversed_edits)), step.order_after, step.order_before)
