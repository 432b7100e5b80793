"""Every shared volume loads, and nibabel and SimpleITK place its corner voxels at the same world points."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from tests.conftest import SHARED_DATA
from voxsam.io import read_volume, write_volume
from voxsam.transforms.geometry import corner_points

IMAGE_SUFFIXES = (".nii", ".nii.gz", ".nrrd", ".mha", ".mgz")


def _shared_files() -> list[Path]:
    if not SHARED_DATA.is_dir():
        return []
    return sorted(p for p in SHARED_DATA.rglob("*") if p.is_file() and p.name.endswith(IMAGE_SUFFIXES))


def _sitk_corners_ras(path: Path) -> np.ndarray:
    """Corner voxel centres from SimpleITK's own index->physical mapping, LPS turned to RAS here."""
    import SimpleITK as sitk

    if path.is_dir():
        r = sitk.ImageSeriesReader()
        r.SetFileNames(r.GetGDCMSeriesFileNames(str(path)))
        img = r.Execute()
    else:
        img = sitk.ReadImage(str(path))
    x, y, z = (s - 1 for s in img.GetSize()[:3])
    pts = [img.TransformIndexToPhysicalPoint((i, j, k)) for i in (0, x) for j in (0, y) for k in (0, z)]
    return np.array(pts) * np.array([-1.0, -1.0, 1.0])


def _nibabel_corners(path: Path) -> np.ndarray:
    import nibabel as nib

    img = nib.load(str(path))
    return corner_points(img.shape[:3], img.affine)


@pytest.mark.shared
@pytest.mark.parametrize("path", _shared_files(), ids=lambda p: str(p.relative_to(SHARED_DATA)))
def test_corners_agree_between_nibabel_and_simpleitk(path: Path, tmp_path: Path) -> None:
    vol = read_volume(path)
    ours = corner_points(vol.shape, vol.affine)
    if path.name.endswith((".mgz",)):
        # SimpleITK has no MGZ reader: convert with voxsam, then let SimpleITK read the NIfTI
        nii = write_volume(vol, tmp_path / "as.nii.gz")
        np.testing.assert_allclose(_nibabel_corners(path), ours, atol=1e-3)
        np.testing.assert_allclose(_sitk_corners_ras(nii), ours, atol=1e-3)
    elif path.name.endswith((".nii", ".nii.gz")):
        np.testing.assert_allclose(_nibabel_corners(path), ours, atol=1e-3)
        np.testing.assert_allclose(_sitk_corners_ras(path), ours, atol=1e-3)
    else:
        # nibabel has no NRRD/MHA reader: convert with voxsam, then let nibabel read the NIfTI
        np.testing.assert_allclose(_sitk_corners_ras(path), ours, atol=1e-3)
        nii = write_volume(vol, tmp_path / "as.nii.gz")
        np.testing.assert_allclose(_nibabel_corners(nii), ours, atol=1e-3)


@pytest.mark.shared
@pytest.mark.parametrize("series", ["totalseg_ct_series", "dcmqi_ct_3slice"])
def test_dicom_series_geometry(series: str, shared_data: Path, tmp_path: Path) -> None:
    import pydicom

    folder = shared_data / "dicom" / series
    vol = read_volume(folder)
    ours = corner_points(vol.shape, vol.affine)
    np.testing.assert_allclose(_sitk_corners_ras(folder), ours, atol=1e-3)
    # pydicom: ImagePositionPatient of the first and last slice file are the (0,0,0) and (0,0,Z-1) voxels
    first, last = (pydicom.dcmread(f, stop_before_pixels=True) for f in (vol.meta["dicom_files"][0], vol.meta["dicom_files"][-1]))
    lps_to_ras = np.array([-1.0, -1.0, 1.0])
    np.testing.assert_allclose(np.array(first.ImagePositionPatient, float) * lps_to_ras, vol.voxel_to_world([0, 0, 0]), atol=1e-3)
    np.testing.assert_allclose(
        np.array(last.ImagePositionPatient, float) * lps_to_ras, vol.voxel_to_world([0, 0, vol.shape[2] - 1]), atol=1e-3
    )
    nii = write_volume(vol, tmp_path / "series.nii.gz")
    np.testing.assert_allclose(_nibabel_corners(nii), ours, atol=1e-3)
    assert vol.modality == "CT"


@pytest.mark.shared
def test_every_shared_volume_loads(shared_data: Path) -> None:
    files = _shared_files()
    assert len(files) > 50
    for path in files:
        vol = read_volume(path)
        assert vol.array.ndim in (3, 4) and min(vol.shape) > 1
        assert all(s > 0 for s in vol.spacing)
