"""The `sam3d` model family: SAM-Med3D trained with its simulated-interaction recipe.

- model: `Sam3DConfig.preset(model.preset)` + `model.overrides`, fresh or from `model.init` (released SAM-Med3D
  training files, plain state dicts or voxsam files; box embeddings the released model lacks are added);
- weights: voxsam's sam3d file (`save_sam3d_checkpoint`, float16 storage when shipped);
- parameter groups: the image encoder at optim.lr, prompt encoder + mask decoder at lr * decoder_lr_scale,
  no weight decay on norms, biases and embeddings;
- samples: `voxsam.training.data` (cached 1.5 mm volumes -> deterministic 3D crops);
- loss: `voxsam.training.interaction` (DiceCE + IoU MSE summed over `interaction.rounds` simulated rounds).
"""
from __future__ import annotations

import logging
from pathlib import Path
from typing import TYPE_CHECKING, Any, Mapping

import numpy as np
import torch
from torch import Tensor, nn

from voxsam.errors import ConfigError
from voxsam.training.config import OptimSection, Sam3DTrainConfig
from voxsam.training.family import Batch, CacheProgress, StepInfo, TrainData

if TYPE_CHECKING:  # pragma: no cover
    from voxsam.models.sam3d import Sam3D

log = logging.getLogger(__name__)


def as_sam3d(model: nn.Module) -> Sam3D:
    """`model` typed as the Sam3D it must be (TypeError otherwise)."""
    from voxsam.models.sam3d import Sam3D

    if not isinstance(model, Sam3D):
        raise TypeError(f"the sam3d family trains Sam3D models, got {type(model).__name__}")
    return model


def collate(items: list[dict[str, Any]]) -> dict[str, Any]:
    """TrainSamples items -> {"image": (B,1,S,S,S), "target": (B,1,S,S,S), "info": [str]}."""
    return {
        "image": torch.from_numpy(np.stack([i["image"] for i in items])),
        "target": torch.from_numpy(np.stack([i["target"] for i in items])),
        "info": [i["info"] for i in items],
    }


class Sam3DFamily:
    """`ModelFamily[Sam3DTrainConfig]` for sam3d."""

    name = "sam3d"
    config_type = Sam3DTrainConfig

    def build(self, cfg: Sam3DTrainConfig) -> nn.Module:
        from voxsam.models.sam3d import Sam3DConfig, build_sam3d, load_sam3d_checkpoint

        mcfg = Sam3DConfig.preset(cfg.model.preset)
        if cfg.model.overrides:
            try:
                mcfg = mcfg.replace(**cfg.model.overrides)
            except TypeError as exc:
                raise ConfigError(f"model.overrides: {exc}") from None
        if mcfg.image_size != cfg.data.crop_size:
            raise ConfigError(f"data.crop_size {cfg.data.crop_size} must equal the model's image_size {mcfg.image_size}")
        if cfg.model.init is not None:
            model, report = load_sam3d_checkpoint(cfg.model.init, config=mcfg, trust=cfg.model.trust_init)
            log.info("initialised from %s", report.summary())
            return model.float()
        torch.manual_seed(cfg.run.seed)
        return build_sam3d(mcfg)

    def load_weights(self, path: Path, *, trust: bool = False) -> tuple[nn.Module, dict[str, Any]]:
        from voxsam.models.sam3d import load_sam3d_checkpoint

        model, report = load_sam3d_checkpoint(path, trust=trust)
        return model.float(), dict(report.metadata)

    def save_weights(self, model: nn.Module, path: Path, *, extra: Mapping[str, Any] | None = None,
                     half: bool = False) -> None:
        from voxsam.models.sam3d import save_sam3d_checkpoint

        m = as_sam3d(model)
        save_sam3d_checkpoint(m, m.config, path, extra=extra, dtype=torch.float16 if half else None)

    def model_config(self, model: nn.Module) -> dict[str, Any]:
        return as_sam3d(model).config.to_dict()

    def parameter_groups(self, model: nn.Module, optim: OptimSection) -> list[dict[str, Any]]:
        """Encoder at lr; prompt encoder + mask decoder at lr * decoder_lr_scale; no decay on norms/biases/embeddings."""
        groups: dict[tuple[bool, bool], list[nn.Parameter]] = {}
        for name, p in model.named_parameters():
            if not p.requires_grad:
                continue
            is_decoder = not name.startswith("image_encoder.")
            no_decay = p.ndim <= 1 or name.endswith("pos_embed") or "rel_pos" in name or "embed.weight" in name
            groups.setdefault((is_decoder, no_decay), []).append(p)
        o = optim
        return [
            {"params": ps, "lr": o.lr * (o.decoder_lr_scale if dec else 1.0), "weight_decay": 0.0 if nd else o.weight_decay,
             "name": f"{'decoder' if dec else 'encoder'}{'_no_decay' if nd else ''}"}
            for (dec, nd), ps in sorted(groups.items())
        ]

    def dataset(self, cfg: Sam3DTrainConfig, progress: CacheProgress | None = None) -> TrainData:
        from voxsam.training.data import TrainSamples, build_table

        table, problems = build_table(cfg.data.sources, cfg.data, progress)
        return TrainData(TrainSamples(table, cfg.data, cfg.run.seed), collate,
                         summary=f"preset {cfg.model.preset}, targets by source {table.summary()}", problems=problems)

    def loss(self, cfg: Sam3DTrainConfig, model: nn.Module, batch: Batch, step: StepInfo) -> tuple[Tensor, dict[str, float]]:
        from voxsam.training.interaction import interactive_loss, plan_step, sample_generators

        gens = sample_generators(cfg.run.seed, list(step.indices))
        plan = plan_step(cfg.run.seed, step.step, step.micro, cfg.interaction)
        return interactive_loss(as_sam3d(model), cfg.interaction, batch["image"], batch["target"], plan, gens)

    def pretrained_weights(self, model: nn.Module) -> nn.Module | None:
        """None: sam3d trains here from scratch or from its own runs."""
        return None

    def export_check(self, model: nn.Module, stored: nn.Module) -> dict[str, float]:
        """Dice between the masks of `model` and `stored` for a centre click on a random image."""
        models = [as_sam3d(model), as_sam3d(stored)]
        torch.manual_seed(0)
        size = models[0].config.image_size
        image = torch.randn(1, 1, size, size, size)
        point = torch.tensor([[[size / 2, size / 2, size / 2]]])
        with torch.inference_mode():
            masks = [m.upscale_logits(m.decode(m.encode(image), point, torch.ones(1, 1, dtype=torch.int64))[0]) > 0
                     for m in models]
        inter = float((masks[0] & masks[1]).sum())
        total = float(masks[0].sum() + masks[1].sum())
        return {"dice_fp32_vs_stored": 1.0 if total == 0 else 2 * inter / total}
