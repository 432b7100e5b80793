"""NIfTI-1/2 (.nii, .nii.gz) and MGH/MGZ (FreeSurfer) through nibabel, which reads both the same way."""
from __future__ import annotations

import contextlib
from pathlib import Path

import numpy as np

from voxsam.errors import CorruptFileError, InvalidImageError
from voxsam.io.gz import LEVEL, is_gzipped, load_gzipped, save_gzipped
from voxsam.io.quiet import quiet_python
from voxsam.io.validate import check_affine, check_declared_size, check_finite, check_real, squeeze_to_volume
from voxsam.io.volume import Volume


def read_nibabel(path: Path, fmt: str) -> Volume:
    """Read a NIfTI or MGZ file into a Volume (array as stored, affine = nibabel's best affine)."""
    import nibabel as nib
    from nibabel.spatialimages import SpatialImage

    with quiet_python():  # nibabel logs and warns about header "fixes"; we check the geometry ourselves below
        try:
            if fmt == "mgz":
                _check_mgh_dims(path)
            opened = load_gzipped(path, fmt) if is_gzipped(path) else None  # igzip: several times zlib's speed
            with opened[1] if opened is not None else contextlib.nullcontext():
                # no memory map: a header larger than its file fails plainly
                img = opened[0] if opened is not None else nib.load(str(path), mmap=False)
                if not isinstance(img, SpatialImage):  # NIfTI and MGH always load as spatial images
                    raise TypeError(f"loaded as a {type(img).__name__}, not a spatial image")
                check_declared_size(img.shape, img.get_data_dtype().itemsize, path)
                array = np.asanyarray(img.dataobj)
        except InvalidImageError:
            raise
        except Exception as exc:  # nibabel raises many types for truncated / garbled files
            raise CorruptFileError(f"{path}: {_read_failure(exc, fmt)}") from None
    check_real(array, path)
    if array.dtype == np.float64:
        array = array.astype(np.float32)
    if not array.dtype.isnative:  # MGZ stores big-endian; numpy/torch want native
        array = array.astype(array.dtype.newbyteorder("="))
    array = squeeze_to_volume(array, path)
    zooms = _raw_zooms(path, img) if fmt == "nifti" else img.header.get_zooms()[:3]
    check_affine(img.affine, path, spacing=zooms)
    check_finite(array, path)
    meta = {"header": img.header.copy()}
    return Volume(array=array, affine=np.asarray(img.affine, dtype=np.float64), source_format=fmt, path=path, meta=meta)


def _check_mgh_dims(path: Path) -> None:
    """MGH keeps a footer after the voxels: nibabel seeks past width*height*depth*frames voxels before it can
    say anything, so an absurd header fails there; read the dimensions first and judge them."""
    import gzip
    import struct

    opener = gzip.open if path.name.lower().endswith(".mgz") else open
    with opener(path, "rb") as fh:  # type: ignore[operator]
        head = fh.read(28)
    if len(head) < 28:
        raise EOFError(f"the header is {len(head)} bytes, an MGH header has 284")
    version, width, height, depth, frames, code = struct.unpack(">iiiiii", head[:24])
    if version != 1:
        raise ValueError(f"not an MGH header (version field {version}, expected 1)")
    sizes = {0: 1, 1: 4, 3: 4, 4: 2, 10: 2}
    check_declared_size([width, height, depth, frames], sizes.get(code, 8), path)


def _read_failure(exc: BaseException, fmt: str) -> str:
    """Why a file could not be decoded, cause first: truncation is said as such."""
    text = _first_line(exc)
    low = text.lower()
    if isinstance(exc, EOFError) or ("expected" in low and "bytes" in low) or "end-of-stream" in low or "truncated" in low:
        return f"the {fmt.upper()} file is truncated or corrupt ({type(exc).__name__}: {text})"
    if isinstance(exc, MemoryError):
        return f"the {fmt.upper()} header declares more data than fits in memory; the file is corrupt"
    return f"cannot read {fmt.upper()} ({type(exc).__name__}: {text})"


def _raw_zooms(path: Path, img) -> tuple[float, ...]:  # type: ignore[no-untyped-def]
    """Voxel sizes as stored when they define the geometry (no sform).

    nibabel silently replaces zero pixdims by 1 on load; a zero or negative voxel size in a file whose
    geometry rests on pixdim is an error we report rather than guess around.
    """
    import nibabel as nib

    if int(img.header.get("sform_code", 0)) > 0:
        return tuple(float(z) for z in img.header.get_zooms()[:3])
    with nib.openers.ImageOpener(str(path)) as fobj:
        raw = type(img.header).from_fileobj(fobj, check=False)
    return tuple(float(z) for z in raw["pixdim"][1:4])


def write_nibabel(array: np.ndarray, like: Volume, path: Path, fmt: str, level: int = LEVEL) -> None:
    """Write an (X, Y, Z) array on `like`'s grid as NIfTI or MGZ; reuses a NIfTI source's header codes.
    `level`: igzip's compression level (0..3) of a .nii.gz / .mgz (`io.gz`)."""
    import nibabel as nib
    from nibabel.spatialimages import SpatialImage

    array = fortran_order(array)  # both formats store x fastest: nibabel then writes slices without transposing
    img: SpatialImage
    if fmt == "mgz":
        img = nib.MGHImage(array, like.affine)  # the array's type was checked by io.dtypes.storable
    else:
        header = like.meta.get("header") if like.source_format == "nifti" else None
        cls = nib.Nifti2Image if isinstance(header, nib.Nifti2Header) else nib.Nifti1Image
        nii = cls(array, like.affine, header=header.copy() if header is not None else None, dtype=array.dtype)
        nii.set_data_dtype(array.dtype)
        nii.header.set_slope_inter(1.0, 0.0)
        if header is not None:  # keep the source's qform/sform codes (scanner, aligned, MNI, ...)
            nii.set_qform(like.affine, code=int(header["qform_code"]) or 1)
            nii.set_sform(like.affine, code=int(header["sform_code"]) or 1)
        else:
            nii.set_qform(like.affine, code=1)
            nii.set_sform(like.affine, code=1)
        img = nii
    with quiet_python():
        if not (is_gzipped(path) and save_gzipped(img, path, level)):
            nib.save(img, str(path))


def fortran_order(array: np.ndarray) -> np.ndarray:
    """The array in Fortran (x fastest) order, as NIfTI and MGH store it. A C-order mask is copied at the cost
    of the box holding its non-zero voxels: the rest of a new zero array is never written (the system maps
    zero pages on demand), where a plain transposing copy of a 512 x 512 x 300 grid takes seconds."""
    if array.flags.f_contiguous or array.ndim != 3:
        return array
    out = np.zeros(array.shape, dtype=array.dtype, order="F")
    xs = np.flatnonzero(array.any(axis=(1, 2)))
    if xs.size:
        slab = array[xs[0]:xs[-1] + 1]
        ys, zs = np.flatnonzero(slab.any(axis=(0, 2))), np.flatnonzero(slab.any(axis=(0, 1)))
        box = (slice(int(xs[0]), int(xs[-1]) + 1), slice(int(ys[0]), int(ys[-1]) + 1), slice(int(zs[0]), int(zs[-1]) + 1))
        out[box] = array[box]
    return out


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return text[0][:200] if text else "unreadable"
