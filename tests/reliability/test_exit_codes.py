"""Exit codes and messages of the commands: 0 only when everything asked was done; eval 1 when some targets
failed (listed), 2 when none could be evaluated; misleading messages replaced by ones that name the cause."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import yaml

from voxsam.cli.main import main
from voxsam.engines.base import Capabilities, Engine, Prediction
from voxsam.errors import ConfigError, PromptError
from voxsam.io import Volume, write_volume
from voxsam.prompts import PromptKind

FAST = ["--engine-option", "margin_mm=12", "--engine-option", "seed_radius_mm=0"]


def _exit(args: list[str], capfd: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    with pytest.raises(SystemExit) as info:
        main(args)
        raise SystemExit(0)
    out = capfd.readouterr()
    return int(info.value.code or 0), out.out, out.err


def _case(folder: Path, name: str, shift_label_mm: float = 0.0, empty: bool = False) -> str:
    folder.mkdir(parents=True, exist_ok=True)
    img = np.random.default_rng(0).normal(0, 5, (20, 20, 12)).astype(np.float32)
    lab = np.zeros((20, 20, 12), np.uint8)
    if not empty:
        lab[6:14, 6:14, 3:9] = 1
        img[lab > 0] += 100
    label_affine = np.eye(4)
    label_affine[1, 3] = shift_label_mm
    image = write_volume(Volume(img, np.eye(4)), folder / f"{name}.nii.gz")
    label = write_volume(Volume(lab, label_affine), folder / f"{name}_seg.nii.gz")
    return f"{image}::{label}"


def test_eval_partial_failure_exits_1_listing_targets(tmp_path: Path, capfd) -> None:
    good = _case(tmp_path / "data", "good")
    bad = _case(tmp_path / "data", "bad", shift_label_mm=30.0)
    code, _, err = _exit(["eval", good, bad, "-e", "classic", "-p", "center", "--clicks", "1", *FAST, "--out", str(tmp_path / "o")], capfd)
    assert code == 1, err
    assert "error: 1 target(s) could not be evaluated (1 evaluated); exit code 1" in err
    assert "data/bad label 1: " in err and "30 mm off the grid" in err and "WARNING" not in err
    summary = json.loads((tmp_path / "o" / "summary.json").read_text())
    assert summary["outcome"] == "partial" and len(summary["failed"]) == 1
    assert "outcome: **partial**" in (tmp_path / "o" / "summary.md").read_text()


def test_eval_nothing_evaluated_exits_2(tmp_path: Path, capfd) -> None:
    bad = _case(tmp_path / "data", "bad", shift_label_mm=30.0)
    code, _, err = _exit(["eval", bad, "-e", "classic", "-p", "center", "--clicks", "1", *FAST, "--out", str(tmp_path / "o")], capfd)
    assert code == 2 and err.startswith("error: no target could be evaluated: 1 planned, all failed") and err.count("\n") == 1
    assert "bad_seg.nii.gz: label is 30 mm off the grid" in err


def test_eval_all_zero_label_names_file_and_reason(tmp_path: Path, capfd) -> None:
    empty = _case(tmp_path / "data", "empty", empty=True)
    code, _, err = _exit(["eval", empty, "-e", "classic", "-p", "center", "--out", str(tmp_path / "o")], capfd)
    assert code == 2 and "empty_seg.nii.gz: the label map holds no foreground voxels (every voxel is 0)" in err


def test_eval_complete_exits_0(tmp_path: Path, capfd) -> None:
    good = _case(tmp_path / "data", "good")
    code, _, err = _exit(["eval", good, "-e", "classic", "-p", "center", "--clicks", "1", *FAST, "--out", str(tmp_path / "o")], capfd)
    assert code == 0, err
    assert json.loads((tmp_path / "o" / "summary.json").read_text())["outcome"] == "complete"


@pytest.mark.parametrize("content", [None, "{not json", "[1, 2]"])
def test_info_names_file_must_exist_and_parse(tmp_path: Path, capfd, content: str | None) -> None:
    image = write_volume(Volume(np.zeros((4, 4, 4), np.uint8), np.eye(4)), tmp_path / "l.nii.gz")
    names = tmp_path / "names.json"
    if content is not None:
        names.write_text(content)
    code, _, err = _exit(["info", str(image), "--names", str(names)], capfd)
    assert code == 2 and err.startswith(f"error: {names}: ") and err.count("\n") == 1


def _config(tmp_path: Path, sources: list[dict], **run: object) -> Path:
    path = tmp_path / "cfg.yaml"
    path.write_text(yaml.safe_dump({"data": {"sources": sources}, "run": {"out_dir": str(tmp_path / "run"), **run}}))
    return path


def test_train_config_not_utf8(tmp_path: Path, capfd) -> None:
    path = tmp_path / "latin1.yaml"
    path.write_bytes("data:\n  sources:\n    - name: caf\xe9\n      path: x\n".encode("latin-1"))
    code, _, err = _exit(["train", str(path)], capfd)
    assert code == 2 and err.startswith(f"error: {path}: not UTF-8 text (byte 0xe9") and err.count("\n") == 1


@pytest.mark.parametrize("kind", ["path", "pairs", "label_maps"])
def test_train_names_a_missing_data_path(tmp_path: Path, capfd, kind: str) -> None:
    image = write_volume(Volume(np.zeros((8, 8, 8), np.float32), np.eye(4)), tmp_path / "i.nii.gz")
    gone = tmp_path / "no_such_data"
    source = {"path": {"name": "s", "path": str(gone)},
              "pairs": {"name": "s", "pairs": [[str(image), str(gone / "l.nii.gz")]]},
              "label_maps": {"name": "s", "label_maps": [str(gone / "m.nii.gz")]}}[kind]
    code, _, err = _exit(["train", str(_config(tmp_path, [source]))], capfd)
    assert code == 2 and "data source 's'" in err and str(gone) in err and "does not exist" in err
    assert "voxels" not in err and not (tmp_path / "run").exists()


def test_load_config_checks_paths_only_when_asked(tmp_path: Path) -> None:
    from voxsam.training.load import load_config

    path = _config(tmp_path, [{"name": "s", "path": "missing_folder"}])
    assert load_config(path).data.sources[0].name == "s"  # type: ignore[attr-defined]
    with pytest.raises(ConfigError, match="missing_folder does not exist"):
        load_config(path, check_paths=True)


class _Nothing(Engine):
    """An engine that never finds anything (as sam3d on a volume two slices thick)."""

    name = "nothing"
    capabilities = Capabilities(frozenset({PromptKind.POINT, PromptKind.BOX}))

    def prepare(self, volume, progress=None):  # type: ignore[no-untyped-def]
        return volume.shape

    def predict(self, prepared, prompts, previous, change=None):  # type: ignore[no-untyped-def]
        return Prediction(np.zeros(prepared, bool))


@pytest.mark.parametrize(("shape", "why"), [((30, 30, 2), "only 2 slices thick along axis 2"), ((30, 30, 20), "constant")])
def test_segment_empty_mask_exits_2_with_a_reason(tmp_path: Path, capfd, monkeypatch, shape, why) -> None:
    import voxsam.cli.engine_args as engine_args

    monkeypatch.setattr(engine_args, "build_engine", lambda *a, **k: _Nothing())
    image = write_volume(Volume(np.zeros(shape, np.float32), np.eye(4)), tmp_path / "img.nii.gz")
    out = tmp_path / "m.nii.gz"
    code, _, err = _exit(["segment", str(image), "--point", "15,15,1", "--out", str(out)], capfd)
    assert code == 2 and "found nothing at the prompts" in err and why in err and err.count("\n") == 1
    assert not out.exists()


def test_box_outside_is_called_a_box(tmp_path: Path, capfd) -> None:
    from tests.session.fakes import CubeEngine
    from voxsam.session import Session

    vol = Volume(np.zeros((10, 10, 10), np.float32), np.eye(4))
    session = Session(vol, CubeEngine())
    with pytest.raises(PromptError, match=r"^box corner voxel \[50\.0, 1\.0, 1\.0\] lies outside"):
        session.add_box((1, 1, 1), (50, 1, 1))
    with pytest.raises(PromptError, match=r"^box corner world"):
        session.add_box((1, 1, 1), (1, 1, -40), space="world")
    image = write_volume(vol, tmp_path / "img.nii.gz")
    code, _, err = _exit(["segment", str(image), "--engine", "classic", "--box", "1,1,1,40,4,4", "--out", str(tmp_path / "m.nii.gz")], capfd)
    assert code == 2 and err.startswith("error: box corner") and "point" not in err
