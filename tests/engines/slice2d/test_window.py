"""The object's CT window: lung windows tried for air-filled tissue, the best-rated one kept for the object."""
from __future__ import annotations

from typing import Any

import numpy as np
import pytest

pytest.importorskip("torch")

from tests.engines.slice2d.fake_sam2d import FakeSam2D  # noqa: E402
from voxsam.engines.slice2d import Slice2DEngine  # noqa: E402
from voxsam.engines.slice2d.window import LUNG_WINDOWS, candidate_windows, prompted_intensity  # noqa: E402
from voxsam.io.volume import Volume  # noqa: E402
from voxsam.session import Session  # noqa: E402

SOFT = (-160.0, 240.0)


class RatingFake(FakeSam2D):
    """The stand-in, but it rates a mask by whether it found anything (the real IoU head varies with the image)."""

    def decode(self, embeddings: Any, *args: Any, **kwargs: Any) -> Any:
        import torch

        logits, _ = super().decode(embeddings, *args, **kwargs)
        return logits, torch.tensor([[0.9 if bool((logits > 0).any()) else 0.05]])


def _chest(object_hu: float) -> tuple[Volume, np.ndarray]:
    """A CT: soft tissue (40 HU) around air (-1000 HU) holding a lung-like ball at `object_hu`."""
    shape = (48, 40, 20)
    grid = np.indices(shape).astype(float)
    ball = np.sqrt(((grid - np.array([24, 20, 10])[:, None, None, None]) ** 2).sum(0)) <= 6
    image = np.full(shape, 40.0, dtype=np.float32)
    image[6:42, 6:34, :] = -1000.0
    image[ball] = object_hu
    return Volume(image, np.diag([1.0, 1.0, 2.0, 1.0]), modality="CT"), ball


def _engine(**options: object) -> Slice2DEngine:
    options.setdefault("min_area_px", 1)
    options.setdefault("cross_views", False)
    options.setdefault("click_box_mm", (20.0,))
    options.setdefault("step_max_mm", None)  # every slice decided: the tests count encodings
    return Slice2DEngine(model=RatingFake(), **options)


def _dice(a: np.ndarray, b: np.ndarray) -> float:
    return float(2 * (a & b).sum() / (a.sum() + b.sum()))


def test_prompted_intensity_reads_the_mask_then_the_clicks_then_the_box_centre() -> None:
    display = np.zeros((20, 20), dtype=np.float32)
    display[:10] = -800.0
    mask = np.zeros((20, 20), dtype=bool)
    mask[15:, 15:] = True
    click, positive = np.array([[4.0, 4.0]]), np.array([1])
    assert prompted_intensity(display, click, positive, None, None) == -800.0
    display[4, 4] = -1000.0  # the clicked pixel itself, not its neighbourhood
    assert prompted_intensity(display, click, positive, None, None) == -1000.0
    display[4, 4] = -800.0
    assert prompted_intensity(display, click, positive, None, mask) == 0.0  # a mask wins
    assert prompted_intensity(display, click, np.array([0]), None, None) is None  # negative clicks say nothing
    assert prompted_intensity(display, None, None, np.array([0.0, 0.0, 7.0, 19.0]), None) == -800.0  # the box's central half


def test_candidate_windows_only_for_ct_darker_than_the_window() -> None:
    assert candidate_windows(True, SOFT, 40.0) == []
    assert candidate_windows(True, SOFT, 900.0) == []  # bone stays in the soft window (measured: docs/benchmarks.md)
    assert candidate_windows(False, SOFT, -850.0) == []
    assert candidate_windows(True, SOFT, None) == []
    assert candidate_windows(True, SOFT, -850.0) == [SOFT, *LUNG_WINDOWS]
    assert candidate_windows(True, SOFT, -1000.0) == []  # air: a lumen, whose object is its wall
    assert candidate_windows(True, SOFT, -300.0) == []  # darker than the window but not aerated lung


def test_an_air_filled_object_is_segmented_under_the_best_rated_lung_window_and_keeps_it() -> None:
    vol, ball = _chest(-600.0)  # black under the soft window; the stand-in sees it only under LUNG_WINDOWS[1]
    s = Session(vol, _engine())
    mask = s.add_point((24, 20, 10), axis=2).astype(bool)
    assert _dice(mask, ball) > 0.9
    prepared = s._prepared
    assert s._objects[1].engine_state["window"] == LUNG_WINDOWS[1]
    calls = prepared.encoder_calls
    s.add_point((24, 23, 10), axis=2)  # a second click: the kept window, no new choice and no new encoding
    assert prepared.encoder_calls == calls
    assert s._objects[1].engine_state["window"] == LUNG_WINDOWS[1]


def test_without_lung_windows_the_air_filled_object_is_not_seen() -> None:
    vol, ball = _chest(-600.0)
    s = Session(vol, _engine(lung_windows=False))
    assert not s.add_point((24, 20, 10), axis=2).any()
    assert s._objects[1].engine_state["window"] == SOFT


def test_soft_tissue_keeps_the_soft_window_with_no_extra_encoding() -> None:
    vol, ball = _chest(200.0)
    s = Session(vol, _engine())
    mask = s.add_point((24, 20, 10), axis=2).astype(bool)
    assert _dice(mask, ball) > 0.9
    assert s._objects[1].engine_state["window"] == SOFT
    plain = Session(vol, _engine(lung_windows=False))
    plain.add_point((24, 20, 10), axis=2)
    assert s._prepared.encoder_calls == plain._prepared.encoder_calls  # nothing tried, nothing encoded twice


def test_a_painted_air_filled_slice_chooses_the_window_the_model_redraws_it_under() -> None:
    vol, ball = _chest(-600.0)
    s = Session(vol, _engine())
    s.set_slice_mask(2, 10, ball[:, :, 10])
    assert s._objects[1].engine_state["window"] in LUNG_WINDOWS  # under the soft window it redraws nothing
    assert _dice(s.mask.astype(bool), ball) > 0.9
