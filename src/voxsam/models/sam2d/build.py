"""`Sam2D` (TinyViT image encoder + SAM prompt encoder + SAM mask decoder) and `build_sam2d`.

    model = load_litemedsam()                                # weights.py; eval mode
    with torch.inference_mode():
        emb = model.encode(images)                           # (B, 3, 256, 256) -> (B, 256, 64, 64)
        logits, iou = model.decode(emb, boxes=boxes)         # (B, 1, 256, 256), (B, 1)

``encode``/``decode`` follow the caller's grad mode (wrap them in ``torch.inference_mode()`` for
inference). The encoder has BatchNorm layers: call ``model.eval()`` before inference
(`load_litemedsam` returns the model in eval mode; `build_sam2d` leaves nn.Module's train mode).

The input image and every prompt coordinate live in the S x S model input (S = 256 for
LiteMedSAM); `voxsam.models.sam2d.preprocess` maps slices and slice pixel coordinates into it and
maps the low-res logits back onto the slice.
"""
from __future__ import annotations

from typing import Any, Mapping

import torch
from torch import Tensor, nn

from voxsam.errors import InvalidImageError
from voxsam.models.sam2d.config import Sam2DConfig, get_config
from voxsam.models.sam2d.decoding import check_prompts, decode_prompts, finite
from voxsam.models.sam2d.mask_decoder import MaskDecoder
from voxsam.models.sam2d.prompt_encoder import PromptEncoder
from voxsam.models.sam2d.tiny_vit import TinyViT
from voxsam.models.sam2d.transformer import TwoWayTransformer


class Sam2D(nn.Module):
    """A 2D SAM: ``image_encoder`` (TinyViT), ``prompt_encoder``, ``mask_decoder`` (released key names).

    Attributes:
        config: the `Sam2DConfig` it was built from.
        mask_threshold: logit threshold of a foreground pixel (0.0, i.e. probability 0.5).
    """

    mask_threshold: float = 0.0

    def __init__(self, config: Sam2DConfig, image_encoder: TinyViT, prompt_encoder: PromptEncoder,
                 mask_decoder: MaskDecoder) -> None:
        super().__init__()
        self.config = config
        self.image_encoder = image_encoder
        self.prompt_encoder = prompt_encoder
        self.mask_decoder = mask_decoder

    @property
    def device(self) -> torch.device:
        """Device of the parameters."""
        return self.prompt_encoder.no_mask_embed.weight.device

    # ------------------------------------------------------------------ inference API
    def encode(self, images: Tensor) -> Tensor:
        """Image embeddings.

        Args:
            images: (B, 3, S, S) float, the preprocessed slices (intensities in [0, 1], the grey
                slice in all three channels, resized and zero-padded to S; see ``preprocess``).
                Moved to the model's device and dtype.
        Returns:
            (B, P, n, n) float embeddings (LiteMedSAM: (B, 256, 64, 64)).
        Raises:
            InvalidImageError: wrong shape or non-finite pixels.
        """
        s, c = self.config.image_size, self.config.in_chans
        if not isinstance(images, Tensor) or images.ndim != 4 or tuple(images.shape[1:]) != (c, s, s):
            shape = tuple(images.shape) if isinstance(images, Tensor) else type(images).__name__
            raise InvalidImageError(f"Sam2D.encode expects a (B, {c}, {s}, {s}) tensor, got {shape}")
        w = self.prompt_encoder.no_mask_embed.weight
        images = images.to(device=w.device, dtype=w.dtype)
        if not finite(images):
            raise InvalidImageError("Sam2D.encode: image contains NaN or infinite pixels")
        return self.image_encoder(images)

    def decode(self, embeddings: Tensor, points: Tensor | None = None, labels: Tensor | None = None,
               boxes: Tensor | None = None, mask_input: Tensor | None = None,
               multimask: bool = False) -> tuple[Tensor, Tensor]:
        """Mask logits for prompts on encoded images.

        Args:
            embeddings: (B, P, n, n) from `encode`, or (1, P, n, n) shared by all B prompt sets.
            points: (B, N, 2) point coordinates (x, y) = (column, row) in input pixels of the
                S x S model input, or None.
            labels: (B, N) 1 positive / 0 negative / -1 padding; None means all positive.
            boxes: (B, 4) or (B, K, 4) boxes x0, y0, x1, y1 in input pixels, or None.
            mask_input: (B, 1, 4n, 4n) dense mask prompt (low-res logits of a previous prediction,
                (B, 1, 256, 256) for LiteMedSAM), or None.
            multimask: return the M = 3 multimask outputs instead of the single mask.
        Returns:
            low_res_logits (B, 1 or M, 4n, 4n) in the input frame at 4n / S of its resolution
            (LiteMedSAM: (B, 1, 256, 256), the same grid as the 256 x 256 input) and iou (B, 1 or M),
            the predicted IoU of each mask.
        Raises:
            PromptError: bad shapes, NaN/inf coordinates, labels outside {-1, 0, 1}, batch mismatch.
        """
        cfg = self.config
        prompts = check_prompts(embeddings, points, labels, boxes, mask_input, embed_dim=cfg.prompt_embed_dim,
                                embedding_size=cfg.embedding_size, mask_size=cfg.mask_size, device=self.device)
        return decode_prompts(self.prompt_encoder, self.mask_decoder, prompts, multimask)

    def forward(self, images: Tensor, points: Tensor | None = None, labels: Tensor | None = None,
                boxes: Tensor | None = None, mask_input: Tensor | None = None,
                multimask: bool = False) -> tuple[Tensor, Tensor]:
        """`encode` then `decode` (training convenience); same shapes as those."""
        return self.decode(self.encode(images), points, labels, boxes, mask_input, multimask)


def build_sam2d(config: Sam2DConfig | str | Mapping[str, Any] = "litemedsam", **overrides: Any) -> Sam2D:
    """Build an untrained `Sam2D`.

    Args:
        config: a preset name (see ``config.PRESETS``: "litemedsam"), a `Sam2DConfig` or a dict of
            its fields.
        **overrides: fields to change.
    Returns:
        the model, randomly initialised (weights: ``load_state_dict`` or `load_litemedsam`), in
        nn.Module's default train mode.
    Raises:
        ConfigError: unknown preset or inconsistent sizes.
    """
    cfg = get_config(config)
    if overrides:
        cfg = cfg.replace(**overrides)
    p = cfg.prompt_embed_dim
    image_encoder = TinyViT(cfg)
    prompt_encoder = PromptEncoder(p, cfg.embedding_size, cfg.image_size, cfg.mask_in_chans)
    transformer = TwoWayTransformer(cfg.decoder_depth, p, cfg.decoder_num_heads, cfg.decoder_mlp_dim,
                                    cfg.attention_downsample_rate)
    mask_decoder = MaskDecoder(p, transformer, cfg.num_multimask_outputs, cfg.iou_head_depth,
                               cfg.iou_head_hidden_dim)
    return Sam2D(cfg, image_encoder, prompt_encoder, mask_decoder)
