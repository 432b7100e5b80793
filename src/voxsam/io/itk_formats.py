"""NRRD (.nrrd, .nhdr) and MetaImage (.mha, .mhd) through SimpleITK."""
from __future__ import annotations

from pathlib import Path

import numpy as np

from voxsam.errors import CorruptFileError, InvalidGeometryError, InvalidImageError
from voxsam.io.validate import check_affine, check_finite, squeeze_to_volume
from voxsam.io.volume import Volume
from voxsam.transforms.geometry import array_affine_to_sitk, sitk_to_array_affine


def read_itk(path: Path, fmt: str) -> Volume:
    """Read an NRRD or MetaImage file; multi-component pixels become channels (X, Y, Z, C)."""
    import SimpleITK as sitk

    try:
        reader = sitk.ImageFileReader()
        reader.SetFileName(str(path))
        reader.ReadImageInformation()
        dim = reader.GetDimension()
        spacing = reader.GetSpacing()
        if dim == 2:
            raise InvalidImageError(f"{path}: is a 2D image; voxsam needs a 3D volume")
        if dim != 3:
            raise InvalidImageError(f"{path}: has {dim} dimensions; voxsam reads 3D {fmt.upper()} volumes")
        check_affine(np.eye(4), path, spacing=spacing)
        image = reader.Execute()
    except (InvalidImageError, InvalidGeometryError):
        raise
    except RuntimeError as exc:
        raise CorruptFileError(f"{path}: cannot read {fmt.upper()} ({_itk_reason(exc)})") from None
    array, affine = sitk_to_array_affine(image)
    array = squeeze_to_volume(array, path)
    check_affine(affine, path)
    check_finite(array, path)
    meta = {"itk_metadata": {k: reader.GetMetaData(k) for k in reader.GetMetaDataKeys()}}
    return Volume(array=array, affine=affine, source_format=fmt, path=path, meta=meta)


def write_itk(array: np.ndarray, like: Volume, path: Path) -> None:
    """Write an (X, Y, Z) array on `like`'s grid as NRRD or MetaImage (compressed)."""
    import SimpleITK as sitk

    image = array_affine_to_sitk(array, like.affine)
    sitk.WriteImage(image, str(path), useCompression=True)


def _itk_reason(exc: BaseException) -> str:
    """ITK errors are multi-line with C++ file names; keep the informative tail of the first message."""
    text = " ".join(str(exc).split())
    for marker in ("ERROR:", "Description:"):
        if marker in text:
            text = text.split(marker, 1)[1]
    return text.strip()[:200] or "unreadable"
