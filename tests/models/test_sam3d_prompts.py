"""SAM-Med3D prompt encoding: box prompts (this project's addition) and PromptError on bad input."""
from __future__ import annotations

import math

import pytest
import torch

from voxsam.errors import PromptError
from voxsam.models.sam3d import Sam3DConfig, build_sam3d

from .sam3d_helpers import fill_random, one_thread  # noqa: F401

pytestmark = pytest.mark.usefixtures("one_thread")

CFG = Sam3DConfig(image_size=64, patch_size=16, encoder_embed_dim=32, encoder_depth=2, encoder_num_heads=2,
                  encoder_global_attn_indexes=(1,), window_size=7, prompt_embed_dim=48, decoder_mlp_dim=64)


@pytest.fixture(scope="module")
def model():
    return fill_random(build_sam3d(CFG), seed=7).eval()


@pytest.fixture(scope="module")
def emb(model):
    with torch.inference_mode():
        return model.encode(torch.randn(2, 1, 64, 64, 64, generator=torch.Generator().manual_seed(0)))


def _pe(model, xyz):
    """Positional encoding of voxel coordinates (B, N, 3), by the spec formula."""
    g = model.prompt_encoder.pe_layer.positional_encoding_gaussian_matrix
    c = (torch.as_tensor(xyz, dtype=torch.float32) + 0.5) / CFG.image_size
    f = 2 * math.pi * ((2 * c - 1) @ g)
    return torch.cat([f.sin(), f.cos(), f.sin()], -1)


def test_point_tokens_and_padding(model):
    pe = model.prompt_encoder
    pts = torch.tensor([[[10.0, 20.0, 30.0], [5.0, 6.0, 7.0], [1.0, 2.0, 3.0]]])
    lab = torch.tensor([[1, 0, -1]])
    with torch.inference_mode():
        sparse, dense = pe(pts, lab)
    assert sparse.shape == (1, 4, 48) and dense.shape == (1, 48, 4, 4, 4)
    ref = _pe(model, pts)
    torch.testing.assert_close(sparse[0, 0], ref[0, 0] + pe.point_embeddings[1].weight[0])
    torch.testing.assert_close(sparse[0, 1], ref[0, 1] + pe.point_embeddings[0].weight[0])
    torch.testing.assert_close(sparse[0, 2], pe.not_a_point_embed.weight[0])
    torch.testing.assert_close(sparse[0, 3], pe.not_a_point_embed.weight[0])  # appended padding point
    torch.testing.assert_close(dense, pe.no_mask_embed.weight.reshape(1, 48, 1, 1, 1).expand(1, 48, 4, 4, 4))


def test_dense_pe_axis_swap(model):
    pe = model.prompt_encoder
    dense = pe.get_dense_pe()  # (1, P, n, n, n); dense[:, i, j, k] = PE of voxel (16j+7.5, 16i+7.5, 16k+7.5)
    i, j, k = 1, 3, 2
    want = _pe(model, [[[16 * j + 7.5, 16 * i + 7.5, 16 * k + 7.5]]])[0, 0]
    torch.testing.assert_close(dense[0, :, i, j, k], want)


def test_box_prompts(model, emb):
    pe = model.prompt_encoder
    box = torch.tensor([[[10.0, 12.0, 14.0], [40.0, 42.0, 44.0]]])
    with torch.inference_mode():
        sparse, _ = pe(boxes=box)
        assert sparse.shape == (1, 2, 48)  # no padding point with a box
        torch.testing.assert_close(sparse[0], _pe(model, box)[0] + pe.box_corner_embed.weight)
        pts, lab = torch.tensor([[[20.0, 20.0, 20.0]]]), torch.tensor([[1]])
        sparse2, _ = pe(pts, lab, boxes=box)
        assert sparse2.shape == (1, 3, 48)  # point, then the two corners; no padding point
        torch.testing.assert_close(sparse2[:, 1:], sparse)
        low, iou = model.decode(emb[:1], pts, lab, boxes=box, multimask=True)
        assert low.shape == (1, 3, 16, 16, 16) and iou.shape == (1, 3)
        low, iou = model.decode(emb[:1], boxes=box)
        assert low.shape == (1, 1, 16, 16, 16)
    no_box = build_sam3d(CFG.replace(box_prompts=False)).eval()
    assert not any("box" in k for k in no_box.state_dict())
    with pytest.raises(PromptError, match="box"):
        no_box.prompt_encoder(boxes=box)


