"""SAM-Med3D model: equivalence with the reference implementation's golden outputs, the exactness
of the fast attention, key/shape compatibility with the released checkpoint, presets, bf16.

Run ``pytest tests/models -q -s`` to see the measured max errors.
"""
from __future__ import annotations

import time

import pytest
import torch

from voxsam.models import MODEL_BUILDERS, build_model
from voxsam.models.sam3d import BOX_PROMPT_KEYS, PRESETS, Sam3DConfig, build_sam3d, get_config
from voxsam.errors import ConfigError, InvalidImageError

from .sam3d_helpers import (MEASURED, dice, fill_random, golden, make_state_dict, max_err,
                            one_thread, upsampled_fg, vit_b_keys, vit_b_spec)

TOL = 1e-4
pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def tiny_golden_model():
    g = golden()
    model = build_sam3d(Sam3DConfig.from_dict(g["config"]))
    sd = make_state_dict()(g["keys"], g["seed"])
    missing, unexpected = model.load_state_dict(sd, strict=False)
    assert list(missing) == list(BOX_PROMPT_KEYS) and not unexpected
    return model.eval(), g


def _micro(**kw) -> Sam3DConfig:
    """A very small config: 64^3 input, 4^3 tokens, 7^3 windows (still padded, like the released one)."""
    base = dict(image_size=64, patch_size=16, encoder_embed_dim=32, encoder_depth=2, encoder_num_heads=2,
                encoder_global_attn_indexes=(1,), window_size=7, prompt_embed_dim=48, decoder_mlp_dim=64)
    base.update(kw)
    return Sam3DConfig(**base)


# ---------------------------------------------------------------------------- golden equivalence
def _run_cases(model, emb, g):
    """Yield (case name, step index, errors dict, fg check) for every golden step."""
    for case in g["cases"]:
        pts_all = torch.tensor(case["points"], dtype=torch.float32)[None]
        lab_all = torch.tensor(case["labels"], dtype=torch.long)[None]
        prev = None
        for i, st in enumerate(case["steps"]):
            k = int(st["n_points"]) if case["sequential"] else pts_all.shape[1]
            if case["sequential"]:
                assert k == i + 1
            if prev is not None and case["sequential"]:
                mask_in = prev
            elif case["mask"] == "zeros":
                mask_in = torch.zeros(1, 1, 32, 32, 32)
            else:
                assert case["mask"] == "none"
                mask_in = None
            pts, lab = pts_all[:, :k], lab_all[:, :k]
            sparse, dense = model.prompt_encoder(pts, lab, None, mask_in)
            low, iou = model.decode(emb, pts, lab, mask_input=mask_in, multimask=case["multimask"])
            errs = {
                "sparse_embeddings": max_err(sparse, st["sparse_embeddings"]),
                "dense_embeddings": max_err(dense, st["dense_embeddings"]),
                "low_res_masks": max_err(low, st["low_res_masks"]),
                "iou_predictions": max_err(iou, st["iou_predictions"]),
            }
            yield case, i, st, errs, low
            prev = low


