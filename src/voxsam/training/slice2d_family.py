"""The `slice2d` model family: LiteMedSAM's prompt encoder + mask decoder fine-tuned with RadSAM's recipe.

- model: the decoder half of a `Sam2D` (`Sam2DDecoder`: `prompt_encoder.*` + `mask_decoder.*`), from the
  released LiteMedSAM weights (`model.pretrained`, default) or random (`pretrained: false`, tests), or from an
  exported decoder file (`model.init`). The image encoder is frozen and never runs in a training step: its
  embeddings are cached on disk (`voxsam.training.slice2d_data`). With `model.train_last_stage` the encoder's
  last stage and neck are trained too (`EncoderTail`): the cache then holds the last stage's *input* (the
  frozen part's output, which stays valid) and every step runs the tail before the decoder;
- weights: a plain state dict of `prompt_encoder.*` + `mask_decoder.*` (+ `image_encoder.layers.<last>.*` and
  `image_encoder.neck.*` when the tail was trained; float16 when shipped), exactly what the slice2d engine's
  `decoder:` option (`voxsam.engines.slice2d.loading.load_decoder`) loads;
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
from voxsam.models.sam2d.tiny_vit import TinyViT

log = logging.getLogger(__name__)
PREFIXES = ("prompt_encoder.", "mask_decoder.")
TAIL_PREFIXES = ("image_encoder.layers.", "image_encoder.neck.")


class EncoderTail(nn.Module):
    """The image encoder's last stage + neck, under their `TinyViT` names (`layers.<last>.*`, `neck.*`):
    (B, C_last, n, n) last-stage input -> (B, P, n, n) embedding."""

    def __init__(self, encoder: TinyViT) -> None:
        super().__init__()
        last = len(encoder.layers) - 1
        if last < 1:
            raise ConfigError("model.train_last_stage needs an encoder with an attention stage")
        self.layers = nn.ModuleDict({str(last): encoder.layers[last]})
        self.neck = encoder.neck

    def train(self, mode: bool = True) -> EncoderTail:
        """BatchNorm (the local convs') keeps its released running statistics: batches of 8 slices are too
        small to estimate them, and inference uses the running ones."""
        super().train(mode)
        for m in self.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.eval()
        return self

    def forward(self, x: Tensor) -> Tensor:
        """(B, C_last, n, n) -> (B, P, n, n)."""
        for layer in self.layers.values():
            x = layer(x)
        return self.neck(x)


class Sam2DDecoder(Sam2D):
    """A `Sam2D` without the frozen part of its image encoder: `decode` on cached embeddings, or with an
    `EncoderTail` (`image_encoder`) on cached last-stage inputs; its state dict is the decoder file."""

    def __init__(self, config: Sam2DConfig, prompt_encoder: PromptEncoder, mask_decoder: MaskDecoder,
                 tail: EncoderTail | None = None) -> None:
        nn.Module.__init__(self)
        self.config = config
        self.prompt_encoder = prompt_encoder
        self.mask_decoder = mask_decoder
        self.image_encoder = tail  # type: ignore[assignment]

    def encode(self, images: Tensor) -> Tensor:
        raise TypeError("Sam2DDecoder has no image encoder: decode cached embeddings")

    def embed_cached(self, cached: Tensor) -> Tensor:
        """Cached tensors (B, C, n, n) -> embeddings (B, P, n, n): themselves, or the tail applied to them."""
        return cached if self.image_encoder is None else self.image_encoder(cached)


def decoder_of(model: Sam2D, train_last_stage: bool = False) -> Sam2DDecoder:
    """The decoder half of a full `Sam2D` (shares its modules), with its encoder's tail when asked."""
    tail = EncoderTail(model.image_encoder) if train_last_stage else None
    return Sam2DDecoder(model.config, model.prompt_encoder, model.mask_decoder, tail)


class FastEncodings:
    """`encode(images)` through `model`'s fast encoder (equal to the exact one within ~5e-6, 2x faster): the
    embeddings, or with `last_stage_input` the input of its last stage (what the cache holds when that stage is
    trained)."""

    def __init__(self, model: Sam2D, last_stage_input: bool = False) -> None:
        from voxsam.models.sam2d.fast import fast_encoder

        self.fast = fast_encoder(model)
        self.last_stage_input = last_stage_input

    def encode(self, images: Tensor) -> Tensor:
        return self.fast(images, last_stage_input=self.last_stage_input)


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
            **_tail_sizes(state),
            prompt_embed_dim=p, mask_in_chans=int(state["prompt_encoder.mask_downscaling.3.weight"].shape[0]),
            decoder_depth=depth,
            decoder_mlp_dim=int(state["mask_decoder.transformer.layers.0.mlp.lin1.weight"].shape[0]) if depth else 2048,
            attention_downsample_rate=p // int(state["mask_decoder.transformer.final_attn_token_to_image.q_proj.weight"].shape[0]),
            num_multimask_outputs=int(state["mask_decoder.mask_tokens.weight"].shape[0]) - 1,
            iou_head_depth=n_layers("mask_decoder.iou_prediction_head.layers."),
            iou_head_hidden_dim=int(state["mask_decoder.iou_prediction_head.layers.0.weight"].shape[0]))
    except (KeyError, IndexError, ConfigError) as exc:
        raise CheckpointError(f"not a slice2d decoder state dict ({type(exc).__name__}: {exc})") from None


