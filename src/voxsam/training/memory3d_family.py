"""The `memory3d` model family: SAM2-3dMed's memory propagation on frozen LiteMedSAM embeddings.

- model: `voxsam.models.memory3d.Memory3D` - prompt encoder + mask decoder from slice2d's fine-tuned weights
  (`model.decoder: bundled`, default) or LiteMedSAM's, memory encoder, memory attention (zero-initialised
  output: at step 0 the model decodes exactly as slice2d does), SRPP and BD heads (`model.srpp`, `model.bd`);
  or from an exported memory3d file (`model.init`);
- encoder: the released LiteMedSAM encoder, frozen, or with `model.encoder_tail` its last stage + neck from a
  slice2d file (slice2d's fine-tuned tail, also frozen; kept in the memory3d file for the engine);
- data: runs of consecutive slices, their embeddings cached beside slice2d's (`voxsam.training.memory3d_data`;
  a tail's embeddings in a folder named by its digest);
- samples and loss: `voxsam.training.memory3d_loss` (windows of 3 / 6 / 12 slices, a prompt on one of them).
Weights: `save_memory3d` files (config + every trained tensor, float16 when shipped), what the engine loads.
"""
from __future__ import annotations

import logging
from pathlib import Path
from typing import Any, Mapping

import torch
from torch import Tensor, nn

from voxsam.errors import ConfigError
from voxsam.training.config import OptimSection
from voxsam.training.family import Batch, CacheProgress, StepInfo, TrainData, plain_parameter_groups
from voxsam.training.memory3d_config import Memory3DTrainConfig

log = logging.getLogger(__name__)


def _as_memory3d(model: nn.Module) -> Any:
    from voxsam.models.memory3d import Memory3D

    if not isinstance(model, Memory3D):
        raise TypeError(f"the memory3d family trains Memory3D models, got {type(model).__name__}")
    return model


def encoder_tail(cfg: Memory3DTrainConfig) -> dict[str, Tensor] | None:
    """The encoder tail a run encodes with: `model.encoder_tail`'s, else the one of the `model.init` file, else
    None (the released encoder)."""
    from voxsam.models.memory3d import read_encoder_tail, read_memory3d_file
    from voxsam.models.memory3d.decoder_weights import check_encoder_tail

    m = cfg.model
    if m.encoder_tail is not None:
        if not m.pretrained:
            raise ConfigError("model.encoder_tail replaces part of the released LiteMedSAM encoder: it needs model.pretrained: true")
        return read_encoder_tail(m.encoder_tail)
    if m.init is not None:
        stored = read_memory3d_file(m.init).get("encoder_tail")
        return None if stored is None else check_encoder_tail(stored, str(m.init))
    return None


