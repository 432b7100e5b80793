"""Each bad input gives its VoxsamError (library) and exit code 2 with one line (CLI); inputs stay intact."""
from __future__ import annotations

import gzip
import hashlib
import json
from pathlib import Path

import numpy as np
import pytest

from voxsam.cli.main import main
from voxsam.errors import (
    CorruptFileError,
    DatasetError,
    GeometryMismatchError,
    InputNotFoundError,
    InvalidGeometryError,
    InvalidImageError,
    NoDicomError,
    UnsupportedFormatError,
    VoxsamError,
)
from voxsam.io import Volume, read_volume, write_volume


def _nifti(path: Path, array: np.ndarray, affine: np.ndarray | None = None) -> Path:
    import nibabel as nib

    nib.save(nib.Nifti1Image(array, np.eye(4) if affine is None else affine), str(path))
    return path


def _zero_spacing(path: Path) -> Path:
    """Patch a .nii so its only geometry is pixdim with a zero voxel size (qform and sform codes 0).

    Done on the raw header bytes because nibabel refuses to build such an image.
    """
    import struct

    raw = bytearray(path.read_bytes())
    raw[84:88] = struct.pack("<f", 0.0)  # pixdim[2]
    raw[252:256] = struct.pack("<hh", 0, 0)  # qform_code, sform_code
    path.write_bytes(bytes(raw))
    return path


def _make_bad_inputs(root: Path) -> dict[str, tuple[Path, type[VoxsamError]]]:
    good = write_volume(Volume(np.random.default_rng(0).normal(size=(20, 20, 20)).astype(np.float32), np.eye(4)), root / "good.nii.gz")
    raw = good.read_bytes()
    (root / "truncated.nii.gz").write_bytes(raw[: len(raw) // 2])
    (root / "garbage.nii.gz").write_bytes(gzip.compress(b"not a nifti header at all" * 20))
    (root / "garbage.nrrd").write_bytes(b"NRRD0004\nthis is not a header\n")
    (root / "empty.nii.gz").write_bytes(b"")
    nan = np.zeros((6, 6, 6), np.float32)
    nan[2, 3, 4] = np.nan
    nan[1, 1, 1] = np.inf
    zero = _zero_spacing(_nifti(root / "zero.nii", np.zeros((4, 4, 4), np.int16)))
    (root / "neg.mha").write_bytes(
        b"ObjectType = Image\nNDims = 3\nDimSize = 4 4 4\nElementSpacing = -1 1 1\n"
        b"ElementType = MET_UCHAR\nElementDataFile = LOCAL\n" + bytes(64)
    )
    (root / "nodicom").mkdir()
    (root / "nodicom" / "notes.txt").write_text("no images here")
    (root / "image.xyz").write_bytes(b"12345")
    return {
        "truncated": (root / "truncated.nii.gz", CorruptFileError),
        "garbage_nifti": (root / "garbage.nii.gz", CorruptFileError),
        "garbage_nrrd": (root / "garbage.nrrd", CorruptFileError),
        "empty": (root / "empty.nii.gz", CorruptFileError),
        "2d": (_nifti(root / "flat.nii.gz", np.zeros((8, 8), np.int16)), InvalidImageError),
        "one_slice": (_nifti(root / "slice.nii.gz", np.zeros((8, 8, 1), np.int16)), InvalidImageError),
        "5d": (_nifti(root / "five.nii.gz", np.zeros((4, 4, 4, 2, 2), np.int16)), InvalidImageError),
        "nan": (_nifti(root / "nan.nii.gz", nan), InvalidImageError),
        "zero_spacing": (zero, InvalidGeometryError),
        "negative_spacing": (root / "neg.mha", InvalidGeometryError),
        "no_dicom": (root / "nodicom", NoDicomError),
        "unknown_ext": (root / "image.xyz", UnsupportedFormatError),
        "missing": (root / "does_not_exist.nii.gz", InputNotFoundError),
    }


def _checksums(root: Path) -> dict[str, str]:
    return {str(p): hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(root.rglob("*")) if p.is_file()}


@pytest.fixture(scope="module")
def bad_inputs(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, tuple[Path, type[VoxsamError]]]]:
    root = tmp_path_factory.mktemp("bad")
    return root, _make_bad_inputs(root)


@pytest.mark.parametrize(
    "name",
    ["truncated", "garbage_nifti", "garbage_nrrd", "empty", "2d", "one_slice", "5d", "nan", "zero_spacing",
     "negative_spacing", "no_dicom", "unknown_ext", "missing"],
)
def test_bad_input_error_and_exit_code(name: str, bad_inputs, capsys: pytest.CaptureFixture[str]) -> None:
    root, cases = bad_inputs
    path, error = cases[name]
    before = _checksums(root)
    with pytest.raises(error) as info:
        read_volume(path)
    message = str(info.value)
    assert "\n" not in message and path.name in message
    with pytest.raises(SystemExit) as exit_info:
        main(["info", str(path)])
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and err.count("\n") == 1 and "Traceback" not in err
    assert _checksums(root) == before


def _dataset(root: Path, label_affine: np.ndarray) -> Path:
    (root / "imagesTr").mkdir(parents=True)
    (root / "labelsTr").mkdir()
    (root / "dataset.json").write_text(json.dumps({"name": "toy", "modality": {"0": "CT"}, "labels": {"background": 0, "organ": 1}}))
    for case in ("a", "b"):
        write_volume(Volume(np.zeros((8, 9, 10), np.int16), np.eye(4)), root / "imagesTr" / f"{case}_0000.nii.gz")
    write_volume(Volume(np.ones((8, 9, 10), np.uint8), np.eye(4)), root / "labelsTr" / "a.nii.gz")
    write_volume(Volume(np.ones((8, 9, 10), np.uint8), label_affine), root / "labelsTr" / "b.nii.gz")
    return root


def test_label_geometry_mismatch(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from voxsam.io.datasets import open_dataset

    shifted = np.eye(4)
    shifted[:3, 3] = (0.0, 5.0, 0.0)
    root = _dataset(tmp_path / "ds", shifted)
    ds = open_dataset(root)
    assert [c.case_id for c in ds.cases] == ["a", "b"] and ds.label_names == {1: "organ"} and ds.modality == "CT"
    ds.case("a").load_label()
    with pytest.raises(GeometryMismatchError, match="b.nii.gz"):
        ds.case("b").load_label()
    before = _checksums(root)
    with pytest.raises(SystemExit) as exit_info:
        main(["dataset", str(root), "--check"])
    assert exit_info.value.code == 2
    assert "mm off the grid" in capsys.readouterr().err
    assert _checksums(root) == before


def test_dataset_without_images_folder(tmp_path: Path) -> None:
    from voxsam.io.datasets import open_dataset

    with pytest.raises(DatasetError, match="imagesTr"):
        open_dataset(tmp_path)
