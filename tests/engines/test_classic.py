"""The training-free `classic` engine on tiny synthetic volumes, through a `Session` (end to end).

Unit tests of the package's parts (options, slice prompts, region, grid, seeds, solvers) are in
tests/engines/classic/.
"""
from __future__ import annotations

import time

import numpy as np
import pytest

from voxsam.engines import create_engine
from voxsam.engines.classic import ClassicEngine
from voxsam.engines.classic.grid import working_shape
from voxsam.errors import ConfigError, PromptError
from voxsam.evaluation.metrics import dice
from voxsam.io.volume import Volume
from voxsam.prompts import Point, PromptSet
from voxsam.session import Session


def ball(shape, centre, radius, spacing=(1.0, 1.0, 1.0)):
    g = np.indices(shape, dtype=np.float64)
    return sum(((g[i] - centre[i]) * spacing[i]) ** 2 for i in range(3)) <= radius**2


def volume(img, spacing=(1.0, 1.0, 1.0)):
    return Volume(np.asarray(img, np.float32), np.diag([*spacing, 1.0]))


@pytest.fixture
def two_blobs():
    """Two bright spheres (intensity 100 and 60) in noise, 48x44x30 at 1x1x1.5 mm."""
    shape, sp = (48, 44, 30), (1.0, 1.0, 1.5)
    a = ball(shape, (15, 22, 15), 8.0, sp)
    b = ball(shape, (35, 22, 15), 6.0, sp)
    rng = np.random.default_rng(0)
    img = 100.0 * a + 60.0 * b + rng.normal(0, 6, shape)
    return volume(img, sp), a, b


@pytest.mark.parametrize("method", ["growcut", "random_walker"])
def test_one_click_segments_a_bright_sphere(two_blobs, method):
    vol, a, b = two_blobs
    engine = ClassicEngine(method=method)
    s = Session(vol, engine)
    mask = s.add_point((15, 22, 15)).astype(bool)
    assert mask.shape == vol.shape
    assert not (mask & b).any(), "only the clicked component is kept"
    assert dice(mask, a) > (0.9 if method == "growcut" else 0.5)


def test_clicks_refine_and_negative_only_is_empty(two_blobs):
    vol, a, b = two_blobs
    s = Session(vol, "classic")
    first = s.add_point((35, 22, 15)).astype(bool)
    assert dice(first, b) > 0.85
    assert not s.add_point((35, 22, 20), positive=False).astype(bool)[35, 22, 20]
    s2 = Session(vol, "classic")
    assert not s2.add_point((5, 5, 5), positive=False).any()


def test_box_prompt_stays_in_the_box(two_blobs):
    vol, a, b = two_blobs
    nz = np.argwhere(a)
    lo, hi = nz.min(axis=0), nz.max(axis=0)
    s = Session(vol, "classic")
    mask = s.add_box(tuple(lo.tolist()), tuple(hi.tolist())).astype(bool)
    assert dice(mask, a) > 0.9
    outside = np.ones(vol.shape, bool)
    outside[lo[0] : hi[0] + 1, lo[1] : hi[1] + 1, lo[2] : hi[2] + 1] = False
    assert not (mask & outside).any()


def test_flat_box_is_a_2d_box_on_its_slice(two_blobs):
    vol, a, _ = two_blobs
    k = 15
    nz = np.argwhere(a[:, :, k])
    lo, hi = nz.min(axis=0), nz.max(axis=0)
    s = Session(vol, "classic")
    mask = s.add_box((lo[0], lo[1], k), (hi[0], hi[1], k)).astype(bool)
    assert mask[:, :, k - 3 : k + 4].any(axis=(0, 1)).all(), "grows beyond the box's slice"
    assert dice(mask, a) > 0.8


def test_target_cut_by_the_image_border():
    """A sphere cut by the image border: the border must not become background where it looks like the target."""
    shape = (40, 40, 20)
    target = ball(shape, (20, 20, 2), 9.0)
    rng = np.random.default_rng(1)
    vol = volume(100.0 * target + rng.normal(0, 5, shape))
    mask = Session(vol, "classic").add_point((20, 20, 3)).astype(bool)
    assert dice(mask, target) > 0.9
    assert mask[:, :, 0].sum() > 0.8 * target[:, :, 0].sum()


