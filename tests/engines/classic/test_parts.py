"""The classic package's parts: working grid, seeds, and the two solvers on toy grids."""
from __future__ import annotations

import numpy as np

from voxsam.engines.classic.grid import Roi, resize, union, working_shape
from voxsam.engines.classic.growcut import growcut
from voxsam.engines.classic.random_walker import random_walker
from voxsam.engines.classic.seeds import BACKGROUND, FOREGROUND, FREE, balls, build_seeds, flat_axis
from voxsam.prompts import Box, SliceRef


def test_working_shape_coarsens_the_fine_axes_first():
    assert working_shape((50, 60, 70), np.ones(3), 128**3) == (50, 60, 70)
    w = working_shape((256, 256, 40), np.array([0.8, 0.8, 5.0]), 64**3)
    assert np.prod(w) <= 64**3 and w[2] == 40


def test_roi_maps_corners_onto_the_working_grid():
    roi = Roi(np.array([10, 0, 5]), np.array([51, 21, 6]), (21, 11, 1))
    assert roi.shape == (41, 21, 1) and roi.slices == (slice(10, 51), slice(0, 21), slice(5, 6))
    assert np.allclose(roi.to_work(np.array([[10, 0, 5], [50, 20, 5]])), [[0, 0, 0], [20, 10, 0]])
    assert np.allclose(roi.work_spacing(np.array([1.0, 1.0, 2.0])), [2.0, 2.0, 2.0])


def test_resize_and_union():
    assert resize(np.zeros((10, 9, 8)), (5, 4, 3)).shape == (5, 4, 3)
    u = union((slice(2, 5), slice(0, 3), slice(4, 9)), (slice(0, 3), slice(1, 7), slice(5, 6)))
    assert u == (slice(0, 5), slice(0, 7), slice(4, 9))


def test_flat_axis_of_boxes():
    assert flat_axis(Box((0, 0, 0), (5, 5, 5)), np.zeros(3, bool)) is None
    assert flat_axis(Box((0, 0, 3), (5, 5, 3)), np.array([False, False, True])) == 2
    # a 2D box that is also thin in x: its slice decides the axis
    thin = Box((2, 0, 3), (2, 5, 3), slice=SliceRef(2, 3))
    assert flat_axis(thin, np.array([True, False, True])) == 2


def test_balls_are_ellipsoids_in_mm():
    b = balls((21, 21, 21), np.array([[10, 10, 10]]), 4.0, np.array([1.0, 1.0, 2.0]))
    assert b[10, 10, 10] and b[14, 10, 10] and not b[15, 10, 10] and b[10, 10, 12] and not b[10, 10, 13]


def test_seeds_of_a_2d_box_lie_on_its_slice():
    rng = np.random.default_rng(0)
    norm = rng.uniform(0, 1, (20, 20, 20)).astype(np.float32)
    roi = Roi(np.array([10, 10, 10]), np.array([30, 30, 30]), (20, 20, 20))
    box = Box((15.0, 15.0, 20.0), (25.0, 25.0, 20.0), slice=SliceRef(2, 20))
    seeds = build_seeds(norm, roi, np.ones(3), (40, 40, 40), np.zeros((0, 3)), np.zeros((0, 3)), box, 1.0, 3.0)
    assert seeds.labels[10, 10, 10] == FOREGROUND and seeds.fg_work.tolist() == [[10, 10, 10]]
    plane = seeds.labels[1:-1, 1:-1, 10]
    assert (plane[:3] == BACKGROUND).all() and (plane[6:13, 6:13] != BACKGROUND).all()
    assert (seeds.labels[1:-1, 1:-1, 5] == FREE).all(), "other slices get no box seeds"
    assert (seeds.labels[0] == BACKGROUND).all(), "ROI faces inside the image are background"


def _step_image() -> tuple[np.ndarray, np.ndarray]:
    img = np.zeros((24, 12, 12), np.float32)
    img[:10] = 1.0
    img += np.random.default_rng(0).normal(0, 0.05, img.shape).astype(np.float32)
    seeds = np.zeros(img.shape, np.int8)
    seeds[2, 6, 6] = FOREGROUND
    seeds[21, 6, 6] = BACKGROUND
    return img, seeds


def test_growcut_stops_at_the_edge():
    img, seeds = _step_image()
    field = growcut(img, seeds, np.ones(3), 0.01, 1.0)
    assert field.dtype == np.float32 and (field[:10] == 1).all() and (field[10:] == 0).all()


def test_random_walker_stops_at_the_edge():
    img, seeds = _step_image()
    x = random_walker(img, seeds, beta=2.0, tol=1e-3, max_iter=200)
    assert (x[:9] >= 0.5).all() and (x[11:] < 0.5).all()
