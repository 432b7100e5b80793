"""Engines: one per model family, all behind `Engine`. The registry maps names to factories."""
from __future__ import annotations

from typing import Any, Callable

from voxsam.errors import ConfigError


def _classic(**kwargs: Any) -> Any:
    from voxsam.engines.classic import ClassicEngine

    return ClassicEngine(**kwargs)


def _sam3d(**kwargs: Any) -> Any:
    from voxsam.engines.sam3d import Sam3DEngine

    return Sam3DEngine(**kwargs)


# Explicit registry: adding an engine touches this dict and its own module, nothing else.
ENGINES: dict[str, Callable[..., Any]] = {"classic": _classic, "sam3d": _sam3d}


def create_engine(name: str, **kwargs: Any) -> Any:
    """Build an engine by its registered name (e.g. "classic", "sam3d")."""
    try:
        factory = ENGINES[name]
    except KeyError:
        raise ConfigError(f"unknown engine {name!r}; available: {', '.join(sorted(ENGINES))}") from None
    return factory(**kwargs)
