"""The evaluation package's layout (no import cycle), engine building from typed options, the shared-prepare
wrapper and resuming folders written before the options were validated."""
from __future__ import annotations

import ast
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import voxsam.evaluation as evaluation_pkg
from voxsam.engines.base import Capabilities, Engine, Prediction, SliceAxisRule
from voxsam.errors import ConfigError
from voxsam.evaluation.plan import EvalConfig
from voxsam.evaluation.records import check_run_settings, write_json_atomic
from voxsam.evaluation.runner import SharedPrepare, build_engine
from voxsam.prompts import Change, Point, PromptKind, PromptSet

from ._helpers import BallEngine, make_volume

PKG_DIR = Path(evaluation_pkg.__file__).parent
PKG = "voxsam.evaluation"


def _modules() -> dict[str, Path]:
    return {f"{PKG}.{f.stem}" if f.stem != "__init__" else PKG: f for f in sorted(PKG_DIR.glob("*.py"))}


def _imports_within_package(path: Path, module: str) -> set[str]:
    """Modules of the package that `path` imports, at module level or inside functions (TYPE_CHECKING too)."""
    mods = _modules()
    pkg = module if path.name == "__init__.py" else module.rpartition(".")[0]
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        names: list[str] = []
        if isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parts = pkg.split(".")[: len(pkg.split(".")) - node.level + 1]
                base = ".".join(parts + ([base] if base else []))
            names = [f"{base}.{a.name}" for a in node.names] or [base]
        for name in names:
            while name and name not in mods:
                name = name.rpartition(".")[0]
            if name and name != module:
                found.add(name)
    return found


def test_no_import_cycle_between_evaluation_modules():
    graph = {m: _imports_within_package(p, m) for m, p in _modules().items()}
    assert {f"{PKG}.{n}" for n in ("plan", "sources", "records", "parallel", "runner", "report")} <= set(graph)
    # depth-first search for a back edge
    state: dict[str, int] = {}

    def visit(m: str, path: list[str]) -> None:
        state[m] = 1
        for n in sorted(graph[m]):
            if state.get(n) == 1:
                raise AssertionError("import cycle: " + " -> ".join(path[path.index(n):] + [n]))
            if n not in state:
                visit(n, path + [n])
        state[m] = 2

    for m in graph:
        if m not in state:
            visit(m, [m])
    assert f"{PKG}.runner" not in graph[f"{PKG}.report"]
    assert not any(f"{PKG}.runner" in deps for deps in graph.values())  # nothing depends on the runner


def test_modules_stay_small():
    for module, path in _modules().items():
        assert len(path.read_text().splitlines()) <= 400, module


