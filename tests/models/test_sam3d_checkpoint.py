"""SAM-Med3D checkpoints: released training format (trust), plain state dicts, voxsam format, errors."""
from __future__ import annotations

import argparse
import logging
import os

import pytest
import torch

from voxsam.errors import CheckpointError, OutputPathError
from voxsam.models.sam3d import (BOX_PROMPT_KEYS, Sam3DConfig, build_sam3d, infer_config,
                                 load_sam3d_checkpoint, save_sam3d_checkpoint)

from .sam3d_helpers import fill_random, max_err, one_thread  # noqa: F401

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def tiny():
    return fill_random(build_sam3d("tiny"), seed=11).eval()


def _released_state(model):
    return {k: v.clone() for k, v in model.state_dict().items() if k not in BOX_PROMPT_KEYS}


def _outputs(model):
    g = torch.Generator().manual_seed(0)
    x = torch.randn(1, 1, 128, 128, 128, generator=g)
    with torch.inference_mode():
        emb = model.encode(x)
        low, iou = model.decode(emb, torch.tensor([[[60.0, 70.0, 64.0]]]), torch.tensor([[1]]))
    return emb, low, iou


def test_released_training_checkpoint_needs_trust(tmp_path, tiny, caplog):
    path = tmp_path / "sam_med3d_turbo.pth"
    torch.save({"epoch": 7, "model_state_dict": _released_state(tiny), "optimizer_state_dict": {},
                "lr_scheduler_state_dict": {}, "losses": [0.5], "dices": [0.8], "best_loss": 0.4,
                "best_dice": 0.81, "args": argparse.Namespace(lr=1e-4), "used_datas": ["x"]}, path)
    with pytest.raises(CheckpointError, match="pickled Python objects.*trust"):
        load_sam3d_checkpoint(path)
    with caplog.at_level(logging.WARNING):
        model, report = load_sam3d_checkpoint(path, trust=True)
    assert any("trusted" in r.getMessage() for r in caplog.records)
    assert report.source_format == "released-training" and report.unsafe_load
    assert report.config_source == "inferred" and report.config == Sam3DConfig.preset("tiny")
    assert report.newly_initialised == list(BOX_PROMPT_KEYS)
    assert report.loaded_keys == 204 and report.metadata["epoch"] == 7
    assert "newly initialised" in report.summary()
    box = model.prompt_encoder.box_corner_embed.weight
    assert 0 < float(box.detach().std()) < 0.05  # randn * 0.02
    for a, b in zip(_outputs(model), _outputs(tiny)):
        assert max_err(a, b) == 0.0
    # boxes work on a released checkpoint (with the newly initialised embeddings)
    with torch.inference_mode():
        emb = model.encode(torch.zeros(1, 1, 128, 128, 128))
        low, _ = model.decode(emb, boxes=torch.tensor([[[40.0, 40, 40], [80, 80, 80]]]))
    assert low.shape == (1, 1, 32, 32, 32)


def test_plain_state_dict_inferred_and_prefixed(tmp_path, tiny):
    path = tmp_path / "plain.pt"
    torch.save(_released_state(tiny), path)
    model, report = load_sam3d_checkpoint(path)  # weights-only: no trust needed
    assert report.source_format == "state-dict" and not report.unsafe_load
    assert report.config == Sam3DConfig.preset("tiny")
    assert max_err(_outputs(model)[1], _outputs(tiny)[1]) == 0.0
    wrapped = tmp_path / "wrapped.pt"
    torch.save({"state_dict": {f"module.{k}": v for k, v in _released_state(tiny).items()}}, wrapped)
    model2, report2 = load_sam3d_checkpoint(wrapped, config="tiny")
    assert report2.config_source == "argument"
    assert max_err(_outputs(model2)[0], _outputs(tiny)[0]) == 0.0


