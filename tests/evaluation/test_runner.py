"""The benchmark runner and its report on a tiny synthetic MSD dataset."""
from __future__ import annotations

import csv
import json
import math

import numpy as np
import pytest

from voxsam.errors import ConfigError, DatasetError
from voxsam.evaluation import report as R
from voxsam.evaluation.plan import EvalConfig, plan_targets
from voxsam.evaluation.records import record_path
from voxsam.evaluation.runner import run_eval
from voxsam.evaluation.sources import parse_sources

from ._helpers import ball, write_nifti

FAST = {"margin_mm": 12.0, "seed_radius_mm": 0.0}


def config(**kw):
    base = dict(engine="classic", protocol="center", clicks=[1, 2], engine_options=dict(FAST))
    base.update(kw)
    return EvalConfig(**base)


def read_csv(path):
    with open(path, newline="") as fh:
        return list(csv.DictReader(fh))


def test_plan_lists_targets_and_skips(msd_dataset):
    plan = plan_targets([str(msd_dataset)], config(labels=[1, 2]))
    keys = [(t.case_id, t.label) for t in plan.targets]
    assert keys == [("c0", 1), ("c0", 2), ("c1", 1), ("c1", 2), ("c2", 1), ("c3_bad", 1), ("c3_bad", 2)]
    assert plan.targets[0].label_name == "left" and plan.targets[0].dataset == "toyset"
    reasons = {(s.case_id, s.label): s.reason for s in plan.skipped}
    assert "absent" in reasons[("c2", 2)]
    assert "no label" in reasons[("c4_nolabel", None)]
    # filters
    small = plan_targets([str(msd_dataset)], config(min_voxels=400))
    assert all(t.label == 1 for t in small.targets)  # radius-4 balls (~270 voxels) are filtered
    assert any(s.kind == "filtered" for s in small.skipped)
    spans = plan_targets([str(msd_dataset)], config(slice_range=(10, 200)))
    assert [t.label for t in spans.targets] == [1, 1, 1, 1]  # radius 5 spans 11 slices, radius 4 spans 9
    assert len(plan_targets([str(msd_dataset)], config(max_cases=1)).targets) == 2
    picked = plan_targets([str(msd_dataset)], config(cases=["c2*", "c3"]))
    assert {t.case_id for t in picked.targets} <= {"c2", "c3"} and picked.targets
    assert not plan_targets([str(msd_dataset)], config(cases=["zz*"])).targets


def test_run_report_and_resume(msd_dataset, tmp_path):
    out = tmp_path / "run"
    done = []
    summary = run_eval([str(msd_dataset)], out, config(), progress=done.append)
    assert sum(done) == 7
    rows = read_csv(out / "results.csv")
    assert list(rows[0]) == R.CSV_COLUMNS
    ok = [r for r in rows if r["case"] != "c3_bad"]
    assert len(ok) == 5 * 2 and {r["click"] for r in ok} == {"1", "2"}
    assert all(0.0 <= float(r["dice"]) <= 1.0 for r in ok)
    assert np.mean([float(r["dice"]) for r in ok if r["click"] == "2"]) > 0.8
    assert summary["counts"]["ok"] == 5 and summary["counts"]["error"] == 2
    # the label off its image grid: one error line naming the case and both labels, the run went on
    (err,) = summary["errors"]
    assert err["case"] == "c3_bad" and err["label"] == "1, 2" and "off the grid" in err["reason"]
    md = (out / "summary.md").read_text()
    assert "| toyset | left (1) |" in md and "**overall**" in md and "c4_nolabel" in md
    js = json.loads((out / "summary.json").read_text())
    assert js["settings"]["protocol"] == "center" and js["plots"] == ["dice_vs_clicks_toyset.png"]
    assert (out / "dice_vs_clicks_toyset.png").stat().st_size > 1000
    rec = json.loads(record_path(out, "toyset", "c0", 1).read_text())
    assert rec["status"] == "ok" and rec["prompts"][0]["kind"] == "point"

    # resume: nothing is recomputed, the report is rewritten identically
    stamp = record_path(out, "toyset", "c0", 1).stat().st_mtime_ns
    again = []
    summary2 = run_eval([str(msd_dataset)], out, config(), progress=again.append)
    assert sum(again) == 0 and record_path(out, "toyset", "c0", 1).stat().st_mtime_ns == stamp
    assert read_csv(out / "results.csv") == rows
    assert summary2["counts"] == summary["counts"]
    # errors are retried only when asked
    third = []
    run_eval([str(msd_dataset)], out, config(retry_errors=True), progress=third.append)
    assert sum(third) == 2
    # other settings into the same folder are refused
    with pytest.raises(ConfigError, match="other settings"):
        run_eval([str(msd_dataset)], out, config(clicks=[1, 3]))


def test_interrupted_run_resumes_missing_targets(msd_dataset, tmp_path):
    out = tmp_path / "run"
    run_eval([str(msd_dataset)], out, config(labels=[1]))
    record_path(out, "toyset", "c1", 1).unlink()
    redo = []
    summary = run_eval([str(msd_dataset)], out, config(labels=[1]), progress=redo.append)
    assert sum(redo) == 1 and summary["counts"]["ok"] == 3


