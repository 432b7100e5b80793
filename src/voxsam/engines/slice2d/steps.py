"""The walk's bookkeeping: which slices it must visit, where it starts, and the prompts lying on a slice."""
from __future__ import annotations

from collections.abc import Iterator

import numpy as np

from voxsam.engines.slice2d.slices import PreparedVolume
from voxsam.errors import PromptError
from voxsam.prompts import Box, Change, Point, PromptSet, SliceMask

Chain = Iterator[tuple[int, np.ndarray]]


def interleave(chains: list[Chain]) -> Iterator[tuple[int, np.ndarray]]:
    """The chains' slices in turn, one from each while it lasts (the viewer sees the object grow both ways)."""
    live = list(chains)
    while live:
        for chain in list(live):
            item = next(chain, None)
            if item is None:
                live.remove(chain)
            else:
                yield item


def visit_always(prompts: PromptSet, locked: dict[int, np.ndarray], axis: int) -> set[int]:
    """Slices a strided walk must not jump over: painted ones and those holding the user's clicks or boxes."""
    stops = set(locked)
    stops.update(int(round(p.ijk[axis])) for p in prompts.points)
    stops.update(b.slice.index for b in prompts.boxes if b.slice is not None and b.slice.axis == axis)
    return stops


def next_visit(here: int, step: int, stride: int, n: int, stops: set[int]) -> int:
    """The next slice a walk from `here` decides: `stride` slices on in direction `step` (±1), no further than
    the volume's last slice or the first slice in `stops` on the way."""
    far = min(max(here + step * stride, 0), n - 1)
    for k in range(here + step, far, step):
        if k in stops:
            return k
    return far


def anchor_slice(prompts: PromptSet, change: Change | None, axis: int) -> int:
    last = change.last if change is not None else None
    if last is None:
        every: list[Point | Box | SliceMask] = [*prompts.points, *prompts.boxes, *prompts.slice_masks]
        if not every:
            raise PromptError("slice2d needs a prompt")
        last = every[-1]
    if isinstance(last, SliceMask):
        return last.index
    if isinstance(last, Box):
        return int(round(last.lo[axis]))
    return int(round(last.ijk[axis]))


def check_axis(prompts: PromptSet, axis: int, shape: tuple[int, int, int]) -> None:
    if shape[axis] < 2:
        raise PromptError(f"axis {axis} has a single slice: nothing to propagate over")
    every: list[Point | Box | SliceMask] = [*prompts.points, *prompts.boxes, *prompts.slice_masks]
    for prompt in every:
        ref = prompt.slice
        if ref is not None and ref.axis != axis:
            raise PromptError(f"a {prompt.kind.value} prompt on axis {ref.axis} does not fit this object's slice axis {axis}")
        if isinstance(prompt, Box) and ref is None:
            raise PromptError("slice2d takes 2D boxes on a slice, not 3D boxes")


def slice_prompts(prepared: PreparedVolume, axis: int, k: int, prompts: PromptSet) -> tuple[np.ndarray | None, np.ndarray | None, np.ndarray | None]:
    """Display-space clicks (N, 2) + labels (N,) and the latest box (4,) lying on slice k."""
    view = prepared.view(axis)
    on = [p for p in prompts.points if int(round(p.ijk[axis])) == k]
    points = labels = box = None
    if on:
        points = np.array([view.point_to_display(p.ijk, prepared.shape) for p in on], dtype=np.float64)
        labels = np.array([int(p.positive) for p in on], dtype=np.int64)
    boxes = [b for b in prompts.boxes if b.slice is not None and b.slice.index == k]
    if boxes:
        b = boxes[-1]
        r0, c0 = view.point_to_display(b.lo, prepared.shape)
        r1, c1 = view.point_to_display(b.hi, prepared.shape)
        box = np.array([min(r0, r1), min(c0, c1), max(r0, r1), max(c0, c1)], dtype=np.float64)
    return points, labels, box
