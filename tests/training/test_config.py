"""Training configs: YAML with relative paths, overrides, and one-line errors for bad values."""
from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from voxsam.errors import ConfigError
from voxsam.training.config import parse_override
from voxsam.training.load import build_config, load_config

REPO = Path(__file__).resolve().parents[2]


def test_yaml_paths_are_relative_to_the_file(tmp_path, tiny_config_dict, tiny_dataset):
    cfg_dir = tmp_path / "cfgs"
    cfg_dir.mkdir()
    raw = dict(tiny_config_dict)
    raw["data"] = dict(raw["data"], sources=[{"name": "tiny", "path": "../tiny_ds"}])
    path = cfg_dir / "c.yaml"
    path.write_text(yaml.safe_dump(raw))
    cfg = load_config(path, ["optim.lr=2e-4", "run.steps=7", "interaction.box_prob=0"])
    assert Path(cfg.data.sources[0].path).resolve() == tiny_dataset.resolve()
    assert cfg.optim.lr == pytest.approx(2e-4) and cfg.run.steps == 7 and cfg.interaction.box_prob == 0


def test_shipped_config_is_valid():
    cfg = load_config(REPO / "configs" / "sam3d_small.yaml")
    assert cfg.model.preset == "small" and cfg.data.crop_size == 128
    la = next(s for s in cfg.data.sources if s.name == "la_mri")
    assert len(la.exclude) == 10  # the held-out validation cases


def test_parse_override_types():
    assert parse_override("a.b=3") == ("a.b", 3)
    assert parse_override("a=[1, 2]") == ("a", [1, 2])
    assert parse_override("x=true") == ("x", True)
    with pytest.raises(ConfigError, match="key.path=value"):
        parse_override("nothing")


@pytest.mark.parametrize(
    "override, message",
    [
        ("optim.lr=-1", "optim.lr"),
        ("optim.bogus=1", "optim.bogus"),
        ("interaction.box_prob=2", "interaction.box_prob"),
        ("data.offset_range=[0.9, 0.1]", "offset_range"),
        ("model.preset=huge", "model.preset"),
    ],
)
def test_bad_values_give_one_line(tiny_config_dict, override, message):
    with pytest.raises(ConfigError, match=message) as err:
        build_config(tiny_config_dict, [override])
    assert "\n" not in str(err.value)


def test_a_source_needs_exactly_one_kind(tiny_config_dict, tiny_dataset):
    raw = dict(tiny_config_dict)
    raw["data"] = dict(raw["data"], sources=[{"name": "x", "path": str(tiny_dataset), "label_maps": ["a.nii.gz"]}])
    with pytest.raises(ConfigError, match="exactly one of"):
        build_config(raw)


def test_missing_and_broken_files(tmp_path):
    with pytest.raises(ConfigError, match="no such config"):
        load_config(tmp_path / "nope.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("model: [unclosed")
    with pytest.raises(ConfigError, match="invalid YAML"):
        load_config(bad)


def test_configs_and_checkpoint_configs_without_a_family_are_sam3d(tiny_config_dict):
    from voxsam.training.config import Sam3DTrainConfig

    cfg = build_config(tiny_config_dict)
    assert isinstance(cfg, Sam3DTrainConfig) and cfg.family == "sam3d"
    saved = cfg.to_dict()
    assert list(saved)[:2] == ["family", "model"] and list(saved)[-2:] == ["optim", "run"]
    before_families = {k: v for k, v in saved.items() if k != "family"}  # what older checkpoints hold
    assert build_config(before_families) == cfg == build_config(saved)


def _held_out_hn_cases() -> set[str]:
    """The held-out head-and-neck ids, as benchmarks/hn_ct_validation.sh evaluates them."""
    script = (REPO / "benchmarks" / "hn_ct_validation.sh").read_text()
    line = next(s for s in script.splitlines() if s.startswith("CASES="))
    return set(line.removeprefix("CASES=").split(","))


@pytest.mark.parametrize("path", sorted((REPO / "configs").glob("*.yaml")), ids=lambda p: p.name)
def test_every_shipped_config_loads_and_keeps_the_validation_cases_out(path):
    cfg = load_config(path)
    reference = {s.name: set(s.exclude) for s in load_config(REPO / "configs" / "sam3d_small.yaml").data.sources}
    for source in cfg.data.sources:
        if source.name == "hn_ct":
            assert set(source.exclude) == _held_out_hn_cases()
        elif source.name in ("la_mri", "acdc_mri"):
            assert set(source.exclude) == reference[source.name]
