"""DICOM: image series in (headers through pydicom, pixels through SimpleITK), DICOM SEG out and in (highdicom).

A series is stacked in the order of its slices' positions along the slice normal, after checking that they
form one regular grid (see `read_dicom`); that order is kept in `Volume.meta["dicom_files"]` so a SEG frame k
refers to exactly the file of slice k.
"""
from __future__ import annotations

import logging
import warnings
from dataclasses import dataclass
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
    VoxsamError,
)
from voxsam.io.validate import check_affine, check_finite, check_real, squeeze_to_volume
from voxsam.io.volume import Volume
from voxsam.transforms.geometry import sitk_to_array_affine

log = logging.getLogger(__name__)

SEG_SOP_CLASS_UID = "1.2.840.10008.5.1.4.1.1.66.4"


# slice-position checks (mm along the slice normal)
POSITION_TOL_MM = 0.01  # below this, two positions are the same (IPP is stored with limited decimals)
GRID_TOL_FRACTION = 0.05  # a slice may sit this fraction of a step off the regular grid


@dataclass
class _Slice:
    """What voxsam needs from one file's header to place it (read with pydicom, pixels deferred)."""

    path: Path
    series: str
    description: str
    sop_class: str
    rows: int
    columns: int
    frames: int
    spacing: tuple[float, float] | None
    orientation: np.ndarray | None  # (6,) row and column direction cosines (LPS)
    position: np.ndarray | None  # (3,) ImagePositionPatient (LPS mm)
    modality: str | None
    study: str


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
    image = _read_pixels(folder, [s.path for s in ordered])
    array, affine = sitk_to_array_affine(image)
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


def _list_series(groups: dict[str, list[_Slice]]) -> str:
    parts = []
    for uid, members in sorted(groups.items(), key=lambda kv: -len(kv[1])):
        desc = members[0].description
        parts.append(f"{uid or '(no SeriesInstanceUID)'} ({desc!r}, {len(members)} slices)" if desc else
                     f"{uid or '(no SeriesInstanceUID)'} ({len(members)} slices)")
    return "; ".join(parts)


def _scan(folder: Path) -> tuple[list[_Slice], dict[Path, str], set[str]]:
    """Read the header of every DICOM file in `folder` (not its subfolders).

    Returns: image slices, unreadable files {path: why}, names of DICOM SEG files. Files that are not DICOM
    (no "DICM" preamble, no .dcm suffix, not a raw DICOM stream) are ignored.
    """
    import pydicom
    from pydicom.errors import InvalidDicomError
    from pydicom.uid import UID

    slices: list[_Slice] = []
    unreadable: dict[Path, str] = {}
    segs: set[str] = set()
    try:
        entries = sorted(p for p in folder.iterdir() if p.is_file())
    except OSError as exc:
        raise NoDicomError(f"{folder}: cannot list the folder ({exc.strerror})") from None
    pydicom_log = logging.getLogger("pydicom")
    for p in entries:
        kind = _dicom_kind(p)
        if kind is None:
            continue
        level = pydicom_log.level
        pydicom_log.setLevel(logging.CRITICAL)  # pydicom warns (and logs) about odd values and early ends
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                ds = pydicom.dcmread(str(p), defer_size=4096, force=kind == "raw")
        except InvalidDicomError as exc:
            if kind != "raw":
                unreadable[p] = f"not a valid DICOM file: {_first_line(exc)}"
            continue
        except Exception as exc:  # truncated or garbled: pydicom raises many types
            unreadable[p] = f"{type(exc).__name__}: {_first_line(exc)}"
            continue
        finally:
            pydicom_log.setLevel(level)
        sop = str(ds.get("SOPClassUID", "") or getattr(ds, "file_meta", {}).get("MediaStorageSOPClassUID", "") or "")
        if sop == SEG_SOP_CLASS_UID:
            segs.add(p.name)
            continue
        is_image = "Rows" in ds or "Image Storage" in (UID(sop).name if sop else "")
        if not is_image:
            if not sop and "SeriesInstanceUID" not in ds:
                unreadable[p] = "no DICOM object in it (garbled or truncated header)"
            continue  # structured reports, RT structures, presentation states...
        why = _pixel_problem(ds, p)
        if why is not None:
            unreadable[p] = why
            continue
        slices.append(
            _Slice(
                path=p,
                series=str(ds.get("SeriesInstanceUID", "") or ""),
                description=str(ds.get("SeriesDescription", "") or ""),
                sop_class=sop,
                rows=int(ds.get("Rows", 0) or 0),
                columns=int(ds.get("Columns", 0) or 0),
                frames=int(ds.get("NumberOfFrames", 1) or 1),
                spacing=_floats(ds.get("PixelSpacing"), 2),  # type: ignore[arg-type]
                orientation=_array(ds.get("ImageOrientationPatient"), 6),
                position=_array(ds.get("ImagePositionPatient"), 3),
                modality=str(ds.get("Modality", "") or "") or None,
                study=str(ds.get("StudyInstanceUID", "") or ""),
            )
        )
    return slices, unreadable, segs


