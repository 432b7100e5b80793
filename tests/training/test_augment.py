"""Paired augmentation: deterministic, never in place, spatially consistent, label kept binary and inside."""
from __future__ import annotations

import math

import monai.transforms  # noqa: F401  (import cost paid at collection, not inside a timed test)
import numpy as np
import pytest
import torch
import torch.nn.functional as F
from pydantic import ValidationError

from voxsam.training.augment import AugmentConfig, _torch_theta, augment

NO_INTENSITY = dict(
    intensity_scale_prob=0.0, intensity_shift_prob=0.0, gamma_prob=0.0, blur_prob=0.0, noise_prob=0.0
)
ALL_ON = AugmentConfig(
    flip_prob=(1.0, 1.0, 1.0),
    affine_prob=1.0,
    intensity_scale_prob=1.0,
    intensity_shift_prob=1.0,
    gamma_prob=1.0,
    blur_prob=1.0,
    noise_prob=1.0,
)


@pytest.fixture(autouse=True, scope="module")
def _one_torch_thread():
    """One intra-op thread, as in a data-loader worker; on a busy machine more threads only wait."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def _pair(shape=(48, 48, 48), ct: bool = False) -> tuple[np.ndarray, np.ndarray]:
    """A sphere (label 1) brighter than its surroundings; MRI-like with a zero border, or CT-like HU."""
    g = np.indices(shape)
    c = np.array(shape)[:, None, None, None] / 2
    lab = (((g - c) ** 2).sum(0) < 10**2).astype(np.uint8)
    noise = np.random.default_rng(0).normal(0, 5, shape)
    if ct:
        img = np.where(lab > 0, 60.0, -100.0) + noise
        img[:, :, :6] = -1000.0  # air
    else:
        img = np.where(lab > 0, 300.0, 120.0) + noise
        img[:6] = 0.0  # background outside the head
    return img.astype(np.float32), lab


def test_same_seed_same_pair_other_seed_other_pair() -> None:
    img, lab = _pair()
    a_img, a_lab = augment(img, lab, np.random.default_rng(3), ALL_ON)
    b_img, b_lab = augment(img, lab, np.random.default_rng(3), ALL_ON)
    c_img, _ = augment(img, lab, np.random.default_rng(4), ALL_ON)
    np.testing.assert_array_equal(a_img, b_img)
    np.testing.assert_array_equal(a_lab, b_lab)
    assert not np.array_equal(a_img, c_img)


def test_inputs_are_not_modified_and_dtypes_are_kept() -> None:
    img, lab = _pair((32, 36, 40))
    img64 = img.astype(np.float64)
    for dtype in (np.uint8, np.int64, np.bool_):
        label = lab.astype(dtype)
        img_before, lab_before = img64.copy(), label.copy()
        out_img, out_lab = augment(img64, label, np.random.default_rng(1), ALL_ON)
        np.testing.assert_array_equal(img64, img_before)
        np.testing.assert_array_equal(label, lab_before)
        assert out_img.shape == img.shape and out_img.dtype == np.float32
        assert out_lab.shape == lab.shape and out_lab.dtype == dtype


def test_disabled_returns_copies() -> None:
    img, lab = _pair((16, 16, 16))
    out_img, out_lab = augment(img, lab, np.random.default_rng(0), AugmentConfig(enabled=False))
    np.testing.assert_array_equal(out_img, img)
    np.testing.assert_array_equal(out_lab, lab)
    assert not np.shares_memory(out_img, img) and not np.shares_memory(out_lab, lab)


def test_label_stays_binary_and_its_volume_changes_modestly() -> None:
    img, lab = _pair()
    for seed in range(6):
        _, out = augment(img, lab, np.random.default_rng(seed), ALL_ON)
        assert set(np.unique(out)) <= {0, 1}
        ratio = out.sum() / lab.sum()
        assert 0.55 < ratio < 1.7  # scale 0.85-1.15 per axis changes the volume by x0.61-x1.52


def test_flip_maps_a_known_voxel() -> None:
    img, lab = _pair((20, 24, 28))
    img[2, 5, 7] = 999.0
    lab[2, 5, 7] = 1
    cfg = AugmentConfig(flip_prob=(1.0, 0.0, 0.0), affine_prob=0.0, **NO_INTENSITY)
    out_img, out_lab = augment(img, lab, np.random.default_rng(0), cfg)
    assert out_img[20 - 1 - 2, 5, 7] == 999.0 and out_lab[17, 5, 7] == 1
    np.testing.assert_array_equal(out_img, img[::-1])
    np.testing.assert_array_equal(out_lab, lab[::-1])


def test_image_and_label_move_together() -> None:
    _, lab = _pair((40, 40, 40))
    lab[8:14, 20:26, 28:34] = 1  # an off-centre block makes rotations visible
    img = lab.astype(np.float32) * 100.0 + 50.0
    cfg = AugmentConfig(affine_prob=1.0, rotate_deg=15.0, translate_vox=4.0, **NO_INTENSITY)
    for seed in range(3):
        out_img, out_lab = augment(img, lab, np.random.default_rng(seed), cfg)
        inside = out_img > 0  # away from the zero padding
        agree = ((out_img > 100.0) == (out_lab > 0))[inside].mean()
        assert agree > 0.98


def test_affine_resampling_equals_monai_rand_affine() -> None:
    """Our one-grid resampling reproduces MONAI's RandAffine for the matrix that RandAffine drew."""
    shape = (24, 28, 32)
    x, y, z = np.meshgrid(*[np.linspace(0, 1, n) for n in shape], indexing="ij")
    img = (np.sin(5 * x) + np.cos(3 * y) * z + 2 * x * y + 3).astype(np.float32)
    r = math.radians(15)
    ra = monai.transforms.RandAffine(
        prob=1.0,
        rotate_range=[(-r, r)] * 3,
        scale_range=[(-0.15, 0.15)] * 3,
        translate_range=[(-4, 4)] * 3,
        padding_mode="zeros",
    )
    ra.set_random_state(seed=2)
    ref = np.asarray(ra(img[None]))[0]
    matrix = np.asarray(ra.rand_affine_grid.get_transformation_matrix(), dtype=np.float64)
    theta = torch.as_tensor(_torch_theta(matrix, shape)).float()
    grid = F.affine_grid(theta[None], [1, 1, *shape], align_corners=False)
    ours = F.grid_sample(torch.from_numpy(img)[None, None], grid, align_corners=False, padding_mode="zeros")
    np.testing.assert_allclose(ours[0, 0].numpy(), ref, atol=1e-3)


