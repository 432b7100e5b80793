"""`voxsam segment` with a sam3d checkpoint and with the classic engine; bad prompts exit 2."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from tests.conftest import oblique_affine
from voxsam.cli.main import main
from voxsam.io import Volume, read_volume, write_volume


@pytest.fixture()
def image(tmp_path: Path) -> Path:
    arr = np.zeros((40, 36, 30), np.float32)
    arr[10:30, 8:28, 8:22] = 200.0
    arr += np.random.default_rng(0).normal(0, 5, arr.shape).astype(np.float32)
    return write_volume(Volume(arr, oblique_affine(spacing=(1.2, 1.2, 2.0))), tmp_path / "img.nrrd")


def test_segment_sam3d_checkpoint_writes_source_geometry(image: Path, tmp_path: Path) -> None:
    torch = pytest.importorskip("torch")
    from voxsam.models.sam3d import build_sam3d, save_sam3d_checkpoint

    torch.manual_seed(0)
    model = build_sam3d("tiny")
    ckpt = tmp_path / "tiny.pt"
    save_sam3d_checkpoint(model, model.config, ckpt)
    main(["segment", str(image), "--engine", "sam3d", "--point", "20,18,15", "--point", "2,2,2,0", "--checkpoint", str(ckpt), "--out", str(tmp_path / "m.nrrd")])
    src, mask = read_volume(image), read_volume(tmp_path / "m.nrrd")
    assert mask.shape == src.shape
    np.testing.assert_allclose(mask.affine, src.affine, atol=1e-5)


def test_segment_classic_world_coordinates(image: Path, tmp_path: Path) -> None:
    vol = read_volume(image)
    world = ",".join(f"{v:.3f}" for v in vol.voxel_to_world(np.array([20.0, 18.0, 15.0])))
    main(["segment", str(image), "--engine", "classic", "--world", "--point", world, "--out", str(tmp_path / "m.nii.gz")])
    mask = read_volume(tmp_path / "m.nii.gz").array
    assert mask[20, 18, 15] == 1 and mask[2, 2, 2] == 0


@pytest.mark.parametrize(
    "args",
    [["--point", "1,2"], ["--point", "nan,1,1"], ["--point", "500,1,1"], ["--point", "1,1,1,3"], [], ["--point", "a,b,c"]],
)
def test_segment_bad_prompts_exit_2(image: Path, tmp_path: Path, args: list[str], capsys) -> None:
    with pytest.raises(SystemExit) as info:
        main(["segment", str(image), "--engine", "classic", "--out", str(tmp_path / "m.nii.gz"), *args])
    assert info.value.code == 2
    assert capsys.readouterr().err.startswith("error: ")
    assert not (tmp_path / "m.nii.gz").exists()


def test_segment_truncated_checkpoint_exit_2(image: Path, tmp_path: Path, capsys) -> None:
    bad = tmp_path / "bad.pt"
    bad.write_bytes(b"PK\x03\x04 truncated")
    with pytest.raises(SystemExit) as info:
        main(["segment", str(image), "--engine", "sam3d", "--point", "20,18,15", "--checkpoint", str(bad), "--out", str(tmp_path / "m.nii.gz")])
    assert info.value.code == 2


def test_segment_defaults_to_slice2d(image: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import voxsam.cli.engine_args as engine_args
    from tests.session.fakes import CubeEngine

    built: list[str] = []

    def record(name, *a, **k):  # type: ignore[no-untyped-def]
        built.append(name)
        return CubeEngine()

    monkeypatch.setattr(engine_args, "build_engine", record)
    out = tmp_path / "m.nii.gz"
    main(["segment", str(image), "--point", "20,18,15", "--out", str(out)])
    assert built == ["slice2d"] and read_volume(out).shape == (40, 36, 30)
