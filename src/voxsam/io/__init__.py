"""Reading volumes and writing masks in the exact geometry of their source.

    from voxsam.io import read_volume, write_mask
    vol = read_volume("ct.nii.gz")            # or .nrrd, .mha, .mgz, a DICOM folder or file,
                                              # or a list of channel files (case_0000, case_0001, ...)
    write_mask(mask, like=vol, path="mask.nii.gz")   # mask (X, Y, Z) on vol's grid

One reader and one writer per format: `nibabel_formats` (NIfTI, MGZ), `itk_formats` (NRRD, MetaImage),
`dicom` (series in, SEG out). Every failure is a `VoxsamError` naming the file.
"""
from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from voxsam.errors import GeometryMismatchError, OutputPathError, UnsupportedFormatError, VoxsamError
from voxsam.io.dtypes import storable
from voxsam.io.volume import Volume

__all__ = ["Volume", "read_volume", "write_mask", "write_volume", "read_mask", "read_label_like", "check_same_grid"]


def read_volume(
    path: str | Path | Sequence[str | Path],
    series_uid: str | None = None,
    *,
    series: str | None = None,
    allow_uneven: bool = False,
) -> Volume:
    """Read a 3D image (or label map) from any supported format.

    Args:
        path: a file (.nii, .nii.gz, .nrrd, .nhdr, .mha, .mhd, .mgz, .mgh, DICOM), a DICOM folder, or a
            list of files holding the channels of one case on one grid (stacked as (X, Y, Z, C)).
        series / series_uid: for a DICOM folder holding several series, the SeriesInstanceUID to read
            (without it such a folder is refused with the list of its series).
        allow_uneven: a DICOM series with missing slices or uneven slice steps is resampled onto a regular
            grid (linear along the slice normal) instead of refused; a warning says so.
    Returns: a Volume with the array as stored ((X, Y, Z) or (X, Y, Z, C)) and its RAS affine.
    Raises: a VoxsamError subclass naming the file and the problem (docs/reliability.md lists the checks).
    """
    if series is not None and series_uid is not None and series != series_uid:
        raise VoxsamError(f"two different series given: series={series!r}, series_uid={series_uid!r}")
    series = series if series is not None else series_uid
    if isinstance(path, (list, tuple)):
        return _read_channels([Path(p) for p in path], allow_uneven=allow_uneven)
    if not isinstance(path, (str, os.PathLike)):  # what Path() would reject, said before it does
        raise TypeError(f"path must be a str, a Path or a list of them, got {type(path).__name__}")
    p = Path(path).expanduser()
    from voxsam.io.formats import detect_input_format

    fmt = detect_input_format(p)
    if series is not None and fmt != "dicom":
        raise UnsupportedFormatError(f"{p}: a series (--series) can only be chosen in a DICOM folder; this is a {fmt} file")
    if p.is_file() and p.stat().st_size == 0:
        from voxsam.errors import CorruptFileError

        raise CorruptFileError(f"{p}: the file is empty (0 bytes)")
    if fmt in ("nifti", "mgz"):
        from voxsam.io.nibabel_formats import read_nibabel

        vol = read_nibabel(p, fmt)
    elif fmt in ("nrrd", "mha"):
        from voxsam.io.itk_formats import read_itk

        vol = read_itk(p, fmt)
    else:
        from voxsam.io.dicom import read_dicom

        vol = read_dicom(p, series_uid=series, allow_uneven=allow_uneven)
    return vol


def _read_channels(paths: list[Path], allow_uneven: bool = False) -> Volume:
    if not paths:
        raise VoxsamError("no image files given")
    vols = [read_volume(p, allow_uneven=allow_uneven) for p in paths]
    first = vols[0]
    for p, v in zip(paths[1:], vols[1:]):
        check_same_grid(v, first, what=f"channel {p.name}", reference_name=f"channel {paths[0].name}")
        if v.n_channels != 1:
            raise VoxsamError(f"{p}: a channel file must hold one channel, it holds {v.n_channels}")
    if len(vols) == 1:
        return first
    array = np.stack([v.array for v in vols], axis=-1)
    return Volume(
        array=array,
        affine=first.affine,
        source_format=first.source_format,
        path=first.path,
        meta=dict(first.meta, channel_paths=[str(p) for p in paths]),
        modality=first.modality,
        channel_names=[p.name for p in paths],
    )


def check_same_grid(
    volume: Volume, reference: Volume, what: str = "label", reference_name: str | None = None, tol_mm: float = 1e-3
) -> None:
    """Raise GeometryMismatchError unless `volume` lies on `reference`'s voxel grid (corners within tol_mm)."""
    from voxsam.transforms.geometry import corner_points, same_grid

    ref_name = reference_name or str(reference.path or "image")
    if volume.shape != reference.shape:
        raise GeometryMismatchError(
            f"{volume.path or what}: {what} grid {volume.shape} differs from {ref_name} grid {reference.shape}"
        )
    if not same_grid(volume.shape, volume.affine, reference.shape, reference.affine, tol_mm=tol_mm):
        shift = float(np.abs(corner_points(volume.shape, volume.affine) - corner_points(reference.shape, reference.affine)).max())
        raise GeometryMismatchError(
            f"{volume.path or what}: {what} is {shift:.3g} mm off the grid of {ref_name} (same shape, other position/orientation)"
        )


def read_label_like(path: str | Path, image: Volume) -> Volume:
    """Read a label map and check it lies on `image`'s grid (GeometryMismatchError otherwise)."""
    label = read_volume(path)
    check_same_grid(label, image, what="label")
    return label