def _dicom_kind(path: Path) -> str | None:
    """"part10" (DICM preamble or .dcm name), "raw" (starts like a raw DICOM stream), or None (not DICOM)."""
    try:
        with open(path, "rb") as fh:
            head = fh.read(132)
    except OSError:
        return None
    if head[128:132] == b"DICM" or path.suffix.lower() == ".dcm":
        return "part10"
    if head[:2] in (b"\x08\x00", b"\x02\x00") and len(head) >= 8:
        return "raw"
    return None


def _pixel_problem(ds: Any, path: Path) -> str | None:
    """Why the pixel data of an image file cannot be whole (missing or cut short), or None."""
    elem = None
    for keyword in ("PixelData", "FloatPixelData", "DoubleFloatPixelData"):
        elem = ds.get_item(keyword)
        if elem is not None:
            break
    if elem is None:
        return "no pixel data: the file is truncated"
    length = getattr(elem, "length", None)
    tell = getattr(elem, "value_tell", None)
    if isinstance(length, int) and isinstance(tell, int) and length != 0xFFFFFFFF:
        size = path.stat().st_size
        if tell + length > size:
            return f"pixel data truncated: {max(size - tell, 0)} of {length} bytes"
    return None


def _floats(value: object, n: int) -> tuple[float, ...] | None:
    try:
        out = tuple(float(v) for v in value)  # type: ignore[attr-defined]
    except (TypeError, ValueError):
        return None
    return out if len(out) == n and all(np.isfinite(out)) else None


def _array(value: object, n: int) -> np.ndarray | None:
    got = _floats(value, n)
    return None if got is None else np.asarray(got, dtype=np.float64)


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return text[0][:160] if text else type(exc).__name__


