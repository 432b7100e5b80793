"""The `edit-slice` protocol: a degraded start mask, then the worst slice painted each time."""
from __future__ import annotations

import numpy as np
import pytest

pytest.importorskip("torch")

from tests.engines.slice2d.fake_sam2d import FakeSam2D  # noqa: E402
from voxsam.engines.slice2d import Slice2DEngine  # noqa: E402
from voxsam.errors import ConfigError  # noqa: E402
from voxsam.evaluation.protocols import degrade, get_protocol  # noqa: E402
from voxsam.io.volume import Volume  # noqa: E402
from voxsam.session import Session  # noqa: E402


def _case() -> tuple[Volume, np.ndarray]:
    grid = np.indices((40, 40, 16)).astype(float)
    ball = np.sqrt((grid[0] - 20) ** 2 + (grid[1] - 20) ** 2 + ((grid[2] - 8) * 2) ** 2) <= 10
    image = np.where(ball, 100.0, 1.0).astype(np.float32)
    image[0, 0, 0] = 0.0
    return Volume(image, np.diag([1.0, 1.0, 2.0, 1.0]), modality="MR"), ball


def test_degrade_is_seeded_and_damages_every_slice_kind() -> None:
    _, ball = _case()
    a = degrade(ball, 2, np.random.default_rng(3))
    b = degrade(ball, 2, np.random.default_rng(3))
    np.testing.assert_array_equal(a, b)
    assert not np.array_equal(a, ball) and (a & ball).any()


def test_edit_slice_improves_on_the_degraded_start() -> None:
    vol, ball = _case()
    session = Session(vol, Slice2DEngine(model=FakeSam2D(), min_area_px=1))
    result = get_protocol("edit-slice")(session, ball, 3, seed=1)
    first = result.prompts[0]
    assert first["kind"] == "slice_mask" and "start_dice" in first
    dices = [2 * (m & ball).sum() / (m.sum() + ball.sum()) for m in result.masks]
    assert dices[-1] > first["start_dice"] and dices[-1] > 0.9


def test_edit_slice_needs_an_editing_engine() -> None:
    from tests.session.fakes import DiscPropagator

    vol, ball = _case()
    with pytest.raises(ConfigError, match="edits existing masks"):
        get_protocol("edit-slice")(Session(vol, DiscPropagator()), ball, 2)
    with pytest.raises(ConfigError, match="slice_mask"):
        get_protocol("edit-slice")(Session(vol, "classic"), ball, 2)
