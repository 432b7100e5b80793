"""Reduced-precision encoding of SAM-Med3D: ``compute_dtype="int8"`` (and its `Int8Linear` layers).

The int8 path must keep the 128^3 masks within Dice 0.99 of float32 for the same prompts.
"""
from __future__ import annotations

import pytest
import torch

from voxsam.errors import ConfigError
from voxsam.models.sam3d import Sam3DConfig, build_sam3d
from voxsam.models.sam3d.build import Int8Linear, fill_random_weights

from .sam3d_helpers import MEASURED, dice, golden, make_state_dict, max_err, one_thread  # noqa: F401

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def tiny_golden_model():
    g = golden()
    model = build_sam3d(Sam3DConfig.from_dict(g["config"]))
    model.load_state_dict(make_state_dict()(g["keys"], g["seed"]), strict=False)
    return model.eval(), g


def _masks(model, emb: torch.Tensor, points: torch.Tensor, labels: torch.Tensor,
           sequential: bool) -> list[torch.Tensor]:
    """128^3 boolean masks: one per click prefix with mask feedback (sequential) or one for all clicks.

    points: (1, N, 3), labels: (1, N) -> list of (1, 1, S, S, S).
    """
    if not sequential:
        return [model.upscale_logits(model.decode(emb, points, labels)[0]) > 0]
    out, prev = [], None
    for k in range(1, points.shape[1] + 1):
        prev, _ = model.decode(emb, points[:, :k], labels[:, :k], mask_input=prev)
        out.append(model.upscale_logits(prev) > 0)
    return out


def _min_dice(model, image: torch.Tensor, prompts: list[tuple[torch.Tensor, torch.Tensor, bool]]) -> float:
    """Smallest Dice between the float32 and int8 masks over all prompts."""
    with torch.inference_mode():
        e32, e8 = model.encode(image), model.encode(image, dtype="int8")
        worst = 1.0
        for pts, lab, seq in prompts:
            for a, b in zip(_masks(model, e32, pts, lab, seq), _masks(model, e8, pts, lab, seq)):
                worst = min(worst, dice(a, b))
    return worst


def test_int8_linear_is_close_and_per_token():
    lin = torch.nn.Linear(64, 48)
    fill_random_weights(lin, seed=1)
    q = Int8Linear(lin)
    x = torch.randn(3, 5, 64, generator=torch.Generator().manual_seed(0))
    x[0, 0] *= 1000.0  # one huge token must not cost the others their resolution
    with torch.inference_mode():
        ref, out = lin(x), q(x)
    assert out.shape == ref.shape and torch.equal(q.bias, lin.bias)
    rel = (out - ref).norm(dim=-1) / ref.norm(dim=-1)
    assert float(rel.max()) < 0.03, rel


def test_int8_golden_tiny_masks_match_fp32(tiny_golden_model):
    model, g = tiny_golden_model
    prompts = [(torch.tensor(c["points"], dtype=torch.float32)[None], torch.tensor(c["labels"])[None],
                bool(c["sequential"])) for c in g["cases"]]
    worst = _min_dice(model, g["image"].float(), prompts)
    MEASURED["int8/tiny/min_dice_vs_fp32"] = worst
    print(f"\n[golden tiny int8] min Dice vs fp32 {worst:.4f}")
    assert worst >= 0.99, worst


def test_int8_cache_follows_weights_and_mode(tiny_golden_model):
    model, g = tiny_golden_model
    img = g["image"].float()
    keys = list(model.state_dict())
    with torch.inference_mode():
        a = model.encode(img, dtype="int8")
        assert model._int8_encoder() is model._int8_encoder()  # built once
        ref = model.set_attention("reference").encode(img, dtype="int8")
        assert model._int8_encoder().attention == "reference"  # the int8 copy follows the attention switch
        model.set_attention("fast")
        # same maths; the ~1e-6 attention differences can flip int8 activation rounding (seen: 1.1e-2 on an
        # AVX-512 VNNI CPU, <1e-4 on AVX2), so the bound is int8 noise, not float noise
        assert max_err(a, ref) <= 0.02 * float(a.abs().max())
    assert list(model.state_dict()) == keys  # the int8 copy is no submodule
    w = model.image_encoder.blocks[-1].mlp.lin1.weight
    old = w.detach().clone()
    try:
        with torch.no_grad():
            w.mul_(0.5)
        with torch.inference_mode():
            b = model.encode(img, dtype="int8")
        assert max_err(a, b) > 1e-3  # rebuilt from the changed weights
    finally:
        with torch.no_grad():
            w.copy_(old)


def test_int8_api_and_errors(tiny_golden_model):
    model, g = tiny_golden_model
    cfg = Sam3DConfig.preset("tiny").replace(compute_dtype="int8")
    assert cfg.compute_dtype == "int8"
    with pytest.raises(ConfigError):
        Sam3DConfig.preset("tiny").replace(compute_dtype="float16")
    with pytest.raises(ValueError, match="dtype"):
        model.encode(g["image"].float(), dtype="float16")
    emb = model.encode(g["image"].float(), dtype="int8")  # grad mode on: no history, no error
    assert emb.dtype == torch.float32 and not emb.requires_grad
    n_int8 = sum(isinstance(m, Int8Linear) for m in model._int8_encoder().modules())
    assert n_int8 == 4 * (len(model.image_encoder.blocks) - len(model.image_encoder.blocks) // 2)


@pytest.mark.slow
@pytest.mark.parametrize("weights_seed", [0, 1])
def test_int8_vit_b_ori_masks_match_fp32(weights_seed):
    """Released configuration, random weights: 6 single clicks + one 5-click sequence with feedback."""
    with torch.device("meta"):
        model = build_sam3d("vit_b_ori")
    model = fill_random_weights(model.to_empty(device="cpu"), weights_seed).eval()
    g = torch.Generator().manual_seed(7)
    image = torch.randn(1, 1, 128, 128, 128, generator=g)
    one = torch.ones(1, 1, dtype=torch.long)
    prompts = [(torch.randint(32, 96, (1, 1, 3), generator=g).float(), one, False) for _ in range(6)]
    seq = torch.randint(32, 96, (1, 5, 3), generator=g).float()
    prompts.append((seq, torch.tensor([[1, 0, 1, 1, 0]]), True))
    worst = _min_dice(model, image, prompts)
    MEASURED[f"int8/vit_b_ori/seed{weights_seed}/min_dice_vs_fp32"] = worst
    print(f"\n[vit_b_ori int8, weights seed {weights_seed}] min Dice vs fp32 {worst:.4f}")
    assert worst >= 0.99, worst

