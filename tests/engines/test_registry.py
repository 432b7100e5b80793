"""The engine registry: typed options that validate and document themselves, capabilities, create_engine."""
from __future__ import annotations

import pytest

from voxsam.engines import ENGINES, create_engine, describe_options, engine_spec, parse_key_values
from voxsam.engines.options import parse_options
from voxsam.errors import ConfigError
from voxsam.prompts import PromptKind


def test_every_engine_has_a_documented_options_class() -> None:
    for name in ENGINES:
        spec = engine_spec(name)
        assert spec.name == name and spec.summary and spec.capabilities is not None
        infos = describe_options(spec.options)
        assert all(i.description for i in infos), name
        defaults = spec.options()  # the defaults themselves validate
        assert defaults.model_dump().keys() == {i.name for i in infos}


def test_text_values_are_converted_and_checked() -> None:
    spec = engine_spec("classic")
    opts = parse_options(spec, {"method": "random_walker", "margin_mm": "30", "cg_max_iter": "7"})
    assert (opts.method, opts.margin_mm, opts.cg_max_iter) == ("random_walker", 30.0, 7)  # type: ignore[attr-defined]
    sam = parse_options(engine_spec("sam3d"), {"precision": "none", "trust_checkpoint": "true", "checkpoint": "null"})
    assert sam.precision is None and sam.trust_checkpoint is True and sam.checkpoint is None  # type: ignore[attr-defined]
    sliced = parse_options(engine_spec("slice2d"), {"click_box_mm": "20, 40,80", "ct_window": "-160,240"})
    assert sliced.click_box_mm == (20.0, 40.0, 80.0) and sliced.ct_window == (-160.0, 240.0)  # type: ignore[attr-defined]
    from voxsam.models.sam2d.preprocess import CT_WINDOW

    assert engine_spec("slice2d").options().ct_window == CT_WINDOW  # type: ignore[attr-defined]  # one default
    types = {i.name: i.type for i in describe_options(engine_spec("slice2d").options)}
    assert types["ct_window"] == "float, float" and types["click_box_mm"] == "float, ..."


@pytest.mark.parametrize(
    "name, values, match",
    [
        ("classic", {"methd": "growcut"}, "no option 'methd'; its options: method, "),
        ("classic", {"method": "snake"}, "allowed: growcut, random_walker"),
        ("classic", {"margin_mm": "-3"}, "option margin_mm='-3'"),
        ("classic", {"margin_mm": "nan"}, "margin_mm"),
        ("classic", {"checkpoint": "x.pt"}, "no option 'checkpoint'"),
        ("sam3d", {"precision": "fp16"}, "allowed: float32, int8, bfloat16"),
        ("sam3d", {"max_windows": "0"}, "max_windows"),
        ("slice2d", {"ct_window": "240,-160"}, "ct_window"),
        ("slice2d", {"ct_window": "40"}, "ct_window"),
        ("nosuch", {}, "unknown engine 'nosuch'; available: "),
    ],
)
def test_bad_options_name_the_option_and_the_allowed_values(name: str, values: dict, match: str) -> None:
    with pytest.raises(ConfigError, match=match):
        create_engine(name, **values)


def test_key_values_from_the_command_line() -> None:
    assert parse_key_values(["a=1", " margin-mm = 3 "]) == {"a": "1", "margin_mm": "3"}
    for bad in ["novalue", "=3"]:
        with pytest.raises(ConfigError, match="KEY=VALUE"):
            parse_key_values([bad])


def test_capabilities_declare_prompt_kinds() -> None:
    classic = engine_spec("classic").capabilities
    assert PromptKind.POINT in classic.prompts and not classic.propagates
    assert "prompts: " in classic.describe()


def test_options_object_or_keywords_not_both() -> None:
    spec = engine_spec("classic")
    with pytest.raises(ConfigError, match="not both"):
        create_engine("classic", spec.options(), margin_mm=3)
    with pytest.raises(ConfigError, match="takes ClassicOptions"):
        create_engine("classic", engine_spec("sam3d").options())
