"""Which voxel types each output format stores, decided before anything is written.

`storable(array, fmt, path)` returns the array in a type the format holds, converting only where nothing is
lost (bool -> uint8, float16 -> float32, 64-bit integers whose values fit 32 bits -> a 32-bit type, int8 ->
int16 for MGZ); anything else is an `UnsupportedFormatError` naming the file, the type and what to do.

    NIfTI       every real type; int64/uint64 narrowed to 32 bits when the values fit (other tools read them)
    NRRD, MHA   every real type
    MGZ         uint8, int16, uint16, int32, float32 (FreeSurfer's types); float64 is stored as float32,
                as voxsam reads any float64 volume
    complex     no format (voxsam segments real intensities)
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

from voxsam.errors import UnsupportedFormatError

MGZ_TYPES = (np.uint8, np.int16, np.uint16, np.int32, np.float32)
_NARROW_INTS = (np.uint8, np.int16, np.uint16, np.int32, np.uint32)


def _narrowest_int(array: np.ndarray, choices: tuple[type, ...]) -> np.dtype | None:
    """The first integer type of `choices` holding every value of `array`, or None."""
    lo, hi = (int(array.min()), int(array.max())) if array.size else (0, 0)
    for t in choices:
        info = np.iinfo(t)
        if info.min <= lo and hi <= info.max:
            return np.dtype(t)
    return None


def storable(array: np.ndarray, fmt: str, path: Path | str) -> np.ndarray:
    """`array` in a voxel type format `fmt` stores without loss; UnsupportedFormatError when there is none."""
    a = np.asarray(array)
    if np.iscomplexobj(a):
        raise UnsupportedFormatError(
            f"{path}: cannot write complex voxels ({a.dtype}); voxsam writes real-valued volumes (store the magnitude)"
        )
    if a.dtype == np.bool_:
        a = a.astype(np.uint8)
    elif a.dtype == np.float16:
        a = a.astype(np.float32)
    elif a.dtype.kind not in "iuf" or a.dtype.itemsize > 8:
        raise UnsupportedFormatError(f"{path}: cannot write voxels of type {a.dtype}; use an integer or float32 array")
    if fmt == "mgz":
        if a.dtype in [np.dtype(t) for t in MGZ_TYPES]:
            return a
        if a.dtype.kind == "f":
            finite = a[np.isfinite(a)]
            if finite.size and float(np.abs(finite).max()) > float(np.finfo(np.float32).max):
                raise UnsupportedFormatError(f"{path}: values up to {float(np.abs(finite).max()):.3g} exceed MGZ's float32; write .nii.gz or .nrrd")
            return a.astype(np.float32)
        narrow = _narrowest_int(a, (np.uint8, np.int16, np.uint16, np.int32))
        if narrow is None:
            raise UnsupportedFormatError(
                f"{path}: MGZ stores integers up to 32 bits, and these {a.dtype} values ({int(a.min())}..{int(a.max())}) "
                "do not fit; write .nii.gz or .nrrd instead"
            )
        return a.astype(narrow)
    if fmt == "nifti" and a.dtype in (np.dtype(np.int64), np.dtype(np.uint64)):
        narrow = _narrowest_int(a, _NARROW_INTS)
        return a.astype(narrow) if narrow is not None else a
    return a
