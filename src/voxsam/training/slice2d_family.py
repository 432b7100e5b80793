"""The `slice2d` model family: LiteMedSAM's prompt encoder + mask decoder fine-tuned with RadSAM's recipe.

- model: the decoder half of a `Sam2D` (`Sam2DDecoder`: `prompt_encoder.*` + `mask_decoder.*`), from the
  released LiteMedSAM weights (`model.pretrained`, default) or random (`pretrained: false`, tests), or from an
  exported decoder file (`model.init`). The image encoder is frozen and never runs in a training step: its
  embeddings are cached on disk (`voxsam.training.slice2d_data`). Unfreezing its last stage is not supported
  with the cache (the embeddings would go stale), so there is no such option;
- weights: a plain state dict of `prompt_encoder.*` + `mask_decoder.*` (float16 when shipped), exactly what
  the slice2d engine's `decoder:` option (`voxsam.engines.slice2d.loading.load_decoder`) loads;
- samples: a cached target slice with a RadSAM prompt (`voxsam.training.slice2d_prompts`): clicks away from
  the contour (+ negatives near it), a jittered box, or a noisy binary mask (the slice's or its neighbour's,
  rotated, scaled, shifted, eroded / dilated), and mixtures; mask prompts are the majority because
  propagation feeds them and the released model never saw one;
- loss: Dice + BCE of the 256 x 256 low-res logits inside the slice's resized region + MSE of the IoU head
  against the real IoU, summed over the first prediction and `correction_rounds` corrective rounds (on
  `correction_prob` of the samples: a click in the largest error region, the previous binary mask as the
  mask prompt), averaged over the batch.
"""
from __future__ import annotations

import logging
from pathlib import Path
from typing import Any, Mapping

import numpy as np
import torch
from torch import Tensor, nn

from voxsam.errors import CheckpointError, ConfigError
from voxsam.training.config import OptimSection
from voxsam.training.family import Batch, CacheProgress, StepInfo, TrainData, plain_parameter_groups
from voxsam.training.slice2d_config import (
    Slice2DDataSection,
    Slice2DInteractionSection,
    Slice2DModelSection,
    Slice2DPromptSection,
    Slice2DTrainConfig,
)

from voxsam.models.sam2d.build import Sam2D
from voxsam.models.sam2d.config import Sam2DConfig
from voxsam.models.sam2d.mask_decoder import MaskDecoder
from voxsam.models.sam2d.prompt_encoder import PromptEncoder

log = logging.getLogger(__name__)
PREFIXES = ("prompt_encoder.", "mask_decoder.")


class Sam2DDecoder(Sam2D):
    """A `Sam2D` without its image encoder: `decode` on cached embeddings; its state dict is the decoder file."""

    def __init__(self, config: Sam2DConfig, prompt_encoder: PromptEncoder, mask_decoder: MaskDecoder) -> None:
        nn.Module.__init__(self)
        self.config = config
        self.prompt_encoder = prompt_encoder
        self.mask_decoder = mask_decoder

    def encode(self, images: Tensor) -> Tensor:
        raise TypeError("Sam2DDecoder has no image encoder: decode cached embeddings")


def decoder_of(model: Sam2D) -> Sam2DDecoder:
    """The decoder half of a full `Sam2D` (shares its modules)."""
    return Sam2DDecoder(model.config, model.prompt_encoder, model.mask_decoder)


def model_config(cfg: Slice2DTrainConfig) -> Sam2DConfig:
    mcfg = Sam2DConfig.preset(cfg.model.preset)
    if cfg.model.overrides:
        if cfg.model.pretrained:
            raise ConfigError("model.overrides change the architecture: they need model.pretrained: false")
        mcfg = mcfg.replace(**cfg.model.overrides)
    if mcfg.image_size != 256 or mcfg.embedding_size * 4 != 256:
        raise ConfigError("slice2d trains 256-pixel models with 64 x 64 embeddings (the engine's input)")
    return mcfg


