"""Fixtures of the evaluation tests: a synthetic MSD dataset."""
from __future__ import annotations

import json

import numpy as np
import pytest

from ._helpers import ball, write_nifti


@pytest.fixture
def msd_dataset(tmp_path):
    """A tiny MSD-layout dataset: 3 labelled cases (2 organs each except c2 lacks label 2), one case with a
    label off its image grid, one unlabelled case."""
    root = tmp_path / "toyset"
    shape = (28, 26, 16)
    rng = np.random.default_rng(1)
    for i, case in enumerate(["c0", "c1", "c2", "c3_bad", "c4_nolabel"]):
        a = ball(shape, (8 + i % 2, 12, 8), 5.0)
        b = ball(shape, (21, 13, 8 - i % 2), 4.0)
        lab = np.zeros(shape, np.uint8)
        lab[a] = 1
        if case != "c2":
            lab[b] = 2
        img = 80.0 * a + 160.0 * b + rng.normal(0, 5, shape)
        write_nifti(root / "imagesTr" / f"{case}.nii.gz", img.astype(np.float32))
        if case == "c4_nolabel":
            continue
        offset = (5.0, 0.0, 0.0) if case == "c3_bad" else (0.0, 0.0, 0.0)
        write_nifti(root / "labelsTr" / f"{case}.nii.gz", lab, offset=offset)
    (root / "dataset.json").write_text(
        json.dumps({"name": "Toy set", "modality": {"0": "CT"}, "labels": {"0": "background", "1": "left", "2": "right"}})
    )
    return root
