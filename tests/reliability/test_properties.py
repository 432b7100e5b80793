"""Property-based hostile inputs (hypothesis): prompt values, header fields, spacings, affines and voxel types.
Whatever the value, voxsam either does the right thing or raises its own one-line error; never another
exception, never a silently wrong volume."""
from __future__ import annotations

import itertools
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from voxsam.errors import InvalidGeometryError, PromptError, UnsupportedFormatError, VoxsamError
from voxsam.io import Volume, read_volume, write_volume
from voxsam.io.validate import MAX_SPACING_MM, MIN_SPACING_MM, check_affine

from . import _files as F

FAST = settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
_counter = itertools.count()

ANY_NUMBER = st.one_of(
    st.floats(allow_nan=True, allow_infinity=True),
    st.integers(-10**6, 10**6),
    st.sampled_from([0.0, -0.5, 9.5, 10.0, 1e300, -1e-300]),
)
ODD_VALUE = st.one_of(
    st.tuples(ANY_NUMBER, ANY_NUMBER, ANY_NUMBER),
    st.lists(ANY_NUMBER, max_size=5),
    st.text(max_size=6),
    st.none(),
    st.tuples(st.text(max_size=2), st.text(max_size=2), st.text(max_size=2)),
    st.just({"x": 1}),
)


@pytest.fixture(scope="module")
def session_factory():  # type: ignore[no-untyped-def]
    from tests.evaluation._helpers import BallEngine
    from voxsam.session import Session

    def make(affine: np.ndarray) -> Session:
        return Session(Volume(np.zeros((10, 10, 10), np.float32), affine), BallEngine())

    return make


@FAST
@given(xyz=ODD_VALUE, space=st.sampled_from(["voxel", "world", "pixels"]), positive=st.sampled_from([True, False, 0, 1, 2, "yes"]))
def test_any_point_value_gives_a_mask_or_a_prompt_error(session_factory, xyz, space, positive) -> None:  # type: ignore[no-untyped-def]
    session = session_factory(np.diag([2.0, 2.0, 3.0, 1.0]))
    try:
        mask = session.add_point(xyz, positive=positive, space=space)
    except PromptError as exc:
        assert "\n" not in str(exc)
        return
    assert mask.shape == (10, 10, 10) and space in ("voxel", "world")


@FAST
@given(a=ODD_VALUE, b=ODD_VALUE, axis=st.sampled_from([None, 0, 1, 2, 3, -1]))
def test_any_box_value_gives_a_mask_or_a_prompt_error(session_factory, a, b, axis) -> None:  # type: ignore[no-untyped-def]
    session = session_factory(np.eye(4))
    try:
        session.add_box(a, b, axis=axis)
    except PromptError as exc:
        text = str(exc)
        assert "\n" not in text and (" point" not in text or "box" in text), text  # a box is never called a point


@FAST
@given(xyz=st.tuples(*[st.floats(-50, 50)] * 3))
def test_world_prompt_on_a_singular_affine(session_factory, xyz) -> None:  # type: ignore[no-untyped-def]
    singular = np.eye(4)
    singular[:3, 2] = singular[:3, 0]
    session = session_factory(singular)
    with pytest.raises(PromptError, match="singular"):
        session.add_point(xyz, space="world")


SPACING = st.one_of(
    st.floats(allow_nan=True, allow_infinity=True),
    st.floats(1e-4, 1e3),
    st.sampled_from([0.0, -1.0, 1e-3, 100.0, 100.5, 5e-4, 1e6]),
)


@FAST
@given(spacing=st.tuples(SPACING, SPACING, SPACING))
def test_metaimage_spacing_header(tmp_path: Path, spacing) -> None:  # type: ignore[no-untyped-def]
    path = F.metaimage(tmp_path / f"s{next(_counter)}.mha", spacing=" ".join(repr(float(s)) for s in spacing))
    plausible = all(np.isfinite(s) and MIN_SPACING_MM <= s <= MAX_SPACING_MM for s in spacing)
    try:
        vol = read_volume(path)
    except VoxsamError as exc:
        assert not plausible or isinstance(exc, InvalidGeometryError) is False, exc
        assert "\n" not in str(exc) and str(path) in str(exc)
        return
    assert plausible, spacing
    np.testing.assert_allclose(vol.spacing, spacing, rtol=1e-5)


