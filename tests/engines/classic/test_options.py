"""`ClassicOptions` and how `ClassicEngine` takes options (validated, errors name the option)."""
from __future__ import annotations

import pydantic
import pytest

from voxsam.engines import create_engine
from voxsam.engines.classic import ClassicEngine, ClassicOptions
from voxsam.errors import ConfigError


def test_defaults_and_keyword_overrides():
    assert ClassicEngine().options == ClassicOptions()
    engine = ClassicEngine(method="random_walker", margin_mm=63.5)
    assert engine.options.method == "random_walker" and engine.options.margin_mm == 63.5
    assert engine.options.beta == ClassicOptions().beta


def test_overrides_replace_values_of_an_options_object():
    base = ClassicOptions(method="random_walker", beta=5.0)
    engine = ClassicEngine(base, margin_mm=20)
    assert (engine.options.method, engine.options.beta, engine.options.margin_mm) == ("random_walker", 5.0, 20.0)
    assert ClassicEngine(base).options is base


def test_text_values_are_converted():
    engine = create_engine("classic", method="random_walker", margin_mm="63.5", cg_max_iter="20")
    assert isinstance(engine, ClassicEngine)
    assert engine.options.margin_mm == 63.5 and engine.options.cg_max_iter == 20


def test_registry_builds_from_an_options_object():
    engine = create_engine("classic", options=ClassicOptions(method="random_walker"))
    assert isinstance(engine, ClassicEngine) and engine.options.method == "random_walker"


def test_unknown_option_lists_the_options():
    with pytest.raises(ConfigError, match="no option 'checkpoint'.*margin_mm"):
        ClassicEngine(checkpoint="x.pt")


def test_bad_method_names_the_allowed_values():
    with pytest.raises(ConfigError) as err:
        ClassicEngine(method="magic")
    text = str(err.value)
    assert "method" in text and "'magic'" in text and "growcut" in text and "random_walker" in text


@pytest.mark.parametrize(
    "key, value",
    [
        ("margin_mm", -1),
        ("margin_mm", 0),
        ("margin_mm", float("inf")),
        ("box_margin_mm", 0),
        ("beta", 0),
        ("seed_radius_mm", -0.5),
        ("smooth_mm", float("nan")),
        ("growcut_lambda", -0.1),
        ("max_roi_voxels", 100),
        ("growcut_max_voxels", 100),
        ("cg_tol", 0),
        ("cg_max_iter", 0),
        ("prior_width", 0),
        ("border_contrast", "lots"),
    ],
)
def test_bad_values_name_the_option(key, value):
    with pytest.raises(ConfigError, match=f"option {key}="):
        ClassicEngine(**{key: value})


def test_an_options_object_of_the_wrong_type_is_refused():
    with pytest.raises(ConfigError, match="ClassicOptions"):
        ClassicEngine("growcut")  # type: ignore[arg-type]


def test_options_are_immutable():
    engine = ClassicEngine()
    with pytest.raises(pydantic.ValidationError):
        engine.options.method = "random_walker"  # type: ignore[misc]
