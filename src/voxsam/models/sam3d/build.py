"""`Sam3D` (image encoder + prompt encoder + mask decoder) and `build_sam3d`.

    model = build_sam3d("vit_b_ori")                   # or "tiny", "small", a Sam3DConfig, a dict
    with torch.inference_mode():
        emb = model.encode(image)                      # (B, 1, 128, 128, 128) -> (B, P, 8, 8, 8)
        logits, iou = model.decode(emb, points, labels, mask_input=None)  # (B, 1, 32, 32, 32), (B, 1)

`encode`/`decode` follow the caller's grad mode (wrap them in ``torch.inference_mode()`` for inference;
training calls them, or `forward`, with gradients).
"""
from __future__ import annotations

import functools
import logging
from typing import Any, Mapping

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from voxsam.errors import InvalidImageError, PromptError
from voxsam.models.sam3d.attention import AttentionMode
from voxsam.models.sam3d.config import Sam3DConfig, get_config
from voxsam.models.sam3d.image_encoder import ImageEncoderViT3D
from voxsam.models.sam3d.mask_decoder import MaskDecoder3D
from voxsam.models.sam3d.prompt_encoder import PromptEncoder3D
from voxsam.models.sam3d.transformer import TwoWayTransformer

log = logging.getLogger(__name__)


@functools.lru_cache(maxsize=1)
def _warn_if_no_native_bf16() -> None:
    """bfloat16 matrix products are emulated (several times slower than float32) on CPUs without
    AVX512-BF16/AMX; say so once."""
    try:
        native = bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
    except Exception:  # noqa: BLE001 - private API; unknown means: do not warn
        return
    if not native:
        log.warning("bfloat16 encoding requested on a CPU without native bfloat16 support: it is "
                    "emulated and slower than float32 here; use dtype='float32'")


#: State-dict keys that this project adds to the released architecture (box prompts).
BOX_PROMPT_KEYS: tuple[str, ...] = ("prompt_encoder.box_corner_embed.weight",)


