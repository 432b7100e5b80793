"""Model families of voxsam, by name. Builders import their (torch) modules on first use.

    from voxsam.models import build_model
    model = build_model("sam3d", "vit_b_ori")
"""
from __future__ import annotations

from typing import Any, Callable

from voxsam.errors import ConfigError


def _build_sam3d(config: Any = None, **overrides: Any) -> Any:
    from voxsam.models.sam3d.build import build_sam3d

    return build_sam3d(config, **overrides)


#: name -> builder(config=None, **overrides) -> nn.Module
MODEL_BUILDERS: dict[str, Callable[..., Any]] = {"sam3d": _build_sam3d}


def build_model(name: str, config: Any = None, **overrides: Any) -> Any:
    """Build a registered model family (``"sam3d"``) from a preset name, dict or config object."""
    try:
        builder = MODEL_BUILDERS[name]
    except KeyError:
        raise ConfigError(f"unknown model {name!r}; choose one of {', '.join(sorted(MODEL_BUILDERS))}") from None
    return builder(config, **overrides)


__all__ = ["MODEL_BUILDERS", "build_model"]
