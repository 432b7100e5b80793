"""write -> read in every format moves no voxel and keeps the affine to 1e-5."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from tests.conftest import oblique_affine
from voxsam.errors import GeometryMismatchError, OutputPathError, UnsupportedFormatError
from voxsam.io import Volume, read_mask, read_volume, write_mask, write_volume

FORMATS = [".nii.gz", ".nii", ".nrrd", ".mha", ".mgz"]


def _labels(shape=(23, 17, 11), seed=0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    lab = np.zeros(shape, np.uint8)
    lab[3:15, 2:9, 1:6] = 1
    lab[10:20, 8:16, 4:10] = 2
    lab[rng.random(shape) < 0.02] = 3  # scattered voxels catch any axis flip or shift
    return lab


@pytest.mark.parametrize("source_ext", FORMATS)
@pytest.mark.parametrize("mask_ext", FORMATS)
def test_round_trip_every_format(tmp_path: Path, source_ext: str, mask_ext: str) -> None:
    image = Volume(np.random.default_rng(1).normal(size=(23, 17, 11)).astype(np.float32), oblique_affine())
    src = write_volume(image, tmp_path / f"image{source_ext}")
    vol = read_volume(src)
    np.testing.assert_allclose(vol.affine, image.affine, atol=1e-5)
    np.testing.assert_array_equal(vol.array, image.array)
    labels = _labels()
    out = write_mask(labels, vol, tmp_path / f"mask{mask_ext}")
    back = read_volume(out)
    np.testing.assert_array_equal(back.array, labels)
    np.testing.assert_allclose(back.affine, vol.affine, atol=1e-5)


@pytest.mark.shared
@pytest.mark.parametrize(
    "relpath",
    ["prostate_mri/10019_1000019_t2w.mha", "brain_freesurfer_mri/norm.mgz", "radiomics/brain1_image.nrrd",
     "spinalcord_mri/sct/t2_t2.nii.gz"],
)
def test_round_trip_on_real_geometry(shared_data: Path, tmp_path: Path, relpath: str) -> None:
    vol = read_volume(shared_data / relpath)
    mask = (vol.array > np.percentile(vol.array, 80)).astype(np.uint8)
    for ext in FORMATS:
        back = read_volume(write_mask(mask, vol, tmp_path / f"m{ext}"))
        np.testing.assert_array_equal(back.array, mask)
        np.testing.assert_allclose(back.affine, vol.affine, atol=1e-5)


def test_nifti_mask_keeps_source_header_codes(tmp_path: Path) -> None:
    import nibabel as nib

    img = nib.Nifti1Image(np.zeros((5, 6, 7), np.int16), oblique_affine())
    img.set_sform(oblique_affine(), code=4)  # MNI
    img.set_qform(oblique_affine(), code=1)
    nib.save(img, tmp_path / "in.nii.gz")
    vol = read_volume(tmp_path / "in.nii.gz")
    out = nib.load(write_mask(np.ones(vol.shape, bool), vol, tmp_path / "m.nii.gz"))
    assert int(out.header["sform_code"]) == 4 and int(out.header["qform_code"]) == 1
    assert out.get_data_dtype() == np.uint8


def test_multichannel_from_channel_files(tmp_path: Path) -> None:
    aff = oblique_affine()
    paths = []
    for c in range(3):
        paths.append(write_volume(Volume(np.full((6, 7, 8), c, np.float32), aff), tmp_path / f"case_{c:04d}.nii.gz"))
    vol = read_volume(paths)
    assert vol.array.shape == (6, 7, 8, 3) and vol.n_channels == 3
    assert [float(vol.channel(c).mean()) for c in range(3)] == [0.0, 1.0, 2.0]
    write_volume(Volume(np.zeros((6, 7, 9), np.float32), aff), tmp_path / "bad_0003.nii.gz")
    with pytest.raises(GeometryMismatchError):
        read_volume(paths + [tmp_path / "bad_0003.nii.gz"])


def test_writers_refuse_inputs_and_bad_targets(tmp_path: Path) -> None:
    src = write_volume(Volume(np.zeros((4, 5, 6), np.int16), np.eye(4)), tmp_path / "img.nii.gz")
    vol = read_volume(src)
    before = src.read_bytes()
    with pytest.raises(OutputPathError):
        write_mask(np.zeros(vol.shape, bool), vol, src)
    with pytest.raises(OutputPathError):
        write_mask(np.zeros(vol.shape, bool), vol, tmp_path / "missing_dir" / "m.nii.gz")
    with pytest.raises(UnsupportedFormatError):
        write_mask(np.zeros(vol.shape, bool), vol, tmp_path / "m.png")
    with pytest.raises(UnsupportedFormatError):
        write_mask(np.ones(vol.shape, bool), vol, tmp_path / "m.dcm")  # SEG needs a DICOM source
    with pytest.raises(GeometryMismatchError):
        write_mask(np.zeros((4, 5, 7), bool), vol, tmp_path / "m.nii.gz")
    assert src.read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["img.nii.gz"]  # no temp files left behind


def test_atomic_write_leaves_old_file_on_failure(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    vol = Volume(np.zeros((4, 5, 6), np.int16), np.eye(4))
    out = write_mask(np.ones(vol.shape, bool), vol, tmp_path / "m.nii.gz")
    before = out.read_bytes()

    def boom(*args, **kwargs):
        raise RuntimeError("disk full")

    monkeypatch.setattr("voxsam.io.nibabel_formats.write_nibabel", boom)
    with pytest.raises(RuntimeError):
        write_mask(np.zeros(vol.shape, bool), vol, out)
    assert out.read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m.nii.gz"]


def test_read_mask_checks_grid(tmp_path: Path) -> None:
    vol = Volume(np.zeros((4, 5, 6), np.int16), oblique_affine())
    shifted = oblique_affine(origin=(0.0, 0.0, 0.0))
    lab = write_volume(Volume(np.ones((4, 5, 6), np.uint8), shifted), tmp_path / "lab.nii.gz")
    with pytest.raises(GeometryMismatchError, match="mm off the grid"):
        read_mask(lab, like=vol)
