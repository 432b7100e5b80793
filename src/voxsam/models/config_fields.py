"""`PresetConfig`: what the frozen dataclass configs of the model families share - plain-dict round trips,
validated copies and named presets - so each config file holds only its fields and their checks."""
from __future__ import annotations

import dataclasses
from typing import Any, ClassVar, Mapping, TypeVar

from voxsam.errors import ConfigError

C = TypeVar("C", bound="PresetConfig")


class PresetConfig:
    """Mixed into a frozen dataclass. Subclasses set `family` (the name in messages, e.g. "Sam2D") and
    `presets()` (name -> every field of the preset)."""

    family: ClassVar[str] = "model"

    @classmethod
    def presets(cls) -> Mapping[str, Mapping[str, Any]]:
        raise NotImplementedError

    def to_dict(self) -> dict[str, Any]:
        """Plain dict (ints, floats, strings, bools, lists) for checkpoints and JSON."""
        out: dict[str, Any] = {}
        for f in dataclasses.fields(self):  # type: ignore[arg-type]
            v = getattr(self, f.name)
            out[f.name] = list(v) if isinstance(v, tuple) else v
        return out

    @classmethod
    def _check_known(cls, names: Any) -> None:
        known = {f.name for f in dataclasses.fields(cls)}  # type: ignore[arg-type]
        unknown = sorted(set(names) - known)
        if unknown:
            raise ConfigError(f"unknown {cls.family}Config field(s): {', '.join(unknown)}")

    @classmethod
    def from_dict(cls: type[C], d: Mapping[str, Any]) -> C:
        """Inverse of `to_dict`; missing fields take defaults, unknown fields raise `ConfigError`."""
        cls._check_known(d)
        try:
            return cls(**dict(d))
        except TypeError as e:  # pragma: no cover - defensive
            raise ConfigError(f"invalid {cls.family}Config: {e}") from e

    def replace(self: C, **changes: Any) -> C:
        """A copy with some fields changed (validated); unknown fields raise `ConfigError`."""
        self._check_known(changes)
        return dataclasses.replace(self, **changes)  # type: ignore[type-var]

    @classmethod
    def preset(cls: type[C], name: str) -> C:
        """A named preset (see the family's `PRESETS`)."""
        presets = cls.presets()
        if name not in presets:
            raise ConfigError(f"unknown {cls.family} preset {name!r}; choose one of {', '.join(sorted(presets))}")
        return cls(**presets[name])
