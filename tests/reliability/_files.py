"""Builders of hostile image files, one format at a time (all tiny, written in tmp folders)."""
from __future__ import annotations

import gzip
import struct
from pathlib import Path

import numpy as np

from voxsam.io import Volume, write_volume


def good(path: Path, shape=(12, 10, 8), dtype=np.int16, affine=None) -> Path:
    arr = (np.arange(int(np.prod(shape))) % 97).reshape(shape).astype(dtype)
    return write_volume(Volume(arr, np.eye(4) if affine is None else affine), path)


def truncated(path: Path) -> Path:
    """A valid file cut to half its size (the header survives, the voxels do not)."""
    src = good(path.with_name("src_" + path.name), shape=(40, 40, 30))
    raw = src.read_bytes()
    path.write_bytes(raw[: len(raw) // 2])
    return path


def garbage(path: Path) -> Path:
    body = b"this is not an image header \x00\x01\x02" * 40
    path.write_bytes(gzip.compress(body) if path.name.endswith((".gz", ".mgz")) else body)
    return path


def metaimage(path: Path, dims=(4, 4, 4), spacing="1 1 1", element="MET_SHORT", extra: str = "", data: bytes | None = None) -> Path:
    n = int(np.prod([min(d, 64) for d in dims]))
    header = (
        f"ObjectType = Image\nNDims = {len(dims)}\nDimSize = {' '.join(map(str, dims))}\nElementSpacing = {spacing}\n"
        f"{extra}ElementType = {element}\nElementDataFile = LOCAL\n"
    ).encode()
    path.write_bytes(header + (bytes(2 * n) if data is None else data))
    return path


def nrrd(path: Path, sizes=(4, 4, 4), directions="(1,0,0) (0,1,0) (0,0,1)", data: bytes | None = None) -> Path:
    header = (
        "NRRD0004\ntype: short\ndimension: 3\nspace: left-posterior-superior\n"
        f"sizes: {' '.join(map(str, sizes))}\nspace directions: {directions}\nendian: little\nencoding: raw\n"
        "space origin: (0,0,0)\n\n"
    ).encode()
    n = int(np.prod([min(s, 64) for s in sizes]))
    path.write_bytes(header + (bytes(2 * n) if data is None else data))
    return path


def nifti(path: Path, array: np.ndarray, affine: np.ndarray) -> Path:
    import warnings

    import nibabel as nib

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # nibabel warns while decomposing degenerate affines
        img = nib.Nifti1Image(array, None)
        img.set_sform(affine, code=1)
        try:
            img.set_qform(affine, code=1)
        except Exception:  # nibabel cannot decompose a singular affine into a qform: the sform alone holds it
            img.set_qform(None, code=0)
        nib.save(img, str(path))
    return path


def nifti_huge_dims(path: Path) -> Path:
    """An uncompressed .nii whose header claims 32767^3 voxels (the file holds 64)."""
    src = nifti(path, np.zeros((4, 4, 4), np.float32), np.eye(4))
    raw = bytearray(src.read_bytes())
    raw[42:48] = struct.pack("<hhh", 32767, 32767, 32767)  # dim[1..3]
    path.write_bytes(bytes(raw))
    return path


def mgh_huge_dims(path: Path) -> Path:
    """An uncompressed .mgh whose header claims 100000^3 voxels."""
    src = good(path, shape=(4, 4, 4), dtype=np.float32)
    raw = bytearray(src.read_bytes())
    raw[4:16] = struct.pack(">iii", 100000, 100000, 100000)  # width, height, depth
    path.write_bytes(bytes(raw))
    return path
