"""Prompts: kinds, slices, several boxes, slice-mask replacement, coordinate checks."""
from __future__ import annotations

import numpy as np
import pytest

from voxsam.errors import PromptError
from voxsam.prompts import Box, Change, Point, PromptKind, PromptSet, SliceMask, SliceRef, check_slice, snap_to_slice, to_voxel


def test_kinds_follow_the_slice() -> None:
    assert Point((1, 2, 3)).kind is PromptKind.POINT
    assert Point((1, 2, 3), slice=SliceRef(2, 3)).kind is PromptKind.SLICE_POINT
    assert Box((0, 0, 0), (2, 2, 2)).kind is PromptKind.BOX
    assert Box((0, 0, 3), (2, 2, 3), SliceRef(2, 3)).kind is PromptKind.SLICE_BOX
    assert SliceMask(1, 4, np.ones((2, 2), bool)).kind is PromptKind.SLICE_MASK
    assert PromptKind("slice_box") is PromptKind.SLICE_BOX and PromptKind.POINT == "point"


def test_prompt_set_holds_several_boxes_and_one_mask_per_slice() -> None:
    s = PromptSet()
    s, _ = s.with_prompt(Box((0, 0, 3), (2, 2, 3), SliceRef(2, 3)))
    s, _ = s.with_prompt(Box((0, 0, 5), (4, 4, 5), SliceRef(2, 5)))
    assert len(s.boxes) == 2 and s.box == Box((0, 0, 5), (4, 4, 5), SliceRef(2, 5))
    first = SliceMask(2, 3, np.ones((4, 4), bool))
    s, replaced = s.with_prompt(first)
    assert replaced is None
    s, replaced = s.with_prompt(SliceMask(2, 3, np.zeros((4, 4), bool)))
    assert replaced is first and len(s.slice_masks) == 1
    assert [p.kind for p in s.on_slice(SliceRef(2, 3))] == [PromptKind.SLICE_BOX, PromptKind.SLICE_MASK]
    assert s.kinds == {PromptKind.SLICE_BOX, PromptKind.SLICE_MASK}
    s, _ = s.with_prompt(Point((1, 1, 1), False))
    np.testing.assert_array_equal(s.coords, [[1, 1, 1]])
    np.testing.assert_array_equal(s.labels, [0])
    assert not s.is_empty() and PromptSet().is_empty()


def test_change_accumulates() -> None:
    a, b = Point((1, 1, 1)), Point((2, 2, 2))
    c = Change((a,)).then(Change((b,)))
    assert c.added == (a, b) and c.last is b and Change().last is None


@pytest.mark.parametrize(
    "xyz, match",
    [((1, 2), "3 coordinates"), ((np.nan, 1, 1), "finite"), ((50, 1, 1), "outside"), (("a", "b", "c"), "3 numbers"), (None, "3 coordinates")],
)
def test_to_voxel_refuses_bad_points(xyz: object, match: str) -> None:
    with pytest.raises(PromptError, match=match):
        to_voxel(xyz, (10, 10, 10), np.eye(4))  # type: ignore[arg-type]


def test_to_voxel_world_and_singular_affine() -> None:
    affine = np.diag([2.0, 2.0, 2.0, 1.0])
    assert to_voxel((4, 6, 8), (10, 10, 10), affine, "world") == (2.0, 3.0, 4.0)
    with pytest.raises(PromptError, match="singular"):
        to_voxel((1, 1, 1), (10, 10, 10), np.zeros((4, 4)), "world")
    with pytest.raises(PromptError, match="unknown coordinate space"):
        to_voxel((1, 1, 1), (10, 10, 10), affine, "mm")  # type: ignore[arg-type]
    with pytest.raises(PromptError, match="box corner"):
        to_voxel((99, 1, 1), (10, 10, 10), affine, what="box corner")


def test_slices_are_checked_and_snapped() -> None:
    assert check_slice((4, 5, 6), 2, 5) == SliceRef(2, 5)
    for axis, index, match in [(3, 0, "axis"), (2, 6, "outside"), (2, -1, "outside"), (1, 1.5, "integer")]:
        with pytest.raises(PromptError, match=match):
            check_slice((4, 5, 6), axis, index)  # type: ignore[arg-type]
    with pytest.raises(PromptError, match="single slice"):
        check_slice((4, 5, 1), 2, 0)
    ijk, ref = snap_to_slice((1.2, 2.0, 3.6), 2, (4, 5, 6))
    assert ijk == (1.2, 2.0, 4.0) and ref == SliceRef(2, 4)
