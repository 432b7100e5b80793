"""The TotalSegmentator DICOM series and its NIfTI label (opposite y direction) align in physical space."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from voxsam.io import read_mask, read_volume, write_mask
from voxsam.transforms.geometry import resample_to_grid

LIVER = 5  # TotalSegmentator "total" map


@pytest.mark.shared
def test_totalseg_label_aligns_with_series(shared_data: Path) -> None:
    ct = read_volume(shared_data / "dicom" / "totalseg_ct_series")
    label = read_volume(shared_data / "dicom" / "totalseg_ct_series_seg.nii.gz")
    assert label.orientation[1] != ct.orientation[1]  # the y axes really point opposite ways
    on_ct = resample_to_grid(label.array, label.affine, ct.shape, ct.affine, order=0)
    liver_hu = ct.array[on_ct == LIVER]
    assert liver_hu.size > 10_000
    assert 0 < float(np.median(liver_hu)) < 200
    soft_tissue = np.mean((liver_hu > 0) & (liver_hu < 200))
    assert soft_tissue > 0.95
    # the naive mistake (same voxel indices, no resampling) puts many liver voxels in air and fat
    naive = ct.array[label.array == LIVER]
    assert np.mean((naive > 0) & (naive < 200)) < soft_tissue - 0.2


@pytest.mark.shared
def test_dicom_seg_round_trip_is_voxel_identical(shared_data: Path, tmp_path: Path) -> None:
    import highdicom as hd

    ct = read_volume(shared_data / "dicom" / "dcmqi_ct_3slice")
    labels = read_volume(shared_data / "dicom" / "liver_spine_seg.nrrd")
    out = write_mask(labels.array, ct, tmp_path / "seg.dcm", label_names={1: "liver", 2: "spine"})
    back = read_mask(out, like=ct)
    assert back.shape == ct.shape
    np.testing.assert_array_equal(back, labels.array)
    seg = hd.seg.segread(str(out))  # readable by highdicom as a standard SEG
    assert [seg.get_segment_description(n).segment_label for n in (1, 2)] == ["liver", "spine"]


@pytest.mark.shared
def test_dicom_from_one_file_reads_the_whole_series(shared_data: Path) -> None:
    folder = shared_data / "dicom" / "totalseg_ct_series"
    one = sorted(folder.iterdir())[3]
    a, b = read_volume(folder), read_volume(one)
    assert a.shape == b.shape and np.array_equal(a.array, b.array)
    np.testing.assert_allclose(a.affine, b.affine)
