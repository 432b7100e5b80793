"""`voxsam --help`, `info`, `convert`, `dataset` from the command line."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from tests.conftest import oblique_affine
from voxsam.cli.main import main
from voxsam.io import Volume, read_volume, write_volume

HEAVY = ("torch", "SimpleITK", "nibabel", "monai", "scipy", "pydicom", "highdicom", "matplotlib")


def test_help_imports_nothing_heavy() -> None:
    code = (
        "import sys; from voxsam.cli.main import main\n"
        "try:\n    main(['--help'])\nexcept SystemExit:\n    pass\n"
        f"print('HEAVY=' + ','.join(m for m in {HEAVY!r} if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert "Usage" in out
    assert out.strip().splitlines()[-1] == "HEAVY="  # no heavy module was imported for --help


def test_info_shows_labels_with_names(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    root = tmp_path / "ds"
    (root / "labelsTr").mkdir(parents=True)
    (root / "dataset.json").write_text('{"labels": {"0": "background", "1": "liver", "2": "spleen"}}')
    lab = np.zeros((10, 10, 10), np.uint8)
    lab[:2] = 1
    lab[5:6, :5] = 2
    path = write_volume(Volume(lab, np.diag([2.0, 2.0, 2.0, 1.0])), root / "labelsTr" / "c.nii.gz")
    main(["info", str(path)])
    out = capsys.readouterr().out
    assert "liver" in out and "spleen" in out and "200" in out and "50" in out and "RAS" in out


def test_convert_keeps_grid(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    src = write_volume(Volume(np.arange(6 * 7 * 8, dtype=np.int16).reshape(6, 7, 8), oblique_affine()), tmp_path / "a.nrrd")
    main(["convert", str(src), str(tmp_path / "b.mha")])
    a, b = read_volume(src), read_volume(tmp_path / "b.mha")
    np.testing.assert_array_equal(a.array, b.array)
    np.testing.assert_allclose(a.affine, b.affine, atol=1e-5)
    with pytest.raises(SystemExit) as info:
        main(["convert", str(src), str(src)])
    assert info.value.code == 2


@pytest.mark.shared
def test_dataset_listing(shared_data: Path, capsys: pytest.CaptureFixture[str]) -> None:
    main(["dataset", str(shared_data / "acdc_mri"), "--check"])
    out = capsys.readouterr().out
    assert "right_ventricle" in out and "acdc_patient087_frame02" in out and out.count(" ok ") + out.count("ok\n") >= 1


@pytest.mark.parametrize("args", [["segment"], ["segment", "x.nii.gz", "--bogus"], ["info"], ["train"]])
def test_usage_errors_exit_2_without_traceback(args: list[str]) -> None:
    code = "from voxsam.cli.main import main; main()"
    r = subprocess.run([sys.executable, "-c", code, *args], capture_output=True, text=True)
    assert r.returncode == 2, r.stderr
    assert "Traceback" not in r.stderr and "Error" in r.stderr
