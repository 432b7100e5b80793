"""Crop sampling and paste-back through blocks equal the whole-volume computation voxel for voxel."""
from __future__ import annotations

import numpy as np
import pytest

from tests.conftest import oblique_affine
from voxsam.transforms.crop import crop_around, paste_back, paste_into, sample_block_into, sample_into
from voxsam.transforms.geometry import apply_affine, resample_to_grid
from voxsam.transforms.intensity import clamp_ct

AFFINES = [oblique_affine(), np.diag([-0.7, -0.7, 2.5, 1.0]), np.diag([1.5, 1.5, 1.5, 1.0]), oblique_affine((1.1, 0.6, 3.0), 41.0),
           np.diag([0.75, -0.75, 3.0, 1.0]),  # crop voxel = 2 volume voxels: exact half-voxel ties in nearest neighbour
           np.array([[0.0, 0.8, 0.0, 3.0], [-0.7, 0.0, 0.0, -5.0], [0.0, 0.0, 1.25, 7.5], [0.0, 0.0, 0.0, 1.0]])]  # axes permuted


@pytest.mark.parametrize("affine", AFFINES)
@pytest.mark.parametrize("at", [(0.5, 0.5, 0.5), (0.05, 0.9, 0.1), (0.0, 0.0, 0.0), (1.0, 1.0, 1.0)])
@pytest.mark.parametrize("order", ["C", "F"])
def test_block_sampling_equals_whole_volume_sampling(affine: np.ndarray, at: tuple[float, float, float], order: str) -> None:
    shape = (45, 38, 21)
    hu = np.random.default_rng(1).integers(-2000, 2500, size=shape).astype(np.int16)  # well beyond the clamp
    hu = np.asfortranarray(hu) if order == "F" else hu
    centre = apply_affine(affine, np.asarray(at) * (np.asarray(shape) - 1))
    grid = crop_around(shape, affine, centre, size=24, spacing=1.5)
    whole = sample_into(clamp_ct(hu), affine, grid, order=1)  # the engine's old way: clamp everything, then sample
    block = sample_block_into(hu, affine, grid, clamp_ct)
    assert block.dtype == whole.dtype == np.float32
    np.testing.assert_array_equal(block, whole)
    np.testing.assert_array_equal(sample_block_into(hu, affine, grid), sample_into(hu, affine, grid, order=1))


@pytest.mark.parametrize("affine", AFFINES)
@pytest.mark.parametrize("at", [(30.0, 5.0, 10.0), (0.0, 0.0, 0.0), (44.0, 37.0, 20.0), (22.3, 18.9, 10.5)])
def test_paste_into_equals_a_whole_grid_resampling(affine: np.ndarray, at: tuple[float, float, float]) -> None:
    shape = (45, 38, 21)
    centre = apply_affine(affine, np.array(at))
    grid = crop_around(shape, affine, centre, size=24, spacing=1.5)
    crop = np.random.default_rng(2).random(grid.shape) > 0.5
    whole = resample_to_grid(crop.astype(np.uint8), grid.affine, shape, affine, order=0) > 0
    out = np.zeros(shape, bool)
    region = paste_into(out, crop, grid, affine)
    assert region is not None
    np.testing.assert_array_equal(out, whole)
    np.testing.assert_array_equal(paste_back(crop, grid, shape, affine), whole)
    outside = np.ones(shape, bool)
    outside[region] = False
    assert not whole[outside].any()  # the region holds everything pasted


def test_a_crop_missing_the_volume_is_zero() -> None:
    shape = (10, 10, 10)
    grid = crop_around(shape, np.eye(4), np.array([500.0, 500.0, 500.0]), size=8, spacing=1.0)
    hu = np.full(shape, 50, np.int16)
    np.testing.assert_array_equal(sample_block_into(hu, np.eye(4), grid, clamp_ct), np.zeros(grid.shape, np.float32))
    out = np.zeros(shape, bool)
    assert paste_into(out, np.ones(grid.shape, bool), grid, np.eye(4)) is None and not out.any()
