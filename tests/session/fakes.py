"""Small engines for Session tests: a box painter (3D) and a slice propagator (2D), no models."""
from __future__ import annotations

from collections.abc import Generator
from typing import Any

import numpy as np

from voxsam.engines.base import Capabilities, Engine, Prediction, ProgressFn, SliceAxisRule
from voxsam.io.volume import Volume
from voxsam.prompts import Change, PromptKind, PromptSet


class CubeEngine(Engine):
    """Each positive point paints a cube of half-size `r` voxels; negative points erase one; reports its region."""

    name = "cube"
    capabilities = Capabilities(frozenset({PromptKind.POINT, PromptKind.BOX, PromptKind.SLICE_POINT}))

    def __init__(self, r: int = 2) -> None:
        self.r = r
        self.prepare_calls = 0
        self.changes: list[Change | None] = []

    def prepare(self, volume: Volume, progress: ProgressFn | None = None) -> Any:
        self.prepare_calls += 1
        if progress:
            progress(1.0, "ready")
        return volume.shape

    def predict(self, prepared: Any, prompts: PromptSet, previous: Prediction | None, change: Change | None = None) -> Prediction:
        self.changes.append(change)
        mask = np.zeros(prepared, dtype=bool) if previous is None else previous.mask.copy()
        region = None
        for p in change.added if change else ():
            ijk = np.round(p.ijk).astype(int)  # type: ignore[union-attr]
            sl = tuple(slice(max(0, c - self.r), c + self.r + 1) for c in ijk)
            mask[sl] = bool(getattr(p, "positive", True))
            region = sl
        return Prediction(mask, state={"n": len(prompts.points)}, region=region if change and len(change.added) == 1 else None)


class DiscPropagator(Engine):
    """A slice engine: from a 2D point, a disc of radius `r` on every slice within `span` of it, yielded
    outward in both directions (the prompted slice first)."""

    name = "disc"
    capabilities = Capabilities(
        frozenset({PromptKind.SLICE_POINT, PromptKind.POINT, PromptKind.SLICE_MASK}), propagates=True, slice_axis=SliceAxisRule.PROMPTED
    )

    def __init__(self, r: float = 3.0, span: int = 4) -> None:
        self.r, self.span = r, span

    def prepare(self, volume: Volume, progress: ProgressFn | None = None) -> Any:
        return volume.shape

    def propagation_axis(self, prepared: Any, prompts: PromptSet, change: Change | None = None) -> int:
        last = change.last if change else None
        ref = getattr(last, "slice", None)
        return ref.axis if ref is not None else 2

    def propagate(
        self, prepared: Any, prompts: PromptSet, previous: Prediction | None, change: Change | None = None
    ) -> Generator[tuple[int, np.ndarray], None, Prediction]:
        axis = self.propagation_axis(prepared, prompts, change)
        shape = prepared
        mask = np.zeros(shape, dtype=bool) if previous is None else previous.mask.copy()
        p = change.last if change else None
        assert p is not None
        centre = np.array(p.ijk if hasattr(p, "ijk") else (0, 0, 0), dtype=float)  # type: ignore[union-attr]
        k0 = int(round(centre[axis])) if hasattr(p, "ijk") else p.index  # type: ignore[union-attr]
        plane_axes = [a for a in range(3) if a != axis]
        grid = np.indices([shape[a] for a in plane_axes]).astype(float)
        disc = (grid[0] - centre[plane_axes[0]]) ** 2 + (grid[1] - centre[plane_axes[1]]) ** 2 <= self.r**2
        if not hasattr(p, "ijk"):
            disc = p.mask  # type: ignore[union-attr]
        order = [k0] + [k for d in range(1, self.span + 1) for k in (k0 - d, k0 + d) if 0 <= k < shape[axis]]
        for k in order:
            plane: list[Any] = [slice(None)] * 3
            plane[axis] = k
            mask[tuple(plane)] = disc
            yield k, disc
        return Prediction(mask, state={"k0": k0})
