"""The loop is family-agnostic: a toy 2D family, defined here, trains, checkpoints, stops and resumes through it."""
from __future__ import annotations

import json
import signal
from pathlib import Path
from typing import Any, Literal

import numpy as np
import pytest
import torch
import yaml
from pydantic import BaseModel, ConfigDict, Field
from torch import nn

from voxsam.errors import CheckpointError, ConfigError
from voxsam.training.checkpoint import checkpoint_family
from voxsam.training.config import Sam3DTrainConfig, TrainConfig
from voxsam.training.load import build_config
from voxsam.training.family import ModelFamily, StepInfo, TrainData, plain_parameter_groups
from voxsam.training.progress import TrainingProgress
from voxsam.training.registry import FAMILIES, get_family
from voxsam.training.trainer import train


class ToySection(BaseModel):
    model_config = ConfigDict(extra="forbid")
    size: int = Field(default=12, ge=4)
    channels: int = Field(default=4, ge=1)


class ToyConfig(TrainConfig):
    family: Literal["toy"] = "toy"
    toy: ToySection = Field(default_factory=ToySection)


class ToyNet(nn.Module):
    def __init__(self, channels: int) -> None:
        super().__init__()
        self.channels = channels
        self.net = nn.Sequential(nn.Conv2d(1, channels, 3, padding=1), nn.ReLU(), nn.Conv2d(channels, 1, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


class ToySamples(torch.utils.data.Dataset):
    """Sample i: a random 2D image and the mask of its bright pixels, a pure function of (seed, i)."""

    def __init__(self, seed: int, size: int) -> None:
        self.seed, self.size = seed, size

    def __len__(self) -> int:
        return 2**62

    def __getitem__(self, i: int) -> dict[str, Any]:
        image = np.random.default_rng([self.seed, i]).normal(size=(1, self.size, self.size)).astype(np.float32)
        return {"image": image, "target": (image > 0.3).astype(np.float32)}


def _collate(items: list[dict[str, Any]]) -> dict[str, Any]:
    return {k: torch.from_numpy(np.stack([i[k] for i in items])) for k in ("image", "target")}


class ToyFamily:
    name = "toy"
    config_type = ToyConfig

    def build(self, cfg: ToyConfig) -> nn.Module:
        if cfg.model.init is not None:
            return self.load_weights(cfg.model.init)[0]
        torch.manual_seed(cfg.run.seed)
        return ToyNet(cfg.toy.channels)

    def load_weights(self, path: Path, *, trust: bool = False) -> tuple[nn.Module, dict[str, Any]]:
        saved = torch.load(path, map_location="cpu", weights_only=True)
        model = ToyNet(saved["config"]["channels"])
        model.load_state_dict({k: v.float() for k, v in saved["model"].items()})
        return model, saved["extra"]

    def save_weights(self, model: nn.Module, path: Path, *, extra: Any = None, half: bool = False) -> None:
        state = {k: v.detach().cpu().to(torch.float16 if half else torch.float32) for k, v in model.state_dict().items()}
        torch.save({"config": self.model_config(model), "model": state, "extra": dict(extra or {})}, path)

    def model_config(self, model: nn.Module) -> dict[str, Any]:
        assert isinstance(model, ToyNet)
        return {"channels": model.channels}

    def parameter_groups(self, model: nn.Module, optim: Any) -> list[dict[str, Any]]:
        return plain_parameter_groups(model, optim)

    def dataset(self, cfg: ToyConfig, progress: Any = None) -> TrainData:
        if progress is not None:
            progress(0, 1, "nothing to cache")
        return TrainData(ToySamples(cfg.run.seed, cfg.toy.size), _collate, summary="random 2D images")

    def loss(self, cfg: ToyConfig, model: nn.Module, batch: Any, step: StepInfo) -> tuple[torch.Tensor, dict[str, float]]:
        assert len(step.indices) == batch["image"].shape[0]
        logits = model(batch["image"])
        loss = nn.functional.binary_cross_entropy_with_logits(logits, batch["target"])
        return loss, {"accuracy": float(((logits > 0) == (batch["target"] > 0.5)).float().mean())}

    def pretrained_weights(self, model: nn.Module) -> nn.Module | None:
        assert isinstance(model, ToyNet)
        pretrained = ToyNet(model.channels)
        with torch.no_grad():
            for value in pretrained.state_dict().values():
                value.fill_(1.0)
        return pretrained

    def export_check(self, model: nn.Module, stored: nn.Module) -> dict[str, float]:
        return {}


@pytest.fixture
def toy_family(monkeypatch) -> ModelFamily[Any]:
    family: ModelFamily[Any] = ToyFamily()  # also checks, for mypy users, that ToyFamily fits the protocol
    monkeypatch.setitem(FAMILIES, "toy", family)
    return family


def _toy_raw(out_dir: Path, **run: Any) -> dict[str, Any]:
    return {"family": "toy", "toy": {"size": 12},
            "optim": {"lr": 1e-2, "warmup_steps": 2, "batch_size": 2, "accumulate": 2},
            "run": {"out_dir": str(out_dir), "steps": 6, "seed": 5, "threads": 1, "checkpoint_every": 2, **run}}


def _logged(run_dir: Path) -> dict[int, dict]:
    return {m["step"]: m for m in map(json.loads, (run_dir / "metrics.jsonl").read_text().splitlines())}


def test_a_toy_family_trains_stops_and_resumes_exactly_through_the_same_loop(toy_family, tmp_path, capsys):
    events: list[TrainingProgress] = []
    cfg = build_config(_toy_raw(tmp_path / "straight"))
    assert isinstance(cfg, ToyConfig) and cfg.toy.size == 12
    summary = train(cfg, on_progress=events.append)
    assert summary["step"] == 6 and summary["stop_reason"] == "finished"
    assert [e.kind for e in events] == ["cache", "start"] + ["step"] * 6 + ["end"]
    assert events[1].message.startswith("training toy:") and "random 2D images" in events[1].message
    assert events[-2].metrics["step"] == 6 and 0.0 <= events[-2].metrics["accuracy"] <= 1.0
    reference = _logged(tmp_path / "straight")
    assert sorted(reference) == [1, 2, 3, 4, 5, 6] and reference[6]["loss"] < reference[1]["loss"]

    state = torch.load(tmp_path / "straight" / "last.pt", map_location="cpu", weights_only=False)
    assert state["family"] == "toy" and state["model_config"] == {"channels": 4} and state["step"] == 6
    assert yaml.safe_load((tmp_path / "straight" / "config.yaml").read_text())["family"] == "toy"
    model, meta = toy_family.load_weights(tmp_path / "straight" / "model.pt")
    assert meta["step"] == 6 and isinstance(model, ToyNet)

    # stopped by SIGTERM after step 3 (from the progress callback), then resumed: the same steps 4-6
    def stop_at_3(event: TrainingProgress) -> None:
        if event.kind == "step" and event.step == 3:
            signal.raise_signal(signal.SIGTERM)

    stopped = build_config(_toy_raw(tmp_path / "stopped"))
    first = train(stopped, on_progress=stop_at_3)
    assert first["step"] == 3 and first["stop_reason"] == "signal SIGTERM"
    assert train(stopped, resume=True)["step"] == 6
    again = _logged(tmp_path / "stopped")
    for step in (4, 5, 6):
        assert again[step]["loss"] == pytest.approx(reference[step]["loss"], abs=1e-7), step
        assert again[step]["lr"] == pytest.approx(reference[step]["lr"], rel=1e-12), step
    a = toy_family.load_weights(tmp_path / "straight" / "model.pt")[0].state_dict()
    b = toy_family.load_weights(tmp_path / "stopped" / "model.pt")[0].state_dict()
    assert all(torch.allclose(a[k], b[k], atol=1e-7, rtol=0) for k in a)

    # --init from the exported weights, and the export path of the family
    cont = build_config(_toy_raw(tmp_path / "cont"), [f"model.init={tmp_path / 'straight' / 'model.pt'}", "run.steps=7",
                                                      "run.start_step=6"])
    assert train(cont)["step"] == 7 and sorted(_logged(tmp_path / "cont")) == [7]
    from voxsam.training.export import export_weights

    facts = export_weights(tmp_path / "straight" / "model.pt", tmp_path / "shipped.pt", family="toy")
    assert facts["max_weight_change"] < 1e-2 and toy_family.load_weights(tmp_path / "shipped.pt")[1]["step"] == 6
    # a weight average of the two runs (same architecture, same initialisation)
    runs = [toy_family.load_weights(tmp_path / r / "model.pt")[0].state_dict() for r in ("straight", "cont")]
    export_weights(tmp_path / "straight" / "model.pt", tmp_path / "soup.pt", half=False, family="toy",
                   average_with=[tmp_path / "cont" / "model.pt"])
    soup, meta = toy_family.load_weights(tmp_path / "soup.pt")
    assert meta["averaged_with"] == str(tmp_path / "cont" / "model.pt")
    for name, value in soup.state_dict().items():
        if value.is_floating_point():
            torch.testing.assert_close(value, (runs[0][name] + runs[1][name]) / 2)
    assert any(not torch.equal(runs[0][n], runs[1][n]) for n in runs[0])  # the two runs differ: a real average
    # a share of the pretrained weights (all ones here) mixed in
    export_weights(tmp_path / "straight" / "model.pt", tmp_path / "wise.pt", half=False, family="toy", pretrained_share=0.25)
    wise, meta = toy_family.load_weights(tmp_path / "wise.pt")
    assert meta["pretrained_share"] == 0.25
    for name, value in wise.state_dict().items():
        torch.testing.assert_close(value, 0.75 * runs[0][name] + 0.25)
    for share in (-0.1, 1.0):
        with pytest.raises(ConfigError, match=r"must lie in \(0, 1\)"):
            export_weights(tmp_path / "straight" / "model.pt", tmp_path / "bad.pt", family="toy", pretrained_share=share)
    assert not (tmp_path / "bad.pt").exists()

    out = capsys.readouterr()
    assert out.out == "" and out.err == ""  # the library reports through the callback and logging only


def test_family_dispatch_and_mismatches(toy_family, tiny_config_dict, tmp_path):
    assert get_family("sam3d").config_type is Sam3DTrainConfig
    sam3d = build_config(tiny_config_dict)  # no family: key -> sam3d, as configs written before families
    assert isinstance(sam3d, Sam3DTrainConfig) and sam3d.family == "sam3d"
    with pytest.raises(ConfigError, match=r"family: unknown 'nope' \(known: memory3d, sam3d, slice2d, toy\)"):
        build_config(tiny_config_dict, ["family=nope"])
    with pytest.raises(ConfigError, match="Extra inputs are not permitted"):  # toy configs have no sam3d sections
        build_config(tiny_config_dict, ["family=toy"])
    with pytest.raises(ConfigError, match="needs a ToyConfig"):
        train(TrainConfig(family="toy"))

    train(build_config(_toy_raw(tmp_path / "toy"), ["run.steps=1"]))
    sam3d_here = build_config(tiny_config_dict, [f"run.out_dir={tmp_path / 'toy'}"])
    with pytest.raises(CheckpointError, match="a toy run, but the config trains family sam3d"):
        train(sam3d_here, resume=True)
    assert checkpoint_family({"format": "voxsam.train", "config": {"run": {}}}) == "sam3d"


def test_a_weight_average_needs_one_architecture():
    from voxsam.training.export import average_into, mix_into

    first = torch.nn.Linear(2, 3)
    with pytest.raises(ConfigError, match="another architecture"):
        average_into(first, [torch.nn.Linear(3, 3)])
    with pytest.raises(ConfigError, match="another architecture"):
        mix_into(first, torch.nn.Linear(3, 3), 0.5)
    # the pretrained model may hold more than the exported one (slice2d: the whole encoder behind its tail)
    bigger = torch.nn.Sequential()
    bigger.add_module("weight_source", torch.nn.Linear(2, 3))
    with pytest.raises(ConfigError, match="weight missing or reshaped"):
        mix_into(first, bigger, 0.5)


class ScratchFamily(ToyFamily):
    """A toy family trained from scratch: nothing pretrained to mix in."""

    name = "scratch"

    def pretrained_weights(self, model: nn.Module) -> nn.Module | None:
        return None


def test_families_without_pretrained_weights_refuse_a_share(tmp_path, monkeypatch, capsys):
    from voxsam.training.export import export_weights, main

    for family in ("sam3d", "memory3d"):
        assert get_family(family).pretrained_weights(torch.nn.Linear(1, 1)) is None
    monkeypatch.setitem(FAMILIES, "scratch", ScratchFamily())
    src = tmp_path / "toy.pt"
    ScratchFamily().save_weights(ToyNet(2), src)
    with pytest.raises(ConfigError, match="'scratch' has no pretrained weights"):
        export_weights(src, tmp_path / "out.pt", family="scratch", pretrained_share=0.5)
    assert main([str(src), str(tmp_path / "out.pt"), "--family", "scratch", "--pretrained-share", "0.5"]) == 2
    assert "has no pretrained weights" in capsys.readouterr().err and not (tmp_path / "out.pt").exists()
