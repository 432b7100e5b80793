"""DICOM headers: find the series of a folder and read what places each slice (pydicom, pixels deferred)."""
from __future__ import annotations

import logging
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from voxsam.errors import NoDicomError

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
