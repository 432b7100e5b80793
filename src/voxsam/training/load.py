"""Reading a training config: YAML file + "a.b=value" overrides, validated by its family's config type.

Separate from `config.py` (the section types) because choosing the type needs the family registry, and the
families import the section types: config <- families <- registry <- load.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

from pydantic import ValidationError

from voxsam.errors import ConfigError
from voxsam.training.config import DEFAULT_FAMILY, TrainConfig, _format_validation, _resolve_paths, _set_dotted, parse_override
from voxsam.training.registry import get_family


def build_config(raw: dict[str, Any], overrides: list[str] | tuple[str, ...] = (), base: Path | None = None) -> TrainConfig:
    """Validate a config dict (+ "a.b=value" overrides) with its family's config type (`raw["family"]`,
    default sam3d). Raises ConfigError with the first problem."""
    import copy

    raw = copy.deepcopy(raw)
    for text in overrides:
        key, value = parse_override(text)
        _set_dotted(raw, key, value)
    if base is not None:
        _resolve_paths(raw, base)
    family = get_family(raw.get("family", DEFAULT_FAMILY))
    try:
        return family.config_type.model_validate(raw)
    except ValidationError as exc:
        raise ConfigError(f"training config: {_format_validation(exc)}") from None


def load_config(path: str | Path, overrides: list[str] | tuple[str, ...] = ()) -> TrainConfig:
    """Read a YAML training config; relative paths are taken from the file's folder."""
    import yaml  # type: ignore[import-untyped]  # no PyYAML stubs (types-PyYAML) in the environment

    p = Path(path).expanduser()
    if not p.is_file():
        raise ConfigError(f"{p}: no such config file")
    try:
        raw = yaml.safe_load(p.read_text())
    except yaml.YAMLError as exc:
        raise ConfigError(f"{p}: invalid YAML ({str(exc).splitlines()[0]})") from None
    if not isinstance(raw, dict):
        raise ConfigError(f"{p}: expected a mapping at the top level")
    return build_config(raw, overrides, base=p.resolve().parent)
