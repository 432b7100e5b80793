"""The prompt-making methods of `Session`: clicks, boxes and slice masks from coordinates, validated and turned
into voxel-space `Point` / `Box` / `SliceMask` objects for `Session.add_prompt`."""
from __future__ import annotations

from abc import abstractmethod
from typing import Any

import numpy as np

from voxsam.errors import PromptError
from voxsam.io.volume import Volume
from voxsam.prompts import Box, Point, Prompt, SliceMask, Space, check_slice, snap_to_slice, to_voxel


class PromptBuilders:
    """Mixed into `Session`: needs `volume` and `add_prompt`."""

    volume: Volume

    @abstractmethod
    def add_prompt(self, prompt: Prompt, object_id: int = 1, *, propagate: bool = True) -> np.ndarray:
        """Add a voxel-space prompt object and return the object's mask."""

    def add_point(
        self,
        xyz: tuple[float, float, float],
        positive: bool = True,
        space: Space = "voxel",
        object_id: int = 1,
        *,
        axis: int | None = None,
        propagate: bool = True,
    ) -> np.ndarray:
        """Add a click and return the object's new mask (X, Y, Z) uint8.

        Args:
            xyz: voxel (i, j, k) when space="voxel"; RAS mm when space="world".
            positive: True for "this is the target", False for "this is background".
            axis: None for a 3D click; 0, 1 or 2 for a 2D click on the slice of that axis holding it.
            propagate: False queues the prompt for `propagate()` and returns the current mask.
        """
        if not isinstance(positive, (bool, np.bool_)) and positive not in (0, 1):
            raise PromptError(f"a point label must be positive (1) or negative (0), got {positive!r}")
        ijk = to_voxel(xyz, self.volume.shape, self.volume.affine, space)
        point = Point(ijk, bool(positive))
        if axis is not None:
            ijk, ref = snap_to_slice(ijk, axis, self.volume.shape)
            point = Point(ijk, bool(positive), ref)
        return self.add_prompt(point, object_id, propagate=propagate)

    def add_box(
        self,
        corner_a: tuple[float, float, float],
        corner_b: tuple[float, float, float],
        space: Space = "voxel",
        object_id: int = 1,
        *,
        axis: int | None = None,
        propagate: bool = True,
    ) -> np.ndarray:
        """Add a box from two opposite corners; with `axis`, a 2D box on the slice both corners lie on."""
        a = np.array(to_voxel(corner_a, self.volume.shape, self.volume.affine, space, what="box corner"))
        b = np.array(to_voxel(corner_b, self.volume.shape, self.volume.affine, space, what="box corner"))
        lo, hi = np.minimum(a, b), np.maximum(a, b)
        ref = None
        if axis is not None:
            check_slice(self.volume.shape, axis, 0)
            if round(lo[axis]) != round(hi[axis]):
                raise PromptError(f"a 2D box on axis {axis} needs both corners on one slice, got {lo[axis]:g} and {hi[axis]:g}")
            snapped, ref = snap_to_slice((float(lo[0]), float(lo[1]), float(lo[2])), axis, self.volume.shape)
            lo[axis] = hi[axis] = snapped[axis]
        box = Box((float(lo[0]), float(lo[1]), float(lo[2])), (float(hi[0]), float(hi[1]), float(hi[2])), ref)
        return self.add_prompt(box, object_id, propagate=propagate)

    def set_slice_mask(self, axis: int, index: int, mask2d: np.ndarray, object_id: int = 1, *, propagate: bool = True) -> np.ndarray:
        """Give (or correct) the object's mask on one slice: `mask2d` is shaped like the volume without `axis`."""
        check_slice(self.volume.shape, axis, index)
        expected = tuple(s for a, s in enumerate(self.volume.shape) if a != axis)
        m = np.asarray(mask2d)
        if m.shape != expected:
            raise PromptError(f"slice mask shape {m.shape} differs from the slice shape {expected}")
        return self.add_prompt(SliceMask(int(axis), int(index), m.astype(bool).copy()), object_id, propagate=propagate)


def check_object_id(object_id: Any) -> None:
    """PromptError unless `object_id` is an integer in 1..65535 (label maps are uint8 / uint16)."""
    if isinstance(object_id, bool) or not (isinstance(object_id, (int, np.integer)) and 1 <= object_id <= 65535):
        raise PromptError(f"object_id must be an integer in 1..65535, got {object_id!r}")