def test_voxsam_format_roundtrip_atomic(tmp_path, tiny):
    cfg = tiny.config.replace(rel_pos="released", attention="fast")
    path = save_sam3d_checkpoint(tiny, cfg, tmp_path / "model.pt")
    assert sorted(os.listdir(tmp_path)) == ["model.pt"]  # no temporary file left behind
    raw = torch.load(path, weights_only=True)
    assert raw["format"] == "voxsam.sam3d" and raw["config"] == cfg.to_dict()
    model, report = load_sam3d_checkpoint(path)
    assert report.source_format == "voxsam" and report.config_source == "file"
    assert report.config == cfg and not report.newly_initialised
    assert torch.equal(model.prompt_encoder.box_corner_embed.weight, tiny.prompt_encoder.box_corner_embed.weight)
    for a, b in zip(_outputs(model), _outputs(tiny)):
        assert max_err(a, b) == 0.0
    save_sam3d_checkpoint(model, None, path)  # overwrite in place
    with pytest.raises(OutputPathError):
        save_sam3d_checkpoint(tiny, None, tmp_path / "missing" / "m.pt")


def test_corrupt_and_foreign_files(tmp_path, tiny):
    good = tmp_path / "good.pt"
    torch.save(_released_state(tiny), good)
    data = good.read_bytes()
    cases = {
        "truncated.pt": data[: len(data) // 2],
        "garbage.pt": os.urandom(4096),
        "empty.pt": b"",
    }
    for name, blob in cases.items():
        p = tmp_path / name
        p.write_bytes(blob)
        with pytest.raises(CheckpointError) as ei:
            load_sam3d_checkpoint(p)
        msg = str(ei.value)
        assert name in msg and "\n" not in msg
        if name != "empty.pt":
            with pytest.raises(CheckpointError):
                load_sam3d_checkpoint(p, trust=True)
    with pytest.raises(CheckpointError, match="no such"):
        load_sam3d_checkpoint(tmp_path / "nope.pt")
    other = tmp_path / "resnet.pt"
    torch.save({"conv1.weight": torch.zeros(8, 3, 3, 3), "fc.bias": torch.zeros(10)}, other)
    with pytest.raises(CheckpointError, match="not a SAM-Med3D"):
        load_sam3d_checkpoint(other)
    notdict = tmp_path / "list.pt"
    torch.save([torch.zeros(2)], notdict)
    with pytest.raises(CheckpointError, match="expected a dict"):
        load_sam3d_checkpoint(notdict)


def test_missing_unexpected_and_shape_mismatch(tmp_path, tiny):
    sd = _released_state(tiny)
    dropped = dict(sd)
    for k in ["mask_decoder.iou_token.weight", "image_encoder.neck.0.weight"]:
        dropped.pop(k)
    dropped["image_encoder.extra.weight"] = torch.zeros(3)
    p = tmp_path / "dropped.pt"
    torch.save(dropped, p)
    with pytest.raises(CheckpointError) as ei:
        load_sam3d_checkpoint(p, config="tiny")
    msg = str(ei.value)
    assert "2 missing" in msg and "mask_decoder.iou_token.weight" in msg
    assert "1 unexpected" in msg and "image_encoder.extra.weight" in msg
    p2 = tmp_path / "tiny.pt"
    torch.save(sd, p2)
    with pytest.raises(CheckpointError, match="shape mismatch"):
        load_sam3d_checkpoint(p2, config=Sam3DConfig.preset("tiny").replace(prompt_embed_dim=96))
    with pytest.raises(CheckpointError, match="keys do not match"):
        load_sam3d_checkpoint(p2, config="small")  # depth 6 vs 4


def test_infer_config_vit_b_ori_from_meta_shapes():
    with torch.device("meta"):
        model = build_sam3d("vit_b_ori", box_prompts=False)
    assert infer_config(model.state_dict()) == Sam3DConfig.preset("vit_b_ori")
    with torch.device("meta"):
        small = build_sam3d("small")
    assert infer_config(small.state_dict()) == Sam3DConfig.preset("small")
