"""The sam3d engine: crop geometry, embedding cache, window extension, Session integration."""
from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pytest

torch = pytest.importorskip("torch")
import torch.nn.functional as F  # noqa: E402

from tests.conftest import oblique_affine  # noqa: E402
from voxsam.engines.sam3d import Sam3DEngine  # noqa: E402
from voxsam.errors import ConfigError, PromptError  # noqa: E402
from voxsam.io import Volume  # noqa: E402
from voxsam.session import Session  # noqa: E402


class BallModel(torch.nn.Module):
    """Stands in for Sam3D: the mask is a ball of `radius` crop voxels around the first positive point,
    or (slab=True) everything within `radius` of that point along axes 1 and 2 (touches the axis-0 faces)."""

    def __init__(self, size: int = 32, radius: float = 5.0, slab: bool = False) -> None:
        super().__init__()
        self.config = SimpleNamespace(image_size=size, box_prompts=False)
        self.radius, self.slab, self.encodes = radius, slab, 0

    def encode(self, image, dtype=None):
        self.encodes += 1
        self.dtype = dtype
        return image.mean().reshape(1, 1, 1, 1, 1)

    def decode(self, emb, points, labels, mask_input=None, boxes=None, multimask=False):
        n = self.config.image_size // 4
        idx = torch.stack(torch.meshgrid(*[torch.arange(n) * 4 + 1.5] * 3, indexing="ij"), -1)
        p = points[0][labels[0] == 1][0]
        d = idx - p
        dist = d[..., 1:].norm(dim=-1) if self.slab else d.norm(dim=-1)
        return (self.radius - dist)[None, None], torch.ones(1, 1)

    def upscale_logits(self, low):
        return F.interpolate(low, size=self.config.image_size, mode="trilinear", align_corners=False)


def _volume(affine=None, shape=(40, 36, 30), modality="MR") -> Volume:
    arr = np.random.default_rng(0).normal(100, 10, size=shape).astype(np.float32)
    return Volume(arr, oblique_affine(spacing=(1.5, 1.5, 1.5)) if affine is None else affine, modality=modality)


@pytest.mark.parametrize("affine", [None, np.diag([-1.5, -1.5, 1.5, 1.0]), np.diag([0.75, 1.5, 3.0, 1.0])])
def test_mask_lands_on_the_clicked_voxel(affine) -> None:
    vol = _volume(affine)
    engine = Sam3DEngine(model=BallModel(size=32, radius=4.0), spacing=1.5)
    s = Session(vol, engine)
    click = (20.0, 15.0, 12.0)
    mask = s.add_point(click)
    assert mask.shape == vol.shape and mask.dtype == np.uint8 and mask.sum() > 20
    centroid_mm = vol.voxel_to_world(np.argwhere(mask).mean(0))
    assert np.linalg.norm(centroid_mm - vol.voxel_to_world(np.array(click))) < 1.6  # within about one voxel
    assert mask[20, 15, 12] == 1


def test_embedding_is_cached_and_undo_redo() -> None:
    model = BallModel()
    s = Session(_volume(), Sam3DEngine(model=model))
    first = s.add_point((20, 15, 12)).copy()
    second = s.add_point((22, 16, 12), positive=False)
    assert model.encodes == 1  # the second click only ran the decoder
    assert s.undo() and np.array_equal(s.mask, first)
    assert s.redo() and np.array_equal(s.mask, second)


def test_window_extension_follows_the_mask_and_is_bounded() -> None:
    vol = _volume(np.diag([1.5, 1.5, 1.5, 1.0]), shape=(120, 30, 30))
    one = Session(vol, Sam3DEngine(model=BallModel(size=32, radius=4.0, slab=True), max_windows=1)).add_point((60, 15, 15))
    model = BallModel(size=32, radius=4.0, slab=True)
    many = Session(vol, Sam3DEngine(model=model, max_windows=4)).add_point((60, 15, 15))
    extent = lambda m: np.ptp(np.nonzero(m.any(axis=(1, 2)))[0]) + 1  # noqa: E731
    assert extent(one) == 32
    assert extent(many) == 32 + 3 * 16  # three more half-shifted windows
    assert model.encodes == 4


def test_needs_a_prompt_and_weights(tmp_path) -> None:
    engine = Sam3DEngine(model=BallModel())
    prepared = engine.prepare(_volume())
    from voxsam.prompts import PromptSet

    with pytest.raises(PromptError):
        engine.predict(prepared, PromptSet(), None)
    with pytest.raises(ConfigError):
        Sam3DEngine(max_windows=0, model=BallModel())
    with pytest.raises(ConfigError, match="precision"):
        Sam3DEngine(precision="float16", model=BallModel())
    with pytest.raises(ConfigError, match="CPU only"):
        Sam3DEngine(precision="int8", device="cuda", model=BallModel())


def test_precision_reaches_the_encoder() -> None:
    model = BallModel()
    Session(_volume(), Sam3DEngine(model=model, precision="int8")).add_point((20, 15, 12))
    assert model.dtype == "int8"
    Session(_volume(), Sam3DEngine(model=model)).add_point((20, 15, 12))
    assert model.dtype is None  # the model config's compute_dtype decides


def test_tiny_model_end_to_end() -> None:
    from voxsam.models.sam3d import build_sam3d

    torch.manual_seed(0)
    engine = Sam3DEngine(model=build_sam3d("tiny"))
    vol = _volume(modality="CT")
    s = Session(vol, engine)
    s.add_point((20, 15, 12))
    s.add_point((5, 5, 5), positive=False)
    assert s.mask.shape == vol.shape and engine.encoder_calls == 1
    with pytest.raises(PromptError):
        s.add_point((float("nan"), 1, 1))
    with pytest.raises(PromptError):
        s.add_point((400, 1, 1))
