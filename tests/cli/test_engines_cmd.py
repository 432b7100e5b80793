"""`voxsam engines` and `--engine-option` on segment: options from the registry, errors exit 2."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from voxsam.cli.main import main
from voxsam.io import Volume, read_volume, write_volume


def test_engines_lists_every_engine_with_options(capsys: pytest.CaptureFixture[str]) -> None:
    main(["engines"])
    out = capsys.readouterr().out
    for text in ("classic", "sam3d", "method", "growcut", "precision", "weights:", "prompts:"):
        assert text in out


def test_option_types_read_plainly() -> None:
    from typing import Literal, Optional

    from voxsam.engines.options import _type_text

    assert _type_text(tuple[float, ...]) == "float, ..."
    assert _type_text(Optional[int]) == "int | None"
    assert _type_text(Literal["a", "b"]) == "choice"


@pytest.fixture()
def image(tmp_path: Path) -> Path:
    arr = np.zeros((30, 30, 20), np.float32)
    arr[10:20, 10:20, 5:15] = 100.0
    return write_volume(Volume(arr, np.eye(4)), tmp_path / "img.nii.gz")


def test_segment_engine_option_is_used(image: Path, tmp_path: Path) -> None:
    out = tmp_path / "m.nii.gz"
    main(["segment", str(image), "--engine", "classic", "-o", "method=random_walker", "--point", "15,15,10", "--out", str(out)])
    assert read_volume(out).array[15, 15, 10] == 1


def test_segment_2d_box_on_a_slice(image: Path, tmp_path: Path) -> None:
    out = tmp_path / "m.nii.gz"
    main(["segment", str(image), "--engine", "classic", "--box", "9,9,10,20,20,10", "--axis", "2", "--out", str(out)])
    mask = read_volume(out).array
    assert mask[15, 15, 10] == 1 and mask[5, 5, 10] == 0


@pytest.mark.parametrize(
    "args, message",
    [
        (["-o", "methd=x"], "no option 'methd'"),
        (["-o", "method=x"], "allowed: growcut, random_walker"),
        (["--precision", "int8"], "no option 'precision'"),
        (["--engine", "nosuch"], "unknown engine"),
        (["--axis", "2", "--box", "1,1,2,5,5,7"], "both corners on one slice"),
    ],
)
def test_segment_bad_engine_options_exit_2(image: Path, tmp_path: Path, args: list[str], message: str, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "m.nii.gz"
    base = ["segment", str(image), "--engine", "classic", "--out", str(out)]
    if "--box" not in args:
        base += ["--point", "15,15,10"]
    with pytest.raises(SystemExit) as info:
        main(base + args)
    assert info.value.code == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and message in err and len(err.strip().splitlines()) == 1
    assert not out.exists()


def test_segment_refuses_to_replace_without_overwrite(image: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "m.nii.gz"
    args = ["segment", str(image), "--engine", "classic", "--point", "15,15,10", "--out", str(out)]
    main(args)
    with pytest.raises(SystemExit) as info:
        main(args)
    assert info.value.code == 2 and "--overwrite" in capsys.readouterr().err
    main(args + ["--overwrite"])
