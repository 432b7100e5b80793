"""Slice-level helpers of the slice2d engine (no model needed)."""
from __future__ import annotations

import numpy as np

from voxsam.engines.slice2d.slices import bbox_rc, main_parts_box


def test_main_parts_box_ignores_stray_pixels() -> None:
    mask = np.zeros((64, 64), dtype=bool)
    mask[20:40, 40:60] = True  # the object, 400 px
    mask[30, 5] = True  # a stray decoded pixel far to its left
    assert bbox_rc(mask).tolist() == [20, 5, 39, 59]
    assert main_parts_box(mask, 0.03).tolist() == [20, 40, 39, 59]


def test_main_parts_box_keeps_real_second_parts() -> None:
    mask = np.zeros((64, 64), dtype=bool)
    mask[20:40, 40:60] = True  # 400 px
    mask[10:16, 2:8] = True  # 36 px: 9 % of the largest, kept at 3 %
    assert main_parts_box(mask, 0.03).tolist() == [10, 2, 39, 59]
    assert main_parts_box(mask, 0.1).tolist() == [20, 40, 39, 59]
    assert main_parts_box(mask, 0.0).tolist() == bbox_rc(mask).tolist()


def test_main_parts_box_empty() -> None:
    assert main_parts_box(np.zeros((8, 8), dtype=bool), 0.03) is None