@pytest.mark.parametrize("module", sorted(_modules()))
def test_each_module_imports_alone(module):
    out = subprocess.run([sys.executable, "-c", f"import {module}"], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr


def test_old_names_stay_importable_from_the_runner():
    from voxsam.evaluation import runner

    for name in ("EvalConfig", "CaseRef", "Target", "Skip", "Plan", "plan_targets", "parse_sources", "record_path",
                 "read_record", "dist_rank_world", "config_as_dict", "evaluate_target", "run_eval", "build_engine"):
        assert hasattr(runner, name), name


# ---------------------------------------------------------------------- engines from typed options
def test_build_engine_validates_options():
    engine = build_engine(EvalConfig("classic", "center", engine_options={"margin_mm": "12", "method": "growcut"}))
    assert engine.name == "classic" and PromptKind.POINT in engine.supports
    with pytest.raises(ConfigError, match="no option 'bogus'"):
        build_engine(EvalConfig("classic", "center", engine_options={"bogus": 1}))
    with pytest.raises(ConfigError, match="method"):
        build_engine(EvalConfig("classic", "center", engine_options={"method": "magic"}))
    # --checkpoint is the `checkpoint` option: the classic engine has none, and the registry says so
    with pytest.raises(ConfigError, match="no option 'checkpoint'"):
        build_engine(EvalConfig("classic", "center", checkpoint="w.pt"))
    with pytest.raises(ConfigError, match="unknown engine"):
        build_engine(EvalConfig("nope", "center"))
    with pytest.raises(ConfigError, match="checkpoint once"):
        EvalConfig("sam3d", "center", checkpoint="a.pt", engine_options={"checkpoint": "b.pt"}).engine_values()


def test_result_settings_hold_the_validated_options_the_user_set():
    cfg = EvalConfig("classic", "center", engine_options={"margin_mm": "12", "method": "growcut", "cg_max_iter": "40"})
    settings = cfg.result_settings()
    # text converted by the options class, only the keys given (a default given explicitly stays), sorted
    assert settings["engine_options"] == {"cg_max_iter": 40, "margin_mm": 12.0, "method": "growcut"}
    assert list(settings["engine_options"]) == ["cg_max_iter", "margin_mm", "method"]
    assert settings["checkpoint"] is None
    assert EvalConfig("classic", "center").result_settings()["engine_options"] == {}
    json.dumps(settings)  # JSON-ready
    sam = EvalConfig("sam3d", "center", checkpoint="w/model.pt", engine_options={"precision": "none", "trust_checkpoint": "true"})
    s = sam.result_settings()
    assert s["checkpoint"] == "w/model.pt" and s["engine_options"] == {"precision": None, "trust_checkpoint": True}


def test_folders_written_before_validation_still_resume(tmp_path):
    # run.json as the runner wrote it when options were JSON-decoded from the command line, unvalidated
    old = {
        "engine": "classic", "checkpoint": None, "engine_options": {"margin_mm": 12, "seed_radius_mm": 0},
        "protocol": "center", "clicks": [1, 2], "seed": 0, "nsd_tolerance_mm": 2.0,
    }
    write_json_atomic(tmp_path / "run.json", {"settings": old})
    same = EvalConfig("classic", "center", clicks=[1, 2], engine_options={"margin_mm": "12", "seed_radius_mm": "0"})
    check_run_settings(tmp_path, same, rank=0)  # no ConfigError: the same user input
    other = EvalConfig("classic", "center", clicks=[1, 2], engine_options={"margin_mm": "13", "seed_radius_mm": "0"})
    with pytest.raises(ConfigError, match="other settings"):
        check_run_settings(tmp_path, other, rank=0)
    sam_old = dict(old, engine="sam3d", checkpoint="w/model.pt", engine_options={"device": "cpu", "trust_checkpoint": True})
    write_json_atomic(tmp_path / "run.json", {"settings": sam_old})
    sam = EvalConfig("sam3d", "center", clicks=[1, 2], checkpoint="w/model.pt",
                     engine_options={"device": "cpu", "trust_checkpoint": "true"})
    check_run_settings(tmp_path, sam, rank=0)


# ---------------------------------------------------------------------- the shared-prepare wrapper
class _Propagating(Engine):
    name = "walker"
    capabilities = Capabilities(frozenset({PromptKind.SLICE_MASK, PromptKind.POINT}), propagates=True,
                                slice_axis=SliceAxisRule.ACQUISITION)

    def __init__(self):
        self.prepared = 0
        self.device = "cpu"

    def prepare(self, volume, progress=None):
        self.prepared += 1
        if progress:
            progress(1.0, "done")
        return volume.shape

    def propagate(self, prepared, prompts, previous, change=None):
        mask = np.zeros(prepared, bool)
        for k in range(prepared[2]):
            mask[..., k] = True
            yield k, mask[..., k]
        return Prediction(mask, state=change)

    def propagation_axis(self, prepared, prompts, change=None):
        return 2


def test_shared_prepare_forwards_the_engine_interface():
    inner = _Propagating()
    shared = SharedPrepare(inner)
    assert isinstance(shared, Engine)
    assert shared.name == "walker" and shared.capabilities is inner.capabilities
    assert shared.supports == {PromptKind.SLICE_MASK, PromptKind.POINT} and shared.capabilities.propagates
    assert shared.device == "cpu"  # engine-specific attributes read through
    vol = make_volume(np.zeros((4, 5, 6), np.float32))
    seen = []
    prepared = shared.prepare(vol, progress=lambda f, m: seen.append(f))
    assert shared.prepare(vol) is prepared and inner.prepared == 1 and seen == [1.0]
    shared.forget()
    shared.prepare(vol)
    assert inner.prepared == 2
    prompts = PromptSet(points=(Point((1.0, 1.0, 1.0)),))
    change = Change(added=prompts.points)
    steps = list(shared.propagate(prepared, prompts, None, change))
    assert [k for k, _ in steps] == list(range(6))
    assert shared.propagation_axis(prepared, prompts, change) == 2
    result = shared.predict(prepared, prompts, None, change)  # the base class runs propagate to the end
    assert result.mask.all() and result.state is change


def test_shared_prepare_passes_the_change_to_predict():
    inner = BallEngine()
    shared = SharedPrepare(inner)
    vol = make_volume(np.zeros((8, 8, 8), np.float32))
    prompts = PromptSet(points=(Point((4.0, 4.0, 4.0)),))
    change = Change(added=prompts.points)
    shared.predict(shared.prepare(vol), prompts, None, change)
    assert inner.changes == [change] and shared.name == "balls"