@pytest.mark.parametrize("mode", ["fast", "reference"])
def test_golden_tiny_equivalence(tiny_golden_model, mode, record_property):
    model, g = tiny_golden_model
    model.attention = mode
    try:
        with torch.inference_mode():
            t0 = time.perf_counter()
            emb = model.encode(g["image"].float())
            enc_s = time.perf_counter() - t0
            worst = {"image_embeddings": max_err(emb, g["image_embeddings"]),
                     "dense_pe": max_err(model.prompt_encoder.get_dense_pe(), g["dense_pe"])}
            n_steps = 0
            for case, i, st, errs, low in _run_cases(model, emb, g):
                n_steps += 1
                for k, v in errs.items():
                    worst[k] = max(worst.get(k, 0.0), v)
                    assert v <= TOL, f"{case['name']} step {i}: {k} max error {v:.3g}"
                fg = st.get("foreground_voxels")
                if fg is not None:
                    mine = upsampled_fg(low)
                    gold_up = torch.nn.functional.interpolate(st["low_res_masks"], size=128, mode="trilinear",
                                                              align_corners=False)
                    assert upsampled_fg(st["low_res_masks"]) == fg  # the counting rule itself
                    # voxels whose golden logit is within the logit tolerance may flip either way
                    band = (gold_up.abs() <= TOL).flatten(2).sum(-1)
                    for c_mine, c_gold, b in zip(mine[0], fg[0], band[0].tolist()):
                        assert abs(c_mine - c_gold) <= b, (case["name"], i, c_mine, c_gold, b)
                    worst["foreground_voxels_abs_diff"] = max(
                        worst.get("foreground_voxels_abs_diff", 0),
                        max(abs(a - b) for a, b in zip(mine[0], fg[0])))
            assert n_steps == sum(len(c["steps"]) for c in g["cases"])
    finally:
        model.attention = "fast"
    for k, v in worst.items():
        MEASURED[f"golden/{mode}/{k}"] = v
        record_property(f"max_err_{k}", v)
    assert worst["image_embeddings"] <= TOL and worst["dense_pe"] <= TOL
    print(f"\n[golden tiny, attention={mode}] encode {enc_s:.2f}s; max abs errors: "
          + ", ".join(f"{k}={v:.2e}" for k, v in worst.items()))


def test_golden_keys_and_config(tiny_golden_model):
    model, g = tiny_golden_model
    keys = [(k, list(v.shape)) for k, v in model.state_dict().items() if k not in BOX_PROMPT_KEYS]
    assert keys == [(k, list(s)) for k, s in g["keys"]]
    assert Sam3DConfig.from_dict(g["config"]) == Sam3DConfig.preset("tiny")
    cfg = Sam3DConfig.preset("tiny").to_dict()
    assert all(cfg[k] == v for k, v in g["config"].items())


def test_bf16_masks_match_fp32(tiny_golden_model):
    model, g = tiny_golden_model
    with torch.inference_mode():
        img = g["image"].float()
        e32 = model.encode(img)
        e16 = model.encode(img, dtype="bfloat16")
        assert e16.dtype == torch.float32 and e16.shape == e32.shape
        worst = 1.0
        for case in g["cases"]:
            pts = torch.tensor(case["points"], dtype=torch.float32)[None]
            lab = torch.tensor(case["labels"])[None]
            a, _ = model.decode(e32, pts, lab, multimask=case["multimask"])
            b, _ = model.decode(e16, pts, lab, multimask=case["multimask"])
            ua, ub = model.upscale_logits(a) > 0, model.upscale_logits(b) > 0
            for ch in range(ua.shape[1]):
                worst = min(worst, dice(ua[:, ch], ub[:, ch]))
    MEASURED["bf16/tiny/min_dice_vs_fp32"] = worst
    MEASURED["bf16/tiny/embedding_max_abs_diff"] = max_err(e16, e32)
    assert worst >= 0.99, worst


# ---------------------------------------------------------------------------- fast == reference
@pytest.mark.parametrize("rel_pos, use_rel_pos", [("released", True), ("decomposed", True),
                                                   ("released", False)])
def test_fast_equals_reference_micro(rel_pos, use_rel_pos):
    model = fill_random(build_sam3d(_micro(rel_pos=rel_pos, use_rel_pos=use_rel_pos)), seed=3).eval()
    x = torch.randn(2, 1, 64, 64, 64, generator=torch.Generator().manual_seed(1))
    with torch.inference_mode():
        fast = model.set_attention("fast").encode(x)
        ref = model.set_attention("reference").encode(x)
        single = model.set_attention("fast").encode(x[1:])
    assert max_err(fast, ref) <= TOL
    assert max_err(fast[1:], single) <= TOL  # batch items are independent


