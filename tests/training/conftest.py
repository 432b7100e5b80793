"""Fixtures of the training tests: a tiny MSD dataset, a label map alone, and a tiny training config."""
from __future__ import annotations

import json
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest


def _ellipsoids(shape, rng, n):
    """A label map of `n` random ellipsoids (values 1..n) and an image with a distinct intensity per label."""
    g = np.indices(shape, dtype=np.float32)
    label = np.zeros(shape, np.uint8)
    for v in range(1, n + 1):
        c = rng.uniform(0.3, 0.7, 3) * np.array(shape)
        r = rng.uniform(3, 7, 3)
        label[sum(((g[i] - c[i]) / r[i]) ** 2 for i in range(3)) <= 1] = v
    image = 20 + 60 * label.astype(np.float32) + rng.normal(0, 4, shape).astype(np.float32)
    return label, image


def write_nifti(path: Path, array: np.ndarray, spacing=(1.2, 1.2, 2.0)) -> Path:
    nib.save(nib.Nifti1Image(array, np.diag([*spacing, 1.0])), str(path))
    return path


@pytest.fixture
def tiny_dataset(tmp_path) -> Path:
    """MSD folder with 3 cases of 2 labels each, plus labels_only/ with one label map."""
    root = tmp_path / "tiny_ds"
    (root / "imagesTr").mkdir(parents=True)
    (root / "labelsTr").mkdir()
    rng = np.random.default_rng(0)
    for i in range(3):
        label, image = _ellipsoids((40, 36, 20), rng, 2)
        write_nifti(root / "imagesTr" / f"case_{i:03d}.nii.gz", image)
        write_nifti(root / "labelsTr" / f"case_{i:03d}.nii.gz", label)
    (root / "dataset.json").write_text(json.dumps({"name": "tiny", "modality": {"0": "MRI"}, "labels": {"0": "bg", "1": "a", "2": "b"}}))
    lm = tmp_path / "labels_only"
    lm.mkdir()
    label, _ = _ellipsoids((36, 36, 30), rng, 3)
    write_nifti(lm / "map.nii.gz", label, spacing=(1.5, 1.5, 1.5))
    return root


@pytest.fixture
def tiny_config_dict(tiny_dataset, tmp_path) -> dict:
    """A config dict for a 32^3 tiny sam3d on the tiny dataset (seconds per step on one thread)."""
    return {
        "model": {"preset": "tiny", "overrides": {"image_size": 32}},
        "data": {
            "crop_size": 32, "min_voxels": 20, "cache_dir": str(tmp_path / "cache"),
            "sources": [
                {"name": "tiny", "path": str(tiny_dataset), "weight": 2.0, "exclude": ["case_002"]},
                {"name": "maps", "label_maps": [str(tiny_dataset.parent / "labels_only" / "map.nii.gz")]},
            ],
        },
        "interaction": {"rounds": 3, "box_prob": 0.5, "mask_only_prob": 0.3},
        "optim": {"lr": 1e-3, "warmup_steps": 2, "batch_size": 2},
        "run": {"out_dir": str(tmp_path / "run"), "steps": 4, "seed": 3, "threads": 1, "checkpoint_every": 2},
    }