def full_model(cfg: Slice2DTrainConfig) -> Sam2D:
    """Encoder + decoder the run starts from: released LiteMedSAM, or a random one seeded from run.seed."""
    from voxsam.models.sam2d import build_sam2d, load_litemedsam

    mcfg = model_config(cfg)
    if cfg.model.pretrained:
        return load_litemedsam().float()
    torch.manual_seed(cfg.run.seed)
    return build_sam2d(mcfg).eval()


def infer_config(state: Mapping[str, Tensor]) -> Sam2DConfig:
    """The decoder sizes of a decoder state dict (the encoder fields stay LiteMedSAM's)."""
    def n_layers(prefix: str) -> int:
        return len({k[len(prefix):].split(".")[0] for k in state if k.startswith(prefix)})

    try:
        p = int(state["prompt_encoder.no_mask_embed.weight"].shape[1])
        depth = n_layers("mask_decoder.transformer.layers.")
        return Sam2DConfig.preset("litemedsam").replace(
            prompt_embed_dim=p, mask_in_chans=int(state["prompt_encoder.mask_downscaling.3.weight"].shape[0]),
            decoder_depth=depth,
            decoder_mlp_dim=int(state["mask_decoder.transformer.layers.0.mlp.lin1.weight"].shape[0]) if depth else 2048,
            attention_downsample_rate=p // int(state["mask_decoder.transformer.final_attn_token_to_image.q_proj.weight"].shape[0]),
            num_multimask_outputs=int(state["mask_decoder.mask_tokens.weight"].shape[0]) - 1,
            iou_head_depth=n_layers("mask_decoder.iou_prediction_head.layers."),
            iou_head_hidden_dim=int(state["mask_decoder.iou_prediction_head.layers.0.weight"].shape[0]))
    except (KeyError, IndexError, ConfigError) as exc:
        raise CheckpointError(f"not a slice2d decoder state dict ({type(exc).__name__}: {exc})") from None


def as_sam2d(model: nn.Module) -> Sam2D:
    if not isinstance(model, Sam2D):
        raise TypeError(f"the slice2d family trains Sam2D decoders, got {type(model).__name__}")
    return model


# ---------------------------------------------------------------------- the samples
class Slice2DSamples(torch.utils.data.Dataset[dict[str, Any]]):
    """`self[i]`, a pure function of (seed, i): source by weight, target (one case's label) uniformly, one of
    its cached slices uniformly, then `make_sample`."""

    def __init__(self, index: dict[str, list[list[Any]]], cfg: Slice2DTrainConfig) -> None:
        weights = {s.name: s.weight for s in cfg.data.sources}
        self.names = sorted(n for n in index if index[n])
        self.index = index
        w = np.array([weights[n] for n in self.names], dtype=np.float64)
        self.probs = w / w.sum()
        self.cfg = cfg
        self.seed = cfg.run.seed

    def __len__(self) -> int:
        return 2**62

    def __getitem__(self, i: int) -> dict[str, Any]:
        from voxsam.training.slice2d_prompts import make_sample

        rng = np.random.default_rng([self.seed & 0xFFFFFFFF, int(i)])
        source = self.names[int(rng.choice(len(self.names), p=self.probs))]
        targets = self.index[source]
        slices = targets[int(rng.integers(len(targets)))]
        cached = slices[int(rng.integers(len(slices)))]
        sample = make_sample(cached, rng, self.cfg.prompts, self.cfg.interaction.correction_prob)
        sample["info"] = f"{source}:{cached.emb_path.parent.name}/{cached.emb_path.stem}:{sample['kind']}"
        return sample


