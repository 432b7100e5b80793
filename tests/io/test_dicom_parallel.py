"""DICOM series decoded in chunks on several threads = the whole-list read, voxel for voxel, affine for affine."""
from __future__ import annotations

import threading
from pathlib import Path

import numpy as np
import pytest

from tests.reliability._dicom import write_series
from voxsam.errors import CorruptFileError
from voxsam.io import read_volume
from voxsam.io import dicom_pixels
from voxsam.io.dicom_pixels import MAX_THREADS, THREADS_ENV, decode_threads, read_series_array
from voxsam.io.dicom_scan import _scan
from voxsam.io.dicom_stack import _check_stack

N_SLICES = 60  # above CHUNKED_MIN_SLICES: the default read uses chunks, and threads where there are cores


def _sorted_files(folder: Path) -> list[Path]:
    slices, unreadable, _ = _scan(folder)
    assert not unreadable
    ordered, _, _, problem = _check_stack(folder, slices)
    assert problem is None
    return [s.path for s in ordered]


def _assert_same(a: tuple[np.ndarray, np.ndarray], b: tuple[np.ndarray, np.ndarray]) -> None:
    assert a[0].dtype == b[0].dtype and a[0].shape == b[0].shape
    assert a[0].flags.c_contiguous and b[0].flags.c_contiguous
    np.testing.assert_array_equal(a[0], b[0])
    np.testing.assert_array_equal(a[1], b[1])  # exactly: same origin, spacing, direction


def _series(folder: Path, n: int = N_SLICES, orientation: tuple[float, ...] = (1.0, 0.0, 0.0, 0.0, 1.0, 0.0)) -> Path:
    """`n` slices 0.7 mm apart (uneven decimals: the slice spacing is computed, not copied), files shuffled by name."""
    rng = np.random.default_rng(3)
    z = [round(0.7 * k + 12.3, 4) for k in rng.permutation(n)]
    paths = write_series(folder, z, shape=(24, 32), orientation=orientation)
    for p in paths:  # structure that differs per pixel and per slice (a transposition mistake shows)
        _fill(p, rng)
    return folder


def _fill(path: Path, rng: np.random.Generator, slope: float | None = None) -> None:
    import pydicom

    ds = pydicom.dcmread(path)
    ds.PixelData = rng.integers(0, 3000, size=(ds.Rows, ds.Columns)).astype(np.int16).tobytes()
    if slope is not None:
        ds.RescaleSlope = slope
    ds.save_as(path)


@pytest.mark.parametrize("orientation", [(1.0, 0.0, 0.0, 0.0, 1.0, 0.0), (0.0, 1.0, 0.0, 0.0, 0.0, -1.0),
                                         (0.866025, 0.5, 0.0, -0.5, 0.866025, 0.0)])
def test_chunked_and_threaded_reads_equal_the_whole_list_read(tmp_path: Path, orientation: tuple[float, ...]) -> None:
    folder = _series(tmp_path / "s", orientation=orientation)
    files = _sorted_files(folder)
    whole = read_series_array(folder, files, threads=0)
    assert whole[0].shape == (32, 24, N_SLICES)
    for threads in (1, 2, 3, MAX_THREADS):
        _assert_same(read_series_array(folder, files, threads=threads), whole)


