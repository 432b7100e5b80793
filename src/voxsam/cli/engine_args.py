"""The engine choice shared by every command: `--engine NAME --engine-option KEY=VALUE ...`.

No command knows any engine: options are validated by the engine's options class in the registry.
"""
from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any, Optional

import typer

EngineOption = Annotated[
    Optional[list[str]],
    typer.Option("--engine-option", "-o", help="KEY=VALUE engine option, repeatable (`voxsam engines` lists them)."),
]


def engine_values(items: list[str] | None, **shortcuts: Any) -> dict[str, Any]:
    """Merge `--engine-option` items with shortcut flags (e.g. --checkpoint) that were given (not None/False).

    A shortcut for an option the engine lacks is refused by the registry with the option's name.
    """
    from voxsam.engines import parse_key_values

    values: dict[str, Any] = dict(parse_key_values(items or []))
    for key, value in shortcuts.items():
        if value is None or value is False:
            continue
        if key in values:
            from voxsam.errors import ConfigError

            raise ConfigError(f"option {key} given twice (as --{key.replace('_', '-')} and --engine-option)")
        values[key] = str(value) if isinstance(value, Path) else value
    return values


def build_engine(name: str, values: dict[str, Any]) -> Any:
    """The engine `name` built from validated option values (ConfigError names a bad option)."""
    from voxsam.engines import create_engine

    return create_engine(name, **values)
