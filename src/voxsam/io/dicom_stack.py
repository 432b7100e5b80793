"""DICOM slice stacks: check that slices form one regular grid, read their pixels, resample uneven stacks."""
from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import numpy as np

from voxsam.errors import CorruptFileError, MixedSeriesError, SliceSpacingError
from voxsam.io.dicom_scan import GRID_TOL_FRACTION, POSITION_TOL_MM, _first_line, _Slice

log = logging.getLogger(__name__)


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
