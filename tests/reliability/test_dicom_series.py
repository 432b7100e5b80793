"""DICOM series that do not stack into one regular grid are refused with the problem and where it is;
--allow-uneven resamples gaps and uneven steps from the true slice positions; a folder with several series
lists them and asks for --series."""
from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from voxsam.cli.main import main
from voxsam.errors import (
    CorruptFileError,
    MixedSeriesError,
    NoDicomError,
    SeveralSeriesError,
    SliceSpacingError,
    UnsupportedFormatError,
)
from voxsam.io import read_volume, write_mask, write_volume

from ._dicom import write_series, write_slice

SAGITTAL = (0.0, 1.0, 0.0, 0.0, 0.0, -1.0)


def _hu(vol) -> np.ndarray:
    """The value of each slice (write_series stores 10 * z HU, voxel [0, 0] aside)."""
    return np.asarray(vol.array[3, 3, :], dtype=np.float64)


def test_regular_series_reads(tmp_path: Path) -> None:
    write_series(tmp_path / "s", [8, 0, 4, 2, 6])  # files out of order: sorted by position along the normal
    vol = read_volume(tmp_path / "s")
    assert vol.shape == (10, 12, 5) and np.allclose(vol.spacing, (0.8, 0.8, 2.0))
    np.testing.assert_allclose(_hu(vol), [0, 20, 40, 60, 80])
    np.testing.assert_allclose(vol.affine[:3, 3], [5.0, 4.0, 0.0])  # LPS (-5, -4, 0) in RAS


def test_missing_slice_is_refused_naming_files_and_positions(tmp_path: Path) -> None:
    write_series(tmp_path / "s", [0, 2, 6, 8])
    with pytest.raises(SliceSpacingError) as info:
        read_volume(tmp_path / "s")
    msg = str(info.value)
    assert "1 slice(s) missing" in msg and "slice_001.dcm" in msg and "slice_002.dcm" in msg
    assert "at 2 and 6 mm" in msg and "--allow-uneven" in msg and "\n" not in msg


def test_uneven_steps_are_refused(tmp_path: Path) -> None:
    write_series(tmp_path / "s", [0, 2, 4, 6.6, 8.6])
    with pytest.raises(SliceSpacingError, match=r"uneven slice steps of 2 to 2\.6 mm.*slice_002\.dcm and slice_003\.dcm"):
        read_volume(tmp_path / "s")


def test_two_slices_at_one_position(tmp_path: Path) -> None:
    write_series(tmp_path / "s", [0, 2, 2, 4])
    for kwargs in ({}, {"allow_uneven": True}):  # resampling cannot choose between them
        with pytest.raises(SliceSpacingError, match=r"two slices at one position: slice_001\.dcm and slice_002\.dcm both at 2 mm"):
            read_volume(tmp_path / "s", **kwargs)


def test_mixed_orientation(tmp_path: Path) -> None:
    paths = write_series(tmp_path / "s", [0, 2, 4, 6])
    write_slice(paths[2], np.zeros((12, 10), np.int16), [-5, -4, 4], orientation=(1, 0, 0, 0, 0.9, 0.43589))
    with pytest.raises(MixedSeriesError, match=r"different orientations.*slice_002\.dcm"):
        read_volume(tmp_path / "s", allow_uneven=True)


def test_mixed_size(tmp_path: Path) -> None:
    paths = write_series(tmp_path / "s", [0, 2, 4])
    write_slice(paths[1], np.zeros((12, 11), np.int16), [-5, -4, 2])
    with pytest.raises(MixedSeriesError, match=r"different sizes.*slice_001\.dcm is 11x12"):
        read_volume(tmp_path / "s")


def test_mixed_pixel_spacing(tmp_path: Path) -> None:
    paths = write_series(tmp_path / "s", [0, 2, 4])
    write_slice(paths[1], np.zeros((12, 10), np.int16), [-5, -4, 2], spacing=(0.5, 0.5))
    with pytest.raises(MixedSeriesError, match=r"pixel spacing.*slice_001\.dcm"):
        read_volume(tmp_path / "s")


def test_sheared_stack(tmp_path: Path) -> None:
    paths = write_series(tmp_path / "s", [0, 2, 4])
    write_slice(paths[2], np.zeros((12, 10), np.int16), [-3, -4, 4])  # 2 mm sideways: a gantry-tilt shear
    with pytest.raises(SliceSpacingError, match=r"slice_002\.dcm is shifted 2 mm within its plane"):
        read_volume(tmp_path / "s")


@pytest.mark.parametrize("cut", ["pixels", "header"])
def test_unreadable_slice_is_named(tmp_path: Path, cut: str) -> None:
    paths = write_series(tmp_path / "s", [0, 2, 4, 6, 8])
    raw = paths[2].read_bytes()
    paths[2].write_bytes(raw[: len(raw) - 50] if cut == "pixels" else raw[:300])
    with pytest.raises(CorruptFileError, match=r"slice_002\.dcm is unreadable.*truncated"):
        read_volume(tmp_path / "s")