def test_torchrun_shards(msd_dataset, tmp_path, monkeypatch):
    out = tmp_path / "dist"
    cfg = config(labels=[1])
    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.setenv("RANK", "1")
    assert run_eval([str(msd_dataset)], out, cfg) is None  # rank 1: its share, no report
    assert not (out / "results.csv").exists()
    # rank 1 took targets 1 and 3 of [c0, c1, c2, c3_bad]
    assert record_path(out, "toyset", "c1", 1).exists() and record_path(out, "toyset", "c3_bad", 1).exists()
    assert not record_path(out, "toyset", "c0", 1).exists()
    monkeypatch.setenv("RANK", "0")
    summary = run_eval([str(msd_dataset)], out, cfg)
    assert summary["counts"]["ok"] == 3 and summary["counts"]["error"] == 1
    assert len(read_csv(out / "results.csv")) == 3 * 2


@pytest.mark.slow
def test_worker_processes(msd_dataset, tmp_path):
    out = tmp_path / "workers"
    summary = run_eval([str(msd_dataset)], out, config(labels=[1], workers=2))
    assert summary["counts"]["ok"] == 3 and summary["counts"]["error"] == 1
    serial = run_eval([str(msd_dataset)], tmp_path / "serial", config(labels=[1]))
    a = read_csv(out / "results.csv")
    b = read_csv(tmp_path / "serial" / "results.csv")
    assert [(r["case"], r["dice"]) for r in a] == [(r["case"], r["dice"]) for r in b]
    assert serial["counts"] == summary["counts"]


def test_file_pairs_and_names(tmp_path):
    shape = (20, 20, 12)
    lab = np.zeros(shape, np.uint8)
    lab[ball(shape, (10, 10, 6), 4.0)] = 7
    img = 100.0 * (lab > 0) + np.random.default_rng(0).normal(0, 5, shape)
    write_nifti(tmp_path / "scans" / "ct1.nii.gz", img.astype(np.float32))
    write_nifti(tmp_path / "scans" / "ct1_seg.nii.gz", lab)
    (tmp_path / "names.json").write_text(json.dumps({"total": {"7": "kidney"}}))
    spec = f"{tmp_path}/scans/ct1.nii.gz::{tmp_path}/scans/ct1_seg.nii.gz::{tmp_path}/names.json#total"
    cases, skipped, info = parse_sources([spec])
    assert (cases[0].dataset, cases[0].case_id, cases[0].label_names) == ("scans", "ct1", {7: "kidney"})
    summary = run_eval([spec], tmp_path / "out", config())
    assert summary["groups"][0]["label_name"] == "kidney"
    with pytest.raises(DatasetError, match="IMAGE::LABEL"):
        parse_sources([f"{tmp_path}/scans/ct1.nii.gz"])
    with pytest.raises(DatasetError, match="not found"):
        parse_sources([f"{tmp_path}/scans/ct1.nii.gz::{tmp_path}/nope.nii.gz"])
    with pytest.raises(DatasetError, match="IMAGE::LABEL"):
        parse_sources([str(tmp_path / "scans")])  # loose files: not an MSD folder


def test_bad_inputs_fail_clearly(msd_dataset, tmp_path):
    with pytest.raises(ConfigError, match="unknown engine"):
        run_eval([str(msd_dataset)], tmp_path / "a", config(engine="nope"))
    with pytest.raises(ConfigError, match="unknown protocol"):
        run_eval([str(msd_dataset)], tmp_path / "b", config(protocol="nope"))
    with pytest.raises(ConfigError, match="no option 'checkpoint'"):
        run_eval([str(msd_dataset)], tmp_path / "c", config(checkpoint="w.pt"))
    with pytest.raises(ConfigError, match="no option 'bogus'"):
        run_eval([str(msd_dataset)], tmp_path / "d", config(engine_options={"bogus": 1}))
    with pytest.raises(ConfigError, match="margin_mm"):
        run_eval([str(msd_dataset)], tmp_path / "d", config(engine_options={"margin_mm": "wide"}))
    with pytest.raises(ConfigError):
        config(clicks=[0, 1])
    # nothing was written for names and options that fail fast
    assert not any((tmp_path / d).exists() for d in "abcd")
    # a dataset whose cases have no labels at all
    bare = tmp_path / "bare"
    write_nifti(bare / "imagesTr" / "x.nii.gz", np.zeros((8, 8, 8), np.float32))
    with pytest.raises(DatasetError, match="nothing to evaluate"):
        run_eval([str(bare)], tmp_path / "e", config())
    # ... but next to a good dataset it is only listed as skipped
    summary = run_eval([str(bare), str(msd_dataset)], tmp_path / "f", config(labels=[1]))
    assert any(s["dataset"] == "bare" and "no labels" in s["reason"] for s in summary["skipped"])


def test_aggregate_handles_infinite_hd95():
    rows = [
        {"dataset": "d", "case": "a", "label": 1, "label_name": "x", "click": 1, "dice": 0.5, "iou": 0.3, "nsd": 0.4, "hd95": 4.0, "seconds": 1.0},
        {"dataset": "d", "case": "b", "label": 1, "label_name": "x", "click": 1, "dice": 0.0, "iou": 0.0, "nsd": 0.0, "hd95": math.inf, "seconds": 1.0},
    ]
    groups = R.aggregate(rows)
    assert [(g["dataset"], g["label"]) for g in groups] == [("d", 1), ("d", "all"), ("overall", "all")]
    g = groups[0]
    assert g["n"] == 2 and g["dice"]["mean"] == pytest.approx(0.25) and g["dice"]["std"] == pytest.approx(0.25)
    assert g["hd95"]["mean"] == 4.0 and g["hd95"]["n_inf"] == 1
    assert R._fmt(g["hd95"], 1, inf_note=True) == "4.0 ± 0.0 (1 inf)"
