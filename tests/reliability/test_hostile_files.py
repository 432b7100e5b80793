"""Hostile files of every format: each is refused with its VoxsamError, one line, cause first, naming the file;
the CLI prints exactly that line (no library warning before it, no traceback) and exits 2."""
from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest

from voxsam.cli.main import main
from voxsam.errors import CorruptFileError, InvalidGeometryError, InvalidImageError, VoxsamError
from voxsam.io import read_volume

from . import _files as F

EYE = np.eye(4)
SINGULAR = np.array([[1.0, 1.0, 0, 0], [0, 0, 0, 0], [0, 0, 1.0, 0], [0, 0, 0, 1.0]])  # columns 0 and 1 parallel


def _text(path: Path, text: str) -> Path:
    path.write_text(text)
    return path


MHD_MISSING = "ObjectType = Image\nNDims = 3\nDimSize = 4 4 4\nElementSpacing = 1 1 1\nElementType = MET_SHORT\nElementDataFile = gone.raw\n"
NHDR_MISSING = "NRRD0004\ntype: short\ndimension: 3\nsizes: 4 4 4\nencoding: raw\ndata file: gone.raw\n\n"

# name -> (builder, error class, a phrase the message must hold)
CASES: dict[str, tuple[Callable[[Path], Path], type[VoxsamError], str]] = {
    "nifti-truncated-gz": (lambda d: F.truncated(d / "t.nii.gz"), CorruptFileError, "truncated"),
    "nifti-truncated-raw": (lambda d: F.truncated(d / "t.nii"), CorruptFileError, "truncated"),
    "nifti-garbage": (lambda d: F.garbage(d / "g.nii.gz"), CorruptFileError, "cannot read NIFTI"),
    "nifti-absurd-header": (lambda d: F.nifti_huge_dims(d / "h.nii"), InvalidImageError, "header declares"),
    "nifti-singular-affine": (lambda d: F.nifti(d / "s.nii.gz", np.zeros((4, 4, 4), np.float32), SINGULAR), InvalidGeometryError, "singular"),
    "nifti-complex": (lambda d: F.nifti(d / "c.nii.gz", np.zeros((4, 4, 4), np.complex64), EYE), InvalidImageError, "complex"),
    "nifti-spacing-1e6": (lambda d: F.nifti(d / "b.nii.gz", np.zeros((4, 4, 4), np.float32), np.diag([1e6, 1, 1, 1.0])), InvalidGeometryError, "implausible"),
    "nifti-spacing-1e-5": (lambda d: F.nifti(d / "n.nii.gz", np.zeros((4, 4, 4), np.float32), np.diag([1e-5, 1, 1, 1.0])), InvalidGeometryError, "implausible"),
    "mha-truncated": (lambda d: F.truncated(d / "t.mha"), CorruptFileError, "truncated"),
    "mha-short-data": (lambda d: F.metaimage(d / "s.mha", dims=(10, 10, 10), data=bytes(100)), CorruptFileError, "100 of the 2000 bytes"),
    "mha-garbage": (lambda d: F.garbage(d / "g.mha"), CorruptFileError, "cannot read MHA"),
    "mha-absurd-header": (lambda d: F.metaimage(d / "h.mha", dims=(100000, 100000, 100000)), InvalidImageError, "header declares"),
    "mha-spacing-1e6": (lambda d: F.metaimage(d / "b.mha", spacing="1e6 1 1"), InvalidGeometryError, "implausible"),
    "mha-singular": (lambda d: F.metaimage(d / "x.mha", extra="TransformMatrix = 1 0 0 1 0 0 0 0 1\n"), InvalidGeometryError, "singular"),
    "mhd-missing-data-file": (lambda d: _text(d / "m.mhd", MHD_MISSING), CorruptFileError, "gone.raw does not exist"),
    "nrrd-truncated": (lambda d: F.truncated(d / "t.nrrd"), CorruptFileError, "truncated"),
    "nrrd-short-data": (lambda d: F.nrrd(d / "s.nrrd", sizes=(10, 10, 10), data=bytes(100)), CorruptFileError, "100 of the 2000 bytes"),
    "nrrd-garbage": (lambda d: F.garbage(d / "g.nrrd"), CorruptFileError, "cannot read NRRD"),
    "nrrd-absurd-header": (lambda d: F.nrrd(d / "h.nrrd", sizes=(100000, 100000, 100000)), InvalidImageError, "header declares"),
    "nrrd-spacing-1e6": (lambda d: F.nrrd(d / "b.nrrd", directions="(1e6,0,0) (0,1,0) (0,0,1)"), InvalidGeometryError, "implausible"),
    "nrrd-singular": (lambda d: F.nrrd(d / "x.nrrd", directions="(1,0,0) (1,0,0) (0,0,1)"), InvalidGeometryError, "singular"),
    "nrrd-zero-spacing": (lambda d: F.nrrd(d / "z.nrrd", directions="(0,0,0) (0,1,0) (0,0,1)"), InvalidGeometryError, "positive"),
    "nhdr-missing-data-file": (lambda d: _text(d / "m.nhdr", NHDR_MISSING), CorruptFileError, "gone.raw does not exist"),
    "mgz-truncated": (lambda d: F.truncated(d / "t.mgz"), CorruptFileError, "truncated"),
    "mgz-garbage": (lambda d: F.garbage(d / "g.mgz"), CorruptFileError, "not an MGH header"),
    "mgh-absurd-header": (lambda d: F.mgh_huge_dims(d / "h.mgh"), InvalidImageError, "header declares"),
    "mgz-spacing-1e6": (lambda d: F.good(d / "b.mgz", dtype=np.float32, affine=np.diag([1e6, 1, 1, 1.0])), InvalidGeometryError, "implausible"),
}


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    out = {}
    for name, (build, _, _) in CASES.items():
        folder = tmp_path_factory.mktemp(name)
        out[name] = build(folder)
    return out


@pytest.mark.parametrize("name", sorted(CASES))
def test_library_refuses_with_one_line(name: str, built: dict[str, Path]) -> None:
    path = built[name]
    _, error, phrase = CASES[name]
    with pytest.raises(error) as info:
        read_volume(path)
    message = str(info.value)
    assert "\n" not in message and message.startswith(str(path)), message
    assert phrase in message, message


@pytest.mark.parametrize("name", sorted(CASES))
def test_cli_prints_only_the_error_line(name: str, built: dict[str, Path], capfd: pytest.CaptureFixture[str]) -> None:
    path = built[name]
    with pytest.raises(SystemExit) as exit_info:
        main(["info", str(path)])
    assert exit_info.value.code == 2
    err = capfd.readouterr().err  # file-descriptor level: ITK / MetaIO / NrrdIO chatter would show here
    assert err.startswith(f"error: {path}"), err
    assert err.count("\n") == 1 and "Traceback" not in err and "WARNING" not in err, err


def test_no_misleading_reasons(built: dict[str, Path]) -> None:
    """The old messages: a truncated MetaImage was "No such file or directory", a singular affine "zero
    spacing", an absurd header "MemoryError: unreadable"."""
    for name in ("mha-truncated", "nifti-singular-affine", "mha-absurd-header", "nifti-absurd-header"):
        with pytest.raises(VoxsamError) as info:
            read_volume(built[name])
        text = str(info.value)
        assert "No such file" not in text and "zero voxel spacing" not in text and "MemoryError" not in text, text
