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


def load_config(
    path: str | Path, overrides: list[str] | tuple[str, ...] = (), check_paths: bool = False
) -> TrainConfig:
    """Read a YAML training config; relative paths are taken from the file's folder.

    `check_paths=True` (what `voxsam train` does) also checks that every data path exists
    (`check_data_paths`), so a missing folder is named before any work.
    Raises: ConfigError naming the file and the problem (missing, not UTF-8, invalid YAML, a bad value).
    """
    import yaml  # type: ignore[import-untyped]  # no PyYAML stubs (types-PyYAML) in the environment

    p = Path(path).expanduser()
    if not p.is_file():
        raise ConfigError(f"{p}: no such config file")
    try:
        text = p.read_bytes().decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ConfigError(
            f"{p}: not UTF-8 text (byte 0x{exc.object[exc.start]:02x} at offset {exc.start}); save the config as UTF-8"
        ) from None
    except OSError as exc:
        raise ConfigError(f"{p}: cannot read the config ({exc.strerror})") from None
    try:
        raw = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise ConfigError(f"{p}: invalid YAML ({str(exc).splitlines()[0]})") from None
    if not isinstance(raw, dict):
        raise ConfigError(f"{p}: expected a mapping at the top level")
    cfg = build_config(raw, overrides, base=p.resolve().parent)
    if check_paths:
        check_data_paths(cfg, p)
    return cfg


def check_data_paths(cfg: TrainConfig, config_path: Path | None = None) -> None:
    """Every data source's `path`, `pairs` file and `label_maps` file must exist, and `model.init` too;
    ConfigError naming the first missing one (and its source) otherwise."""
    where = f"{config_path}: " if config_path is not None else "training config: "
    init = getattr(cfg.model, "init", None)
    if init is not None and not Path(init).expanduser().exists():
        raise ConfigError(f"{where}model.init {init} does not exist")
    data = getattr(cfg, "data", None)
    for src in getattr(data, "sources", None) or []:
        name = getattr(src, "name", "?")
        candidates: list[tuple[str, Any]] = []
        if getattr(src, "path", None) is not None:
            candidates.append(("path", src.path))
        for i, pair in enumerate(getattr(src, "pairs", None) or []):
            for which, item in zip(("image", "label"), pair):
                candidates.append((f"pairs[{i}] {which}", item))
        for i, item in enumerate(getattr(src, "label_maps", None) or []):
            candidates.append((f"label_maps[{i}]", item))
        for field, value in candidates:
            if not Path(value).expanduser().exists():
                raise ConfigError(f"{where}data source {name!r}: {field} {value} does not exist")