def test_garbage_dcm_and_ignored_non_dicom_files(tmp_path: Path) -> None:
    write_series(tmp_path / "s", [0, 2, 4])
    (tmp_path / "s" / "notes.txt").write_text("not an image")
    assert read_volume(tmp_path / "s").shape[2] == 3  # a non-DICOM file is not part of any series
    (tmp_path / "s" / "broken.dcm").write_bytes(b"\x00" * 128 + b"DICM" + b"\xff" * 20)
    with pytest.raises(CorruptFileError, match=r"broken\.dcm is unreadable"):
        read_volume(tmp_path / "s")


def _two_series(folder: Path) -> None:
    write_series(folder, [0, 2, 4], series_uid="1.2.826.0.1.3680043.8.498.21", description="axial A", prefix="a")
    write_series(folder, [0, 1, 2, 3], series_uid="1.2.826.0.1.3680043.8.498.22", description="thin B", prefix="b")


def test_several_series_are_listed(tmp_path: Path) -> None:
    _two_series(tmp_path / "s")
    with pytest.raises(SeveralSeriesError) as info:
        read_volume(tmp_path / "s")
    msg = str(info.value)
    assert "holds 2 image series" in msg and "--series UID" in msg
    assert "1.2.826.0.1.3680043.8.498.21 ('axial A', 3 slices)" in msg and "1.2.826.0.1.3680043.8.498.22 ('thin B', 4 slices)" in msg


def test_series_is_chosen_by_uid_or_by_file(tmp_path: Path) -> None:
    _two_series(tmp_path / "s")
    assert read_volume(tmp_path / "s", series="1.2.826.0.1.3680043.8.498.21").shape[2] == 3
    assert read_volume(tmp_path / "s", series_uid="1.2.826.0.1.3680043.8.498.22").shape[2] == 4
    assert read_volume(tmp_path / "s" / "b_000.dcm").shape[2] == 4  # one file: its own series
    with pytest.raises(NoDicomError, match=r"series 9\.9 not found.*axial A"):
        read_volume(tmp_path / "s", series="9.9")


def test_cli_series_and_listing(tmp_path: Path, capfd: pytest.CaptureFixture[str]) -> None:
    _two_series(tmp_path / "s")
    with pytest.raises(SystemExit) as info:
        main(["info", str(tmp_path / "s")])
    err = capfd.readouterr().err
    assert info.value.code == 2 and err.startswith("error: ") and err.count("\n") == 1 and "--series" in err
    main(["info", str(tmp_path / "s"), "--series", "1.2.826.0.1.3680043.8.498.22"])
    assert "(10, 12, 4)" in capfd.readouterr().out.replace("[", "(").replace("]", ")")


def test_allow_uneven_fills_a_gap_linearly(tmp_path: Path) -> None:
    write_series(tmp_path / "s", [0, 2, 6, 8])
    vol = read_volume(tmp_path / "s", allow_uneven=True)
    assert vol.shape == (10, 12, 5) and np.allclose(vol.spacing, (0.8, 0.8, 2.0))
    np.testing.assert_allclose(_hu(vol), [0, 20, 40, 60, 80], atol=1e-4)  # the missing slice at 4 mm: (20 + 60) / 2
    assert "missing" in vol.meta["resampled"] and vol.meta["slice_positions_mm"] == [0.0, 2.0, 6.0, 8.0]
    np.testing.assert_allclose(vol.affine[:3, 3], [5.0, 4.0, 0.0])


def test_allow_uneven_on_a_sagittal_series(tmp_path: Path) -> None:
    write_series(tmp_path / "s", [0, 3, 6, 12, 15], orientation=SAGITTAL)
    with pytest.raises(SliceSpacingError, match="missing"):
        read_volume(tmp_path / "s")
    vol = read_volume(tmp_path / "s", allow_uneven=True)
    assert vol.shape[2] == 6 and np.isclose(vol.spacing[2], 3.0)
    np.testing.assert_allclose(_hu(vol), [0, 30, 60, 90, 120, 150], atol=1e-3)
    normal_ras = np.array([-1.0, 0.0, 0.0])  # row (0,1,0) x column (0,0,-1) = (-1,0,0) in LPS -> (1,0,0) in RAS
    np.testing.assert_allclose(vol.affine[:3, 2] / 3.0, -normal_ras, atol=1e-6)


@settings(max_examples=10, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.lists(st.floats(0.5, 6.0), min_size=2, max_size=6))
def test_allow_uneven_reproduces_a_linear_ramp(tmp_path: Path, steps: list[float]) -> None:
    """Slices of value 10 * z at any increasing positions resample to 10 * z on the regular grid."""
    z = np.round(np.concatenate([[0.0], np.cumsum(steps)]), 2)
    folder = tmp_path / f"ramp_{abs(hash(tuple(z))) % 10**8}"
    shutil.rmtree(folder, ignore_errors=True)
    write_series(folder, list(z))
    vol = read_volume(folder, allow_uneven=True)
    n = vol.shape[2]
    grid = z[0] + np.arange(n) * (z[-1] - z[0]) / (n - 1)
    np.testing.assert_allclose(_hu(vol), 10 * np.round(grid, 1), atol=1.0)  # stored values are whole HU
    np.testing.assert_allclose(vol.affine[2, 2], (z[-1] - z[0]) / (n - 1), rtol=1e-6)


