"""The training loop: schedule, exact resume after SIGKILL, clean stop on SIGTERM, DDP under torchrun."""
from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
import yaml

from voxsam.errors import CheckpointError, ConfigError
from voxsam.training.load import build_config
from voxsam.training.trainer import lr_factor, train

ENV = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}


def _write(cfg: dict, path: Path) -> Path:
    path.write_text(yaml.safe_dump(cfg))
    return path


def _metrics(run_dir: Path) -> dict[int, dict]:
    """Last logged line per step (a resumed run logs the steps after its checkpoint again)."""
    out = {}
    for line in (run_dir / "metrics.jsonl").read_text().splitlines():
        m = json.loads(line)
        out[m["step"]] = m
    return out


def _voxsam(*args: str) -> list[str]:
    return [sys.executable, "-c", "from voxsam.cli.main import main; main()", *args]


def _wait_for_steps(run_dir: Path, n: int, proc: subprocess.Popen, timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        f = run_dir / "metrics.jsonl"
        if f.exists() and len(f.read_text().splitlines()) >= n:
            return
        if proc.poll() is not None:
            raise AssertionError(f"training exited early: {proc.stderr.read() if proc.stderr else ''}")
        time.sleep(0.05)
    raise AssertionError("training made no progress")


def test_lr_schedule(tiny_config_dict):
    cfg = build_config(tiny_config_dict, ["optim.warmup_steps=10", "run.steps=110", "optim.min_lr_ratio=0.1"])
    assert lr_factor(0, cfg) == pytest.approx(0.1) and lr_factor(9, cfg) == pytest.approx(1.0)
    assert lr_factor(10, cfg) == pytest.approx(1.0) and lr_factor(60, cfg) == pytest.approx(0.55)
    assert lr_factor(110, cfg) == pytest.approx(0.1)
    step = build_config(tiny_config_dict, ["optim.schedule=step", "optim.warmup_steps=0", "optim.step_milestones=[5, 8]"])
    assert [round(lr_factor(s, step), 6) for s in (4, 5, 8)] == [1.0, 0.1, 0.01]


def test_resume_after_sigkill_gives_the_same_next_losses(tiny_config_dict, tmp_path):
    raw = dict(tiny_config_dict)
    raw["run"] = dict(raw["run"], steps=10, checkpoint_every=2, threads=1)
    straight = _write({**raw, "run": {**raw["run"], "out_dir": str(tmp_path / "straight")}}, tmp_path / "a.yaml")
    subprocess.run(_voxsam("train", str(straight)), check=True, env=ENV, capture_output=True, timeout=300)
    reference = _metrics(tmp_path / "straight")

    killed_dir = tmp_path / "killed"
    cfg = _write({**raw, "run": {**raw["run"], "out_dir": str(killed_dir)}}, tmp_path / "b.yaml")
    proc = subprocess.Popen(_voxsam("train", str(cfg)), env=ENV, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    _wait_for_steps(killed_dir, 5, proc)
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=30)
    resumed_from = torch.load(killed_dir / "last.pt", map_location="cpu", weights_only=False)["step"]
    assert 2 <= resumed_from < 10
    done = subprocess.run(_voxsam("train", str(cfg), "--resume"), env=ENV, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    again = _metrics(killed_dir)
    for step in range(resumed_from + 1, 11):
        assert abs(again[step]["loss"] - reference[step]["loss"]) <= 1e-6, (step, again[step]["loss"], reference[step]["loss"])
    final_a = torch.load(tmp_path / "straight" / "model.pt", map_location="cpu", weights_only=True)["model"]
    final_b = torch.load(killed_dir / "model.pt", map_location="cpu", weights_only=True)["model"]
    assert max(float((final_a[k] - final_b[k]).abs().max()) for k in final_a) < 1e-5


def test_sigterm_checkpoints_and_stops(tiny_config_dict, tmp_path):
    """SIGTERM to the whole process group (as schedulers send it), DataLoader workers included."""
    raw = dict(tiny_config_dict)
    raw["run"] = dict(raw["run"], steps=500, checkpoint_every=1000, num_workers=1, out_dir=str(tmp_path / "term"))
    cfg = _write(raw, tmp_path / "c.yaml")
    proc = subprocess.Popen(_voxsam("train", str(cfg)), env=ENV, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            start_new_session=True)
    _wait_for_steps(tmp_path / "term", 2, proc)
    os.killpg(proc.pid, signal.SIGTERM)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 0, err
    assert "SIGTERM" in err
    state = torch.load(tmp_path / "term" / "last.pt", map_location="cpu", weights_only=False)
    assert 2 <= state["step"] < 500 and state["step"] == max(_metrics(tmp_path / "term"))
    assert state["config"]["run"]["steps"] == 500 and "optimizer" in state and "rng" in state


def test_a_run_refuses_to_overwrite_and_resume_needs_a_checkpoint(tiny_config_dict, tmp_path):
    cfg = build_config(tiny_config_dict, ["run.steps=1"])
    train(cfg)
    with pytest.raises(ConfigError, match="--resume"):
        train(cfg)
    fresh = build_config(tiny_config_dict, [f"run.out_dir={tmp_path / 'empty'}"])
    with pytest.raises(CheckpointError, match="nothing to resume"):
        train(fresh, resume=True)
    (Path(cfg.run.out_dir) / "last.pt").write_bytes(b"garbage")
    with pytest.raises(CheckpointError, match="cannot read"):
        train(cfg, resume=True)


def test_trained_weights_load_in_the_engine(tiny_config_dict):
    from voxsam.engines.sam3d import Sam3DEngine

    cfg = build_config(tiny_config_dict, ["run.steps=1"])
    train(cfg)
    engine = Sam3DEngine(checkpoint=Path(cfg.run.out_dir) / "model.pt", spacing=1.5)
    assert engine.size == 32


def test_cli_bad_config_exits_2(tmp_path):
    bad = _write({"data": {"sources": []}}, tmp_path / "bad.yaml")
    r = subprocess.run(_voxsam("train", str(bad)), env=ENV, capture_output=True, text=True, timeout=120)
    assert r.returncode == 2 and r.stderr.startswith("error: training config: data.sources")
    assert "Traceback" not in r.stderr


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_ddp_two_processes_equal_one_process_with_the_same_samples(tiny_config_dict, tmp_path):
    """torchrun, 2 CPU processes (gloo) x batch 1 == 1 process x batch 2: the same global samples, averaged gradients."""
    raw = dict(tiny_config_dict)
    raw["run"] = dict(raw["run"], steps=2, checkpoint_every=1, threads=1)
    single = _write({**raw, "optim": {**raw["optim"], "batch_size": 2}, "run": {**raw["run"], "out_dir": str(tmp_path / "one")}}, tmp_path / "one.yaml")
    subprocess.run(_voxsam("train", str(single)), check=True, env=ENV, capture_output=True, timeout=300)
    ddp = _write({**raw, "optim": {**raw["optim"], "batch_size": 1}, "run": {**raw["run"], "out_dir": str(tmp_path / "two")}}, tmp_path / "two.yaml")
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node=2", "--master_addr=127.0.0.1",
           f"--master_port={_free_port()}", "-m", "voxsam.cli.main", "train", str(ddp)]
    r = subprocess.run(cmd, env=ENV, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr[-2000:]
    one, two = _metrics(tmp_path / "one"), _metrics(tmp_path / "two")
    assert two[2]["world"] == 2
    for step in (1, 2):
        assert abs(one[step]["loss"] - two[step]["loss"]) < 1e-4, (one[step]["loss"], two[step]["loss"])
    a = torch.load(tmp_path / "one" / "model.pt", map_location="cpu", weights_only=True)["model"]
    b = torch.load(tmp_path / "two" / "model.pt", map_location="cpu", weights_only=True)["model"]
    assert max(float((a[k] - b[k]).abs().max()) for k in a) < 1e-4


def test_init_from_a_released_style_checkpoint(tiny_config_dict, tmp_path):
    """--init PATH fine-tunes from a released training dict (pickled: needs trust), box embeddings added."""
    import argparse

    from voxsam.models.sam3d import build_sam3d
    from voxsam.models.sam3d.build import BOX_PROMPT_KEYS
    from voxsam.training.sam3d_family import Sam3DFamily

    _build_model = Sam3DFamily().build

    torch.manual_seed(42)
    donor = build_sam3d("tiny", image_size=32)
    released = {k: v for k, v in donor.state_dict().items() if k not in BOX_PROMPT_KEYS}
    path = tmp_path / "sam_med3d_like.pth"
    torch.save({"epoch": 3, "model_state_dict": released, "args": argparse.Namespace(lr=1e-4)}, path)

    untrusted = build_config(tiny_config_dict, [f"model.init={path}"])
    with pytest.raises(CheckpointError, match="trust"):
        _build_model(untrusted)
    cfg = build_config(tiny_config_dict, [f"model.init={path}", "model.trust_init=true", "run.steps=1"])
    model = _build_model(cfg)
    for k, v in released.items():
        assert torch.equal(model.state_dict()[k], v), k
    assert train(cfg)["step"] == 1


def test_export_halves_the_file_and_keeps_the_masks(tiny_config_dict, tmp_path):
    from voxsam.training.export import export_weights

    cfg = build_config(tiny_config_dict, ["run.steps=1"])
    train(cfg)
    src = Path(cfg.run.out_dir) / "model.pt"
    facts = export_weights(src, tmp_path / "shipped.pt", extra={"note": "test"})
    assert facts["bytes"] < 0.6 * src.stat().st_size
    assert facts["max_weight_change"] < 1e-2 and facts["dice_fp32_vs_stored"] > 0.99
    from voxsam.models.sam3d import load_sam3d_checkpoint

    model, report = load_sam3d_checkpoint(tmp_path / "shipped.pt")
    assert next(model.parameters()).dtype == torch.float32 and report.metadata["note"] == "test"
    assert report.metadata["step"] == 1


def test_continuing_from_exported_weights_goes_on_with_the_same_data_and_schedule(tiny_config_dict, tmp_path):
    """run.start_step: a run continued from a step-2 model.pt sees at step 3 exactly what the straight run saw."""
    same = ["optim.schedule=constant", "optim.warmup_steps=0"]
    straight = build_config(tiny_config_dict, [*same, "run.steps=4", f"run.out_dir={tmp_path / 'straight'}"])
    train(straight)
    first = build_config(tiny_config_dict, [*same, "run.steps=2", f"run.out_dir={tmp_path / 'first'}"])
    train(first)
    continued = build_config(tiny_config_dict, [*same, "run.steps=4", "run.start_step=2", f"run.out_dir={tmp_path / 'next'}",
                                                f"model.init={tmp_path / 'first' / 'model.pt'}"])
    assert train(continued)["step"] == 4
    logged = _metrics(tmp_path / "next")
    assert sorted(logged) == [3, 4]
    assert abs(logged[3]["loss"] - _metrics(tmp_path / "straight")[3]["loss"]) <= 1e-6

    with pytest.raises(ConfigError, match="model.init"):
        build_config(tiny_config_dict, ["run.steps=4", "run.start_step=2"])
    with pytest.raises(ConfigError, match="below run.steps"):
        build_config(tiny_config_dict, ["run.steps=4", "run.start_step=4", f"model.init={tmp_path / 'first' / 'model.pt'}"])


def test_a_continued_run_warms_its_fresh_moments_up_on_the_same_schedule(tiny_config_dict, tmp_path):
    cfg = build_config(tiny_config_dict, ["optim.warmup_steps=10", "run.steps=110", "run.start_step=60",
                                          f"model.init={tmp_path / 'any.pt'}"])
    plain = build_config(tiny_config_dict, ["optim.warmup_steps=10", "run.steps=110"])
    assert lr_factor(60, cfg) == pytest.approx(0.1 * lr_factor(60, plain))
    assert lr_factor(69, cfg) == pytest.approx(lr_factor(69, plain))
    assert lr_factor(90, cfg) == pytest.approx(lr_factor(90, plain))


def test_training_flushes_denormal_floats_unless_told_not_to(tiny_config_dict, tmp_path):
    torch.set_flush_denormal(False)  # an earlier training in this process left it on
    tiny = torch.tensor([1e-39])  # a float32 denormal
    try:
        train(build_config(tiny_config_dict, ["run.steps=1", f"run.out_dir={tmp_path / 'a'}"]))
        assert float(tiny * 1.0) == 0.0
        train(build_config(tiny_config_dict, ["run.steps=1", "run.flush_denormals=false", f"run.out_dir={tmp_path / 'b'}"]))
        assert float(tiny * 1.0) > 0.0
    finally:
        torch.set_flush_denormal(False)


def test_resuming_a_continued_run_keeps_its_schedule_without_repeating_the_options(tiny_config_dict, tmp_path):
    init = tmp_path / "first" / "model.pt"
    train(build_config(tiny_config_dict, ["run.steps=2", f"run.out_dir={tmp_path / 'first'}"]))
    sched = ["optim.warmup_steps=2", "optim.min_lr_ratio=0.1", "run.steps=8", "run.checkpoint_every=1", "run.keep_checkpoints=8"]
    train(build_config(tiny_config_dict, [*sched, "run.start_step=2", f"model.init={init}", f"run.out_dir={tmp_path / 'next'}"]))
    again = tmp_path / "again"
    again.mkdir()
    (again / "last.pt").write_bytes((tmp_path / "next" / "step_0000004.pt").read_bytes())
    train(build_config(tiny_config_dict, [*sched, f"run.out_dir={again}"]), resume=True)  # no --init, no start_step
    continued, resumed = _metrics(tmp_path / "next"), _metrics(again)
    assert sorted(resumed) == [5, 6, 7, 8]
    for step in resumed:
        assert resumed[step]["lr"] == pytest.approx(continued[step]["lr"], rel=1e-9), step
