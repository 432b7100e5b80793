"""`Sam3D` (image encoder + prompt encoder + mask decoder) and `build_sam3d`.

    model = build_sam3d("vit_b_ori")                   # or "tiny", "small", a Sam3DConfig, a dict
    with torch.inference_mode():
        emb = model.encode(image)                      # (B, 1, 128, 128, 128) -> (B, P, 8, 8, 8)
        logits, iou = model.decode(emb, points, labels, mask_input=None)  # (B, 1, 32, 32, 32), (B, 1)

`encode`/`decode` follow the caller's grad mode (wrap them in ``torch.inference_mode()`` for inference;
training calls them, or `forward`, with gradients).

Precision (``config.compute_dtype`` or ``encode(image, dtype=...)``): "float32" (default); "bfloat16"
(autocast; fast only with native bf16, i.e. GPUs or CPUs with AVX512-BF16/AMX); "int8" (CPU, inference
only): the ``nn.Linear`` layers of the second half of the encoder blocks run as dynamically quantised
int8 matrix products (`Int8Linear`). Only the second half is quantised because quantising every block
moved the 128^3 masks of random-weight ``vit_b_ori`` models below Dice 0.99 vs float32 (see
``benchmarks/sam3d_latency.py`` and docs/models/sam3d.md); errors made in late blocks pass through
fewer layers.
"""
from __future__ import annotations

import copy
import functools
import itertools
import logging
import math
import warnings
import weakref
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

COMPUTE_DTYPES: tuple[str, ...] = ("float32", "bfloat16", "int8")


class Int8Linear(nn.Module):
    """Inference-only replacement of an ``nn.Linear`` with int8 matrix products (fbgemm/x86 kernels).

    Weights: symmetric int8 per output channel, packed once. Inputs: each row (token) is divided by its
    max |x| and the result quantised at run time (the kernel's per-tensor dynamic quantisation, with
    the reduced 7-bit range that avoids int16 saturation on AVX2); the output row is multiplied back.
    Since the layer is linear per row, the row scaling is exact and gives per-token quantisation.
    The bias stays float32 and is the original tensor (the fast attention reads ``qkv.bias``).
    """

    def __init__(self, linear: nn.Linear) -> None:
        super().__init__()
        w = linear.weight.detach().float()
        self.in_features, self.out_features = linear.in_features, linear.out_features
        scale = (w.abs().amax(dim=1).clamp_min(1e-12) / 127.0).double()
        with warnings.catch_warnings():  # quantized tensors are deprecated, but the only int8 GEMM here
            warnings.simplefilter("ignore")
            zero = torch.zeros(w.shape[0], dtype=torch.long)
            qw = torch.quantize_per_channel(w, scale, zero, 0, torch.qint8)
            self._packed = torch.ops.quantized.linear_prepack(qw, None)
        self.bias = None if linear.bias is None else linear.bias.detach()

    def forward(self, x: Tensor) -> Tensor:
        """x: (..., in_features) float32 -> (..., out_features) float32."""
        shape = x.shape
        x2 = x.reshape(-1, shape[-1])
        r = x2.abs().amax(dim=1, keepdim=True).clamp_min(1e-12)
        y = torch.ops.quantized.linear_dynamic(x2 / r, self._packed, True).mul_(r)
        if self.bias is not None:
            y.add_(self.bias)
        return y.reshape(*shape[:-1], self.out_features)


def int8_image_encoder(encoder: ImageEncoderViT3D, first_block: int | None = None) -> ImageEncoderViT3D:
    """A copy of ``encoder`` whose blocks ``first_block ..`` (default ``depth // 2``, the policy of
    ``compute_dtype="int8"``) use `Int8Linear` for every ``nn.Linear``.

    All other parameters are shared with ``encoder`` (not copied); inference only, CPU only.
    """
    shared = {id(t): t for t in itertools.chain(encoder.parameters(), encoder.buffers())}
    out = copy.deepcopy(encoder, shared)
    blocks = list(out.blocks)
    for blk in blocks[len(blocks) // 2 if first_block is None else first_block:]:
        for module in list(blk.modules()):
            for name, child in list(module.named_children()):
                if isinstance(child, nn.Linear):
                    setattr(module, name, Int8Linear(child))
    return out


#: Sam3D -> (weights key, int8 encoder); weak, so that the cache dies with the model.
_INT8_ENCODERS: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


def fill_random_weights(model: nn.Module, seed: int = 0) -> nn.Module:
    """Deterministic random weights in place, for tests and benchmarks; returns ``model``.

    State-dict order with `BOX_PROMPT_KEYS` last (so the released keys get the same values with or
    without box prompts): 1-D ``weight`` 1 + 0.1 randn, 1-D ``bias`` 0.05 randn, other 1-D 0.1 randn,
    N-D randn / sqrt(fan-in) - the rule of the golden ``weights.py``, one tensor at a time.
    """
    g = torch.Generator().manual_seed(seed)
    sd = model.state_dict()
    names = [k for k in sd if k not in BOX_PROMPT_KEYS] + [k for k in sd if k in BOX_PROMPT_KEYS]
    with torch.no_grad():
        for name in names:
            t = sd[name]
            x = torch.randn(tuple(t.shape), generator=g)
            if t.ndim == 1:
                if name.endswith("weight"):
                    x = 1.0 + 0.1 * x
                else:
                    x = (0.05 if name.endswith("bias") else 0.1) * x
            else:
                x = x / math.sqrt(max(1, math.prod(t.shape[1:])))
            t.copy_(x)
    return model


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
            dtype: "float32", "bfloat16" (CPU/GPU autocast) or "int8" (CPU, inference only: second
                half of the blocks with int8 linear layers, see the module docstring); default
                ``config.compute_dtype``.
        Returns:
            (B, P, S/16, S/16, S/16) float32 ("int8": without autograd history).
        Raises:
            InvalidImageError: wrong shape or non-finite voxels.
            ValueError: unknown dtype, or "int8" on a non-CPU device.
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
        if dtype == "int8":
            return self._encode_int8(image)
        if dtype != "float32":
            raise ValueError(f"dtype must be one of {COMPUTE_DTYPES}, got {dtype!r}")
        return self.image_encoder(image)

    def _encode_int8(self, image: Tensor) -> Tensor:
        """(B, 1, S, S, S) float32 CPU -> (B, P, n, n, n) through the cached int8 encoder."""
        if image.device.type != "cpu":
            raise ValueError("dtype='int8' runs on CPU only (fbgemm kernels); use 'bfloat16' on GPUs")
        encoder = self._int8_encoder()
        encoder.attention = self.image_encoder.attention
        with torch.no_grad():
            return encoder(image)

    def _int8_encoder(self) -> ImageEncoderViT3D:
        """`int8_image_encoder` of this model, rebuilt when any encoder parameter was replaced or
        changed in place (optimizer steps, ``load_state_dict``) since it was built."""
        key = tuple((p.data_ptr(), p._version) for p in self.image_encoder.parameters())
        cached = _INT8_ENCODERS.get(self)
        if cached is None or cached[0] != key:
            cached = (key, int8_image_encoder(self.image_encoder))
            _INT8_ENCODERS[self] = cached
        return cached[1]

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
