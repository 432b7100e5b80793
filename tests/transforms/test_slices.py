"""Display orientation of slices: round trips, point mapping, and the same picture whatever the voxel order."""
from __future__ import annotations

import numpy as np
import pytest

from voxsam.transforms.slices import slice_view


def _lps_affine() -> np.ndarray:
    return np.diag([-0.8, -0.8, 2.5, 1.0])  # a DICOM-like (LPS-stored) axial volume, in RAS


@pytest.mark.parametrize("axis", [0, 1, 2])
@pytest.mark.parametrize("affine", [np.eye(4), _lps_affine(), np.array([[0, 0, 1.5, 0], [1, 0, 0, 0], [0, -2, 0, 0], [0, 0, 0, 1.0]])])
def test_round_trip_and_points(axis: int, affine: np.ndarray) -> None:
    rng = np.random.default_rng(axis)
    vol = rng.random((5, 6, 7))
    view = slice_view(affine, axis)
    k = 2
    plane = np.take(vol, k, axis=axis)
    shown = view.to_display(plane)
    np.testing.assert_array_equal(view.from_display(shown), plane)
    assert shown.shape == view.display_shape(vol.shape)
    ijk = [1, 3, 4]
    ijk[axis] = k
    r, c = view.point_to_display(tuple(float(v) for v in ijk), vol.shape)
    assert shown[int(r), int(c)] == vol[tuple(ijk)]


def test_axial_display_is_independent_of_storage_order() -> None:
    # the same anatomy stored RAS (identity) and LPS (x, y reversed): same axial picture
    ras = np.random.default_rng(0).random((6, 5, 4))
    lps = ras[::-1, ::-1, :]
    a = slice_view(np.eye(4), 2).take(ras, 1)
    b = slice_view(np.diag([-1.0, -1.0, 1.0, 1.0]), 2).take(lps, 1)
    np.testing.assert_array_equal(a, b)
    # columns run toward patient left, rows toward posterior (the radiological convention)
    view = slice_view(np.eye(4), 2)
    assert view.transpose and view.flip_rows and view.flip_cols


def test_pixel_spacing_follows_the_display_axes() -> None:
    view = slice_view(np.diag([0.7, 0.7, 5.0, 1.0]), 1)  # coronal slices of a thick-slice CT
    assert sorted(view.spacing_rc) == [0.7, 5.0] and view.spacing_rc[0] == 5.0  # rows run inferior