def _check_stack(folder: Path, members: list[_Slice]) -> tuple[list[_Slice], np.ndarray, float, str | None]:
    """Sort a series' slices along their normal and check they stack into one regular grid.

    Returns: (slices in order, positions along the normal (mm), regular step (mm), problem) where problem is
    None for a regular stack, or the message of a gap / uneven steps (fixable by resampling).
    Raises: MixedSeriesError (orientation, size, pixel spacing), SliceSpacingError (missing positions, two
        slices at one position, slices shifted within their plane).
    """
    if len(members) == 1:
        return members, np.zeros(1), 0.0, None
    first = members[0]
    for s in members[1:]:
        if (s.rows, s.columns) != (first.rows, first.columns):
            raise MixedSeriesError(
                f"{folder}: slices of different sizes in one series: {first.path.name} is {first.columns}x{first.rows}, "
                f"{s.path.name} is {s.columns}x{s.rows} pixels"
            )
    missing = [s.path.name for s in members if s.orientation is None or s.position is None]
    if missing:
        raise SliceSpacingError(
            f"{folder}: {len(missing)} slice(s) have no ImagePositionPatient/ImageOrientationPatient (e.g. {missing[0]}); "
            "their positions cannot be checked or placed"
        )
    o0 = first.orientation
    assert o0 is not None
    for s in members[1:]:
        assert s.orientation is not None
        if np.abs(s.orientation - o0).max() > 1e-3:
            raise MixedSeriesError(
                f"{folder}: slices of different orientations in one series: {first.path.name} {np.round(o0, 4).tolist()}, "
                f"{s.path.name} {np.round(s.orientation, 4).tolist()}"
            )
    if first.spacing is not None:
        for s in members[1:]:
            if s.spacing is None or not np.allclose(s.spacing, first.spacing, rtol=1e-3, atol=1e-4):
                raise MixedSeriesError(
                    f"{folder}: slices of different pixel spacing in one series: {first.path.name} {first.spacing} mm, "
                    f"{s.path.name} {s.spacing} mm"
                )
    normal = np.cross(o0[:3], o0[3:])
    norm = float(np.linalg.norm(normal))
    if norm < 1e-6:
        raise SliceSpacingError(f"{folder}: ImageOrientationPatient {np.round(o0, 4).tolist()} of {first.path.name} has parallel row and column directions")
    normal = normal / norm
    pos = np.array([float(np.dot(s.position, normal)) for s in members])  # type: ignore[arg-type]
    order = np.argsort(pos, kind="stable")
    ordered = [members[i] for i in order]
    pos = pos[order]
    names = [s.path.name for s in ordered]
    steps = np.diff(pos)
    same = np.flatnonzero(steps <= POSITION_TOL_MM)
    if same.size:
        i = int(same[0])
        more = f" ({same.size} such pairs)" if same.size > 1 else ""
        raise SliceSpacingError(
            f"{folder}: two slices at one position: {names[i]} and {names[i + 1]} both at {pos[i]:.4g} mm along the slice "
            f"normal{more}; remove the duplicate (or pick one series with --series)"
        )
    # in-plane shift: a sheared stack (gantry tilt) cannot be placed by one affine
    px = min(first.spacing) if first.spacing else 1.0
    p0 = ordered[0].position
    assert p0 is not None
    for s in ordered[1:]:
        assert s.position is not None
        d = s.position - p0
        shift = float(np.linalg.norm(d - np.dot(d, normal) * normal))
        if shift > max(POSITION_TOL_MM, 0.05 * px):
            raise SliceSpacingError(
                f"{folder}: slice {s.path.name} is shifted {shift:.3g} mm within its plane from {names[0]} (a sheared stack, "
                "e.g. gantry tilt); voxsam cannot place it on one grid"
            )
    step = float(np.median(steps))
    n = len(pos)
    regular = pos[0] + np.arange(n) * (pos[-1] - pos[0]) / (n - 1)
    off = np.abs(pos - regular)
    tol = max(POSITION_TOL_MM, GRID_TOL_FRACTION * step)
    if float(off.max()) <= tol and float(np.abs(steps - step).max()) <= 2 * tol:
        return ordered, pos, step, None
    gaps = np.flatnonzero(steps > 1.5 * step)
    if gaps.size:
        i = int(gaps[0])
        lost = max(int(round(steps[i] / step)) - 1, 1)
        more = f"; {gaps.size} gaps in all" if gaps.size > 1 else ""
        problem = (
            f"{folder}: {lost} slice(s) missing between {names[i]} and {names[i + 1]} (at {pos[i]:.4g} and {pos[i + 1]:.4g} mm "
            f"along the slice normal): a step of {steps[i]:.4g} mm where the series steps {step:.4g} mm{more}"
        )
    else:
        k = int(np.argmax(np.abs(steps - step)))
        problem = (
            f"{folder}: uneven slice steps of {steps.min():.4g} to {steps.max():.4g} mm (median {step:.4g} mm), e.g. "
            f"{steps[k]:.4g} mm between {names[k]} and {names[k + 1]} (at {pos[k]:.4g} and {pos[k + 1]:.4g} mm along the slice normal)"
        )
    return ordered, pos, step, problem


def _read_pixels(folder: Path, files: list[Path]) -> Any:
    """Decode the slices in this order with SimpleITK (ITK and GDCM chatter captured); name a failing file."""
    import SimpleITK as sitk

    from voxsam.io.quiet import quiet_native

    reader = sitk.ImageSeriesReader()
    reader.SetFileNames([str(f) for f in files])
    with quiet_native():
        try:
            return reader.Execute()
        except RuntimeError as exc:
            reason = " ".join(str(exc).split())[-160:]
    with quiet_native():  # find the file that fails on its own
        for f in files:
            try:
                sitk.ReadImage(str(f))
            except RuntimeError:
                raise CorruptFileError(f"{f}: cannot decode this slice of the series in {folder} (corrupt pixel data)") from None
    raise CorruptFileError(f"{folder}: cannot read the DICOM series ({reason})")


def _resample_along_normal(
    array: np.ndarray, affine: np.ndarray, positions: np.ndarray, step: float, first: _Slice
) -> tuple[np.ndarray, np.ndarray]:
    """Linear interpolation of slices at `positions` (mm, increasing) onto a regular grid from the first to the
    last position, about `step` mm apart; the affine's slice column becomes the slice normal times the new step."""
    span = float(positions[-1] - positions[0])
    n_out = max(int(round(span / step)) + 1, 2)
    target = positions[0] + np.arange(n_out) * (span / (n_out - 1))
    idx = np.clip(np.searchsorted(positions, target, side="right") - 1, 0, len(positions) - 2)
    w = (target - positions[idx]) / (positions[idx + 1] - positions[idx])
    w = np.clip(w, 0.0, 1.0).astype(np.float32)
    src = array.astype(np.float32, copy=False)
    out = src[:, :, idx] * (1.0 - w) + src[:, :, idx + 1] * w
    assert first.orientation is not None and first.position is not None
    normal = np.cross(first.orientation[:3], first.orientation[3:])
    normal = normal / np.linalg.norm(normal)
    lps_to_ras = np.array([-1.0, -1.0, 1.0])
    new = affine.copy()
    new[:3, 2] = lps_to_ras * normal * (span / (n_out - 1))
    new[:3, 3] = lps_to_ras * first.position
    return np.ascontiguousarray(out), new