def test_large_roi_is_resampled_and_fast():
    shape = (160, 150, 140)
    target = ball(shape, (80, 75, 70), 30.0)
    rng = np.random.default_rng(2)
    vol = volume(100.0 * target + rng.normal(0, 10, shape))
    engine = ClassicEngine(margin_mm=64.0)
    prepared = engine.prepare(vol)
    t = time.perf_counter()
    prediction = engine.predict(prepared, PromptSet((Point((80.0, 75.0, 70.0)),)), None)
    seconds = time.perf_counter() - t
    mask, work = prediction.mask, prediction.state["work_shape"]
    assert np.prod(work) <= 128**3
    assert dice(mask, target) > 0.9
    assert seconds < 10.0  # generous for CI; benchmarks/classic_latency.py measures the real number


def test_working_shape():
    assert working_shape((50, 60, 70), np.ones(3), 128**3) == (50, 60, 70)
    w = working_shape((256, 256, 40), np.array([0.8, 0.8, 5.0]), 64**3)
    assert np.prod(w) <= 64**3 and w[2] == 40  # the coarse axis is kept, the fine ones shrink


def test_registry_options_and_errors(two_blobs):
    assert isinstance(create_engine("classic"), ClassicEngine)
    assert ClassicEngine.name == "classic"
    assert ClassicEngine().supports == {"point", "box", "slice_point", "slice_box"}
    with pytest.raises(ConfigError):
        ClassicEngine(method="magic")
    with pytest.raises(ConfigError):
        ClassicEngine(margin_mm=-1)
    with pytest.raises(ConfigError, match="checkpoint"):
        create_engine("classic", checkpoint="x.pt")
    vol, _, _ = two_blobs
    with pytest.raises(PromptError):
        Session(vol, "classic").set_slice_mask(2, 3, np.zeros(vol.shape[:2], bool))


def test_prepare_caches_a_float_image_and_handles_channels(two_blobs):
    vol, a, _ = two_blobs
    four = Volume(np.stack([vol.array, np.zeros_like(vol.array)], axis=-1), vol.affine)
    engine = ClassicEngine()
    prep = engine.prepare(four)
    assert prep.image.dtype == np.float32 and prep.image.shape == vol.shape
    assert np.allclose(prep.spacing, (1.0, 1.0, 1.5))


def test_2d_prompts_through_the_session(two_blobs):
    vol, a, _ = two_blobs
    k = 15
    nz = np.argwhere(a[:, :, k])
    lo, hi = nz.min(axis=0), nz.max(axis=0)
    flat = Session(vol, "classic").add_box((lo[0], lo[1], k), (hi[0], hi[1], k))
    on_slice = Session(vol, "classic").add_box((lo[0], lo[1], k), (hi[0], hi[1], k), axis=2)
    assert np.array_equal(flat, on_slice)
    click = Session(vol, "classic").add_point((15, 22, 15))
    assert np.array_equal(click, Session(vol, "classic").add_point((15, 22, 15), axis=2))


def test_undo_redo_with_the_engine_regions(two_blobs):
    """The session stores differences only inside `Prediction.region`: undo and redo must give back every
    mask exactly, also after a mask the engine did not make."""
    vol, a, b = two_blobs
    s = Session(vol, ClassicEngine(margin_mm=12.0))
    masks = [s.mask.copy()]
    masks.append(s.add_point((15, 22, 15)).copy())
    masks.append(s.add_point((35, 22, 15)).copy())  # the ROI grows to the second blob
    masks.append(s.add_point((15, 22, 15), positive=False).copy())
    masks.append(s.set_mask(b | a).copy())  # a foreign mask: no ROI in the engine state
    masks.append(s.add_point((35, 22, 15)).copy())
    assert not np.array_equal(masks[-1], masks[-2])
    for expected in reversed(masks[:-1]):
        assert s.undo()
        assert np.array_equal(s.mask, expected)
    for expected in masks[1:]:
        assert s.redo()
        assert np.array_equal(s.mask, expected)
