"""sam3d at the cost of its windows: the region it reports, and the neighbour seed found on the mask's box."""
from __future__ import annotations

import numpy as np
import pytest
from scipy import ndimage

pytest.importorskip("torch")

from tests.engines.test_sam3d_engine import BallModel, _volume  # noqa: E402
from voxsam.engines.sam3d import Sam3DEngine  # noqa: E402
from voxsam.engines.sam3d.engine import deepest_voxel  # noqa: E402
from voxsam.prompts import Point, PromptSet  # noqa: E402


def test_deepest_voxel_equals_the_whole_array_argmax() -> None:
    rng = np.random.default_rng(0)
    shapes = [(16, 16, 16), (9, 14, 11)]
    for trial in range(60):
        shape = shapes[trial % 2]
        part = ndimage.binary_dilation(rng.random(shape) > 0.97, iterations=int(rng.integers(0, 3)))
        if trial % 3 == 0:
            part[:, :, : shape[2] // 2] = False  # a half, as `_touched_neighbours` cuts it
        if trial % 5 == 0:
            part[0, :, :] |= rng.random(shape[1:]) > 0.5  # touching the array's faces
            part[:, -1, :] |= rng.random((shape[0], shape[2])) > 0.5
        depth = ndimage.distance_transform_edt(part)
        expected = np.array(np.unravel_index(int(np.argmax(depth)), shape), float)
        np.testing.assert_array_equal(deepest_voxel(part), expected)
    np.testing.assert_array_equal(deepest_voxel(np.zeros((4, 5, 6), bool)), np.zeros(3))
    full = np.ones((5, 6, 7), bool)
    np.testing.assert_array_equal(deepest_voxel(full), np.array(np.unravel_index(int(np.argmax(ndimage.distance_transform_edt(full))), full.shape), float))


@pytest.mark.parametrize("affine", [None, np.diag([1.5, 1.5, 1.5, 1.0])])
def test_region_holds_every_changed_voxel(affine) -> None:
    shape = (120, 30, 30) if affine is not None else (40, 36, 30)
    vol = _volume(affine, shape=shape)
    engine = Sam3DEngine(model=BallModel(size=32, radius=4.0, slab=affine is not None), max_windows=4)
    prepared = engine.prepare(vol)
    prompts, previous = PromptSet(), None
    clicks = [((60, 15, 15), True), ((62, 15, 15), False), ((20, 15, 15), True)] if affine is not None else [((20, 15, 12), True), ((22, 16, 12), False)]
    for ijk, positive in clicks:
        prompts, _ = prompts.with_prompt(Point(tuple(float(v) for v in ijk), positive))  # type: ignore[arg-type]
        before = previous.mask if previous is not None else np.zeros(vol.shape, bool)
        previous = engine.predict(prepared, prompts, previous)
        assert previous.region is not None
        outside = np.ones(vol.shape, bool)
        outside[previous.region] = False
        np.testing.assert_array_equal(previous.mask[outside], before[outside])
        assert previous.mask.any()
