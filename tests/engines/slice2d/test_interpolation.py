"""Shape-based interpolation between decided slices (slice2d's `slice_step`)."""
from __future__ import annotations

import numpy as np
import pytest

from voxsam.engines.slice2d.interpolation import interpolate_masks, signed_distance


def _disc(shape: tuple[int, int], centre: tuple[float, float], radius: float) -> np.ndarray:
    r, c = np.indices(shape)
    return (r - centre[0]) ** 2 + (c - centre[1]) ** 2 <= radius**2


def test_halfway_between_two_discs_is_the_disc_between() -> None:
    """Neighbouring slices' masks overlap: the blend moves and grows the shape (a fade of the masks would not)."""
    a, b = _disc((80, 80), (30, 30), 10), _disc((80, 80), (34, 36), 14)
    (mid,) = interpolate_masks(a, b, [0.5])
    want = _disc((80, 80), (32, 33), 12)
    assert (mid ^ want).sum() <= 0.1 * want.sum()
    rows, cols = np.nonzero(mid)
    assert rows.mean() == pytest.approx(32, abs=0.5) and cols.mean() == pytest.approx(33, abs=0.5)


def test_fractions_move_from_one_mask_to_the_other() -> None:
    a, b = _disc((60, 60), (30, 30), 5), _disc((60, 60), (30, 30), 20)
    areas = [m.sum() for m in interpolate_masks(a, b, [0.1, 0.4, 0.7, 0.95])]
    assert a.sum() < areas[0] < areas[1] < areas[2] < areas[3] < b.sum()
    assert all(m.dtype == bool and m.shape == a.shape for m in interpolate_masks(a, b, [0.5]))


def test_equal_masks_interpolate_to_themselves_and_spacing_counts() -> None:
    a = _disc((50, 50), (25, 25), 10)
    assert all((m == a).all() for m in interpolate_masks(a, a.copy(), [0.25, 0.5]))
    # a thin bar growing along columns, on pixels 4 mm high and 1 mm wide: distances in mm, not pixels
    thin, wide = np.zeros((20, 40), bool), np.zeros((20, 40), bool)
    thin[8:12, 18:22], wide[8:12, 10:30] = True, True
    (mid,) = interpolate_masks(thin, wide, [0.5], spacing=(4.0, 1.0))
    assert mid[8:12].any(axis=0).sum() == 12 and not mid[:8].any() and not mid[12:].any()


def test_signed_distance_sign_and_shape_check() -> None:
    a = _disc((20, 20), (10, 10), 4)
    d = signed_distance(a)
    assert (d[a] > 0).all() and (d[~a] < 0).all()
    with pytest.raises(ValueError):
        interpolate_masks(a, a[:10], [0.5])
