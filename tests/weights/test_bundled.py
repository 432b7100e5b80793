"""The bundled sam3d weights: shipped, small, loadable without trust, the engines' default, and useful."""
from __future__ import annotations

import numpy as np

from voxsam.engines.sam3d import BUNDLED, Sam3DEngine


def test_bundled_weights_are_shipped_and_small():
    assert BUNDLED.is_file(), "src/voxsam/weights/sam3d_small.pt is missing"
    assert BUNDLED.stat().st_size <= 25 * 1024 * 1024
    assert (BUNDLED.parent / "MODEL_CARD.md").is_file()


def test_engine_defaults_to_bundled_weights():
    from voxsam.models.sam3d import load_sam3d_checkpoint

    engine = Sam3DEngine()  # no checkpoint: the bundled file, loaded weights-only (no trust needed)
    _, report = load_sam3d_checkpoint(BUNDLED)
    assert engine.size == 128 and report.config.encoder_embed_dim == 256
    assert not report.newly_initialised  # box embeddings were trained too


def test_bundled_model_segments_a_bright_ball_from_one_click():
    """A 4 cm bright ball in a noisy darker block: one click in it gives a blob on the ball, not the block.

    The bar is the early weights' (MODEL_CARD.md: they over-segment small structures and miss dark ones);
    raise it as the weights improve.
    """
    from voxsam.io.volume import Volume
    from voxsam.session import Session

    rng = np.random.default_rng(0)
    shape = (96, 96, 96)
    g = np.indices(shape, dtype=np.float32)
    ball = ((g - 48) ** 2).sum(0) <= 14**2  # radius 14 voxels = 21 mm at 1.5 mm
    img = np.where(ball, 300.0, 100.0) + rng.normal(0, 10, shape)
    vol = Volume(img.astype(np.float32), np.diag([1.5, 1.5, 1.5, 1.0]), modality="MR")
    mask = Session(vol, Sam3DEngine()).add_point((48, 48, 48)) > 0
    dice = 2 * (mask & ball).sum() / (mask.sum() + ball.sum())
    assert dice > 0.6, dice
    assert mask.sum() < 0.05 * mask.size