# ---------------------------------------------------------------------- the family
class Slice2DFamily:
    """`ModelFamily[Slice2DTrainConfig]` for slice2d."""

    name = "slice2d"
    config_type = Slice2DTrainConfig

    def build(self, cfg: Slice2DTrainConfig) -> nn.Module:
        model = decoder_of(full_model(cfg))
        if cfg.model.init is not None:
            from voxsam.engines.slice2d.loading import load_decoder

            load_decoder(model, cfg.model.init)
            log.info("decoder initialised from %s", cfg.model.init)
        for p in model.parameters():
            p.requires_grad_(True)
        return model.float().train()

    def load_weights(self, path: Path, *, trust: bool = False) -> tuple[nn.Module, dict[str, Any]]:
        from voxsam.models.sam2d import build_sam2d

        from voxsam.engines.slice2d.loading import read_decoder_state

        state = read_decoder_state(path)
        model = decoder_of(build_sam2d(infer_config(state)))
        model.load_state_dict({k: v.float() for k, v in state.items()}, strict=True)
        return model.float(), {}

    def save_weights(self, model: nn.Module, path: Path, *, extra: Mapping[str, Any] | None = None,
                     half: bool = False) -> None:
        """A plain state dict (what `load_decoder` reads); `extra` is not stored (the file holds weights only)."""
        from voxsam.io.atomic import save_torch_atomic

        state = {k: (v.detach().cpu().half() if half and v.is_floating_point() else v.detach().cpu().clone())
                 for k, v in as_sam2d(model).state_dict().items() if k.startswith(PREFIXES)}
        save_torch_atomic(state, Path(path))

    def model_config(self, model: nn.Module) -> dict[str, Any]:
        return as_sam2d(model).config.to_dict()

    def parameter_groups(self, model: nn.Module, optim: OptimSection) -> list[dict[str, Any]]:
        """Every weight is a decoder weight: optim.lr (decoder_lr_scale does not apply), no decay on norms,
        biases and embeddings."""
        return plain_parameter_groups(model, optim)

    def dataset(self, cfg: Slice2DTrainConfig, progress: CacheProgress | None = None) -> TrainData:
        import hashlib
        import json

        from voxsam.models.sam2d import LITEMEDSAM
        from voxsam.training.slice2d_data import build_cache, load_index, make_plan, survey_sources
        from voxsam.training.slice2d_prompts import collate

        d = cfg.data
        surveys, problems = survey_sources(d.sources, d.cache_dir)
        items = make_plan(surveys, d)
        if cfg.model.pretrained:
            encoder_id = f"litemedsam_{LITEMEDSAM.sha256[:12]}"
        else:
            spec = json.dumps([model_config(cfg).to_dict(), cfg.run.seed], sort_keys=True)
            encoder_id = f"random_{hashlib.sha1(spec.encode()).hexdigest()[:12]}"
        folders, skipped = build_cache(items, d.cache_dir, encoder_id, lambda: full_model(cfg).eval(), progress,
                                       d.ct_window)
        problems += skipped
        for p in problems:
            log.warning("skipped: %s", p)
        index = load_index(items, folders)
        if not any(index.values()):
            raise ConfigError(f"slice2d: no target slice with >= {d.min_pixels} pixels in any source")
        n_emb = len({(t.survey.key, t.axis, k) for t, k in items if t.survey.key in folders})
        per_source = {s: f"{len(ts)} targets/{sum(len(x) for x in ts)} slices" for s, ts in sorted(index.items())}
        summary = f"{n_emb} cached embeddings; " + ", ".join(f"{s} {v}" for s, v in per_source.items())
        return TrainData(Slice2DSamples(index, cfg), collate, summary=summary, problems=problems)

    def loss(self, cfg: Slice2DTrainConfig, model: nn.Module, batch: Batch, step: StepInfo) -> tuple[Tensor, dict[str, float]]:
        from voxsam.training.slice2d_prompts import interactive_loss

        return interactive_loss(as_sam2d(model), cfg, batch, step)

    def export_check(self, model: nn.Module, stored: nn.Module) -> dict[str, float]:
        """Dice between the masks of `model` and `stored` for a box + mask prompt on a random embedding."""
        models = [as_sam2d(model), as_sam2d(stored)]
        gen = torch.Generator().manual_seed(0)
        p = models[0].config.prompt_embed_dim
        emb = torch.randn(1, p, 64, 64, generator=gen)
        mask = torch.zeros(1, 1, 256, 256)
        mask[..., 80:160, 90:170] = 1.0
        box = torch.tensor([[85.0, 75.0, 175.0, 165.0]])
        with torch.inference_mode():
            out = [m.decode(emb, boxes=box, mask_input=mask)[0] > 0 for m in models]
        inter = float((out[0] & out[1]).sum())
        total = float(out[0].sum() + out[1].sum())
        return {"dice_fp32_vs_stored": 1.0 if total == 0 else 2 * inter / total}
