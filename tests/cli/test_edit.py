"""`voxsam edit`: correct one slice of a mask with the real LiteMedSAM weights; bad input exits 2."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from voxsam.cli.main import main
from voxsam.io import Volume, read_volume, write_volume


@pytest.fixture()
def case(tmp_path: Path) -> tuple[Path, Path, np.ndarray]:
    grid = np.indices((64, 64, 6)).astype(float)
    disc = (grid[0] - 32) ** 2 + (grid[1] - 30) ** 2 <= 12**2
    image = np.where(disc, 300.0, 20.0) + np.random.default_rng(0).normal(0, 5, disc.shape)
    vol = Volume(image.astype(np.float32), np.diag([1.0, 1.0, 3.0, 1.0]), modality="MR")
    labels = disc.astype(np.uint8)
    labels[:, :, 2] = 0  # one slice missed
    labels[5:9, 5:9, :] = 2  # another label that must survive
    img_path = write_volume(vol, tmp_path / "img.nii.gz")
    mask_path = write_volume(Volume(labels, vol.affine), tmp_path / "mask.nii.gz")
    return img_path, mask_path, disc


@pytest.mark.slow
def test_edit_fills_the_missed_slice_and_keeps_other_labels(case: tuple[Path, Path, np.ndarray], tmp_path: Path) -> None:
    from voxsam.errors import CheckpointError
    from voxsam.models.sam2d import find_weights

    try:
        find_weights("litemedsam")
    except CheckpointError as exc:
        pytest.skip(f"LiteMedSAM weights not installed: {exc}")
    img, mask, disc = case
    out = tmp_path / "fixed.nii.gz"
    main(["edit", str(mask), "--image", str(img), "--slice", "2:2", "--label", "1", "--box", "18,16,46,44", "--out", str(out)])
    fixed = read_volume(out)
    assert fixed.shape == (64, 64, 6) and np.allclose(fixed.affine, read_volume(img).affine)
    got = fixed.array[:, :, 2] == 1
    dice = 2 * (got & disc[:, :, 2]).sum() / (got.sum() + disc[:, :, 2].sum())
    assert dice > 0.9
    assert (fixed.array[5:9, 5:9, :] == 2).all()


@pytest.mark.parametrize(
    "args, message",
    [
        (["--slice", "2"], "AXIS:INDEX"),
        (["--slice", "2:9", "--point", "30,30", "--label", "1"], "outside"),
        (["--slice", "2:2"], "at least one --point"),
        (["--slice", "2:2", "--point", "30,30,5", "--label", "1"], "label must be 1"),
        (["--slice", "2:2", "--point", "30,30"], "--label"),
        (["--slice", "2:2", "--point", "30,30", "--label", "1", "--engine", "classic"], "does not edit"),
    ],
)
def test_edit_bad_input_exits_2(case: tuple[Path, Path, np.ndarray], tmp_path: Path, args: list[str], message: str, capsys: pytest.CaptureFixture[str]) -> None:
    img, mask, _ = case
    out = tmp_path / "fixed.nii.gz"
    with pytest.raises(SystemExit) as info:
        main(["edit", str(mask), "--image", str(img), "--out", str(out), *args])
    assert info.value.code == 2
    err = capsys.readouterr().err
    assert message in err and len(err.strip().splitlines()) == 1
    assert not out.exists()