def test_read_volume_default_equals_sequential(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    folder = _series(tmp_path / "s")
    monkeypatch.setenv(THREADS_ENV, "0")
    seq = read_volume(folder)
    for threads in ("", "1", "2"):  # as picked on this machine, chunks on this thread, two threads
        monkeypatch.setenv(THREADS_ENV, threads)
        par = read_volume(folder)
        _assert_same((par.array, par.affine), (seq.array, seq.affine))
        assert par.meta == seq.meta and par.modality == seq.modality


@pytest.mark.shared
def test_real_series_reads_the_same_every_way(shared_data: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    folder = shared_data / "dicom" / "totalseg_ct_series"  # 20 JPEG 2000 slices, 512 x 512
    if not folder.is_dir():
        pytest.skip("the shared DICOM series is absent")
    files = _sorted_files(folder)
    whole = read_series_array(folder, files, threads=0)
    for threads in (1, 2, 4):
        _assert_same(read_series_array(folder, files, threads=threads), whole)
    monkeypatch.setenv(THREADS_ENV, "0")
    seq = read_volume(folder)
    monkeypatch.setenv(THREADS_ENV, "4")
    par = read_volume(folder)
    _assert_same((par.array, par.affine), (seq.array, seq.affine))
    assert par.meta == seq.meta


def test_a_slice_of_another_voxel_type_gives_the_whole_list_result(tmp_path: Path) -> None:
    """A non-integer rescale slope in one slice decodes that chunk to floats: the read falls back."""
    folder = _series(tmp_path / "s")
    files = _sorted_files(folder)
    _fill(files[40], np.random.default_rng(5), slope=0.5)
    whole = read_series_array(folder, files, threads=0)
    for threads in (1, 3):
        _assert_same(read_series_array(folder, files, threads=threads), whole)


def _corrupt_jpegls_series(folder: Path, bad: int) -> list[Path]:
    """A JPEG-LS series whose slice `bad` keeps a whole header but has garbled compressed pixels."""
    pytest.importorskip("jpeg_ls")
    import pydicom
    from pydicom.encaps import encapsulate, get_frame
    from pydicom.uid import JPEGLSLossless

    paths = write_series(folder, [float(z) for z in range(N_SLICES)], shape=(24, 32))
    for p in paths:
        ds = pydicom.dcmread(p)
        ds.compress(JPEGLSLossless, encoding_plugin="pyjpegls")
        ds.save_as(p)
    ds = pydicom.dcmread(paths[bad])
    frame = get_frame(ds.PixelData, 0, number_of_frames=1)
    ds.PixelData = encapsulate([frame[:2] + bytes(len(frame) - 2)])  # start-of-image marker, then zeros
    ds.save_as(paths[bad])
    return paths


@pytest.mark.parametrize("threads", ["0", "1", "3", ""])
def test_corrupt_slice_in_the_middle_is_named(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, threads: str) -> None:
    folder = tmp_path / "s"
    _corrupt_jpegls_series(folder, bad=30)
    monkeypatch.setenv(THREADS_ENV, threads)
    with pytest.raises(CorruptFileError, match=r"slice_030\.dcm: cannot decode this slice of the series in .*corrupt pixel data"):
        read_volume(folder)
    assert not [t for t in threading.enumerate() if t.name.startswith("voxsam-dicom")]


def test_thread_count_is_bounded(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(THREADS_ENV, raising=False)
    assert N_SLICES >= dicom_pixels.CHUNKED_MIN_SLICES
    assert decode_threads(3) == 0 and decode_threads(dicom_pixels.PARALLEL_MIN_SLICES - 1, cores=16) == 0
    assert decode_threads(dicom_pixels.PARALLEL_MIN_SLICES, cores=16) >= 2  # threads from there on
    one_core = dicom_pixels.CHUNKED_MIN_SLICES
    assert decode_threads(one_core - 1, cores=1) == 0 and decode_threads(one_core, cores=1) == 1  # one core: no threads
    assert decode_threads(300, cores=1) == 1
    assert decode_threads(300, cores=2) == 2
    assert decode_threads(100_000, cores=512) == MAX_THREADS
    assert decode_threads(40, cores=16) == 40 // dicom_pixels.MIN_SLICES_PER_THREAD
    monkeypatch.setenv(THREADS_ENV, "3")
    assert decode_threads(300, cores=16) == 3
    monkeypatch.setenv(THREADS_ENV, "0")
    assert decode_threads(300, cores=16) == 0
    monkeypatch.setenv(THREADS_ENV, "lots")  # not a number: ignored
    assert decode_threads(300, cores=16) == min(16, MAX_THREADS, 300 // dicom_pixels.MIN_SLICES_PER_THREAD)


def test_no_more_threads_than_asked_decode_at_once(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    folder = _series(tmp_path / "s", n=160)
    files = _sorted_files(folder)
    running, peak, lock = [0], [0], threading.Lock()
    real = dicom_pixels._execute

    def counting(names: list[str]) -> object:
        with lock:
            running[0] += 1
            peak[0] = max(peak[0], running[0])
        try:
            return real(names)
        finally:
            with lock:
                running[0] -= 1

    monkeypatch.setattr(dicom_pixels, "_execute", counting)
    read_series_array(folder, files, threads=3)
    assert 1 <= peak[0] <= 3
    peak[0] = 0
    read_series_array(folder, files, threads=10 * MAX_THREADS)
    assert peak[0] <= MAX_THREADS
    assert not [t for t in threading.enumerate() if t.name.startswith("voxsam-dicom")]
