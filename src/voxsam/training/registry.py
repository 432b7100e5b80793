"""The model families `voxsam train` knows, keyed by the config's `family:` field (default "sam3d").

A new family is a `ModelFamily` (see `voxsam.training.family`) added to `FAMILIES` - here for the built-in
ones, or with `register_family` (tests, plug-ins) before the config is built.
"""
from __future__ import annotations

from typing import Any

from voxsam.errors import ConfigError
from voxsam.training.family import ModelFamily
from voxsam.training.sam3d_family import Sam3DFamily

FAMILIES: dict[str, ModelFamily[Any]] = {"sam3d": Sam3DFamily()}
FAMILIES["slice2d"] = __import__("voxsam.training.slice2d_family", fromlist=["Slice2DFamily"]).Slice2DFamily()
FAMILIES["memory3d"] = __import__("voxsam.training.memory3d_family", fromlist=["Memory3DFamily"]).Memory3DFamily()


def register_family(family: ModelFamily[Any]) -> None:
    """Add (or replace) a family under its name."""
    FAMILIES[family.name] = family


def get_family(name: object) -> ModelFamily[Any]:
    """The family called `name` (ConfigError, naming the known ones, when there is none)."""
    if isinstance(name, str) and name in FAMILIES:
        return FAMILIES[name]
    raise ConfigError(f"training config: family: unknown {name!r} (known: {', '.join(sorted(FAMILIES))})")
