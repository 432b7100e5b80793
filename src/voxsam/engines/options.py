"""Typed engine options: one pydantic class per engine, validated and self-documenting.

Every registry entry pairs a factory with its options class, so the CLI (`--engine-option key=value`), the
evaluation harness and the server build any engine the same way, with no engine-specific branches.
Values may arrive typed (Python) or as text (command line, forms): pydantic converts text to the field's
type, and "none"/"null" means None where a field allows it.
"""
from __future__ import annotations

import typing
from dataclasses import dataclass
from typing import Any, Callable

from pydantic import BaseModel, ConfigDict, ValidationError

from voxsam.errors import ConfigError


class EngineOptions(BaseModel):
    """Base of every engine's options: unknown keys are refused, instances are immutable."""

    model_config = ConfigDict(extra="forbid", frozen=True, validate_default=True, protected_namespaces=())


@dataclass(frozen=True)
class EngineSpec:
    """One registry entry.

    Attributes:
        name: the engine's registered name.
        summary: one line on what it does.
        options: its options class.
        factory: builds the engine from validated options (imports heavy modules only when called).
        weights: where its default weights come from ("none" for training-free engines).
        capabilities: the engine class's `Capabilities` (prompt kinds, propagation).
    """

    name: str
    summary: str
    options: type[EngineOptions]
    factory: Callable[[Any], Any]
    weights: str = "none"
    capabilities: Any = None


@dataclass(frozen=True)
class OptionInfo:
    """One documented option: name, type text, default, description, allowed values (when a choice)."""

    name: str
    type: str
    default: Any
    description: str
    choices: tuple[Any, ...] = ()


def _type_text(annotation: Any) -> str:
    """'float', 'int', 'choice', 'Path | None', ... for a field annotation."""
    args = typing.get_args(annotation)
    if typing.get_origin(annotation) is typing.Literal:
        return "choice"
    if typing.get_origin(annotation) is tuple and len(args) == 2 and args[1] is Ellipsis:
        return f"{_type_text(args[0])}, ..."  # a tuple of any length
    if typing.get_origin(annotation) is tuple:
        return ", ".join(_type_text(a) for a in args)  # a fixed-length tuple
    if args:
        return " | ".join(_type_text(a) for a in args)
    if annotation is type(None):
        return "None"
    return str(getattr(annotation, "__name__", annotation))


def _choices(annotation: Any) -> tuple[Any, ...]:
    if typing.get_origin(annotation) is typing.Literal:
        return typing.get_args(annotation)
    out: tuple[Any, ...] = ()
    for arg in typing.get_args(annotation):
        out += _choices(arg)
    return out


def describe_options(options: type[EngineOptions]) -> list[OptionInfo]:
    """The options of an options class, in declaration order."""
    infos = []
    for name, f in options.model_fields.items():
        infos.append(OptionInfo(name, _type_text(f.annotation), f.default, f.description or "", _choices(f.annotation)))
    return infos


def _allows_none(annotation: Any) -> bool:
    return annotation is type(None) or type(None) in typing.get_args(annotation)


def parse_options(spec: EngineSpec, values: dict[str, Any]) -> EngineOptions:
    """Validate `values` (typed, or text from a command line) against the engine's options class.

    Raises: ConfigError naming the engine, the option and the allowed values or options.
    """
    return validate_options(spec.name, spec.options, values)


def _is_tuple(annotation: Any) -> bool:
    return typing.get_origin(annotation) is tuple or any(_is_tuple(a) for a in typing.get_args(annotation))


def validate_options(engine: str, options: type[EngineOptions], values: dict[str, Any]) -> EngineOptions:
    """`parse_options` for an options class directly (engines validating their own keyword overrides)."""
    fields = options.model_fields
    unknown = sorted(set(values) - set(fields))
    if unknown:
        known = ", ".join(fields) or "none"
        raise ConfigError(f"engine {engine!r} has no option {unknown[0]!r}; its options: {known}")
    cleaned = {}
    for key, value in values.items():
        if isinstance(value, str) and value.strip().lower() in ("none", "null") and _allows_none(fields[key].annotation):
            value = None
        elif isinstance(value, str) and _is_tuple(fields[key].annotation):
            value = tuple(v.strip() for v in value.split(",") if v.strip())  # "20,40,80" from a command line
        cleaned[key] = value
    try:
        return options(**cleaned)
    except ValidationError as exc:
        err = exc.errors()[0]
        key = str(err["loc"][0]) if err.get("loc") else "?"
        info = next((i for i in describe_options(options) if i.name == key), None)
        allowed = f" (allowed: {', '.join(map(str, info.choices))})" if info and info.choices else ""
        got = cleaned.get(key, "?")
        raise ConfigError(f"engine {engine!r}: option {key}={got!r}: {err['msg']}{allowed}") from None


def parse_key_values(items: list[str]) -> dict[str, str]:
    """['key=value', ...] from a command line -> {key: value} (text; the options class converts it)."""
    out: dict[str, str] = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise ConfigError(f"--engine-option takes KEY=VALUE, got {item!r}")
        out[key.strip().replace("-", "_")] = value.strip()
    return out