def test_batch_and_broadcast(model, emb):
    pts = torch.tensor([[[10.0, 20.0, 30.0]], [[30.0, 20.0, 10.0]]])
    lab = torch.tensor([[1], [1]])
    with torch.inference_mode():
        both, _ = model.decode(emb, pts, lab)
        one, _ = model.decode(emb[1:], pts[1:], lab[1:])
        torch.testing.assert_close(both[1:], one, rtol=0, atol=1e-5)
        shared, _ = model.decode(emb[:1], pts, lab)  # one image, two prompts
        assert shared.shape == (2, 1, 16, 16, 16)
        # float labels with integral values and list inputs are accepted
        low, _ = model.decode(emb[:1], [[[1, 2, 3]]], torch.tensor([[1.0]]))
        assert low.shape == (1, 1, 16, 16, 16)


@pytest.mark.parametrize("kwargs, match", [
    (dict(points=torch.tensor([[[float("nan"), 1.0, 2.0]]]), labels=torch.tensor([[1]])), "NaN"),
    (dict(points=torch.tensor([[[float("inf"), 1.0, 2.0]]]), labels=torch.tensor([[1]])), "NaN or infinite"),
    (dict(points=torch.tensor([[[1.0, 1.0, 2.0]]]), labels=torch.tensor([[2]])), "labels must be"),
    (dict(points=torch.tensor([[[1.0, 1.0, 2.0]]]), labels=torch.tensor([[0.5]])), "labels must be"),
    (dict(points=torch.tensor([[[1.0, 1.0, 2.0]]]), labels=torch.tensor([[1, 1]])), "does not match"),
    (dict(points=torch.tensor([[1.0, 1.0, 2.0]]), labels=torch.tensor([1])), r"\(B, N, 3\)"),
    (dict(points=torch.tensor([[[1.0, 1.0]]]), labels=torch.tensor([[1]])), r"\(B, N, 3\)"),
    (dict(points=torch.tensor([[[1.0, 1.0, 2.0]]]), labels=None), "together"),
    (dict(points=None, labels=torch.tensor([[1]])), "together"),
    (dict(points="abc", labels=torch.tensor([[1]])), "points"),
    (dict(boxes=torch.tensor([[1.0, 2.0, 3.0]])), "boxes must have shape"),
    (dict(boxes=torch.tensor([[[1.0, 2.0, float("nan")], [4.0, 5.0, 6.0]]])), "NaN"),
    (dict(mask_input=torch.zeros(1, 1, 8, 8, 8)), "mask_input must have shape"),
    (dict(mask_input=torch.full((1, 1, 16, 16, 16), float("nan"))), "NaN"),
    (dict(points=torch.zeros(2, 1, 3), labels=torch.ones(2, 1), mask_input=torch.zeros(1, 1, 16, 16, 16)),
     "batch sizes differ"),
])
def test_bad_prompts_raise_prompt_error(model, emb, kwargs, match):
    with torch.inference_mode():
        with pytest.raises(PromptError, match=match):
            model.decode(emb[:1], **kwargs)


def test_bad_embeddings_raise_prompt_error(model, emb):
    with torch.inference_mode():
        with pytest.raises(PromptError, match="embeddings"):
            model.decode(emb[:, :8], torch.zeros(1, 1, 3), torch.ones(1, 1))
        with pytest.raises(PromptError, match="batch"):
            model.decode(emb, torch.zeros(3, 1, 3), torch.ones(3, 1))
