"""Training data: sources, the on-disk cache (engine geometry), and deterministic, off-centre samples."""
from __future__ import annotations

import json
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

from tests.conftest import oblique_affine
from voxsam.errors import DatasetError
from voxsam.training.load import build_config
from voxsam.training.data import GRID_PAD, TrainSamples, build_table, crop_padded, list_cases, prepare_cache
from voxsam.transforms.crop import CropGrid, canonical_grid_affine, sample_into
from voxsam.transforms.geometry import apply_affine


def _table(cfg):
    table, problems = build_table(cfg.data.sources, cfg.data)
    return table, problems


def test_exclude_keeps_validation_cases_out(tiny_config_dict):
    cfg = build_config(tiny_config_dict)
    ids = [c.case_id for c in list_cases(cfg.data.sources[0])]
    assert ids == ["case_000", "case_001"]
    with pytest.raises(DatasetError, match="no case left"):
        list_cases(cfg.data.sources[0].model_copy(update={"exclude": ["case_*"]}))


def test_cache_is_built_once(tiny_config_dict):
    cfg = build_config(tiny_config_dict)
    cases = list_cases(cfg.data.sources[0])
    first, problems = prepare_cache(cases, 1.5, cfg.data.cache_dir)
    assert not problems and len(first) == 2
    stamp = [(e.folder / "meta.json").stat().st_mtime_ns for e in first]
    again, _ = prepare_cache(cases, 1.5, cfg.data.cache_dir)
    assert [(e.folder / "meta.json").stat().st_mtime_ns for e in again] == stamp
    assert set(first[0].label_stats) == {1, 2}


def test_cache_follows_file_contents_not_paths_or_times(tiny_config_dict, tmp_path):
    import os
    import shutil

    from voxsam.training.data import TrainCase, _cache_key
    from voxsam.training.slice2d_data import _files_key

    case = list_cases(build_config(tiny_config_dict).data.sources[0])[0]
    copy = tmp_path / "copied"
    copy.mkdir()
    moved = TrainCase(case.source, case.case_id, tuple(Path(shutil.copy(p, copy)) for p in case.image_paths),
                      Path(shutil.copy(case.label_path, copy / ("label_" + case.label_path.name))), case.modality)
    os.utime(moved.label_path, ns=(1, 1))  # a re-mounted or copied data folder: other paths and times
    memo = tmp_path / "memo"
    key, files_key = _cache_key(case, 1.5), _files_key(case)
    assert _cache_key(moved, 1.5) == key and _files_key(moved) == files_key
    assert _cache_key(moved, 1.5, memo) == key and _files_key(moved, memo) == files_key  # computed, remembered
    assert len(list((memo / "content_keys").iterdir())) == 2
    assert _cache_key(moved, 1.5, memo) == key and _files_key(moved, memo) == files_key  # read back
    data = bytearray(moved.label_path.read_bytes())
    data[-1] ^= 1  # an edited label (a new mtime: the remembered keys no longer apply)
    moved.label_path.write_bytes(bytes(data))
    assert _cache_key(moved, 1.5, memo) != key and _files_key(moved, memo) != files_key
    assert _cache_key(moved, 1.5) != key


def test_cached_crop_equals_the_engine_crop(tmp_path):
    """A training crop holds exactly the voxels the sam3d engine samples for the same crop grid."""
    rng = np.random.default_rng(1)
    shape = (30, 26, 14)
    affine = oblique_affine()
    image = rng.normal(100, 30, shape).astype(np.float32)
    label = (rng.random(shape) > 0.7).astype(np.uint8)
    nib.save(nib.Nifti1Image(image, affine), str(tmp_path / "img.nii.gz"))
    nib.save(nib.Nifti1Image(label, affine), str(tmp_path / "lab.nii.gz"))
    raw = {"model": {"preset": "tiny", "overrides": {"image_size": 32}},
           "data": {"crop_size": 32, "min_voxels": 1, "cache_dir": str(tmp_path / "cache"),
                    "sources": [{"name": "p", "pairs": [[str(tmp_path / "img.nii.gz"), str(tmp_path / "lab.nii.gz")]]}]}}
    cfg = build_config(raw)
    (entry,), _ = prepare_cache(list_cases(cfg.data.sources[0]), 1.5, cfg.data.cache_dir)
    base = canonical_grid_affine(shape, affine, 1.5)
    for start in [(0, 0, 0), (-5, 3, -2), (7, -9, 4)]:
        aff = base.copy()
        aff[:3, 3] = apply_affine(base, np.array(start, float))
        grid = CropGrid(aff, (32, 32, 32), start)
        expected = sample_into(image, affine, grid, order=1)
        at = np.array(start) + GRID_PAD
        got = crop_padded(entry.array("image"), at, 32)
        assert np.abs(got - expected).max() < 1e-3
        assert np.count_nonzero(expected) > 1000
        np.testing.assert_array_equal(crop_padded(entry.array("label"), at, 32), sample_into(label, affine, grid, order=0))


def test_samples_are_deterministic_and_off_centre(tiny_config_dict):
    cfg = build_config(tiny_config_dict)
    table, problems = _table(cfg)
    assert not problems
    samples = TrainSamples(table, cfg.data, seed=3)
    a, b = samples[17], samples[17]
    np.testing.assert_array_equal(a["image"], b["image"])
    np.testing.assert_array_equal(a["target"], b["target"])
    assert a["image"].shape == a["target"].shape == (1, 32, 32, 32)
    centres, kinds = [], set()
    for i in range(40):
        s = samples[i]
        t = s["target"][0] > 0
        assert t.any(), s["info"]  # the target is always inside the crop
        centres.append(np.argwhere(t).mean(0))
        kinds.add(s["info"].split("/")[0])
    assert kinds == {"tiny", "maps"}
    spread = np.std(np.array(centres), axis=0)
    assert np.all(spread > 1.5)  # targets land at different places in the crop, not always centred


def test_label_only_sources_are_synthesised(tiny_config_dict):
    raw = dict(tiny_config_dict)
    raw["data"] = dict(raw["data"], sources=[raw["data"]["sources"][1]])
    cfg = build_config(raw)
    table, _ = _table(cfg)
    s = TrainSamples(table, cfg.data, seed=0)[3]
    assert s["info"].endswith("/synth")
    img, tgt = s["image"][0], s["target"][0] > 0
    assert img[tgt].mean() != pytest.approx(img[~tgt].mean(), abs=1e-3)


def test_small_targets_are_skipped_and_bad_cases_reported(tiny_config_dict, tiny_dataset):
    broken = tiny_dataset / "labelsTr" / "case_001.nii.gz"
    broken.write_bytes(b"not a nifti at all")
    raw = dict(tiny_config_dict)
    raw["data"] = dict(raw["data"], min_voxels=10**6)
    with pytest.raises(DatasetError, match="no training target"):
        _table(build_config(raw))
    table, problems = _table(build_config(tiny_config_dict))
    assert len(problems) == 1 and "case_001" in problems[0]
    assert json.dumps(table.summary())
