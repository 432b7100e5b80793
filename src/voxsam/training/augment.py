"""Paired image/label augmentation for sam3d training crops, built from MONAI array transforms.

`augment` applies, in order:

- spatial (image and label alike; image linear, label nearest): a random flip per axis, then a small
  random affine (rotation, scale, translation) with zero padding. If the affine would push the
  target out of the crop (less than `min_kept_fraction` of its voxels left) it is dropped;
- intensity (image only): scale, shift, gamma, Gaussian blur, Gaussian noise.

The model z-normalises with the mean/std of voxels > 0, so the intensity steps keep that set of
voxels nearly unchanged for CT (HU, negative air) and MRI (positive, often a zero background) alike:
the shift and the noise std are fractions of the std of the voxels > 0, the gamma acts on the
voxels > 0 only (between their own min and max), and voxels that are exactly 0 after the spatial
steps (background, padding) are set back to 0.

MONAI does the flips, draws the affine matrix (RandAffineGrid; the resampling is done here with torch
and matches RandAffine to 1e-5 at about half its cost), and does the scale, shift, gamma and noise;
the blur uses scipy (MONAI's conv3d smoothing is ~3x slower on CPU). Every step is seeded from `rng`
(`set_random_state`, or a numpy Generator made from a drawn seed), so the same rng state gives the
same output bit for bit. The inputs are never modified.

Speed, per 128^3 image/label pair on one CPU core (torch.set_num_threads(1), machine shared with
other jobs): about 0.46 s when every step fires (the affine's grid and two resamplings dominate),
about 0.17 s median with the default probabilities. Use one torch thread per data-loader worker: on a
busy machine torch's intra-op threads mostly wait (a 48^3 pair took 10x longer with 2 threads).
"""
from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as F
from pydantic import BaseModel, ConfigDict, Field, field_validator

from voxsam.training.ranges import Probability, check_range


# One seed per step, drawn up front so the draw order never depends on which steps fire.
_N_SEEDS = 9  # 3 flips, affine, scale, shift, gamma, blur, noise



class AugmentConfig(BaseModel):
    """Probabilities and ranges of `augment`; every `*_prob` is the chance a step is applied."""

    model_config = ConfigDict(extra="forbid")

    enabled: bool = Field(default=True, description="False: `augment` returns unchanged copies.")
    flip_prob: tuple[Probability, Probability, Probability] = Field(
        default=(0.5, 0.5, 0.5), description="Chance of a flip along each axis (X, Y, Z)."
    )
    affine_prob: Probability = Field(default=0.5, description="Chance of the random affine.")
    rotate_deg: float = Field(
        default=10.0, ge=0.0, le=45.0, description="Max rotation about each axis, degrees (uniform in [-r, r])."
    )
    scale_range: tuple[float, float] = Field(
        default=(0.85, 1.15), description="Range of the scale factor per axis (1 = none); lo > 0."
    )
    translate_vox: float = Field(
        default=5.0, ge=0.0, description="Max translation along each axis, voxels (uniform in [-t, t])."
    )
    min_kept_fraction: Probability = Field(
        default=0.5, description="Drop the affine if it leaves less than this fraction of the target's voxels."
    )
    intensity_scale_prob: Probability = Field(default=0.3, description="Chance of a multiplicative intensity scale.")
    intensity_scale_range: tuple[float, float] = Field(
        default=(-0.1, 0.1), description="Range of f in image * (1 + f); lo > -1 keeps the sign of every voxel."
    )
    intensity_shift_prob: Probability = Field(default=0.3, description="Chance of an additive intensity shift.")
    intensity_shift_range: tuple[float, float] = Field(
        default=(-0.1, 0.1), description="Range of the shift as a fraction of the std of voxels > 0."
    )
    gamma_prob: Probability = Field(default=0.3, description="Chance of a gamma on the voxels > 0.")
    gamma_range: tuple[float, float] = Field(default=(0.7, 1.5), description="Range of the gamma exponent; lo > 0.")
    blur_prob: Probability = Field(default=0.2, description="Chance of a Gaussian blur.")
    blur_sigma_range: tuple[float, float] = Field(
        default=(0.5, 1.0), description="Range of the blur sigma per axis, voxels."
    )
    noise_prob: Probability = Field(default=0.2, description="Chance of additive Gaussian noise.")
    noise_std: float = Field(
        default=0.05, ge=0.0, description="Max noise std as a fraction of the std of voxels > 0 (drawn in [0, max])."
    )

    @field_validator("intensity_shift_range")
    @classmethod
    def _ordered(cls, value: tuple[float, float]) -> tuple[float, float]:
        return check_range(value)

    @field_validator("scale_range", "gamma_range")
    @classmethod
    def _positive(cls, value: tuple[float, float]) -> tuple[float, float]:
        return check_range(value, above=0)

    @field_validator("intensity_scale_range")
    @classmethod
    def _keeps_sign(cls, value: tuple[float, float]) -> tuple[float, float]:
        # a factor 1 + s <= 0 would flip or erase the image
        return check_range(value, above=-1)

    @field_validator("blur_sigma_range")
    @classmethod
    def _nonnegative(cls, value: tuple[float, float]) -> tuple[float, float]:
        return check_range(value, at_least=0)