def _load_sources(like: Volume) -> list:
    import pydicom

    files = like.meta.get("dicom_files")
    if like.meta.get("resampled"):
        raise UnsupportedFormatError(
            "DICOM SEG output needs the slices of the source files, and this series was resampled onto a regular grid "
            "(--allow-uneven); write .nii.gz, .nrrd or .mha instead"
        )
    if like.source_format != "dicom" or not files:
        raise UnsupportedFormatError(
            "DICOM SEG output needs a DICOM series as the source image; write .nii.gz, .nrrd or .mha instead"
        )
    sources = [pydicom.dcmread(f) for f in files]
    for ds in sources:  # in-memory copies only: tidy values highdicom rejects
        if "SpecificCharacterSet" in ds and not str(ds.SpecificCharacterSet or "").strip():
            del ds.SpecificCharacterSet
    return sources


def write_dicom_seg(
    labels: np.ndarray, like: Volume, path: Path, label_names: dict[int, str] | None = None
) -> None:
    """Write an (X, Y, Z) label map on a DICOM series' grid as a binary DICOM SEG, one segment per label.

    Frame k of segment s is `labels[:, :, k] == s` transposed to (rows, columns), referencing the
    source file of slice k. Segment numbers are the label values, so reading back gives the same map.
    """
    import highdicom as hd
    from pydicom.sr.codedict import codes

    sources = _load_sources(like)
    values = [int(v) for v in np.unique(labels) if v != 0]
    if not values:
        raise VoxsamError(f"{path}: the mask is empty; DICOM SEG cannot store an empty segmentation")
    if values != list(range(1, len(values) + 1)):
        raise VoxsamError(
            f"{path}: DICOM SEG needs labels 1..N without gaps, got {values[:8]}; relabel before writing"
        )
    # (X, Y, Z) -> (frames=Z, rows=Y, columns=X, segments)
    stack = np.stack([np.transpose(labels == v, (2, 1, 0)) for v in values], axis=-1).astype(np.uint8)
    algorithm = hd.AlgorithmIdentificationSequence(
        name="voxsam", version=_version(), family=codes.cid7162.ArtificialIntelligence
    )
    names = label_names or {}
    descriptions = [
        hd.seg.SegmentDescription(
            segment_number=v,
            segment_label=names.get(v, f"segment {v}")[:64],
            segmented_property_category=codes.cid7150.Tissue,
            segmented_property_type=codes.SCT.Tissue,
            algorithm_type=hd.seg.SegmentAlgorithmTypeValues.SEMIAUTOMATIC,
            algorithm_identification=algorithm,
        )
        for v in values
    ]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # highdicom nags about the source's patient-name style
        seg = _build_seg(hd, sources, stack, descriptions)
    seg.save_as(str(path))


def _build_seg(hd, sources: list, stack: np.ndarray, descriptions: list):  # type: ignore[no-untyped-def]
    return hd.seg.Segmentation(
        source_images=sources,
        pixel_array=stack,
        segmentation_type=hd.seg.SegmentationTypeValues.BINARY,
        segment_descriptions=descriptions,
        series_instance_uid=hd.UID(),
        series_number=900,
        sop_instance_uid=hd.UID(),
        instance_number=1,
        manufacturer="voxsam",
        manufacturer_model_name="voxsam",
        software_versions=_version(),
        device_serial_number="0",
        omit_empty_frames=False,
    )


def read_dicom_seg(path: Path, like: Volume) -> np.ndarray:
    """Read a DICOM SEG back as an (X, Y, Z) uint8/uint16 label map on the grid of its source series."""
    import highdicom as hd

    try:
        seg = hd.seg.segread(str(path))
    except Exception as exc:
        raise CorruptFileError(f"{path}: not a readable DICOM SEG ({type(exc).__name__})") from None
    import pydicom

    uids = [str(pydicom.dcmread(f, stop_before_pixels=True).SOPInstanceUID) for f in like.meta["dicom_files"]]
    pixels = seg.get_pixels_by_source_instance(
        source_sop_instance_uids=uids, combine_segments=True, relabel=False, assert_missing_frames_are_empty=True
    )  # (slices, rows, columns)
    return np.ascontiguousarray(np.transpose(pixels, (2, 1, 0)))


def _version() -> str:
    from voxsam._version import __version__

    return __version__
