"""Undo/redo as differences: each step keeps, per object, its prompts and engine state before the step and
the voxels that changed (a bounding-box patch, bit-packed), never a whole mask. The history is bounded by a
memory budget: the oldest steps are forgotten first (the latest step is always kept).
"""
from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from voxsam.engines.base import Region
from voxsam.prompts import Change, PromptSet


@dataclass(frozen=True)
class ObjectState:
    """One object's prompts and its engine's private state (the mask lives in the session)."""

    prompts: PromptSet = field(default_factory=PromptSet)
    engine_state: Any = None


@dataclass
class Patch:
    """The voxels of one mask inside `region`, bit-packed (8 voxels per byte)."""

    region: Region
    shape: tuple[int, int, int]
    bits: np.ndarray

    @classmethod
    def take(cls, mask: np.ndarray, region: Region) -> Patch:
        part = mask[region]
        return cls(region, (part.shape[0], part.shape[1], part.shape[2]), np.packbits(part, axis=None))

    def values(self) -> np.ndarray:
        count = int(np.prod(self.shape))
        return np.unpackbits(self.bits, count=count).astype(bool).reshape(self.shape)

    @property
    def nbytes(self) -> int:
        return int(self.bits.nbytes)


@dataclass
class ObjectEdit:
    """How one object changes in one step: state before and after, and the patch of the other version.

    In the undo stack `patch` holds the voxels as they were before the step; undoing swaps it with the
    current voxels, so the entry moved to the redo stack holds the voxels after the step.
    """

    object_id: int
    before: ObjectState | None
    after: ObjectState | None
    patch: Patch | None

    def reversed(self, patch: Patch | None) -> ObjectEdit:
        return ObjectEdit(self.object_id, self.after, self.before, patch)

    @property
    def nbytes(self) -> int:
        states = sum(state_nbytes(s.engine_state) for s in (self.before, self.after) if s is not None)
        masks = sum(state_nbytes([m.mask for m in s.prompts.slice_masks]) for s in (self.before, self.after) if s is not None)
        return (self.patch.nbytes if self.patch else 0) + states + masks


@dataclass
class Step:
    """One user action (a prompt, a propagation, a reset of several objects): undone as a whole."""

    edits: list[ObjectEdit]
    order_before: list[int]
    order_after: list[int]

    @property
    def nbytes(self) -> int:
        return sum(e.nbytes for e in self.edits)


def state_nbytes(obj: Any, _depth: int = 0) -> int:
    """Rough memory of an engine state: the bytes of the arrays and tensors it holds (nested containers)."""
    if obj is None or _depth > 6:
        return 0
    if isinstance(obj, np.ndarray):
        return int(obj.nbytes)
    if hasattr(obj, "element_size") and hasattr(obj, "numel"):  # a torch tensor, without importing torch
        return int(obj.element_size() * obj.numel())
    if isinstance(obj, dict):
        return sum(state_nbytes(v, _depth + 1) for v in obj.values())
    if isinstance(obj, (list, tuple, set, frozenset)):
        return sum(state_nbytes(v, _depth + 1) for v in obj)
    return 0


class History:
    """Undo and redo stacks of `Step`s within `budget_bytes` (counting patches and engine states)."""

    def __init__(self, budget_bytes: int) -> None:
        self.budget_bytes = int(budget_bytes)
        self.undo: deque[Step] = deque()
        self.redo: list[Step] = []
        self._undo_bytes = 0
        self.dropped = 0  # steps forgotten to stay within the budget

    @property
    def nbytes(self) -> int:
        return self._undo_bytes + sum(s.nbytes for s in self.redo)

    def push(self, step: Step) -> None:
        """Record a new action: it clears the redo stack."""
        self.redo.clear()
        self.push_undo(step)

    def push_undo(self, step: Step) -> None:
        self.undo.append(step)
        self._undo_bytes += step.nbytes
        while len(self.undo) > 1 and self.nbytes > self.budget_bytes:
            self._undo_bytes -= self.undo.popleft().nbytes
            self.dropped += 1

    def pop_undo(self) -> Step | None:
        if not self.undo:
            return None
        step = self.undo.pop()
        self._undo_bytes -= step.nbytes
        return step


@dataclass
class Pending:
    """Prompts given with propagate=False, applied by the next `Session.propagate`."""

    prompts: PromptSet
    change: Change


def union_regions(regions: list[Region]) -> Region | None:
    """The smallest block holding every region (None for none)."""
    if not regions:
        return None
    lo = [min(r[a].start for r in regions) for a in range(3)]
    hi = [max(r[a].stop for r in regions) for a in range(3)]
    return (slice(lo[0], hi[0]), slice(lo[1], hi[1]), slice(lo[2], hi[2]))
