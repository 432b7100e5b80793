"""Engine crops: the right voxels come out, and masks go back onto the source grid exactly."""
from __future__ import annotations

import numpy as np

from tests.conftest import oblique_affine
from voxsam.transforms.crop import canonical_axes, crop_around, paste_back, sample_into
from voxsam.transforms.geometry import apply_affine


def _lps_volume(shape=(40, 30, 20)):
    affine = np.diag([-1.5, -1.5, 1.5, 1.0])  # LPS axes, already 1.5 mm
    affine[:3, 3] = (30.0, 20.0, -10.0)
    arr = np.random.default_rng(0).normal(size=shape).astype(np.float32)
    return arr, affine


def test_canonical_axes_are_ras() -> None:
    for aff in (oblique_affine(), _lps_volume()[1]):
        axes = canonical_axes(aff)
        assert np.allclose(axes.T @ axes, np.eye(3), atol=1e-9)
        assert np.all(np.diag(axes) > 0.5)  # each axis points mostly along +R, +A, +S


def test_crop_at_native_spacing_copies_voxels_and_pastes_back() -> None:
    arr, aff = _lps_volume()
    center = apply_affine(aff, np.array([20.0, 15.0, 10.0]))
    grid = crop_around(arr.shape, aff, center, size=16, spacing=1.5)
    crop = sample_into(arr, aff, grid, order=1)
    # the crop is the volume flipped to RAS: crop[a, b, c] == arr[X-1-i, Y-1-j, k] for some offset
    first = np.round(apply_affine(np.linalg.inv(aff) @ grid.affine, np.zeros(3))).astype(int)
    i0, j0, k0 = first
    np.testing.assert_allclose(crop, arr[i0 - 15 : i0 + 1][::-1, :, :][:, j0 - 15 : j0 + 1][:, ::-1][:, :, k0 : k0 + 16], atol=1e-5)
    mask = crop > 0.5
    back = paste_back(mask, grid, arr.shape, aff)
    assert back.sum() == mask.sum()
    np.testing.assert_array_equal(back[i0 - 15 : i0 + 1, j0 - 15 : j0 + 1, k0 : k0 + 16][::-1, ::-1], mask)


def test_crop_outside_volume_is_zero_padded() -> None:
    arr, aff = _lps_volume()
    arr = arr + 10.0
    grid = crop_around(arr.shape, aff, apply_affine(aff, np.zeros(3)), size=16)
    crop = sample_into(arr, aff, grid)
    assert (crop == 0).any() and (crop > 5).any()