def _tail_sizes(state: Mapping[str, Tensor]) -> dict[str, Any]:
    """The encoder fields of a trained tail (`image_encoder.layers.<last>.*`, `neck.*`) in a decoder state
    dict: its stage's width, depth, heads, window, MLP ratio and local conv size (none without a tail)."""
    stage_keys = [k for k in state if k.startswith("image_encoder.layers.")]
    if not stage_keys:
        return {}
    base = Sam2DConfig.preset("litemedsam")
    last = int(stage_keys[0].split(".")[2])
    pre = f"image_encoder.layers.{last}.blocks."
    dim = int(state["image_encoder.neck.0.weight"].shape[1])
    heads, window2 = (int(n) for n in state[pre + "0.attn.attention_biases"].shape)

    def replace_last(values: tuple[Any, ...], value: Any) -> tuple[Any, ...]:
        return (*values[:last], value)

    return dict(
        embed_dims=replace_last(base.embed_dims, dim),
        depths=replace_last(base.depths, len({k[len(pre):].split(".")[0] for k in state if k.startswith(pre)})),
        num_heads=replace_last(base.num_heads, heads),
        window_sizes=replace_last(base.window_sizes, round(window2 ** 0.5)),
        mlp_ratio=state[pre + "0.mlp.fc1.weight"].shape[0] / dim,
        local_conv_size=int(state[pre + "0.local_conv.c.weight"].shape[-1]))


def as_sam2d(model: nn.Module) -> Sam2D:
    if not isinstance(model, Sam2D):
        raise TypeError(f"the slice2d family trains Sam2D decoders, got {type(model).__name__}")
    return model


# ---------------------------------------------------------------------- the samples
class Slice2DSamples(torch.utils.data.Dataset[dict[str, Any]]):
    """`self[i]`, a pure function of (seed, i): source by weight, target (one case's label) uniformly, one of
    its cached slices uniformly (one past its ends with probability `prompts.p_beyond`, when it has those),
    then `make_sample`."""

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
        beyond = [c for c in slices if c.beyond]
        if beyond and rng.random() < self.cfg.prompts.p_beyond:
            slices = beyond
        elif beyond:
            slices = [c for c in slices if not c.beyond]
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
        model = decoder_of(full_model(cfg), cfg.model.train_last_stage)
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
        model = decoder_of(build_sam2d(infer_config(state)), any(k.startswith(TAIL_PREFIXES) for k in state))
        model.load_state_dict({k: v.float() for k, v in state.items()}, strict=True)
        return model.float(), {}

    def save_weights(self, model: nn.Module, path: Path, *, extra: Mapping[str, Any] | None = None,
                     half: bool = False) -> None:
        """A plain state dict (what `load_decoder` reads); `extra` is not stored (the file holds weights only)."""
        from voxsam.io.atomic import save_torch_atomic

        state = {k: (v.detach().cpu().half() if half and v.is_floating_point() else v.detach().cpu().clone())
                 for k, v in as_sam2d(model).state_dict().items() if k.startswith(PREFIXES + TAIL_PREFIXES)}
        save_torch_atomic(state, Path(path))

    def model_config(self, model: nn.Module) -> dict[str, Any]:
        return as_sam2d(model).config.to_dict()

    def parameter_groups(self, model: nn.Module, optim: OptimSection) -> list[dict[str, Any]]:
        """Every trained weight (decoder, and the encoder tail when trained) at optim.lr (decoder_lr_scale does
        not apply), no decay on norms, biases and embeddings."""
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
        encoder: Any = lambda: full_model(cfg).eval()  # noqa: E731
        if cfg.model.train_last_stage:
            encoder_id += "_last_stage_input"
            encoder = lambda: FastEncodings(full_model(cfg).eval(), last_stage_input=True)  # noqa: E731
        folders, skipped = build_cache(items, d.cache_dir, encoder_id, encoder, progress, d.ct_window)
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

        decoder = as_sam2d(model)
        if isinstance(decoder, Sam2DDecoder) and decoder.image_encoder is not None:
            batch = {**batch, "emb": decoder.embed_cached(batch["emb"].float())}
        return interactive_loss(decoder, cfg, batch, step)

    def pretrained_weights(self, model: nn.Module) -> nn.Module | None:
        """LiteMedSAM as released (prompt encoder, mask decoder and the encoder whose tail a run may train): the
        weights every slice2d run starts from."""
        from voxsam.models.sam2d import load_sam2d_weights

        return load_sam2d_weights("litemedsam")

    def export_check(self, model: nn.Module, stored: nn.Module) -> dict[str, float]:
        """Dice between the masks of `model` and `stored` for a box + mask prompt on a random embedding (on a
        random last-stage input through each one's tail, when trained)."""
        models = [as_sam2d(model), as_sam2d(stored)]
        gen = torch.Generator().manual_seed(0)
        tail = getattr(models[0], "image_encoder", None)
        channels = models[0].config.embed_dims[-1] if tail is not None else models[0].config.prompt_embed_dim
        cached = torch.randn(1, channels, 64, 64, generator=gen)
        mask = torch.zeros(1, 1, 256, 256)
        mask[..., 80:160, 90:170] = 1.0
        box = torch.tensor([[85.0, 75.0, 175.0, 165.0]])
        with torch.inference_mode():
            embs = [m.embed_cached(cached) if isinstance(m, Sam2DDecoder) else cached for m in models]
            out = [m.decode(e, boxes=box, mask_input=mask)[0] > 0 for m, e in zip(models, embs)]
        inter = float((out[0] & out[1]).sum())
        total = float(out[0].sum() + out[1].sum())
        return {"dice_fp32_vs_stored": 1.0 if total == 0 else 2 * inter / total}
