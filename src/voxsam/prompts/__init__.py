"""Prompts a person gives: points, 3D boxes and slice masks, in voxel or world coordinates.

Every prompt states its space explicitly; `to_voxel` converts to continuous voxel coordinates
(i, j, k) on the volume grid and checks them. Engines only ever see voxel-space prompts.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

import numpy as np

from voxsam.errors import PromptError

Space = Literal["voxel", "world"]


@dataclass(frozen=True)
class Point:
    """One click at voxel (i, j, k); positive marks the target, negative marks background."""

    ijk: tuple[float, float, float]
    positive: bool = True


@dataclass(frozen=True)
class Box:
    """An axis-aligned 3D box in voxel space: inclusive corners lo (3,) and hi (3,)."""

    lo: tuple[float, float, float]
    hi: tuple[float, float, float]


@dataclass(frozen=True)
class SliceMask:
    """A 2D mask drawn or corrected on one slice: `mask` is indexed like the volume without `axis`."""

    axis: int
    index: int
    mask: np.ndarray = field(compare=False)


@dataclass(frozen=True)
class PromptSet:
    """All prompts of one object so far, in the order given."""

    points: tuple[Point, ...] = ()
    box: Box | None = None
    slice_masks: tuple[SliceMask, ...] = ()

    @property
    def coords(self) -> np.ndarray:
        """(N, 3) float voxel coordinates of the points."""
        return np.array([p.ijk for p in self.points], dtype=np.float64).reshape(-1, 3)

    @property
    def labels(self) -> np.ndarray:
        """(N,) int64: 1 positive, 0 negative."""
        return np.array([int(p.positive) for p in self.points], dtype=np.int64)

    def is_empty(self) -> bool:
        return not self.points and self.box is None and not self.slice_masks


def to_voxel(
    xyz: tuple[float, float, float] | np.ndarray,
    shape: tuple[int, int, int],
    affine: np.ndarray,
    space: Space = "voxel",
) -> tuple[float, float, float]:
    """Convert one coordinate triple to voxel (i, j, k), checking it lies inside the grid.

    Args:
        xyz: three numbers; voxel indices when space="voxel", RAS mm when space="world".
        shape: the volume's spatial shape (X, Y, Z).
        affine: the volume's (4, 4) RAS affine.
        space: "voxel" or "world"; never guessed.
    Raises: PromptError for NaN/inf, a wrong length, an unknown space or a point outside the volume.
    """
    arr = np.asarray(xyz, dtype=np.float64).reshape(-1)
    if arr.size != 3:
        raise PromptError(f"a point needs 3 coordinates, got {arr.size}: {list(arr)}")
    if not np.all(np.isfinite(arr)):
        raise PromptError(f"point coordinates must be finite numbers, got {arr.tolist()}")
    if space == "world":
        from voxsam.transforms.geometry import apply_affine

        ijk = apply_affine(np.linalg.inv(affine), arr)
    elif space == "voxel":
        ijk = arr
    else:
        raise PromptError(f"unknown coordinate space {space!r}: use 'voxel' or 'world'")
    # voxel centres are at integer indices; a voxel extends half a voxel either side
    lo, hi = -0.5, np.asarray(shape, dtype=np.float64) - 0.5
    if np.any(ijk < lo) or np.any(ijk > hi):
        where = f"world {arr.round(2).tolist()} mm -> " if space == "world" else ""
        raise PromptError(f"point {where}voxel {ijk.round(2).tolist()} lies outside the volume of shape {list(shape)}")
    return (float(ijk[0]), float(ijk[1]), float(ijk[2]))
