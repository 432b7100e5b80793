""".nii.gz / .mgz through igzip (python-isal): the same arrays as nibabel's zlib path, files every tool reads."""
from __future__ import annotations

import gzip

import nibabel as nib
import numpy as np
import pytest

import voxsam.io.gz as gz
from voxsam.io import read_volume, write_mask, write_volume
from voxsam.io.nibabel_formats import fortran_order
from voxsam.io.volume import Volume


def _volume() -> Volume:
    rng = np.random.default_rng(0)
    aff = np.diag([-0.7, 0.8, 2.5, 1.0])
    aff[:3, 3] = (10.0, -20.0, 5.0)
    return Volume(rng.integers(-1000, 2000, (23, 19, 11)).astype(np.int16), aff, modality="CT")


@pytest.mark.parametrize("name", ["m.nii.gz", "m.mgz", "m.nii"])
def test_masks_round_trip_and_are_plain_gzip(tmp_path, name) -> None:
    vol = _volume()
    mask = np.zeros(vol.shape, bool)
    mask[3:9, 4:15, 2:7] = True
    mask[20, 1, 10] = True
    path = write_mask(mask, vol, tmp_path / name)
    np.testing.assert_array_equal(read_volume(path).array, mask.astype(np.uint8))
    np.testing.assert_array_equal(np.asanyarray(nib.load(str(path)).dataobj), mask.astype(np.uint8))  # nibabel's own reader
    if name.endswith("gz"):
        with gzip.open(path, "rb") as fh:  # the standard library reads the stream to its end
            assert len(fh.read()) >= mask.size


def test_igzip_and_zlib_paths_give_the_same_volume(tmp_path, monkeypatch) -> None:
    vol = _volume()
    path = write_volume(vol, tmp_path / "ct.nii.gz")
    fast = read_volume(path)
    monkeypatch.setattr(gz, "igzip", lambda: None)  # as without python-isal: nibabel's path
    slow = read_volume(path)
    np.testing.assert_array_equal(fast.array, slow.array)
    np.testing.assert_array_equal(fast.array, vol.array)
    np.testing.assert_allclose(fast.affine, slow.affine)
    write_volume(vol, tmp_path / "ct_zlib.nii.gz")
    np.testing.assert_array_equal(read_volume(tmp_path / "ct_zlib.nii.gz").array, vol.array)


def test_fortran_order_copies_the_nonzero_box_exactly() -> None:
    rng = np.random.default_rng(3)
    for _ in range(10):
        a = np.zeros((13, 9, 7), np.uint8)
        a[tuple(rng.integers(0, s, 4) for s in a.shape)] = rng.integers(1, 5, 4)
        f = fortran_order(a)
        assert f.flags.f_contiguous
        np.testing.assert_array_equal(f, a)
    zero = fortran_order(np.zeros((4, 5, 6), np.uint16))
    assert zero.flags.f_contiguous and not zero.any() and zero.dtype == np.uint16
