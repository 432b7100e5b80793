"""`voxsam demo` works without ../shared and writes a mask on the source grid plus a PNG."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from voxsam.demo import phantom_volume, run_demo
from voxsam.io import read_volume


def test_demo_writes_mask_and_png(tmp_path: Path) -> None:
    result = run_demo(tmp_path)
    assert result.engine == "classic"  # the default until the bundled sam3d weights beat it (MODEL_CARD.md)
    assert result.png_path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    mask = read_volume(result.mask_path)
    assert 500 < int(mask.array.sum()) == result.voxels < 0.01 * mask.array.size  # a structure, not the head


def test_phantom_click_is_inside_a_ventricle() -> None:
    vol, click, _ = phantom_volume()
    i, j, k = np.round(vol.world_to_voxel(np.array(click))).astype(int)
    assert vol.array[i, j, k] < 0.4  # dark ventricle, not bright brain
    assert pytest.approx(vol.spacing) == (1.5, 1.5, 1.5)
