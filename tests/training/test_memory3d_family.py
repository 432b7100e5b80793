"""memory3d training: window plans (runs of consecutive slices past the object's ends), samples and the
window loss (gradients reach the memory), on synthetic cached slices."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from voxsam.training.data import TrainCase  # noqa: E402
from voxsam.training.memory3d_config import Memory3DTrainConfig  # noqa: E402
from voxsam.training.memory3d_data import Window, make_window_plan, run_stride, split_runs, target_runs  # noqa: E402
from voxsam.training.slice2d_data import CachedSlice, Survey, Target, _pack  # noqa: E402


def _survey(n_slices: int = 30, lo: int = 10, hi: int = 19, source: str = "s", slice_mm: float = 3.0) -> Survey:
    case = TrainCase(source, "c1", (Path("img.nii.gz"),), Path("lab.nii.gz"), "CT")
    counts = {1: [(0, [0]), (0, [0]), (lo, [100] * (hi - lo + 1))]}
    return Survey("key", case, (64, 64, n_slices), (1.0, 1.0, slice_mm), 2, counts)


def test_runs_cover_the_object_and_its_ends() -> None:
    sv = _survey()
    t = Target("s", sv, 1, 2, sv.valid_slices(1, 2, 20), 12)
    starts = set()
    for seed in range(40):
        for run in target_runs(t, 12, 1, 3, np.random.default_rng(seed)):
            assert len(run) == 12 and run == list(range(run[0], run[0] + 12))
            assert run[0] >= 7 and run[-1] <= 22  # within 3 slices of the object's ends
            starts.add(run[0])
    assert min(starts) == 7 and max(starts) == 11
    items = make_window_plan([sv], {"s": 1.0}, 100, 12, 2, 3, 20, 0)
    assert 12 <= len(items) <= 24 and all(t.axis == 2 for t, _ in items)
    assert make_window_plan([sv], {"s": 1.0}, 11, 12, 1, 3, 20, 0) == []  # the budget holds no whole run


def test_runs_on_thin_slices_take_every_nth_slice_as_the_engines_walk() -> None:
    thin = _survey(120, 40, 79, slice_mm=0.625)
    assert run_stride(thin, 2, 2.5) == 4 and run_stride(thin, 2, None) == 1 and run_stride(_survey(), 2, 2.5) == 1
    t = Target("s", thin, 1, 2, thin.valid_slices(1, 2, 20), 8)
    for seed in range(40):
        for run in target_runs(t, 8, 1, 3, np.random.default_rng(seed), stride=4):
            assert run == list(range(run[0], run[0] + 29, 4))
            assert run[0] >= 40 - 12 and run[-1] <= 79 + 12  # within 3 steps of the object's ends
    items = make_window_plan([thin], {"s": 1.0}, 100, 8, 1, 3, 20, 0, step_mm=2.5)
    ks = [k for _, k in items]
    assert len(ks) == 8 and np.all(np.diff(ks) == 4)
    # two runs of different phases interleave in the sorted cache: they stay two windows
    cached = [type("C", (), {"emb_path": Path(f"case/a2_{k:04d}.npy")})() for k in sorted([10, 14, 18, 11, 15, 19])]
    runs = split_runs(cached, 4)  # type: ignore[arg-type]
    assert [[c.emb_path.stem for c in r] for r in runs] == [["a2_0010", "a2_0014", "a2_0018"], ["a2_0011", "a2_0015", "a2_0019"]]
    assert len(split_runs(cached, 1)) == 3  # type: ignore[arg-type]


def _window(tmp_path: Path, n: int = 6) -> Window:
    rng = np.random.default_rng(0)
    slices = []
    for k in range(n):
        emb = tmp_path / f"a2_{k:04d}.npy"
        np.save(emb, rng.normal(0, 1, (256, 64, 64)).astype(np.float16))
        masks = np.zeros((3, 40, 40), dtype=bool)
        for j, r in enumerate((k - 1, k, k + 1)):
            if 0 <= r < n - 1:  # the last slice is beyond the object
                masks[j, 10:30, 12:28 - r] = True
        box, bits = _pack(masks)
        slices.append(CachedSlice(emb, (40, 40), (256, 256), (1.0, 1.0), box, bits))
    return Window("s", "case", 2, 0, slices)


def test_window_samples_and_loss_reach_the_memory(tmp_path: Path) -> None:
    from voxsam.models.memory3d import build_memory3d
    from voxsam.training.memory3d_loss import WindowSamples, batch_loss, collate

    cfg = Memory3DTrainConfig.model_validate({
        "family": "memory3d", "data": {"sources": [{"name": "s", "path": str(tmp_path)}]},
        "window": {"lengths": [3]}, "run": {"out_dir": str(tmp_path / "run"), "steps": 1}})
    samples = WindowSamples({"s": [_window(tmp_path)]}, cfg)
    a, b = samples[3], samples[3]
    assert a["prompted"] == b["prompted"] and np.array_equal(a["emb"], b["emb"])  # a pure function of i
    assert a["emb"].shape == (3, 256, 64, 64) and a["target"].shape == (3, 256, 256)
    assert a["target"][a["prompted"]].any()
    torch.manual_seed(0)
    model = build_memory3d("litemedsam_mem", memory_pool=4, num_layers=1).train()
    loss, metrics = batch_loss(model, cfg, collate([samples[1]]), None)  # type: ignore[arg-type]
    assert torch.isfinite(loss) and {"dice_prompted", "dice_propagated", "bd", "srpp"} <= set(metrics)
    loss.backward()
    out_proj = [p for n, p in model.memory_attention.named_parameters() if p.grad is not None and p.grad.abs().sum() > 0]
    assert out_proj, "no gradient reached memory attention"
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in model.boundary_head.parameters())
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in model.srpp_head.parameters())


@pytest.mark.parametrize("freeze", [False, True])
def test_freeze_decoder_trains_only_the_memory(tmp_path: Path, freeze: bool) -> None:
    from voxsam.training.family import plain_parameter_groups
    from voxsam.training.memory3d_family import Memory3DFamily

    cfg = Memory3DTrainConfig.model_validate({
        "family": "memory3d", "model": {"pretrained": False, "freeze_decoder": freeze, "overrides": {"num_layers": 1}},
        "data": {"sources": [{"name": "s", "path": str(tmp_path)}]}, "run": {"out_dir": str(tmp_path / "run"), "steps": 1}})
    model = Memory3DFamily().build(cfg)
    trains = {n.split(".")[0]: p.requires_grad for n, p in model.named_parameters()}
    assert trains["memory_attention"] and trains["memory_encoder"]
    assert trains["mask_decoder"] is not freeze and trains["prompt_encoder"] is not freeze
    grouped = sum(p.numel() for g in plain_parameter_groups(model, cfg.optim) for p in g["params"])
    decoder = sum(p.numel() for n, p in model.named_parameters() if n.startswith(("mask_decoder.", "prompt_encoder.")))
    assert grouped == sum(p.numel() for p in model.parameters()) - (decoder if freeze else 0)


def test_encoder_tail_comes_from_the_config_or_the_init_file(tmp_path: Path) -> None:
    from voxsam.errors import ConfigError
    from voxsam.models.memory3d import build_memory3d, save_memory3d
    from voxsam.training.memory3d_family import Memory3DFamily, encoder_tail

    tail = {"image_encoder.neck.0.weight": torch.full((4, 4, 1, 1), 0.5)}
    decoder = {k: v for k, v in build_memory3d("litemedsam_mem", num_layers=1).state_dict().items()
               if k.startswith(("prompt_encoder.", "mask_decoder."))}
    torch.save({**decoder, **tail}, tmp_path / "slice2d.pt")

    def config(**model: object) -> Memory3DTrainConfig:
        return Memory3DTrainConfig.model_validate({
            "family": "memory3d", "model": {"overrides": {"num_layers": 1}, **model},
            "data": {"sources": [{"name": "s", "path": str(tmp_path)}]}, "run": {"out_dir": str(tmp_path / "run"), "steps": 1}})

    assert encoder_tail(config()) is None
    got = encoder_tail(config(encoder_tail=str(tmp_path / "slice2d.pt")))
    assert got is not None and torch.equal(got["image_encoder.neck.0.weight"], tail["image_encoder.neck.0.weight"])
    with pytest.raises(ConfigError, match="pretrained"):
        encoder_tail(config(encoder_tail=str(tmp_path / "slice2d.pt"), pretrained=False))
    # a run started from a memory3d file keeps that file's tail, and the model carries it into its own file
    model = build_memory3d("litemedsam_mem", num_layers=1)
    model.encoder_tail = got
    save_memory3d(model, tmp_path / "m.pt")
    built = Memory3DFamily().build(config(init=str(tmp_path / "m.pt")))
    assert built.encoder_tail is not None and torch.equal(built.encoder_tail["image_encoder.neck.0.weight"], tail["image_encoder.neck.0.weight"])


def test_encoder_tail_path_is_relative_to_the_yaml_file(tmp_path: Path) -> None:
    import yaml

    from voxsam.training.load import load_config

    (tmp_path / "cfgs").mkdir()
    for value, want in (("../tails/slice2d.pt", str(tmp_path / "cfgs" / "../tails/slice2d.pt")), ("bundled", "bundled")):
        raw = {"family": "memory3d", "model": {"encoder_tail": value},
               "data": {"sources": [{"name": "s", "path": "../data"}]}, "run": {"out_dir": "run", "steps": 1}}
        (tmp_path / "cfgs" / "m.yaml").write_text(yaml.safe_dump(raw))
        assert load_config(tmp_path / "cfgs" / "m.yaml").model.encoder_tail == want