def read_mask(path: str | Path, like: Volume | None = None) -> np.ndarray:
    """Read a mask / label map as an (X, Y, Z) integer array; a DICOM SEG needs `like` (its source series)."""
    p = Path(path)
    from voxsam.io.formats import is_dicom_file

    if p.is_file() and is_dicom_file(p):
        import pydicom

        from voxsam.io.dicom import SEG_SOP_CLASS_UID, read_dicom_seg

        if str(pydicom.dcmread(str(p), stop_before_pixels=True).SOPClassUID) == SEG_SOP_CLASS_UID:
            if like is None:
                raise VoxsamError(f"{p}: reading a DICOM SEG needs its source series (like=...)")
            return read_dicom_seg(p, like)
    vol = read_volume(p) if like is None else read_label_like(p, like)
    return vol.array


def _label_dtype(mask: np.ndarray, path: Path) -> np.ndarray:
    m = np.asarray(mask)
    if m.dtype == bool:
        return m.view(np.uint8)  # the same bytes: no copy of the grid
    if m.dtype == np.uint8:
        return m
    if not np.issubdtype(m.dtype, np.integer):
        if not np.all(np.isfinite(m)) or np.any(m != np.round(m)):
            raise VoxsamError(f"{path}: a mask must hold whole numbers (labels), got non-integer values")
    lo, hi = (int(m.min()), int(m.max())) if m.size else (0, 0)
    if lo < 0:
        raise VoxsamError(f"{path}: mask labels must be >= 0, got {lo}")
    return m.astype(np.uint8 if hi < 256 else np.uint16 if hi < 65536 else np.uint32)


def write_mask(
    mask: np.ndarray,
    like: Volume,
    path: str | Path,
    label_names: dict[int, str] | None = None,
    overwrite: bool = True,
) -> Path:
    """Write a mask or label map in the exact geometry of its source image, atomically.

    Args:
        mask: (X, Y, Z) bool or integer labels on `like`'s grid.
        like: the image the mask belongs to (its affine and, for DICOM SEG, its files are used).
        path: output file; the format follows the name: .nii/.nii.gz, .nrrd, .mha, .mgz, or .dcm
            (DICOM SEG, only for DICOM sources).
        label_names: optional names for label values (used by DICOM SEG segment labels).
        overwrite: False refuses (OutputPathError) an existing `path`.
    Returns: the resolved output path. The file appears only complete (temp file + rename), with the
        permissions the umask gives; an unwritable folder, a full disk or a label type the format cannot store
        is a VoxsamError naming the file, raised before anything is written where it can be known.
    """
    from voxsam.io.atomic import atomic_path, check_output_path
    from voxsam.io.formats import detect_output_format

    p = Path(path)
    m = np.asarray(mask)
    if m.shape != like.shape:
        raise GeometryMismatchError(f"{p}: mask shape {m.shape} differs from the image grid {like.shape}")
    fmt = detect_output_format(p)
    out = check_output_path(p, _input_paths(like), overwrite=overwrite)
    labels = _label_dtype(m, p)
    if fmt != "dicom":
        labels = storable(labels, fmt, p)
    with atomic_path(out) as tmp:
        _write_array(labels, like, tmp, fmt, label_names)
    return out


def write_volume(volume: Volume, path: str | Path, overwrite: bool = True) -> Path:
    """Write a whole volume (image or label map) to another format on the same grid, atomically.

    The voxel type is checked against the format first (`io.dtypes.storable`: lossless conversions only),
    then the folder's writability; `overwrite=False` refuses an existing `path`. Errors are VoxsamErrors.
    """
    from voxsam.io.atomic import atomic_path, check_output_path
    from voxsam.io.formats import detect_output_format

    p = Path(path)
    fmt = detect_output_format(p)
    if fmt == "dicom":
        raise UnsupportedFormatError(f"{p}: writing DICOM images is not supported; DICOM output is for masks (SEG)")
    if volume.n_channels != 1 and fmt != "nifti":
        raise UnsupportedFormatError(f"{p}: {volume.n_channels}-channel volumes can only be written as NIfTI")
    array = storable(volume.array, fmt, p)
    out = check_output_path(p, _input_paths(volume), overwrite=overwrite)
    with atomic_path(out) as tmp:
        _write_array(array, volume, tmp, fmt, None)
    return out


def _write_array(array: np.ndarray, like: Volume, tmp: Path, fmt: str, label_names: dict[int, str] | None) -> None:
    if fmt in ("nifti", "mgz"):
        from voxsam.io.nibabel_formats import write_nibabel

        write_nibabel(array, like, tmp, fmt)
    elif fmt in ("nrrd", "mha"):
        from voxsam.io.itk_formats import write_itk

        write_itk(array, like, tmp)
    elif fmt == "dicom":
        from voxsam.io.dicom import write_dicom_seg

        write_dicom_seg(array, like, tmp, label_names)
    else:  # pragma: no cover - detect_output_format only returns known formats
        raise OutputPathError(f"{tmp}: cannot write format {fmt}")


def _input_paths(volume: Volume) -> list[Path]:
    paths = [volume.path] if volume.path is not None else []
    paths += [Path(f) for f in volume.meta.get("dicom_files", [])]
    paths += [Path(f) for f in volume.meta.get("dicom_source_files", [])]
    paths += [Path(f) for f in volume.meta.get("channel_paths", [])]
    return paths  # type: ignore[return-value]