def test_fast_attention_gradients_match_reference():
    model = fill_random(build_sam3d(_micro()), seed=5)
    x = torch.randn(1, 1, 64, 64, 64, generator=torch.Generator().manual_seed(2))
    grads = {}
    for mode in ("fast", "reference"):
        model.zero_grad()
        model.set_attention(mode)
        low, iou = model(x, torch.tensor([[[20.0, 30.0, 40.0]]]), torch.tensor([[1]]))
        (low.square().mean() + iou.sum()).backward()
        grads[mode] = {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}
    assert grads["fast"].keys() == grads["reference"].keys()
    for n in grads["fast"]:
        scale = max(1.0, float(grads["reference"][n].abs().max()))
        assert max_err(grads["fast"][n], grads["reference"][n]) <= 1e-4 * scale, n


@pytest.mark.parametrize("multimask", [False, True])
def test_fused_decoder_paths_equal_modules(multimask):
    """Channels-last matrix-product forms of mask_downscaling / output_upscaling == the nn modules."""
    model = fill_random(build_sam3d(_micro()), seed=9).eval()
    g = torch.Generator().manual_seed(4)
    emb = torch.randn(2, 48, 4, 4, 4, generator=g)
    pts, lab = torch.rand(2, 3, 3, generator=g) * 64, torch.tensor([[1, 0, 1], [1, 1, -1]])
    mask_in = torch.randn(2, 1, 16, 16, 16, generator=g)
    out = {}
    with torch.inference_mode():
        for fused in (True, False):
            model.mask_decoder.fused_upscaling = fused
            model.prompt_encoder.fused_downscaling = fused
            out[fused] = (model.prompt_encoder(pts, lab, None, mask_in)[1],
                          *model.decode(emb, pts, lab, mask_input=mask_in, multimask=multimask))
    for a, b in zip(out[True], out[False]):
        assert max_err(a, b) <= 1e-5


@pytest.mark.slow
def test_vit_b_ori_fast_equals_reference():
    """Full released configuration, random weights from make_state_dict(json keys, seed)."""
    keys = vit_b_keys()
    with torch.device("meta"):
        model = build_sam3d("vit_b_ori", box_prompts=False)
    model.load_state_dict(make_state_dict()(keys, 2024), assign=True)
    model.eval()
    x = torch.randn(1, 1, 128, 128, 128, generator=torch.Generator().manual_seed(0))
    with torch.inference_mode():
        t0 = time.perf_counter()
        fast = model.set_attention("fast").encode(x)
        t1 = time.perf_counter()
        ref = model.set_attention("reference").encode(x)
        t2 = time.perf_counter()
        low_f, iou_f = model.decode(fast, torch.tensor([[[64.0, 60.0, 70.0]]]), torch.tensor([[1]]))
        low_r, iou_r = model.decode(ref, torch.tensor([[[64.0, 60.0, 70.0]]]), torch.tensor([[1]]))
    err = max_err(fast, ref)
    MEASURED["vit_b_ori/fast_vs_reference/image_embeddings"] = err
    MEASURED["vit_b_ori/fast_vs_reference/low_res_masks"] = max_err(low_f, low_r)
    print(f"\n[vit_b_ori] fast {t1 - t0:.2f}s, reference {t2 - t1:.2f}s, embeddings max abs diff {err:.2e}, "
          f"low-res logits {max_err(low_f, low_r):.2e}, |emb| max {float(ref.abs().max()):.2f}")
    assert err <= TOL
    assert max_err(low_f, low_r) <= TOL and max_err(iou_f, iou_r) <= TOL


# ---------------------------------------------------------------------------- keys, presets, registry
def test_vit_b_ori_state_dict_matches_released_keys():
    spec = vit_b_spec()
    with torch.device("meta"):
        model = build_sam3d("vit_b_ori")
    sd = model.state_dict()
    mine = [(k, list(v.shape)) for k, v in sd.items() if k not in BOX_PROMPT_KEYS]
    assert mine == vit_b_keys()  # same names, shapes and order
    assert [k for k in sd if k in BOX_PROMPT_KEYS] == list(BOX_PROMPT_KEYS)
    assert tuple(sd["prompt_encoder.box_corner_embed.weight"].shape) == (2, 384)
    per = {}  # parameters only: the PE gaussian matrix is a buffer (in the state dict, not counted)
    for k, v in model.named_parameters():
        if k not in BOX_PROMPT_KEYS:
            per[k.split(".")[0]] = per.get(k.split(".")[0], 0) + v.numel()
    assert per == spec["params_by_module"]
    assert sum(per.values()) == spec["total_params"]
    with torch.device("meta"):
        plain = build_sam3d("vit_b_ori", box_prompts=False)
    assert [(k, list(v.shape)) for k, v in plain.state_dict().items()] == vit_b_keys()


