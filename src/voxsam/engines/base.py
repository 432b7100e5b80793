"""The small interface every engine implements.

An engine knows one model family's input rules (spacing, crop, normalisation, slice order). It gets a
`Volume` once (`prepare`) and then voxel-space prompts with what changed since its last answer (`predict`),
and returns a mask on the volume's own grid. It never reads or writes files.

Engines that propagate over slices (`Capabilities.propagates`) also implement `propagate`: a generator of
`(slice_index, mask2d)` along `propagation_axis`, returning the final `Prediction`; `Session.propagate()`
re-yields it and can stop it between slices.
"""
from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable, Generator
from dataclasses import dataclass
from enum import Enum
from typing import Any, ClassVar

import numpy as np

from voxsam.io.volume import Volume
from voxsam.prompts import Change, PromptKind, PromptSet

#: progress(fraction in [0, 1], message): how long work (prepare, propagation) reports where it is
ProgressFn = Callable[[float, str], None]

#: a propagation step: (slice index along the propagation axis, (A, B) bool mask of that slice)
SliceUpdate = tuple[int, np.ndarray]

Region = tuple[slice, slice, slice]


class SliceAxisRule(str, Enum):
    """Which slices an engine works on."""

    NONE = "none"  # a 3D engine: no slice axis
    ACQUISITION = "acquisition"  # the largest-spacing axis (the most superior one when isotropic) unless prompted on another
    PROMPTED = "prompted"  # the axis of the slice prompt; the acquisition axis for 3D prompts


@dataclass(frozen=True)
class Capabilities:
    """What an engine takes and does.

    Attributes:
        prompts: the prompt kinds it understands.
        propagates: True when it builds the 3D mask slice by slice (implements `propagate`).
        slice_axis: how it picks its slice axis.
        edits_masks: True when it can start from an existing 3D mask (`Session.set_mask`) and correct it.
    """

    prompts: frozenset[PromptKind]
    propagates: bool = False
    slice_axis: SliceAxisRule = SliceAxisRule.NONE
    edits_masks: bool = False

    def describe(self) -> str:
        kinds = ", ".join(sorted(k.value for k in self.prompts))
        extra = f"; propagates over slices ({self.slice_axis.value} axis)" if self.propagates else ""
        return f"prompts: {kinds}{extra}"


@dataclass
class Prediction:
    """An engine's answer for one object.

    Attributes:
        mask: (X, Y, Z) bool on the volume grid.
        state: engine-private memory passed back to the next `predict` of the same object
            (e.g. low-res logits and the crop they belong to). Treated as immutable.
        region: voxel region outside which `mask` equals the previous mask (None: anywhere). Lets the
            session store undo differences without comparing whole grids.
    """

    mask: np.ndarray
    state: Any = None
    region: Region | None = None


class Engine(ABC):
    """Promptable segmentation of one volume. Subclasses register in `voxsam.engines.ENGINES`."""

    name: ClassVar[str]
    capabilities: ClassVar[Capabilities] = Capabilities(frozenset({PromptKind.POINT}))

    @property
    def supports(self) -> frozenset[PromptKind]:
        """The prompt kinds this engine takes (`capabilities.prompts`)."""
        return self.capabilities.prompts

    @abstractmethod
    def prepare(self, volume: Volume, progress: ProgressFn | None = None) -> Any:
        """Per-volume work done once (resampling, normalisation, encoding caches); the session caches it."""

    def predict(
        self, prepared: Any, prompts: PromptSet, previous: Prediction | None, change: Change | None = None
    ) -> Prediction:
        """Segment one object from all its prompts so far.

        Args:
            prepared: what `prepare` returned for this volume.
            prompts: every prompt of the object, voxel space, in order.
            previous: the last prediction of this object (None at the first prompt). `previous.mask` is
                read-only.
            change: the prompts added (and replaced) since `previous`.
        A propagating engine's default runs `propagate` to the end.
        """
        if not self.capabilities.propagates:
            raise NotImplementedError(f"engine {self.name} implements neither predict nor propagate")
        steps = self.propagate(prepared, prompts, previous, change)
        while True:
            try:
                next(steps)
            except StopIteration as done:
                result: Prediction = done.value
                return result

    def propagate(
        self, prepared: Any, prompts: PromptSet, previous: Prediction | None, change: Change | None = None
    ) -> Generator[SliceUpdate, None, Prediction]:
        """Propagating engines: yield `(slice_index, mask2d)` along `propagation_axis` as slices are
        decided, and return the final `Prediction`. Closing the generator between slices must be safe."""
        raise NotImplementedError(f"engine {self.name} does not propagate over slices")

    def propagation_axis(self, prepared: Any, prompts: PromptSet, change: Change | None = None) -> int:
        """The array axis `propagate` walks along for these prompts (propagating engines)."""
        raise NotImplementedError(f"engine {self.name} does not propagate over slices")


def changed_region(old: np.ndarray, new: np.ndarray, within: Region | None = None) -> Region | None:
    """Bounding box (slices) of the voxels where two (X, Y, Z) masks differ, searched inside `within`;
    None when they are equal."""
    if within is None:
        within = (slice(None), slice(None), slice(None))
    diff = old[within] != new[within]
    plane = np.any(diff, axis=2)  # two passes over the block: (X, Y) projection, then the Z profile
    hits = (np.flatnonzero(plane.any(axis=1)), np.flatnonzero(plane.any(axis=0)), np.flatnonzero(diff.any(axis=(0, 1))))
    if hits[0].size == 0:
        return None
    bounds = []
    for axis, hit in enumerate(hits):
        start = (within[axis].start or 0) + int(hit[0])
        bounds.append(slice(start, start + int(hit[-1] - hit[0]) + 1))
    return (bounds[0], bounds[1], bounds[2])


def acquisition_axis(affine: np.ndarray) -> int:
    """The slice axis a volume was most likely acquired along: the array axis of largest spacing; among
    (near-)equal spacings the one pointing most superior (axial), so isotropic volumes slice axially.

    Args:
        affine: (4, 4) voxel -> RAS mm.
    """
    spacing = np.linalg.norm(np.asarray(affine, dtype=np.float64)[:3, :3], axis=0)
    candidates = np.flatnonzero(spacing >= spacing.max() * (1 - 1e-3))
    superior = np.abs(np.asarray(affine, dtype=np.float64)[2, :3]) / np.maximum(spacing, 1e-12)
    return int(candidates[np.argmax(superior[candidates])])