def augment(
    image: np.ndarray,
    label: np.ndarray,
    rng: np.random.Generator,
    config: AugmentConfig | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Randomly augment a training crop.

    image: (X, Y, Z) intensities (CT HU or MRI, any real dtype).
    label: (X, Y, Z) binary or integer mask (bool or int dtype) on the same grid.
    rng: the only source of randomness; the same state gives the same pair bit for bit.
    Returns (image float32 (X, Y, Z), label of label's dtype (X, Y, Z)); the inputs are not modified.
    """
    cfg = config if config is not None else AugmentConfig()
    if image.ndim != 3 or image.shape != label.shape:
        raise ValueError(f"image and label must be 3D with one shape, got {image.shape} and {label.shape}")
    if not cfg.enabled:
        return image.astype(np.float32, copy=True), label.copy()
    seeds = [int(s) for s in rng.integers(2**31, size=_N_SEEDS)]
    # Channel-first float tensors, as MONAI's array transforms expect; copies, so inputs stay untouched.
    img = torch.tensor(image, dtype=torch.float32)[None]
    lab = torch.tensor(label, dtype=torch.float32)[None]
    img, lab = _flips(img, lab, seeds[:3], cfg)
    img, lab = _affine(img, lab, seeds[3], cfg)
    out = _intensity(_to_numpy(img)[0], seeds[4:], cfg)
    return out, _label_to_dtype(_to_numpy(lab)[0], label.dtype)


def _flips(
    img: torch.Tensor, lab: torch.Tensor, seeds: list[int], cfg: AugmentConfig
) -> tuple[torch.Tensor, torch.Tensor]:
    """A random flip per axis of (1, X, Y, Z) image and label; each drawn once, applied to both."""
    from monai.transforms import RandFlip

    for axis in range(3):
        flip = RandFlip(prob=cfg.flip_prob[axis], spatial_axis=axis)
        flip.set_random_state(seed=seeds[axis])
        img, lab = flip(img), flip(lab, randomize=False)
    return _plain(img), _plain(lab)


def _affine(
    img: torch.Tensor, lab: torch.Tensor, seed: int, cfg: AugmentConfig
) -> tuple[torch.Tensor, torch.Tensor]:
    """Random affine of (1, X, Y, Z) image (linear) and label (nearest), zero padding.

    MONAI's RandAffineGrid draws the matrix (RandAffine's conventions: about the crop centre, output
    to input voxel coordinates); the resampling is done here with one float32 torch grid shared by
    both arrays, which gives RandAffine's result at about half its cost (it builds a float64 grid per call).
    """
    sub = np.random.default_rng(seed)
    if not sub.random() < cfg.affine_prob:
        return img, lab
    shape = tuple(img.shape[1:])
    theta = torch.as_tensor(_torch_theta(_random_affine_matrix(int(sub.integers(2**31)), shape, cfg), shape))
    grid = F.affine_grid(theta[None].float(), [1, 1, *shape], align_corners=False)
    img2 = F.grid_sample(img[None], grid, mode="bilinear", padding_mode="zeros", align_corners=False)[0]
    lab2 = F.grid_sample(lab[None], grid, mode="nearest", padding_mode="zeros", align_corners=False)[0]
    # Keep the target inside the crop: a transform that cuts most of it away teaches nothing.
    before = int(torch.count_nonzero(lab))
    if before and int(torch.count_nonzero(lab2)) < cfg.min_kept_fraction * before:
        return img, lab
    return img2, lab2


def _random_affine_matrix(seed: int, shape: tuple[int, ...], cfg: AugmentConfig) -> np.ndarray:
    """(4, 4) float64 matrix from MONAI's RandAffineGrid: centred output voxel coords -> input coords."""
    from monai.transforms import RandAffineGrid

    r = math.radians(cfg.rotate_deg)
    lo, hi = cfg.scale_range
    t = cfg.translate_vox
    grid = RandAffineGrid(
        rotate_range=[(-r, r)] * 3,
        scale_range=[(lo - 1.0, hi - 1.0)] * 3,  # MONAI adds 1 to the drawn value
        translate_range=[(-t, t)] * 3,
    )
    grid.set_random_state(seed=seed)
    grid(spatial_size=shape, randomize=True, lazy=True)  # lazy: only the matrix, no grid
    matrix = grid.get_transformation_matrix()
    if matrix is None:  # only before a call; the call above always sets it
        raise RuntimeError("RandAffineGrid drew no affine matrix")
    return _to_numpy(matrix).astype(np.float64)


def _torch_theta(matrix: np.ndarray, shape: tuple[int, ...]) -> np.ndarray:
    """(3, 4) theta for torch affine_grid (align_corners=False) equal to MONAI's (4, 4) voxel matrix.

    Centred voxel coordinate c relates to torch's normalised u by c = u * n / 2 per axis, and torch
    orders grid components last axis first, hence the scaling and the axis reversal.
    """
    half = np.asarray(shape, dtype=np.float64) / 2.0
    lin = matrix[:3, :3] * half[None, :] / half[:, None]
    shift = matrix[:3, 3] / half
    rev = [2, 1, 0]
    return np.concatenate([lin[np.ix_(rev, rev)], shift[rev, None]], axis=1)


def _intensity(img: np.ndarray, seeds: list[int], cfg: AugmentConfig) -> np.ndarray:
    """Scale, shift, gamma, blur, noise on an (X, Y, Z) float32 image; exact zeros stay 0. New array."""
    from monai.transforms import RandGaussianNoise, RandScaleIntensity, RandShiftIntensity

    zero = img == 0
    scale = RandScaleIntensity(factors=cfg.intensity_scale_range, prob=cfg.intensity_scale_prob)
    scale.set_random_state(seed=seeds[0])  # (returns the transform typed as a bare Randomizable)
    img = _to_numpy(scale(img))
    s = _positive_std(img)
    lo, hi = cfg.intensity_shift_range
    shift = RandShiftIntensity(offsets=(lo * s, hi * s), prob=cfg.intensity_shift_prob)
    shift.set_random_state(seed=seeds[1])
    img = _to_numpy(shift(img))
    img = _gamma_positive(img, seeds[2], cfg)
    img = _blur(img, seeds[3], cfg)
    noise = RandGaussianNoise(prob=cfg.noise_prob, std=cfg.noise_std * s)
    noise.set_random_state(seed=seeds[4])
    img = np.array(_to_numpy(noise(img)), dtype=np.float32)
    img[zero] = 0.0
    return img


def _gamma_positive(img: np.ndarray, seed: int, cfg: AugmentConfig) -> np.ndarray:
    """MONAI's random gamma applied to the voxels > 0 only (between their min and max): none changes sign."""
    from monai.transforms import RandAdjustContrast

    gamma = RandAdjustContrast(prob=cfg.gamma_prob, gamma=cfg.gamma_range)
    gamma.set_random_state(seed=seed)
    pos = img > 0
    vals = img[pos]
    if vals.size < 2:
        return img
    out = np.array(img, dtype=np.float32)
    out[pos] = _to_numpy(gamma(vals))
    return out


def _blur(img: np.ndarray, seed: int, cfg: AugmentConfig) -> np.ndarray:
    """Random Gaussian blur of an (X, Y, Z) image, sigma per axis in voxels.

    Same step as MONAI's RandGaussianSmooth, done with scipy: its separable conv3d costs ~0.2 s on a
    128^3 crop on one core, scipy's ~0.06 s.
    """
    sub = np.random.default_rng(seed)
    if not sub.random() < cfg.blur_prob:
        return img
    from scipy.ndimage import gaussian_filter

    sigma = sub.uniform(*cfg.blur_sigma_range, size=3)
    return gaussian_filter(img, sigma=sigma, mode="nearest", truncate=3.0)


def _positive_std(img: np.ndarray) -> float:
    """Std of the voxels > 0 (the model's normalisation statistic); falls back to all voxels, then 1."""
    pos = img[img > 0]
    vals = pos if pos.size > 1 else img.ravel()
    std = float(vals.std()) if vals.size > 1 else 0.0
    return std if std > 1e-8 else 1.0


def _plain(x: torch.Tensor | np.ndarray) -> torch.Tensor:
    """MONAI hands back a MetaTensor (or an ndarray): a plain float32 torch.Tensor, no metadata."""
    if isinstance(x, torch.Tensor):
        return x.as_subclass(torch.Tensor).to(torch.float32)
    return torch.as_tensor(np.asarray(x), dtype=torch.float32)


def _to_numpy(x: torch.Tensor | np.ndarray) -> np.ndarray:
    """A plain float32 ndarray from whatever MONAI returned (may share memory with it)."""
    return _plain(x).detach().cpu().numpy()


def _label_to_dtype(lab: np.ndarray, dtype: np.dtype) -> np.ndarray:
    """Nearest-neighbour output (float, exact label values) back to the label's dtype."""
    if dtype == np.bool_:
        return lab > 0.5
    return np.rint(lab).astype(dtype)
