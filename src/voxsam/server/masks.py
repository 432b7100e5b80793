"""Voxel data for the page: the image and label maps as NIfTI bytes, label-map blocks, painted slice masks.

Blocks travel gzip-compressed in Fortran order (i fastest), the layout of a NIfTI file's voxels, so the page
writes them straight into its overlay.
"""
from __future__ import annotations

import base64
import binascii
import gzip
from collections.abc import Sequence

import numpy as np

from voxsam.engines.base import Region
from voxsam.errors import PromptError
from voxsam.io.volume import Volume

# NIfTI-1 holds these as they are; anything else is converted to the nearest of them
NIFTI_SAFE = (np.uint8, np.int16, np.uint16, np.int32, np.float32)


def nifti_bytes(array: np.ndarray, volume: Volume, level: int = 1, *, labels: bool = False) -> bytes:
    """A gzipped NIfTI-1 file of `array` (X, Y, Z) on `volume`'s grid: the voxel order stays as stored and
    the affine is the volume's (sform and qform), so voxel (i, j, k) here is voxel (i, j, k) of the volume."""
    import nibabel as nib

    data = np.asarray(array)
    if data.dtype == bool:
        data = data.astype(np.uint8)
    elif data.dtype.type not in NIFTI_SAFE:
        data = data.astype(np.float32 if data.dtype.kind == "f" or data.dtype.itemsize > 4 else np.int32)
    image = nib.Nifti1Image(data, volume.affine)
    image.header.set_xyzt_units("mm")
    if labels:  # viewers (niivue) colour a label map through a lookup table when the intent says so
        image.header.set_intent("label")
    image.set_sform(volume.affine, code=1)
    image.set_qform(volume.affine, code=1)
    return gzip.compress(image.to_bytes(), compresslevel=level)


def parse_region(text: str | None, shape: tuple[int, int, int]) -> Region:
    """`"i0,i1,j0,j1,k0,k1"` (half-open, clipped to the grid) as slices; None or "" = the whole grid."""
    if not text:
        return (slice(0, shape[0]), slice(0, shape[1]), slice(0, shape[2]))
    try:
        values = [int(v) for v in text.split(",")]
    except ValueError:
        raise PromptError(f"region {text!r}: give six integers i0,i1,j0,j1,k0,k1") from None
    if len(values) != 6:
        raise PromptError(f"region {text!r}: give six integers i0,i1,j0,j1,k0,k1")
    out = []
    for a in range(3):
        lo, hi = max(0, values[2 * a]), min(shape[a], values[2 * a + 1])
        if hi <= lo:
            raise PromptError(f"region {text!r}: empty or outside the grid {shape} along axis {a}")
        out.append(slice(lo, hi))
    return (out[0], out[1], out[2])


def region_list(region: Region | None) -> list[int] | None:
    """A region as [i0, i1, j0, j1, k0, k1] for JSON (None stays None)."""
    if region is None:
        return None
    return [int(v) for r in region for v in (r.start, r.stop)]


def block_bytes(block: np.ndarray, level: int = 1) -> bytes:
    """Gzip of a label-map block in Fortran order (i fastest)."""
    return gzip.compress(np.asfortranarray(block).tobytes(order="F"), compresslevel=level)


def decode_slice_mask(bits: str, shape: Sequence[int], expected: tuple[int, int]) -> np.ndarray:
    """A painted slice mask from base64 of its bits (row-major, most significant bit first) as (n0, n1) bool."""
    if tuple(int(n) for n in shape) != expected:
        raise PromptError(f"slice mask shape {tuple(shape)} differs from the slice shape {expected}")
    try:
        raw = base64.b64decode(bits, validate=True)
    except (binascii.Error, ValueError):
        raise PromptError("slice mask bits: not valid base64") from None
    count = expected[0] * expected[1]
    if len(raw) != (count + 7) // 8:
        raise PromptError(f"slice mask bits: {len(raw)} bytes, a {expected[0]}x{expected[1]} slice needs {(count + 7) // 8}")
    flat = np.unpackbits(np.frombuffer(raw, dtype=np.uint8), count=count)
    return flat.reshape(expected).astype(bool)


def encode_slice_mask(mask: np.ndarray) -> str:
    """The inverse of `decode_slice_mask` (for clients and tests)."""
    return base64.b64encode(np.packbits(np.asarray(mask, dtype=bool).ravel()).tobytes()).decode("ascii")
