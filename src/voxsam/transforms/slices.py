"""Slices of a volume as a radiologist sees them: the one place that maps an array slice to display
orientation and back.

2D models were trained on slices shown the usual way (axial: anterior up, patient's left on the right of
the screen... as DICOM viewers show it: columns toward patient left, rows toward posterior; coronal: rows
toward inferior; sagittal: columns toward posterior, rows toward inferior). `SliceView` turns the (u, v)
array of slice `index` along `axis` into that (rows, columns) image with a transpose and flips chosen from
the affine, and back, so a slice engine sees the same picture whatever the file's voxel order.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

# target (row direction, column direction) in RAS for a slice whose normal is mostly along R, A or S
_TARGETS = {
    0: (np.array([0.0, 0.0, -1.0]), np.array([0.0, -1.0, 0.0])),  # sagittal: rows inferior, columns posterior
    1: (np.array([0.0, 0.0, -1.0]), np.array([-1.0, 0.0, 0.0])),  # coronal: rows inferior, columns to the left
    2: (np.array([0.0, -1.0, 0.0]), np.array([-1.0, 0.0, 0.0])),  # axial: rows posterior, columns to the left
}


@dataclass(frozen=True)
class SliceView:
    """Display mapping of the slices of one array axis.

    Attributes:
        axis: the array axis slices are taken along.
        plane_axes: the two other array axes (u, v), ascending.
        transpose: True when array axis v becomes the display rows.
        flip_rows, flip_cols: flips applied after the transpose.
        spacing_rc: (row, column) pixel spacing of the display image, mm.
    """

    axis: int
    plane_axes: tuple[int, int]
    transpose: bool
    flip_rows: bool
    flip_cols: bool
    spacing_rc: tuple[float, float]

    def to_display(self, plane: np.ndarray) -> np.ndarray:
        """(U, V) array slice -> (rows, columns) display image (a view when possible)."""
        out = plane.T if self.transpose else plane
        if self.flip_rows:
            out = out[::-1, :]
        if self.flip_cols:
            out = out[:, ::-1]
        return out

    def from_display(self, image: np.ndarray) -> np.ndarray:
        """(rows, columns) display image -> (U, V) array slice."""
        out = image
        if self.flip_cols:
            out = out[:, ::-1]
        if self.flip_rows:
            out = out[::-1, :]
        return out.T if self.transpose else out

    def display_shape(self, shape: tuple[int, int, int]) -> tuple[int, int]:
        u, v = shape[self.plane_axes[0]], shape[self.plane_axes[1]]
        return (v, u) if self.transpose else (u, v)

    def point_to_display(self, ijk: tuple[float, float, float] | np.ndarray, shape: tuple[int, int, int]) -> tuple[float, float]:
        """Voxel (i, j, k) -> (row, column) on the display image of its slice."""
        u, v = float(ijk[self.plane_axes[0]]), float(ijk[self.plane_axes[1]])
        r, c = (v, u) if self.transpose else (u, v)
        rows, cols = self.display_shape(shape)
        if self.flip_rows:
            r = rows - 1 - r
        if self.flip_cols:
            c = cols - 1 - c
        return r, c

    def take(self, volume: np.ndarray, index: int) -> np.ndarray:
        """The display image of slice `index` of a (X, Y, Z) array."""
        return self.to_display(np.take(volume, index, axis=self.axis))


def slice_view(affine: np.ndarray, axis: int) -> SliceView:
    """The display mapping for slices along array `axis` of a volume with (4, 4) RAS `affine`."""
    a = np.asarray(affine, dtype=np.float64)[:3, :3]
    spacing = np.linalg.norm(a, axis=0)
    dirs = a / np.maximum(spacing, 1e-12)
    plane = tuple(x for x in range(3) if x != axis)
    normal = int(np.argmax(np.abs(dirs[:, axis])))
    row_target, col_target = _TARGETS[normal]
    du, dv = dirs[:, plane[0]], dirs[:, plane[1]]
    keep = abs(du @ row_target) + abs(dv @ col_target)
    swap = abs(dv @ row_target) + abs(du @ col_target)
    transpose = bool(swap > keep)
    row_axis, col_axis = (plane[1], plane[0]) if transpose else (plane[0], plane[1])
    flip_rows = bool(dirs[:, row_axis] @ row_target < 0)
    flip_cols = bool(dirs[:, col_axis] @ col_target < 0)
    return SliceView(axis, (plane[0], plane[1]), transpose, flip_rows, flip_cols, (float(spacing[row_axis]), float(spacing[col_axis])))
