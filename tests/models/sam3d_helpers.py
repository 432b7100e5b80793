"""Shared helpers of the SAM-Med3D tests: golden files (../shared beside the repo), weights, metrics."""
from __future__ import annotations

import functools
import importlib.util
import json
from pathlib import Path
from typing import Any, Callable

import pytest
import torch
import torch.nn.functional as F

from voxsam.models.sam3d.build import fill_random_weights

SHARED = Path(__file__).resolve().parents[2].parent / "shared"
GOLDEN_DIR = SHARED / "golden"
GOLDEN_FILE = GOLDEN_DIR / "sammed3d_tiny.pt"
VIT_B_KEYS_JSON = SHARED / "specs" / "sam_med3d_vit_b_ori_keys.json"

#: max errors measured by the tests, printed at the end of the golden tests (pytest -s)
MEASURED: dict[str, float] = {}


@pytest.fixture
def one_thread():
    """Run a test with one intra-op thread (restored after).

    The models in these tests are small; with 2 OpenMP threads on a shared 2-core machine, busy
    neighbours make every parallel region wait for a descheduled thread (20-60x slowdowns measured
    with the default spin-wait policy), so one thread is both faster and reproducible here.
    """
    old = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(old)


def need(path: Path) -> Path:
    if not path.is_file():
        pytest.skip(f"{path} not available (../shared beside the repository)")
    return path


@functools.lru_cache(maxsize=1)
def _golden() -> dict[str, Any]:
    # read-only test data from ../shared; plain tensors, lists and strings
    return torch.load(GOLDEN_FILE, map_location="cpu", weights_only=True)


def golden() -> dict[str, Any]:
    need(GOLDEN_FILE)
    return _golden()


@functools.lru_cache(maxsize=1)
def _weights_module() -> Any:
    spec = importlib.util.spec_from_file_location("voxsam_golden_weights", GOLDEN_DIR / "weights.py")
    mod = importlib.util.module_from_spec(spec)
    assert spec.loader is not None
    spec.loader.exec_module(mod)
    return mod


def make_state_dict() -> Callable[..., dict[str, torch.Tensor]]:
    """The golden ``weights.make_state_dict(keys, seed)``."""
    need(GOLDEN_DIR / "weights.py")
    return _weights_module().make_state_dict


def vit_b_keys() -> list[tuple[str, list[int]]]:
    need(VIT_B_KEYS_JSON)
    return [(k, list(s)) for k, s in json.loads(VIT_B_KEYS_JSON.read_text())["keys"]]


def vit_b_spec() -> dict[str, Any]:
    need(VIT_B_KEYS_JSON)
    return json.loads(VIT_B_KEYS_JSON.read_text())


def fill_random(model: torch.nn.Module, seed: int = 0) -> torch.nn.Module:
    """Deterministic weights of the golden rule, without ../shared (the package's helper, shared with
    the benchmark)."""
    return fill_random_weights(model, seed)


def upsampled_fg(low_res: torch.Tensor, size: int = 128) -> list[list[int]]:
    """Foreground voxel counts per mask: trilinear (align_corners=False) to size^3, sigmoid > 0.5."""
    up = F.interpolate(low_res, size=size, mode="trilinear", align_corners=False)
    return (torch.sigmoid(up) > 0.5).flatten(2).sum(-1).tolist()


def dice(a: torch.Tensor, b: torch.Tensor) -> float:
    a, b = a.bool(), b.bool()
    tot = int(a.sum()) + int(b.sum())
    return 1.0 if tot == 0 else 2.0 * int((a & b).sum()) / tot


def max_err(a: torch.Tensor, b: torch.Tensor) -> float:
    assert tuple(a.shape) == tuple(b.shape), (tuple(a.shape), tuple(b.shape))
    return float((a.float() - b.float()).abs().max())