@pytest.mark.parametrize("name", sorted(PRESETS))
def test_preset_shapes(name):
    cfg = Sam3DConfig.preset(name)
    assert Sam3DConfig.from_dict(cfg.to_dict()) == cfg
    n, m, p = cfg.grid_size, cfg.mask_size, cfg.prompt_embed_dim
    if name == "vit_b_ori":  # ~100M parameters: shapes on the meta device, no allocation
        with torch.device("meta"):
            model = build_sam3d(name)
        dev = "meta"
    else:
        model = build_sam3d(name).eval()
        dev = "cpu"
    with torch.inference_mode():
        emb = model.image_encoder(torch.zeros(1, 1, cfg.image_size, cfg.image_size, cfg.image_size, device=dev))
        assert tuple(emb.shape) == (1, p, n, n, n)
        pts = torch.zeros(1, 2, 3, device=dev)
        lab = torch.ones(1, 2, dtype=torch.long, device=dev)
        sparse, dense = model.prompt_encoder(pts, lab, None, torch.zeros(1, 1, m, m, m, device=dev))
        assert tuple(sparse.shape) == (1, 3, p) and tuple(dense.shape) == (1, p, n, n, n)
        low, iou = model.mask_decoder(emb, model.prompt_encoder.get_dense_pe(), sparse, dense, True)
        assert tuple(low.shape) == (1, 3, m, m, m) and tuple(iou.shape) == (1, 3)
        if dev == "cpu":
            low, iou = model.decode(emb, pts, lab)
            assert tuple(low.shape) == (1, 1, m, m, m) and tuple(iou.shape) == (1, 1)


def test_config_errors_and_registry():
    with pytest.raises(ConfigError):
        Sam3DConfig.preset("vit_h")
    with pytest.raises(ConfigError):
        Sam3DConfig.from_dict({"image_size": 128, "bogus": 1})
    with pytest.raises(ConfigError):
        Sam3DConfig(prompt_embed_dim=50)
    with pytest.raises(ConfigError):
        Sam3DConfig(window_size=4)  # several windows: not the released architecture
    with pytest.raises(ConfigError):
        Sam3DConfig(attention="flash")
    assert get_config("tiny") == Sam3DConfig.preset("tiny")
    assert get_config({"encoder_depth": 2, "encoder_global_attn_indexes": [1]}).encoder_depth == 2
    assert set(MODEL_BUILDERS) >= {"sam3d"}
    m = build_model("sam3d", "tiny", attention="reference")
    assert m.attention == "reference" and m.config.encoder_embed_dim == 96
    with pytest.raises(ConfigError):
        build_model("nope")


def test_encode_rejects_bad_images():
    model = build_sam3d(_micro()).eval()
    with torch.inference_mode():
        with pytest.raises(InvalidImageError):
            model.encode(torch.zeros(1, 1, 32, 32, 32))
        with pytest.raises(InvalidImageError):
            model.encode(torch.zeros(1, 64, 64, 64))
        bad = torch.zeros(1, 1, 64, 64, 64)
        bad[0, 0, 1, 2, 3] = float("nan")
        with pytest.raises(InvalidImageError):
            model.encode(bad)


def test_zz_report_measured():
    """Print everything the tests above measured (pytest -s)."""
    if MEASURED:
        print("\nmeasured max errors:\n" + "\n".join(f"  {k}: {v:.3e}" for k, v in sorted(MEASURED.items())))
