"""Label-map synthesis: deterministic, positive, a real contrast between labels, valid config only."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from pydantic import ValidationError

from voxsam.training.synthesis import (
    SynthConfig,
    _spline_upsample_matrix,
    _thick_slices,
    synthesize_image,
)

ALL_ON = SynthConfig(
    share_prob=0.0, blur_prob=1.0, lowres_prob=1.0, bias_prob=1.0, gamma_prob=1.0, noise_prob=1.0
)


def _labels(shape=(48, 48, 48)) -> np.ndarray:
    """Background 0, a slab of 1, a cube of 2 and a sphere of 3."""
    lab = np.zeros(shape, np.uint8)
    lab[4:44, 4:44, 4:20] = 1
    lab[10:30, 10:30, 24:44] = 2
    g = np.indices(shape)
    lab[((g[0] - 34) ** 2 + (g[1] - 34) ** 2 + (g[2] - 34) ** 2) < 8**2] = 3
    return lab


def test_same_seed_same_image_other_seed_other_image() -> None:
    lab = _labels()
    a = synthesize_image(lab, 1.5, np.random.default_rng(5), ALL_ON)
    b = synthesize_image(lab, 1.5, np.random.default_rng(5), ALL_ON)
    c = synthesize_image(lab, 1.5, np.random.default_rng(6), ALL_ON)
    np.testing.assert_array_equal(a, b)
    assert not np.array_equal(a, c)


def test_shape_dtype_nonnegative_and_input_untouched() -> None:
    lab = _labels((40, 36, 28)).astype(np.int32)
    before = lab.copy()
    for seed in range(4):
        img = synthesize_image(lab, 1.5, np.random.default_rng(seed), ALL_ON)
        assert img.shape == lab.shape and img.dtype == np.float32
        assert np.isfinite(img).all() and img.min() >= 0 and img.max() > 0
    np.testing.assert_array_equal(lab, before)


def test_float_and_bool_labels_work_and_fractions_are_refused() -> None:
    lab = _labels((24, 24, 24))
    a = synthesize_image(lab.astype(np.float32), 1.5, np.random.default_rng(1))
    b = synthesize_image(lab, 1.5, np.random.default_rng(1))
    np.testing.assert_array_equal(a, b)
    mask = lab > 0
    np.testing.assert_array_equal(
        synthesize_image(mask, 1.5, np.random.default_rng(1)),
        synthesize_image(mask.astype(np.uint8), 1.5, np.random.default_rng(1)),
    )
    with pytest.raises(ValueError, match="integer"):
        synthesize_image(lab + np.float32(0.5), 1.5, np.random.default_rng(1))
    with pytest.raises(ValueError, match="3D"):
        synthesize_image(lab[0], 1.5, np.random.default_rng(1))


def test_large_and_negative_label_values_are_indexed() -> None:
    lab = _labels((24, 24, 24)).astype(np.int64)
    lab[lab == 3] = 100_000  # beyond the lookup table
    lab[lab == 2] = -7
    img = synthesize_image(lab, 1.5, np.random.default_rng(0), SynthConfig(background_zero_prob=1.0))
    assert img.min() >= 0 and np.all(img[lab == 0] == 0)


def test_each_label_gets_its_own_random_contrast() -> None:
    lab = _labels()
    cfg = SynthConfig(share_prob=0.0, blur_prob=0.0, lowres_prob=0.0, noise_prob=0.0, bias_prob=0.0)
    inner = np.zeros(lab.shape, bool)
    inner[6:42, 6:42, 6:18] = True  # slab voxels away from its edges
    core = np.zeros(lab.shape, bool)
    core[13:27, 13:27, 27:41] = True  # cube voxels away from its edges
    diffs = []
    for seed in range(12):
        img = synthesize_image(lab, 1.5, np.random.default_rng(seed), cfg)
        m1, m2 = img[inner].mean(), img[core].mean()
        diffs.append((m1 - m2) / img.max())
    diffs = np.array(diffs)
    assert np.sum(np.abs(diffs) > 0.05) >= 9  # distinct tissues almost always look different
    assert (diffs > 0).any() and (diffs < 0).any()  # and which one is brighter is random


def test_background_is_exactly_zero_or_a_random_class() -> None:
    lab = _labels()
    zero = synthesize_image(lab, 1.5, np.random.default_rng(0), SynthConfig(background_zero_prob=1.0))
    assert np.all(zero[lab == 0] == 0) and np.all(zero[lab > 0] >= 0)
    cls = synthesize_image(
        lab, 1.5, np.random.default_rng(0), SynthConfig(background_zero_prob=0.0, mean_range=(50.0, 200.0))
    )
    assert np.mean(cls[lab == 0] > 0) > 0.9


def test_thick_slices_keep_a_linear_ramp_and_remove_detail() -> None:
    ramp = np.broadcast_to(np.arange(30, dtype=np.float32)[None, :, None], (4, 30, 5)).copy()
    out = _thick_slices(ramp, axis=1, factor=3.3, phase=1.2)
    # Linear interpolation reproduces a linear ramp between the first and last thick-slice centres.
    np.testing.assert_allclose(out[:, 2:27], ramp[:, 2:27], atol=1e-4)
    comb = np.zeros((4, 30, 5), np.float32)
    comb[:, ::2] = 1.0
    assert _thick_slices(comb, axis=1, factor=4.0, phase=0.0).std() < comb.std()


def test_bias_upsampling_is_a_partition_of_unity() -> None:
    m = _spline_upsample_matrix(4, 48)
    assert m.shape == (48, 4)
    np.testing.assert_allclose(m.sum(axis=1), 1.0, atol=1e-6)  # a constant field stays constant


@pytest.mark.parametrize(
    "bad",
    [
        {"unknown": 1},
        {"blur_prob": 1.5},
        {"share_prob": -0.1},
        {"mean_range": (200.0, 10.0)},
        {"std_range": (-1.0, 5.0)},
        {"max_intensity_range": (0.0, 10.0)},
        {"slice_thickness_mm_range": (3.0, float("inf"))},
        {"bias_grid_size": 1},
    ],
)
def test_config_rejects_bad_values(bad: dict) -> None:
    with pytest.raises(ValidationError):
        SynthConfig(**bad)


def test_spacing_must_be_positive() -> None:
    with pytest.raises(ValueError, match="spacing"):
        synthesize_image(_labels((8, 8, 8)), 0.0, np.random.default_rng(0))


@pytest.mark.shared
def test_real_brain_label_map(shared_data: Path) -> None:
    nib = pytest.importorskip("nibabel")
    path = shared_data / "label_maps" / "brain_synthseg" / "training_seg_01.nii.gz"
    if not path.is_file():
        pytest.skip(f"{path} is absent")
    vol = np.asarray(nib.load(str(path)).dataobj)
    c = np.array(vol.shape) // 2
    lab = np.ascontiguousarray(vol[c[0] - 32 : c[0] + 32, c[1] - 32 : c[1] + 32, c[2] - 32 : c[2] + 32])
    assert lab.shape == (64, 64, 64)
    cfg = SynthConfig(share_prob=0.0, noise_prob=0.0, lowres_prob=0.0, blur_prob=0.0)
    img = synthesize_image(lab, 1.0, np.random.default_rng(11), cfg)
    assert img.shape == lab.shape and img.dtype == np.float32 and img.min() >= 0
    # Every sizeable structure gets its own mean: few pairs of labels are indistinguishable.
    values, counts = np.unique(lab, return_counts=True)
    big = values[counts > 200]
    assert big.size >= 5
    means = np.array([img[lab == v].mean() for v in big])
    gaps = np.abs(means[:, None] - means[None, :])[np.triu_indices(big.size, 1)]
    assert np.mean(gaps > 0.01 * img.max()) > 0.8
    np.testing.assert_array_equal(img, synthesize_image(lab, 1.0, np.random.default_rng(11), cfg))