class Sam3D(nn.Module):
    """SAM-Med3D: ``image_encoder``, ``prompt_encoder``, ``mask_decoder`` (released key names)."""

    mask_threshold: float = 0.0

    def __init__(self, config: Sam3DConfig, image_encoder: ImageEncoderViT3D,
                 prompt_encoder: PromptEncoder3D, mask_decoder: MaskDecoder3D) -> None:
        super().__init__()
        self.config = config
        self.image_encoder = image_encoder
        self.prompt_encoder = prompt_encoder
        self.mask_decoder = mask_decoder

    # ------------------------------------------------------------------ switches
    @property
    def attention(self) -> AttentionMode:
        """Implementation of the encoder attention: "fast" (default) or "reference" (literal)."""
        return self.image_encoder.attention

    @attention.setter
    def attention(self, mode: AttentionMode) -> None:
        if mode not in ("fast", "reference"):
            raise ValueError(f"attention must be 'fast' or 'reference', got {mode!r}")
        self.image_encoder.attention = mode

    def set_attention(self, mode: AttentionMode) -> "Sam3D":
        """Set the attention implementation; returns self."""
        self.attention = mode
        return self

    # ------------------------------------------------------------------ inference API
    def encode(self, image: Tensor, dtype: str | None = None) -> Tensor:
        """Image embedding.

        Args:
            image: (B, 1, S, S, S) intensity-normalised volume, S = ``config.image_size``.
            dtype: "float32" or "bfloat16" (CPU/GPU autocast); default ``config.compute_dtype``.
        Returns:
            (B, P, S/16, S/16, S/16) float32.
        Raises:
            InvalidImageError: wrong shape or non-finite voxels.
        """
        s = self.config.image_size
        if not isinstance(image, Tensor) or image.ndim != 5 or tuple(image.shape[1:]) != (1, s, s, s):
            shape = tuple(image.shape) if isinstance(image, Tensor) else type(image).__name__
            raise InvalidImageError(f"Sam3D.encode expects a (B, 1, {s}, {s}, {s}) tensor, got {shape}")
        w = self.image_encoder.pos_embed
        image = image.to(device=w.device, dtype=w.dtype)
        if image.device.type != "meta" and not bool(torch.isfinite(image).all()):
            raise InvalidImageError("Sam3D.encode: image contains NaN or infinite voxels")
        dtype = dtype or self.config.compute_dtype
        if dtype == "bfloat16":
            if image.device.type == "cpu":
                _warn_if_no_native_bf16()
            with torch.autocast(device_type=image.device.type, dtype=torch.bfloat16):
                emb = self.image_encoder(image)
            return emb.to(w.dtype)
        if dtype != "float32":
            raise ValueError(f"dtype must be 'float32' or 'bfloat16', got {dtype!r}")
        return self.image_encoder(image)

    def decode(self, embeddings: Tensor, points: Tensor | None = None, labels: Tensor | None = None,
               mask_input: Tensor | None = None, multimask: bool = False,
               boxes: Tensor | None = None) -> tuple[Tensor, Tensor]:
        """Masks for prompts on an encoded image.

        Args:
            embeddings: (B or 1, P, n, n, n) from `encode`.
            points: (B, N, 3) voxel coordinates (last three axes of the input), or None.
            labels: (B, N) 1 positive / 0 negative / -1 padding, or None.
            mask_input: (B, 1, 4n, 4n, 4n) previous low-res logits, or None.
            multimask: return the 3 multimask outputs instead of the single mask.
            boxes: (B, 2, 3) box corners (needs ``config.box_prompts``), or None.
        Returns:
            low_res_logits (B, 1 or 3, 4n, 4n, 4n) and iou (B, 1 or 3).
        Raises:
            PromptError: NaN coordinates, labels outside {-1, 0, 1}, mismatched shapes.
        """
        p, n = self.config.prompt_embed_dim, self.config.grid_size
        if not isinstance(embeddings, Tensor) or embeddings.ndim != 5 or tuple(embeddings.shape[1:]) != (p, n, n, n):
            shape = tuple(embeddings.shape) if isinstance(embeddings, Tensor) else type(embeddings).__name__
            raise PromptError(f"embeddings must have shape (B, {p}, {n}, {n}, {n}), got {shape}")
        sparse, dense = self.prompt_encoder(points, labels, boxes, mask_input)
        return self.mask_decoder(embeddings, self.prompt_encoder.get_dense_pe(), sparse, dense,
                                 multimask_output=bool(multimask))

    def forward(self, image: Tensor, points: Tensor | None = None, labels: Tensor | None = None,
                mask_input: Tensor | None = None, multimask: bool = False,
                boxes: Tensor | None = None) -> tuple[Tensor, Tensor]:
        """`encode` then `decode` (training convenience)."""
        return self.decode(self.encode(image), points, labels, mask_input, multimask, boxes)

    def upscale_logits(self, low_res: Tensor, size: int | tuple[int, int, int] | None = None) -> Tensor:
        """Trilinear (align_corners=False) upsampling of low-res logits to ``size`` (default image size)."""
        size = size or self.config.image_size
        return F.interpolate(low_res, size=size, mode="trilinear", align_corners=False)


def build_sam3d(config: Sam3DConfig | str | Mapping[str, Any] | None = None, **overrides: Any) -> Sam3D:
    """Build an untrained `Sam3D`.

    Args:
        config: a `Sam3DConfig`, a preset name ("tiny", "small", "vit_b_ori"), a config dict, or
            None for ``vit_b_ori``.
        **overrides: fields to change, e.g. ``attention="reference"``.
    Returns:
        the model (train mode off is left to the caller; parameters initialised like SAM).
    """
    cfg = get_config("vit_b_ori" if config is None else config)
    if overrides:
        cfg = cfg.replace(**overrides)
    p, n = cfg.prompt_embed_dim, cfg.grid_size
    image_encoder = ImageEncoderViT3D(cfg)
    prompt_encoder = PromptEncoder3D(p, n, cfg.image_size, cfg.mask_in_chans, cfg.box_prompts)
    transformer = TwoWayTransformer(cfg.decoder_depth, p, cfg.decoder_num_heads, cfg.decoder_mlp_dim)
    mask_decoder = MaskDecoder3D(p, transformer, cfg.num_multimask_outputs, cfg.iou_head_depth,
                                 cfg.iou_head_hidden_dim)
    return Sam3D(cfg, image_encoder, prompt_encoder, mask_decoder)
