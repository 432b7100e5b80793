"""NIfTI-1/2 (.nii, .nii.gz) and MGH/MGZ (FreeSurfer) through nibabel, which reads both the same way."""
from __future__ import annotations

import logging
from pathlib import Path

import numpy as np

from voxsam.errors import CorruptFileError
from voxsam.io.validate import check_affine, check_finite, squeeze_to_volume
from voxsam.io.volume import Volume


def read_nibabel(path: Path, fmt: str) -> Volume:
    """Read a NIfTI or MGZ file into a Volume (array as stored, affine = nibabel's best affine)."""
    import nibabel as nib
    from nibabel.spatialimages import SpatialImage

    quiet = logging.getLogger("nibabel.global")
    level = quiet.level
    quiet.setLevel(logging.ERROR)  # nibabel logs header "fixes"; we check the geometry ourselves below
    try:
        img = nib.load(str(path))
        if not isinstance(img, SpatialImage):  # NIfTI and MGH always load as spatial images
            raise TypeError(f"loaded as a {type(img).__name__}, not a spatial image")
        array = np.asanyarray(img.dataobj)
    except Exception as exc:  # nibabel raises many types for truncated / garbled files
        raise CorruptFileError(f"{path}: cannot read {fmt.upper()} ({type(exc).__name__}: {_first_line(exc)})") from None
    finally:
        quiet.setLevel(level)
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


def write_nibabel(array: np.ndarray, like: Volume, path: Path, fmt: str) -> None:
    """Write an (X, Y, Z) array on `like`'s grid as NIfTI or MGZ; reuses a NIfTI source's header codes."""
    import nibabel as nib
    from nibabel.spatialimages import SpatialImage

    img: SpatialImage
    if fmt == "mgz":
        img = nib.MGHImage(array, like.affine)
    else:
        header = like.meta.get("header") if like.source_format == "nifti" else None
        cls = nib.Nifti2Image if isinstance(header, nib.Nifti2Header) else nib.Nifti1Image
        nii = cls(array, like.affine, header=header.copy() if header is not None else None)
        nii.set_data_dtype(array.dtype)
        nii.header.set_slope_inter(1.0, 0.0)
        if header is not None:  # keep the source's qform/sform codes (scanner, aligned, MNI, ...)
            nii.set_qform(like.affine, code=int(header["qform_code"]) or 1)
            nii.set_sform(like.affine, code=int(header["sform_code"]) or 1)
        else:
            nii.set_qform(like.affine, code=1)
            nii.set_sform(like.affine, code=1)
        img = nii
    nib.save(img, str(path))


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return text[0][:200] if text else "unreadable"
