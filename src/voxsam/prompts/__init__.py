"""Prompts a person gives: 3D points and boxes, and 2D points, boxes and masks on one slice.

Every prompt states its space explicitly; `to_voxel` converts to continuous voxel coordinates
(i, j, k) on the volume grid and checks them. Engines only ever see voxel-space prompts.

A 2D prompt carries its slice (`SliceRef(axis, index)`): its voxel coordinate along `axis` equals `index`.
Slice engines segment that slice first; 3D engines read a 2D point as a point and a 2D box as a flat box.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from enum import Enum
from typing import Literal, Union

import numpy as np

from voxsam.errors import PromptError

Space = Literal["voxel", "world"]


class PromptKind(str, Enum):
    """What a prompt is; engines declare the kinds they take (`Capabilities.prompts`)."""

    POINT = "point"  # a 3D click
    BOX = "box"  # a 3D box
    SLICE_POINT = "slice_point"  # a click on one slice
    SLICE_BOX = "slice_box"  # a 2D box on one slice
    SLICE_MASK = "slice_mask"  # a painted or corrected mask of one slice


@dataclass(frozen=True)
class SliceRef:
    """One slice of the volume: voxel index `index` along array axis `axis` (0, 1 or 2)."""

    axis: int
    index: int


@dataclass(frozen=True)
class Point:
    """One click at voxel (i, j, k); positive marks the target, negative marks background.

    `slice` is set for a 2D click: then ijk[slice.axis] == slice.index.
    """

    ijk: tuple[float, float, float]
    positive: bool = True
    slice: SliceRef | None = None

    @property
    def kind(self) -> PromptKind:
        return PromptKind.POINT if self.slice is None else PromptKind.SLICE_POINT


@dataclass(frozen=True)
class Box:
    """An axis-aligned box in voxel space: inclusive corners lo (3,) <= hi (3,).

    `slice` is set for a 2D box: then lo[axis] == hi[axis] == slice.index.
    """

    lo: tuple[float, float, float]
    hi: tuple[float, float, float]
    slice: SliceRef | None = None

    @property
    def kind(self) -> PromptKind:
        return PromptKind.BOX if self.slice is None else PromptKind.SLICE_BOX


@dataclass(frozen=True)
class SliceMask:
    """A 2D mask drawn or corrected on one slice: `mask` (bool) is indexed like the volume without `axis`."""

    axis: int
    index: int
    mask: np.ndarray = field(compare=False, repr=False)

    @property
    def kind(self) -> PromptKind:
        return PromptKind.SLICE_MASK

    @property
    def slice(self) -> SliceRef:
        return SliceRef(self.axis, self.index)


Prompt = Union[Point, Box, SliceMask]


@dataclass(frozen=True)
class PromptSet:
    """All prompts of one object so far, in the order given (a slice mask replaces an earlier one on its slice)."""

    points: tuple[Point, ...] = ()
    boxes: tuple[Box, ...] = ()
    slice_masks: tuple[SliceMask, ...] = ()

    @property
    def box(self) -> Box | None:
        """The most recent box (3D engines use one box), or None."""
        return self.boxes[-1] if self.boxes else None

    @property
    def coords(self) -> np.ndarray:
        """(N, 3) float voxel coordinates of the points."""
        return np.array([p.ijk for p in self.points], dtype=np.float64).reshape(-1, 3)

    @property
    def labels(self) -> np.ndarray:
        """(N,) int64: 1 positive, 0 negative."""
        return np.array([int(p.positive) for p in self.points], dtype=np.int64)

    @property
    def kinds(self) -> frozenset[PromptKind]:
        """The kinds of prompt present."""
        every: list[Prompt] = [*self.points, *self.boxes, *self.slice_masks]
        return frozenset(p.kind for p in every)

    def on_slice(self, ref: SliceRef) -> list[Prompt]:
        """The 2D prompts lying on slice `ref`, in order (points, boxes, then the mask)."""
        found: list[Prompt] = [p for p in self.points if p.slice == ref]
        found += [b for b in self.boxes if b.slice == ref]
        found += [m for m in self.slice_masks if m.slice == ref]
        return found

    def with_prompt(self, prompt: Prompt) -> tuple[PromptSet, Prompt | None]:
        """A new set with `prompt` appended, and the prompt it replaced (a mask on the same slice) or None."""
        if isinstance(prompt, Point):
            return PromptSet(self.points + (prompt,), self.boxes, self.slice_masks), None
        if isinstance(prompt, Box):
            return PromptSet(self.points, self.boxes + (prompt,), self.slice_masks), None
        old = next((m for m in self.slice_masks if (m.axis, m.index) == (prompt.axis, prompt.index)), None)
        kept = tuple(m for m in self.slice_masks if m is not old)
        return PromptSet(self.points, self.boxes, kept + (prompt,)), old

    def is_empty(self) -> bool:
        return not self.points and not self.boxes and not self.slice_masks


@dataclass(frozen=True)
class Change:
    """What changed since an engine's last answer for an object: the prompts added, and those they replaced."""

    added: tuple[Prompt, ...] = ()
    replaced: tuple[Prompt, ...] = ()

    def then(self, other: Change) -> Change:
        """Both changes, this one first (prompts added before one propagation)."""
        return Change(self.added + other.added, self.replaced + other.replaced)

    @property
    def last(self) -> Prompt | None:
        """The most recently added prompt, or None."""
        return self.added[-1] if self.added else None


