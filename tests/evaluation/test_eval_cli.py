"""`voxsam eval` through the real entry point: exit codes, outputs, resume, the shared-data smoke test."""
from __future__ import annotations

import csv
import json

import pytest

from voxsam.cli.main import main

from ._helpers import SHARED_DATA


def run_cli(args, capsys):
    with pytest.raises(SystemExit) as exc:
        main(args)
        raise SystemExit(0)
    out = capsys.readouterr()
    return exc.value.code, out.out, out.err


def test_unknown_engine_exits_2_before_work(msd_dataset, tmp_path, capsys):
    code, _, err = run_cli(["eval", str(msd_dataset), "--engine", "nope", "--protocol", "center", "--out", str(tmp_path / "o")], capsys)
    assert code == 2 and "unknown engine 'nope'" in err and "Traceback" not in err
    assert not (tmp_path / "o").exists()


def test_unknown_protocol_and_bad_lists_exit_2(msd_dataset, tmp_path, capsys):
    code, _, err = run_cli(["eval", str(msd_dataset), "--engine", "classic", "--protocol", "zigzag", "--out", str(tmp_path / "o")], capsys)
    assert code == 2 and "unknown protocol" in err
    code, _, err = run_cli(
        ["eval", str(msd_dataset), "-e", "classic", "-p", "center", "--clicks", "1,x", "--out", str(tmp_path / "o")], capsys
    )
    assert code == 2 and "--clicks" in err
    code, _, err = run_cli(
        ["eval", str(msd_dataset), "-e", "classic", "-p", "center", "--checkpoint", "w.pt", "--out", str(tmp_path / "o")], capsys
    )
    assert code == 2 and "no option 'checkpoint'" in err
    code, _, err = run_cli(
        ["eval", str(msd_dataset), "-e", "classic", "-p", "center", "--engine-option", "bogus=1", "--out", str(tmp_path / "o")], capsys
    )
    assert code == 2 and "no option 'bogus'" in err and "Traceback" not in err
    code, _, err = run_cli(
        ["eval", str(msd_dataset), "-e", "classic", "-p", "center", "--engine-option", "margin_mm=wide", "--out", str(tmp_path / "o")],
        capsys,
    )
    assert code == 2 and "margin_mm" in err
    code, _, err = run_cli(
        ["eval", str(msd_dataset), "-e", "classic", "-p", "center", "--engine-option", "margin_mm", "--out", str(tmp_path / "o")], capsys
    )
    assert code == 2 and "KEY=VALUE" in err
    code, _, err = run_cli(["eval", str(tmp_path / "missing"), "-e", "classic", "-p", "center", "--out", str(tmp_path / "o")], capsys)
    assert code == 2 and "no such dataset" in err


def test_cli_run_with_options(msd_dataset, tmp_path, capsys):
    out = tmp_path / "o"
    args = [
        "eval", str(msd_dataset), "--engine", "classic", "--protocol", "sammed3d", "--clicks", "1,2",
        "--labels", "1", "--max-cases", "2", "--engine-option", "margin_mm=12", "--out", str(out),
    ]
    code, _, err = run_cli(args, capsys)
    assert code == 0, err
    rows = list(csv.DictReader(open(out / "results.csv")))
    assert {r["case"] for r in rows} == {"c0", "c1"} and {r["label"] for r in rows} == {"1"}
    # the text value converted by the options class (12 == 12.0: folders written before compare equal)
    assert json.loads((out / "summary.json").read_text())["settings"]["engine_options"] == {"margin_mm": 12.0}


@pytest.mark.shared
@pytest.mark.skipif(not SHARED_DATA.is_dir(), reason="../shared/data is absent")
def test_shared_spleen_smoke(tmp_path, capsys):
    spleen = SHARED_DATA / "spleen_ct"
    pair = f"{spleen / 'sub-spleen2_ct.nii.gz'}::{spleen / 'sub-spleen2_ct_seg-manual.nii.gz'}"
    out = tmp_path / "spleen"
    args = ["eval", pair, "--engine", "classic", "--protocol", "center", "--clicks", "1,2", "--max-cases", "1", "--out", str(out)]
    code, _, err = run_cli(args, capsys)
    assert code == 0, err
    for name in ("results.csv", "summary.md", "summary.json", "dice_vs_clicks_spleen_ct.png"):
        assert (out / name).is_file(), name
    rows = list(csv.DictReader(open(out / "results.csv")))
    assert [(r["dataset"], r["case"], r["click"]) for r in rows] == [
        ("spleen_ct", "sub-spleen2_ct", "1"), ("spleen_ct", "sub-spleen2_ct", "2")
    ]
    assert float(rows[-1]["dice"]) > 0.6
    record = next((out / "records").rglob("*.json"))
    stamp = record.stat().st_mtime_ns
    code, _, err = run_cli(args, capsys)  # resume: the finished target is skipped
    assert code == 0, err
    assert record.stat().st_mtime_ns == stamp
    assert list(csv.DictReader(open(out / "results.csv"))) == rows