@FAST
@given(dims=st.tuples(*[st.integers(0, 10**9)] * 3) | st.tuples(*[st.integers(1, 12)] * 3), short=st.booleans())
def test_metaimage_size_header(tmp_path: Path, dims, short: bool) -> None:  # type: ignore[no-untyped-def]
    n = int(np.prod(dims, dtype=object))
    data = bytes(2 * n - (1 if short and n else 0)) if n <= 4096 else bytes(100)
    path = F.metaimage(tmp_path / f"d{next(_counter)}.mha", dims=dims, data=data)
    try:
        vol = read_volume(path)
    except VoxsamError as exc:
        assert "\n" not in str(exc) and str(path) in str(exc)
        return
    assert vol.shape == tuple(dims) and not short and min(dims) > 1


@FAST
@given(matrix=hnp.arrays(np.float64, (3, 3), elements=st.floats(-3, 3)), scale=st.sampled_from([1e-7, 1e-3, 1.0, 50.0, 1e5]))
def test_nifti_affine_header(tmp_path: Path, matrix: np.ndarray, scale: float) -> None:
    affine = np.eye(4)
    affine[:3, :3] = matrix * scale
    path = F.nifti(tmp_path / f"a{next(_counter)}.nii.gz", np.zeros((4, 4, 4), np.int16), affine)
    try:
        vol = read_volume(path)
    except InvalidGeometryError as exc:
        assert "\n" not in str(exc) and str(path) in str(exc)
        return
    np.testing.assert_allclose(vol.affine[:3, :3], affine[:3, :3], rtol=1e-4, atol=1e-6 * scale)
    assert all(MIN_SPACING_MM <= s <= MAX_SPACING_MM for s in vol.spacing)


@settings(max_examples=200, deadline=None)
@given(hnp.arrays(np.float64, (4, 4), elements=st.floats(-1e4, 1e4) | st.sampled_from([0.0, np.nan, np.inf])))
def test_check_affine_accepts_only_usable_geometry(affine: np.ndarray) -> None:
    try:
        check_affine(affine, "x.nii")
    except InvalidGeometryError as exc:
        assert str(exc).startswith("x.nii: ") and "\n" not in str(exc)
        return
    m = affine[:3, :3]
    norms = np.linalg.norm(m, axis=0)
    assert np.all(np.isfinite(affine)) and np.all((norms >= MIN_SPACING_MM) & (norms <= MAX_SPACING_MM))
    assert abs(np.linalg.det(m / norms)) > 1e-6


DTYPES = ["bool", "int8", "uint8", "int16", "uint16", "int32", "uint32", "int64", "uint64", "float16", "float32", "float64", "complex64"]


def _values(dtype: str) -> st.SearchStrategy[np.ndarray]:
    dt = np.dtype(dtype)
    if dt.kind == "c":
        elements = st.complex_numbers(max_magnitude=1e3, allow_nan=False, allow_infinity=False)
    elif dt.kind == "f":
        elements = st.floats(-6e4, 6e4, allow_nan=False, allow_infinity=False, width=min(dt.itemsize * 8, 64))
    elif dt.kind in "iu":
        info = np.iinfo(dt)
        elements = st.integers(max(int(info.min), -(2**40)), min(int(info.max), 2**40)) | st.sampled_from([0, 1])
    else:
        elements = st.booleans()
    return hnp.arrays(dt, (3, 4, 5), elements=elements)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.data(), dtype=st.sampled_from(DTYPES), ext=st.sampled_from([".nii.gz", ".nrrd", ".mha", ".mgz"]))
def test_every_voxel_type_round_trips_or_is_refused_before_writing(tmp_path: Path, data, dtype: str, ext: str) -> None:  # type: ignore[no-untyped-def]
    array = data.draw(_values(dtype))
    out = tmp_path / f"v{next(_counter)}{ext}"
    ints_fit_32 = array.dtype.kind != "c" and (array.dtype.kind not in "iu" or (array.min() >= -(2**31) and array.max() < 2**31))
    try:
        write_volume(Volume(array, np.eye(4)), out)
    except UnsupportedFormatError as exc:
        assert not out.exists() and not list(tmp_path.glob(f".{out.name}*"))
        assert array.dtype.kind == "c" or (ext == ".mgz" and not ints_fit_32), exc
        return
    back = read_volume(out).array
    if array.dtype.kind in "iub":
        assert np.array_equal(back.astype(np.int64), array.astype(np.int64))
    else:
        np.testing.assert_allclose(back.astype(np.float64), array.astype(np.float64), rtol=1e-6, atol=1e-30)