def to_voxel(
    xyz: tuple[float, float, float] | np.ndarray,
    shape: tuple[int, int, int],
    affine: np.ndarray,
    space: Space = "voxel",
    what: str = "point",
) -> tuple[float, float, float]:
    """Convert one coordinate triple to voxel (i, j, k), checking it lies inside the grid.

    Args:
        xyz: three numbers; voxel indices when space="voxel", RAS mm when space="world".
        shape: the volume's spatial shape (X, Y, Z).
        affine: the volume's (4, 4) RAS affine.
        space: "voxel" or "world"; never guessed.
        what: how messages name the coordinate ("point", "box corner").
    Raises: PromptError for non-numbers, NaN/inf, a wrong length, an unknown space, a singular affine or a
        coordinate outside the volume.
    """
    try:
        arr = np.asarray(xyz, dtype=np.float64).reshape(-1)
    except (TypeError, ValueError):
        raise PromptError(f"a {what} needs 3 numbers, got {xyz!r}") from None
    if arr.size != 3:
        raise PromptError(f"a {what} needs 3 coordinates, got {arr.size}: {list(arr)}")
    if not np.all(np.isfinite(arr)):
        raise PromptError(f"{what} coordinates must be finite numbers, got {arr.tolist()}")
    if space == "world":
        from voxsam.transforms.geometry import apply_affine

        try:
            inverse = np.linalg.inv(affine)
        except np.linalg.LinAlgError:
            raise PromptError(f"cannot convert a world {what}: the volume's affine is singular") from None
        ijk = apply_affine(inverse, arr)
    elif space == "voxel":
        ijk = arr
    else:
        raise PromptError(f"unknown coordinate space {space!r}: use 'voxel' or 'world'")
    # voxel centres are at integer indices; a voxel extends half a voxel either side
    lo, hi = -0.5, np.asarray(shape, dtype=np.float64) - 0.5
    if np.any(ijk < lo) or np.any(ijk > hi):
        with np.errstate(all="ignore"):  # huge values: no numpy overflow warning before the message
            where = f"world {arr.round(2).tolist()} mm -> " if space == "world" else ""
            inside = ijk.round(2).tolist()
        raise PromptError(f"{what} {where}voxel {inside} lies outside the volume of shape {list(shape)}")
    return (float(ijk[0]), float(ijk[1]), float(ijk[2]))


def check_slice(shape: tuple[int, int, int], axis: int, index: int) -> SliceRef:
    """Validate a slice of a volume of `shape` (X, Y, Z); PromptError names the problem."""
    if not isinstance(axis, (int, np.integer)) or axis not in (0, 1, 2):
        raise PromptError(f"slice axis must be 0, 1 or 2, got {axis!r}")
    if not isinstance(index, (int, np.integer)) or isinstance(index, bool):
        raise PromptError(f"slice index must be an integer, got {index!r}")
    if not 0 <= index < shape[axis]:
        raise PromptError(f"slice {index} is outside 0..{shape[axis] - 1} on axis {axis}")
    if shape[axis] < 2:
        raise PromptError(f"axis {axis} has a single slice; slice prompts need a stack of slices")
    return SliceRef(int(axis), int(index))


def snap_to_slice(ijk: tuple[float, float, float], axis: int, shape: tuple[int, int, int]) -> tuple[tuple[float, float, float], SliceRef]:
    """Put a voxel coordinate on its nearest slice along `axis`: (snapped ijk, the slice)."""
    index = int(np.clip(round(ijk[axis]), 0, shape[axis] - 1))
    ref = check_slice(shape, axis, index)
    out = list(ijk)
    out[axis] = float(index)
    return (out[0], out[1], out[2]), ref
