"""Intensity normalisation rules of the engines."""
from __future__ import annotations

import numpy as np

CT_CLAMP_HU = (-1000.0, 1000.0)


def clamp_ct(array: np.ndarray, lo: float = CT_CLAMP_HU[0], hi: float = CT_CLAMP_HU[1]) -> np.ndarray:
    """Clip Hounsfield units to [lo, hi] (float32 copy)."""
    return np.clip(array.astype(np.float32, copy=False), lo, hi)


def znorm_positive(array: np.ndarray) -> np.ndarray:
    """SAM-Med3D's rule: subtract mean and divide by std of voxels > 0, applied to every voxel (float32).

    A crop with no voxel > 0 is returned unchanged (as float32).
    """
    arr = array.astype(np.float32, copy=False)
    fg = arr[arr > 0]
    if fg.size == 0:
        return arr.copy()
    std = float(fg.std())
    return (arr - float(fg.mean())) / (std if std > 1e-8 else 1.0)