class Memory3DFamily:
    """`ModelFamily[Memory3DTrainConfig]` for memory3d."""

    name = "memory3d"
    config_type = Memory3DTrainConfig

    def build(self, cfg: Memory3DTrainConfig) -> nn.Module:
        from voxsam.models.memory3d import build_memory3d, load_memory3d
        from voxsam.models.memory3d.build import DECODER_PREFIXES
        from voxsam.models.sam2d import load_litemedsam

        m = cfg.model
        if m.init is not None:
            model = load_memory3d(m.init)
            log.info("memory3d initialised from %s", m.init)
        else:
            torch.manual_seed(cfg.run.seed)
            sam2d = load_litemedsam().float() if m.pretrained else None
            model = build_memory3d(m.preset, sam2d=sam2d, decoder_weights="bundled" if m.decoder == "bundled" and m.pretrained else None,
                                   srpp=m.srpp, bd=m.bd, **m.overrides)
        tail = encoder_tail(cfg)
        if tail is not None:
            model.encoder_tail = tail
        frozen = DECODER_PREFIXES if m.freeze_decoder else ()
        for name, p in model.named_parameters():
            p.requires_grad_(not name.startswith(frozen))
        return model.float().train()

    def load_weights(self, path: Path, *, trust: bool = False) -> tuple[nn.Module, dict[str, Any]]:
        from voxsam.models.memory3d import load_memory3d, read_memory3d_file

        model = load_memory3d(path)
        return model.float(), dict(read_memory3d_file(path).get("extra") or {})

    def save_weights(self, model: nn.Module, path: Path, *, extra: Mapping[str, Any] | None = None,
                     half: bool = False) -> None:
        from voxsam.models.memory3d import save_memory3d

        save_memory3d(_as_memory3d(model), Path(path), dtype="float16" if half else "float32", extra=dict(extra or {}))

    def model_config(self, model: nn.Module) -> dict[str, Any]:
        return dict(_as_memory3d(model).config.to_dict())

    def parameter_groups(self, model: nn.Module, optim: OptimSection) -> list[dict[str, Any]]:
        return plain_parameter_groups(model, optim)

    def dataset(self, cfg: Memory3DTrainConfig, progress: CacheProgress | None = None) -> TrainData:
        from voxsam.models.memory3d import apply_encoder_tail, tail_digest
        from voxsam.models.sam2d import LITEMEDSAM, load_litemedsam
        from voxsam.training.memory3d_data import load_windows, make_window_plan
        from voxsam.training.memory3d_loss import WindowSamples, collate
        from voxsam.training.slice2d_data import build_cache, survey_sources
        from voxsam.training.slice2d_family import FastEncodings

        d = cfg.data
        if not cfg.model.pretrained:
            raise ConfigError("memory3d trains on LiteMedSAM embeddings: model.pretrained must be true")
        surveys, problems = survey_sources(d.sources, d.cache_dir)
        weights = {s.name: s.weight for s in d.sources}
        items = make_window_plan(surveys, weights, d.max_embeddings, d.run_slices, d.runs_per_target, d.overhang,
                                 d.min_pixels, d.plan_seed, d.step_mm)
        tail = encoder_tail(cfg)
        encoder_id = f"litemedsam_{LITEMEDSAM.sha256[:12]}"
        if tail is not None:
            encoder_id += f"_tail_{tail_digest(tail)}"

        def encoder() -> Any:
            sam2d = load_litemedsam().float().eval()
            if tail is None:
                return sam2d
            apply_encoder_tail(sam2d, tail, "model.encoder_tail")
            return FastEncodings(sam2d)

        folders, skipped = build_cache(items, d.cache_dir, encoder_id, encoder, progress, d.ct_window)
        problems += skipped
        for p in problems:
            log.warning("skipped: %s", p)
        windows = load_windows(items, folders, d.step_mm)
        if not any(windows.values()):
            raise ConfigError("memory3d: no run of consecutive slices in any source")
        summary = f"{len(items)} cached slices in runs; " + ", ".join(f"{s} {len(v)} windows" for s, v in sorted(windows.items()))
        return TrainData(WindowSamples(windows, cfg), collate, summary=summary, problems=problems)

    def loss(self, cfg: Memory3DTrainConfig, model: nn.Module, batch: Batch, step: StepInfo) -> tuple[Tensor, dict[str, float]]:
        from voxsam.training.memory3d_loss import batch_loss

        return batch_loss(_as_memory3d(model), cfg, batch, step)

    def pretrained_weights(self, model: nn.Module) -> nn.Module | None:
        """None: the memory modules are new (its decoder, from slice2d's file, is frozen)."""
        return None

    def export_check(self, model: nn.Module, stored: nn.Module) -> dict[str, float]:
        """Dice between the masks of `model` and `stored` for a slice conditioned on one memory."""
        models = [_as_memory3d(model), _as_memory3d(stored)]
        gen = torch.Generator().manual_seed(0)
        emb = torch.randn(2, models[0].config.embed_dim, 64, 64, generator=gen)
        mask = torch.zeros(1, 1, 256, 256)
        mask[..., 80:160, 90:170] = 1.0
        box = torch.tensor([[85.0, 75.0, 175.0, 165.0]])
        out = []
        with torch.inference_mode():
            for m in models:
                m = m.float().eval()
                memory = m.memorize(emb[:1], mask * 20 - 10, 0, conditioning=True)
                low, _ = m.decode(m.condition(emb[1:], [memory], 1), boxes=box)
                out.append(low > 0)
        inter = float((out[0] & out[1]).sum())
        total = float(out[0].sum() + out[1].sum())
        return {"dice_fp32_vs_stored": 1.0 if total == 0 else 2 * inter / total}