def test_target_stays_inside_the_crop() -> None:
    img, _ = _pair((32, 32, 32))
    lab = np.zeros((32, 32, 32), np.uint8)
    lab[1:7, 1:7, 1:7] = 1  # in a corner: a big shift would push it out
    cfg = AugmentConfig(affine_prob=1.0, translate_vox=12.0, min_kept_fraction=0.5, **NO_INTENSITY)
    for seed in range(8):
        _, out = augment(img, lab, np.random.default_rng(seed), cfg)
        assert out.sum() >= 0.5 * lab.sum()


def test_intensity_keeps_zero_background_and_positive_set() -> None:
    img, lab = _pair()
    cfg = AugmentConfig(flip_prob=(0.0, 0.0, 0.0), affine_prob=0.0, **{k: 1.0 for k in NO_INTENSITY})
    for seed in range(3):
        out, out_lab = augment(img, lab, np.random.default_rng(seed), cfg)
        np.testing.assert_array_equal(out_lab, lab)
        assert np.all(out[img == 0] == 0)
        assert np.mean((out > 0) == (img > 0)) > 0.99
        assert not np.array_equal(out, img)


def test_gamma_changes_no_sign_on_ct() -> None:
    img, lab = _pair(ct=True)
    cfg = AugmentConfig(flip_prob=(0.0, 0.0, 0.0), affine_prob=0.0, **{**NO_INTENSITY, "gamma_prob": 1.0})
    out, _ = augment(img, lab, np.random.default_rng(0), cfg)
    np.testing.assert_array_equal(out > 0, img > 0)
    np.testing.assert_array_equal(out[img <= 0], img[img <= 0])  # air and fat untouched
    assert not np.array_equal(out, img)


def test_ct_positive_fraction_survives_all_intensity_steps() -> None:
    img, lab = _pair(ct=True)
    cfg = AugmentConfig(flip_prob=(0.0, 0.0, 0.0), affine_prob=0.0, **{k: 1.0 for k in NO_INTENSITY})
    for seed in range(3):
        out, _ = augment(img, lab, np.random.default_rng(seed), cfg)
        assert abs(np.mean(out > 0) - np.mean(img > 0)) < 0.03


def test_shape_mismatch_is_refused() -> None:
    img, lab = _pair((16, 16, 16))
    with pytest.raises(ValueError, match="shape"):
        augment(img, lab[:8], np.random.default_rng(0))


@pytest.mark.parametrize(
    "bad",
    [
        {"unknown": 1},
        {"affine_prob": 1.2},
        {"flip_prob": (0.5, -0.1, 0.5)},
        {"scale_range": (1.1, 0.9)},
        {"scale_range": (0.0, 1.1)},
        {"gamma_range": (1.5, 0.7)},
        {"intensity_scale_range": (-1.0, 0.1)},
        {"intensity_shift_range": (0.2, -0.2)},
        {"blur_sigma_range": (-0.5, 1.0)},
        {"rotate_deg": -5.0},
        {"noise_std": -0.1},
    ],
)
def test_config_rejects_bad_values(bad: dict) -> None:
    with pytest.raises(ValidationError):
        AugmentConfig(**bad)
