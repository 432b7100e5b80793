"""`Session`: one volume, one engine, several objects, each refined by prompts with undo/redo.

    from voxsam import Session
    from voxsam.io import read_volume
    s = Session(read_volume("ct.nii.gz"), "classic")
    s.add_point((120, 96, 40))                      # voxel (i, j, k), positive
    s.add_point((-31.2, 10.0, 55.5), positive=False, space="world")   # RAS mm
    s.mask                                          # (X, Y, Z) uint8 on the volume grid
    s.undo(); s.redo()
    s.add_point((60, 60, 20), object_id=2)          # a second object
    s.label_map                                     # uint8/uint16 label map of all objects

Overlap rule of `label_map`: where objects overlap, the object edited most recently wins.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np

from voxsam.engines.base import Engine, Prediction
from voxsam.errors import PromptError
from voxsam.io.volume import Volume
from voxsam.prompts import Box, Point, PromptSet, SliceMask, Space, to_voxel

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class _ObjectState:
    prompts: PromptSet = field(default_factory=PromptSet)
    prediction: Prediction | None = None


class Session:
    """Interactive segmentation of one volume with one engine.

    Args:
        volume: the image; never modified.
        engine: an `Engine` instance or a registered engine name ("classic", "sam3d", ...).
        engine_options: keyword arguments for the engine factory when `engine` is a name.
    """

    def __init__(self, volume: Volume, engine: Engine | str, **engine_options: Any) -> None:
        if isinstance(engine, str):
            from voxsam.engines import create_engine

            engine = create_engine(engine, **engine_options)
        self.volume = volume
        self.engine = engine
        self._prepared: Any = None
        self._objects: dict[int, _ObjectState] = {}
        self._order: list[int] = []  # object ids, least recently edited first
        self._undo: list[tuple[int, _ObjectState | None]] = []
        self._redo: list[tuple[int, _ObjectState | None]] = []

    # ------------------------------------------------------------------ prompts
    def add_point(
        self, xyz: tuple[float, float, float], positive: bool = True, space: Space = "voxel", object_id: int = 1
    ) -> np.ndarray:
        """Add a click and return the object's new mask (X, Y, Z) uint8.

        Args:
            xyz: voxel (i, j, k) when space="voxel"; RAS mm when space="world".
            positive: True for "this is the target", False for "this is background".
        """
        if not isinstance(positive, (bool, np.bool_)) and positive not in (0, 1):
            raise PromptError(f"a point label must be positive (1) or negative (0), got {positive!r}")
        ijk = to_voxel(xyz, self.volume.shape, self.volume.affine, space)
        self._require("point")
        state = self._objects.get(object_id, _ObjectState())
        prompts = replace(state.prompts, points=state.prompts.points + (Point(ijk, bool(positive)),))
        return self._update(object_id, prompts)

    def add_box(
        self,
        corner_a: tuple[float, float, float],
        corner_b: tuple[float, float, float],
        space: Space = "voxel",
        object_id: int = 1,
    ) -> np.ndarray:
        """Set the object's 3D box from two opposite corners (replaces an earlier box)."""
        a = np.array(to_voxel(corner_a, self.volume.shape, self.volume.affine, space))
        b = np.array(to_voxel(corner_b, self.volume.shape, self.volume.affine, space))
        self._require("box")
        box = Box(tuple(np.minimum(a, b).tolist()), tuple(np.maximum(a, b).tolist()))  # type: ignore[arg-type]
        state = self._objects.get(object_id, _ObjectState())
        return self._update(object_id, replace(state.prompts, box=box))

    def set_slice_mask(self, axis: int, index: int, mask2d: np.ndarray, object_id: int = 1) -> np.ndarray:
        """Give (or correct) the object's mask on one slice; the engine propagates it."""
        if axis not in (0, 1, 2):
            raise PromptError(f"slice axis must be 0, 1 or 2, got {axis}")
        if not 0 <= index < self.volume.shape[axis]:
            raise PromptError(f"slice {index} is outside 0..{self.volume.shape[axis] - 1} on axis {axis}")
        expected = tuple(s for a, s in enumerate(self.volume.shape) if a != axis)
        m = np.asarray(mask2d)
        if m.shape != expected:
            raise PromptError(f"slice mask shape {m.shape} differs from the slice shape {expected}")
        self._require("slice_mask")
        state = self._objects.get(object_id, _ObjectState())
        kept = tuple(s for s in state.prompts.slice_masks if (s.axis, s.index) != (axis, index))
        prompts = replace(state.prompts, slice_masks=kept + (SliceMask(axis, index, m.astype(bool).copy()),))
        return self._update(object_id, prompts)

    # ------------------------------------------------------------------ history
    def undo(self) -> bool:
        """Take back the last action (on any object). Returns False when there is nothing to undo."""
        if not self._undo:
            return False
        object_id, before = self._undo.pop()
        self._redo.append((object_id, self._objects.get(object_id)))
        self._restore(object_id, before)
        return True

    def redo(self) -> bool:
        """Re-apply the last undone action without recomputing it."""
        if not self._redo:
            return False
        object_id, after = self._redo.pop()
        self._undo.append((object_id, self._objects.get(object_id)))
        self._restore(object_id, after)
        return True

    def reset(self, object_id: int | None = None) -> None:
        """Forget one object's prompts and mask, or every object's (None). Undoable."""
        ids = list(self._objects) if object_id is None else [object_id]
        for oid in ids:
            if oid in self._objects:
                self._undo.append((oid, self._objects[oid]))
                self._restore(oid, None)
        self._redo.clear()

    # ------------------------------------------------------------------ results
    @property
    def objects(self) -> list[int]:
        """Ids of the objects that have prompts, ascending."""
        return sorted(self._objects)

    def prompts(self, object_id: int = 1) -> PromptSet:
        state = self._objects.get(object_id)
        return state.prompts if state else PromptSet()

    def object_mask(self, object_id: int = 1) -> np.ndarray:
        """(X, Y, Z) uint8 mask of one object (all zeros when it has no prompts)."""
        state = self._objects.get(object_id)
        if state is None or state.prediction is None:
            return np.zeros(self.volume.shape, dtype=np.uint8)
        return state.prediction.mask.astype(np.uint8)

    @property
    def mask(self) -> np.ndarray:
        """(X, Y, Z) uint8: the mask of the single object, or the union of all objects."""
        if len(self._objects) <= 1:
            return self.object_mask(next(iter(self._objects), 1))
        return (self.label_map > 0).astype(np.uint8)

    @property
    def label_map(self) -> np.ndarray:
        """(X, Y, Z) label map: voxel value = object id; on overlap the most recently edited object wins."""
        top = max(self._objects, default=0)
        out = np.zeros(self.volume.shape, dtype=np.uint8 if top < 256 else np.uint16)
        for oid in self._order:  # later writes win
            out[self.object_mask(oid) > 0] = oid
        return out

    # ------------------------------------------------------------------ internals
    def _require(self, kind: str) -> None:
        if kind not in self.engine.supports:
            raise PromptError(f"engine {self.engine.name!r} does not take {kind} prompts")

    def _prepared_volume(self) -> Any:
        if self._prepared is None:
            self._prepared = self.engine.prepare(self.volume)
        return self._prepared

    def _update(self, object_id: int, prompts: PromptSet) -> np.ndarray:
        if not (isinstance(object_id, (int, np.integer)) and 1 <= object_id <= 65535):
            raise PromptError(f"object_id must be an integer in 1..65535, got {object_id!r}")
        before = self._objects.get(object_id)
        previous = before.prediction if before else None
        prediction = self.engine.predict(self._prepared_volume(), prompts, previous)
        if prediction.mask.shape != self.volume.shape:
            raise RuntimeError(f"engine {self.engine.name} returned shape {prediction.mask.shape}, grid is {self.volume.shape}")
        self._undo.append((object_id, before))
        self._redo.clear()
        self._restore(object_id, _ObjectState(prompts, prediction))
        return self.object_mask(object_id)

    def _restore(self, object_id: int, state: _ObjectState | None) -> None:
        if object_id in self._order:
            self._order.remove(object_id)
        if state is None:
            self._objects.pop(object_id, None)
        else:
            self._objects[object_id] = state
            self._order.append(object_id)