def test_resampled_series_cannot_become_a_dicom_seg(tmp_path: Path) -> None:
    write_series(tmp_path / "s", [0, 2, 6, 8])
    vol = read_volume(tmp_path / "s", allow_uneven=True)
    mask = np.zeros(vol.shape, np.uint8)
    mask[2:5, 2:5, 1:3] = 1
    with pytest.raises(UnsupportedFormatError, match="resampled"):
        write_mask(mask, vol, tmp_path / "seg.dcm")
    assert not (tmp_path / "seg.dcm").exists() and not list(tmp_path.glob(".seg.dcm*"))
    write_volume(vol, tmp_path / "ok.nii.gz")
    with pytest.raises(Exception):  # the source files are inputs: never overwritten
        write_volume(vol, tmp_path / "s" / "slice_000.dcm")


def test_cli_allow_uneven(tmp_path: Path, capfd: pytest.CaptureFixture[str], caplog: pytest.LogCaptureFixture) -> None:
    write_series(tmp_path / "s", [0, 2, 6, 8])
    with pytest.raises(SystemExit) as info:
        main(["convert", str(tmp_path / "s"), str(tmp_path / "o.nii.gz")])
    err = capfd.readouterr().err
    assert info.value.code == 2 and err.startswith("error: ") and "--allow-uneven" in err and err.count("\n") == 1
    assert "WARNING: In" not in err  # ITK's own two-line warning is never shown
    assert not (tmp_path / "o.nii.gz").exists()
    main(["convert", str(tmp_path / "s"), str(tmp_path / "o.nii.gz"), "--allow-uneven"])
    assert "WARNING: In" not in capfd.readouterr().err
    said = [r.getMessage() for r in caplog.records if r.name == "voxsam.io.dicom"]  # on stderr outside pytest
    assert any("resampled onto a regular grid of 5 slices 2 mm apart" in m for m in said), said
    assert read_volume(tmp_path / "o.nii.gz").shape == (10, 12, 5)


@pytest.mark.shared
def test_real_series_with_a_deleted_slice(shared_data: Path, tmp_path: Path) -> None:
    src = shared_data / "dicom" / "totalseg_ct_series"
    copy = tmp_path / "series"
    shutil.copytree(src, copy)
    files = sorted(copy.iterdir())
    files[7].unlink()
    with pytest.raises(SliceSpacingError, match=r"1 slice\(s\) missing.*a step of 4 mm where the series steps 2 mm"):
        read_volume(copy)
    whole = read_volume(src)
    filled = read_volume(copy, allow_uneven=True)
    assert filled.shape == whole.shape
    np.testing.assert_allclose(filled.affine, whole.affine, atol=1e-4)
    missing_k = int(np.argmax(np.abs(filled.array - whole.array).reshape(-1, whole.shape[2]).max(axis=0)))
    keep = [k for k in range(whole.shape[2]) if k != missing_k]
    np.testing.assert_array_equal(filled.array[..., keep], whole.array[..., keep])


def test_eval_allow_uneven(tmp_path: Path, capfd: pytest.CaptureFixture[str]) -> None:
    write_series(tmp_path / "ct", [0, 2, 6, 8], shape=(16, 16))
    grid = read_volume(tmp_path / "ct", allow_uneven=True)
    label = np.zeros(grid.shape, np.uint8)
    label[5:11, 5:11, 1:4] = 1
    write_mask(label, grid, tmp_path / "seg.nii.gz")
    args = ["eval", f"{tmp_path / 'ct'}::{tmp_path / 'seg.nii.gz'}", "-e", "classic", "-p", "center", "--clicks", "1",
            "--engine-option", "margin_mm=8", "--engine-option", "seed_radius_mm=0"]
    with pytest.raises(SystemExit) as info:
        main([*args, "--out", str(tmp_path / "strict")])
    err = capfd.readouterr().err
    assert info.value.code == 2 and "no target could be evaluated" in err and "missing" in err and "--allow-uneven" in err
    main([*args, "--out", str(tmp_path / "resampled"), "--allow-uneven"])  # returns: exit 0
    assert "complete" in (tmp_path / "resampled" / "summary.md").read_text()


def test_series_option_on_a_file_format_is_refused(tmp_path: Path) -> None:
    image = write_volume(read_volume(write_series(tmp_path / "s", [0, 2, 4])[0]), tmp_path / "x.nii.gz")
    with pytest.raises(UnsupportedFormatError, match=r"x\.nii\.gz: a series \(--series\) can only be chosen in a DICOM folder"):
        read_volume(image, series="1.2.3")
