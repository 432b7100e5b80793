"""DICOM: image series in (headers through pydicom, pixels through SimpleITK), DICOM SEG out and in (highdicom).

A series is stacked in the order of its slices' positions along the slice normal, after checking that they
form one regular grid (see `read_dicom`); that order is kept in `Volume.meta["dicom_files"]` so a SEG frame k
refers to exactly the file of slice k.
"""
from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import numpy as np

from voxsam.errors import (
    CorruptFileError,
    MixedSeriesError,
    NoDicomError,
    SeveralSeriesError,
    SliceSpacingError,
    UnsupportedFormatError,
)
from voxsam.io.dicom_pixels import read_series_array
from voxsam.io.dicom_scan import _list_series, _scan, _Slice
from voxsam.io.dicom_seg import SEG_SOP_CLASS_UID, read_dicom_seg, write_dicom_seg
from voxsam.io.dicom_stack import _check_stack, _read_pixels, _resample_along_normal
from voxsam.io.validate import check_affine, check_finite, check_real, squeeze_to_volume
from voxsam.io.volume import Volume
from voxsam.transforms.geometry import sitk_to_array_affine

log = logging.getLogger(__name__)

__all__ = ["SEG_SOP_CLASS_UID", "read_dicom", "read_dicom_seg", "write_dicom_seg"]


def read_dicom(path: Path, series_uid: str | None = None, allow_uneven: bool = False) -> Volume:
    """Read a DICOM image series from a folder, or from one file of the series (its folder is searched).

    The slices are checked before any pixel is read: every file of the series readable, one orientation, one
    size, one pixel spacing, no slice shifted within its plane, no two slices at one position, and evenly
    spaced along the slice normal (no missing slice). A folder holding several image series needs
    `series_uid` (CLI `--series UID`); the error lists them.

    Args:
        path: a folder holding the series, or one of its files.
        series_uid: pick this SeriesInstanceUID when the folder holds several.
        allow_uneven: resample a series with missing slices or uneven steps onto a regular grid (linear along
            the slice normal, from the true slice positions) instead of refusing it; logged as a warning, and
            recorded in `meta["resampled"]`.
    Returns: Volume with array (columns, rows, slices) in Hounsfield units for CT (rescale applied).
    Raises: NoDicomError, SeveralSeriesError, CorruptFileError (an unreadable file), MixedSeriesError,
        SliceSpacingError, naming the folder, the files and the slice positions.
    """
    folder = path if path.is_dir() else path.parent
    slices, unreadable, segs = _scan(folder)
    if path.is_file():
        bad = next((why for p, why in unreadable.items() if p.name == path.name), None)
        if bad is not None:
            raise CorruptFileError(f"{path}: not a readable DICOM file ({bad})")
        own = next((s for s in slices if s.path.name == path.name), None)
        if own is None:
            if path.name in segs:
                raise UnsupportedFormatError(f"{path}: is a DICOM SEG; read it with voxsam.io.read_dicom_seg(path, like=image)")
            raise NoDicomError(f"{path}: not a DICOM image (no pixel data)")
        series_uid = series_uid or own.series
    groups: dict[str, list[_Slice]] = {}
    for s in slices:
        groups.setdefault(s.series, []).append(s)
    if not groups:
        if unreadable:
            name, why = next(iter(unreadable.items()))
            raise CorruptFileError(f"{folder}: no readable DICOM image series; {len(unreadable)} unreadable file(s), e.g. {name.name} ({why})")
        if segs:
            raise NoDicomError(f"{folder}: holds a DICOM SEG but no image series")
        raise NoDicomError(f"{folder}: no DICOM image series found in this folder")
    if series_uid is not None:
        if series_uid not in groups:
            raise NoDicomError(f"{folder}: series {series_uid} not found; the folder holds {_list_series(groups)}")
        chosen = series_uid
    elif len(groups) == 1:
        chosen = next(iter(groups))
    else:
        raise SeveralSeriesError(
            f"{folder}: holds {len(groups)} image series; choose one with --series UID (API series=UID): {_list_series(groups)}"
        )
    if unreadable:  # a file we cannot even parse may be a slice of the chosen series: never guess
        name, why = next(iter(unreadable.items()))
        more = f" (and {len(unreadable) - 1} more)" if len(unreadable) > 1 else ""
        raise CorruptFileError(
            f"{folder}: DICOM file {name.name} is unreadable ({why}){more}; it may be a slice of the series: remove or replace it"
        )
    members = groups[chosen]
    ordered, positions, step, problem = _check_stack(folder, members)
    if problem is not None and not allow_uneven:
        raise SliceSpacingError(f"{problem}; pass --allow-uneven (API allow_uneven=True) to resample onto a regular grid")
    files = [s.path for s in ordered]
    if all(s.frames == 1 for s in ordered):  # slices decoded in contiguous chunks on several threads
        array, affine = read_series_array(folder, files)
    else:
        array, affine = sitk_to_array_affine(_read_pixels(folder, files))
    if array.shape[2] != len(ordered) and len(ordered) > 1:
        raise CorruptFileError(f"{folder}: the series has {len(ordered)} files but {array.shape[2]} slices were decoded")
    array = squeeze_to_volume(array, folder)
    check_real(array, folder)
    meta: dict[str, Any] = {
        "dicom_files": [str(s.path.resolve()) for s in ordered],
        "series_uid": chosen,
        "study_uid": ordered[0].study,
    }
    if problem is not None:
        array, affine = _resample_along_normal(array, affine, positions, step, ordered[0])
        meta["resampled"] = problem
        meta["dicom_source_files"] = meta.pop("dicom_files")  # slice k no longer is file k: no DICOM SEG output
        meta["slice_positions_mm"] = [float(p) for p in positions]
    check_affine(affine, folder, spacing=tuple(float(v) for v in np.linalg.norm(affine[:3, :3], axis=0)))
    check_finite(array, folder)
    if problem is not None:
        log.warning("%s: resampled onto a regular grid of %d slices %.4g mm apart (--allow-uneven): %s",
                    folder, array.shape[2], float(np.linalg.norm(affine[:3, 2])), problem.split(": ", 1)[-1])
    return Volume(array=array, affine=affine, source_format="dicom", path=path, meta=meta, modality=ordered[0].modality)
