"""Inference-only fast copy of the TinyViT image encoder (LiteMedSAM: 256² -> 256 × 64 × 64).

    from voxsam.models.sam2d.fast import fast_encoder
    encode = fast_encoder(model)              # built once: a snapshot of model's encoder weights
    emb = encode(images)                      # (B, 3, 256, 256) -> (B, 256, 64, 64) float32

`fast_encoder` computes the same function as `TinyViT.forward` in eval mode, rearranged for speed
(rebuild it after loading other encoder weights):

- every convolution + BatchNorm pair is folded into one convolution with a bias (in float64);
- feature maps stay channels-last (NHWC) from the stem to the neck, so the attention stages'
  permutes and the depthwise local convolutions need no layout copies;
- on CPU, oneDNN's fused kernels (``torch.ops.mkldnn._convolution_pointwise`` / ``_linear_pointwise``,
  the ops inductor emits; checked once by `fused_ops_available`) apply the exact (erf) GELU inside
  the convolution / linear layer that precedes it and add the residuals of MBConv, attention and MLP
  inside the layer that produces them; elsewhere the same arithmetic runs as separate ops;
- windowed attention is ``F.scaled_dot_product_attention`` with the gathered bias table as an
  additive (1, heads, T, T) mask: the same ``softmax(q k^T / sqrt(d) + bias) v`` with padded tokens
  unmasked, as the released model;
- stage 0 (the MBConv blocks on the full 256 x 256 grid, 256 hidden channels) runs in horizontal
  bands with halo rows: identical results, but every band tensor stays small enough (8 MiB) for the
  allocator to reuse memory instead of faulting in fresh pages (~10 ms per 32 MiB tensor here).

Precisions (of the encoder's arithmetic; the result is always float32):

- ``"float32"``: the exact encoder to float32 rounding (max abs error ~5e-6 on embeddings up to
  |0.6|; identical masks in every test slice);
- ``"bfloat16"``: weights and activations in bfloat16 (LayerNorm, softmax and GEMMs accumulate in
  float32); fast only where the CPU has bf16 natively (`native_bf16`). Its rounding is amplified by
  the folded stage-0 convolutions (weights up to |64|, cancelling biases): masks differ visibly;
- ``"int8"``: float32 convolutions, dynamically quantised int8 linear layers (per-channel weights;
  7-bit activations unless the CPU has VNNI). 0.9-1.15x the speed of "float32" on an AMX Xeon (the
  fused GELU/add are lost) and less accurate than bf16; kept for CPUs without bf16, where
  `benchmarks/slice2d_latency.py` can tell whether it pays.

The tanh GELU approximation is not used: no faster inside the fused kernels (slower standalone) and
it moves outputs by ~5e-4 per layer, beyond the float32 tolerance. Numbers: docs/models/sam2d.md.
"""
from __future__ import annotations

import functools
import logging
import warnings
from typing import Any, Literal

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from voxsam.models.sam2d.common import LayerNorm2d
from voxsam.models.sam2d.cpu import fused_ops_available, has_vnni, native_bf16
from voxsam.models.sam2d.tiny_vit import (AttentionStage, ConvBN, ConvStage, MBConv, PatchMerging, Stem, TinyViT,
                                          TinyViTBlock, window_merge, window_partition)

Precision = Literal["float32", "bfloat16", "int8"]
PRECISIONS: tuple[str, ...] = ("float32", "bfloat16", "int8")
BAND_BYTES = 8 << 20  # largest stage-0 tensor per band
log = logging.getLogger(__name__)


@functools.lru_cache(maxsize=1)
def _warn_emulated_bf16() -> None:
    """Say once that bfloat16 is emulated here (11x slower than float32 on a 2-core AVX2 EPYC)."""
    log.warning("bfloat16 encoder on a CPU without native bfloat16 (AMX / AVX512-BF16): emulated and "
                "several times slower than float32 here; use precision float32")


# ============================================================================ layers
def fold_conv_bn(unit: ConvBN) -> tuple[Tensor, Tensor]:
    """Weight and bias of the one convolution equal to ``unit.bn(unit.c(x))`` with running statistics."""
    bn = unit.bn
    assert bn.running_mean is not None and bn.running_var is not None
    scale = bn.weight.detach().double() / torch.sqrt(bn.running_var.double() + bn.eps)
    weight = unit.c.weight.detach().double() * scale[:, None, None, None]
    bias = bn.bias.detach().double() - bn.running_mean.double() * scale
    return weight.float(), bias.float()


class _Conv(nn.Module):
    """Convolution on channels-last maps with an optional fused GELU or residual add."""

    weight: Tensor
    bias: Tensor | None

    def __init__(self, weight: Tensor, bias: Tensor | None, stride: int, padding: int, groups: int,
                 gelu: bool, fused: bool) -> None:
        super().__init__()
        self.register_buffer("weight", weight.detach().clone())
        self.register_buffer("bias", None if bias is None else bias.detach().clone())
        self.stride, self.padding, self.groups = stride, padding, groups
        self.gelu, self.fused = gelu, fused

    @classmethod
    def folded(cls, unit: ConvBN, gelu: bool, fused: bool) -> _Conv:
        w, b = fold_conv_bn(unit)
        c = unit.c
        return cls(w, b, int(c.stride[0]), int(c.padding[0]), int(c.groups), gelu, fused)  # type: ignore[index]

    @property
    def kernel(self) -> int:
        return int(self.weight.shape[-1])

    def forward(self, x: Tensor, residual: Tensor | None = None) -> Tensor:
        """(B, C, H, W) channels-last -> conv(x) + residual, or GELU(conv(x)) when `gelu`."""
        s, p = [self.stride] * 2, [self.padding] * 2
        if self.fused:
            if residual is not None:
                return torch.ops.mkldnn._convolution_pointwise.binary(
                    x, residual, self.weight, self.bias, p, s, [1, 1], self.groups, "add", None, None, [], None)
            return torch.ops.mkldnn._convolution_pointwise(
                x, self.weight, self.bias, p, s, [1, 1], self.groups, "gelu" if self.gelu else "none", [],
                "none" if self.gelu else None)
        y = F.conv2d(x, self.weight, self.bias, s, p, 1, self.groups)
        if residual is not None:
            return y + residual
        return F.gelu(y) if self.gelu else y


class _Linear(nn.Module):
    """Linear layer with an optional fused GELU or residual add; `int8`: dynamically quantised."""

    weight: Tensor
    bias: Tensor | None

    def __init__(self, layer: nn.Linear, gelu: bool, fused: bool, int8: bool) -> None:
        super().__init__()
        self.register_buffer("weight", layer.weight.detach().clone())
        self.register_buffer("bias", None if layer.bias is None else layer.bias.detach().clone())
        self.gelu, self.fused = gelu, fused
        self.packed: Any = None
        # 7-bit activations avoid int16 saturation of AVX2's u8 x s8 pair sums; VNNI has no such limit
        self.reduce_range = not has_vnni()
        if int8:
            w = self.weight.float()
            scale = (w.abs().amax(dim=1) / 127.0).clamp_min(1e-12).double()
            qw = torch.quantize_per_channel(w, scale, torch.zeros_like(scale, dtype=torch.long), 0, torch.qint8)
            self.packed = torch.ops.quantized.linear_prepack(qw, None if self.bias is None else self.bias.float())

    def forward(self, x: Tensor, residual: Tensor | None = None) -> Tensor:
        """(..., in) -> linear(x) + residual, or GELU(linear(x)) when `gelu`."""
        if self.packed is not None:
            shape = x.shape
            y = torch.ops.quantized.linear_dynamic(x.reshape(-1, shape[-1]), self.packed, self.reduce_range)
            y = y.view(*shape[:-1], y.shape[-1])
            if residual is not None:
                return y.add_(residual)
            return torch.ops.aten.gelu_(y) if self.gelu else y
        if self.fused:
            if residual is not None:
                return torch.ops.mkldnn._linear_pointwise.binary(x, residual, self.weight, self.bias, "add")
            return torch.ops.mkldnn._linear_pointwise(
                x, self.weight, self.bias, "gelu" if self.gelu else "none", [], "none" if self.gelu else None)
        y = F.linear(x, self.weight, self.bias)
        if residual is not None:
            return y + residual
        return F.gelu(y) if self.gelu else y


class _LayerNorm(nn.Module):
    """LayerNorm over the last axis (LayerNorm2d too, applied to the NHWC view of a map)."""

    weight: Tensor
    bias: Tensor

    def __init__(self, norm: nn.LayerNorm | LayerNorm2d) -> None:
        super().__init__()
        self.register_buffer("weight", norm.weight.detach().clone())
        self.register_buffer("bias", norm.bias.detach().clone())
        self.eps = float(norm.eps)

    def forward(self, x: Tensor) -> Tensor:
        return F.layer_norm(x, (x.shape[-1],), self.weight, self.bias, self.eps)


class _MBConv(nn.Module):
    def __init__(self, block: MBConv, fused: bool) -> None:
        super().__init__()
        self.conv1 = _Conv.folded(block.conv1, True, fused)
        self.conv2 = _Conv.folded(block.conv2, True, fused)
        self.conv3 = _Conv.folded(block.conv3, False, fused)

    def forward(self, x: Tensor) -> Tensor:
        return torch.ops.aten.gelu_(self.conv3(self.conv2(self.conv1(x)), residual=x))  # in place: a fresh tensor


class _PatchMerging(nn.Module):
    def __init__(self, merge: PatchMerging, fused: bool) -> None:
        super().__init__()
        self.conv1 = _Conv.folded(merge.conv1, True, fused)
        self.conv2 = _Conv.folded(merge.conv2, True, fused)
        self.conv3 = _Conv.folded(merge.conv3, False, fused)

    def forward(self, x: Tensor) -> Tensor:
        return self.conv3(self.conv2(self.conv1(x)))


class _Block(nn.Module):
    """TinyViT block on an NHWC map (B, H, W, C)."""

    attn_bias: Tensor

    def __init__(self, block: TinyViTBlock, fused: bool, int8: bool) -> None:
        super().__init__()
        attn = block.attn
        self.window, self.num_heads, self.head_dim = block.window, attn.num_heads, attn.head_dim
        self.norm1 = _LayerNorm(attn.norm)
        self.qkv = _Linear(attn.qkv, False, fused, int8)
        self.proj = _Linear(attn.proj, False, fused, int8)
        # (1, heads, T, T): a 4-D mask keeps SDPA on its fused CPU kernel (3-D falls back to math)
        table = attn.attention_biases.detach()[:, attn.attention_bias_idxs]
        self.register_buffer("attn_bias", table[None].contiguous())
        self.local_conv = _Conv.folded(block.local_conv, False, fused)
        self.norm2 = _LayerNorm(block.mlp.norm)
        self.fc1 = _Linear(block.mlp.fc1, True, fused, int8)
        self.fc2 = _Linear(block.mlp.fc2, False, fused, int8)

    def _attend(self, x: Tensor) -> Tensor:
        """x + attention(x) on the NHWC map (the residual is added inside ``proj``)."""
        windows, grid = window_partition(x, self.window)
        n, t, c = windows.shape
        qkv = self.qkv(self.norm1(windows)).view(n, t, self.num_heads, 3 * self.head_dim).transpose(1, 2)
        q, k, v = qkv.split(self.head_dim, dim=-1)  # each (n, heads, T, d)
        out = F.scaled_dot_product_attention(q, k, v, attn_mask=self.attn_bias)  # scale 1/sqrt(d)
        return window_merge(self.proj(out.transpose(1, 2).reshape(n, t, c), residual=windows), grid)

    def forward(self, x: Tensor) -> Tensor:
        x = self._attend(x)
        x = self.local_conv(x.permute(0, 3, 1, 2)).permute(0, 2, 3, 1)  # channels-last: no copies
        return self.fc2(self.fc1(self.norm2(x)), residual=x)


class FastTinyViT(nn.Module):
    """Folded, channels-last, fused copy of a `TinyViT` (inference only; see the module docstring)."""

    def __init__(self, encoder: TinyViT, fused: bool, int8: bool = False, band_bytes: int = BAND_BYTES) -> None:
        super().__init__()
        stem = encoder.patch_embed
        assert isinstance(stem, Stem)
        units = [m for m in stem.seq if isinstance(m, ConvBN)]
        self.stem1, self.stem2 = _Conv.folded(units[0], True, fused), _Conv.folded(units[1], False, fused)
        stage0 = encoder.layers[0]
        assert isinstance(stage0, ConvStage)
        self.mbconvs = nn.ModuleList(_MBConv(b, fused) for b in stage0.blocks)  # type: ignore[arg-type]
        self.merge0 = _PatchMerging(stage0.downsample, fused) if isinstance(stage0.downsample, PatchMerging) else None
        self.stages = nn.ModuleList()
        self.merges = nn.ModuleList()
        for layer in list(encoder.layers)[1:]:
            assert isinstance(layer, AttentionStage)
            self.stages.append(nn.ModuleList(_Block(b, fused, int8) for b in layer.blocks))  # type: ignore[arg-type]
            down = layer.downsample
            self.merges.append(_PatchMerging(down, fused) if isinstance(down, PatchMerging) else nn.Identity())
        neck = encoder.neck
        conv_a, norm_a, conv_b, norm_b = neck[0], neck[1], neck[2], neck[3]
        assert isinstance(conv_a, nn.Conv2d) and isinstance(conv_b, nn.Conv2d)
        assert isinstance(norm_a, LayerNorm2d) and isinstance(norm_b, LayerNorm2d)
        self.neck1 = _Conv(conv_a.weight, conv_a.bias, 1, 0, 1, False, fused)
        self.neck_norm1 = _LayerNorm(norm_a)
        self.neck2 = _Conv(conv_b.weight, conv_b.bias, 1, 1, 1, False, fused)
        self.neck_norm2 = _LayerNorm(norm_b)
        # banding needs a pointwise stem (LiteMedSAM: 1x1, stride 1) and stride-1 MBConv depthwise convs
        self.stem_pointwise = all(u.kernel == 1 and u.stride == 1 for u in (self.stem1, self.stem2))
        self.halo = sum(blk.conv2.kernel // 2 for blk in self._mbconvs())
        self.band_bytes = band_bytes

    def _mbconvs(self) -> list[_MBConv]:
        return [b for b in self.mbconvs if isinstance(b, _MBConv)]

    def _band_rows(self, x: Tensor) -> int:
        """Rows of the stage-0 grid per band so that its widest tensor stays under `band_bytes`."""
        hidden = max([int(blk.conv1.weight.shape[0]) for blk in self._mbconvs()] + [1])
        per_row = x.shape[0] * hidden * x.shape[3] * x.element_size()
        return max(8, self.band_bytes // max(per_row, 1) - 2 * self.halo)

    def _stage0(self, x: Tensor) -> Tensor:
        """Stem (when pointwise), MBConv blocks and the downsample's first (pointwise) conv."""
        if self.stem_pointwise:
            x = self.stem2(self.stem1(x))
        for block in self.mbconvs:
            x = block(x)
        return x if self.merge0 is None else self.merge0.conv1(x)

    def forward(self, x: Tensor, last_stage_input: bool = False) -> Tensor:
        """(B, 3, S, S) channels-last, in the module's dtype -> (B, P, n, n) channels-last; with
        `last_stage_input` the map the last attention stage receives instead (B, C_last, n, n)."""
        if not self.stem_pointwise:
            x = self.stem2(self.stem1(x))
        h = x.shape[2]
        rows = self._band_rows(x) if self.band_bytes > 0 else h
        if rows >= h:
            x = self._stage0(x)
        else:
            # bands of `rows` output rows computed from input rows widened by `halo` on each side:
            # only the MBConv depthwise convs see across rows (kernel // 2 rows each), and the rows a
            # band's cut edge perturbs are the halo rows dropped here. Results equal the whole-grid ones.
            bands = []
            for r0 in range(0, h, rows):
                r1 = min(h, r0 + rows)
                a, b = max(0, r0 - self.halo), min(h, r1 + self.halo)
                bands.append(self._stage0(x[:, :, a:b])[:, :, r0 - a:r1 - a])
            x = torch.cat(bands, dim=2)
        if self.merge0 is not None:
            x = self.merge0.conv3(self.merge0.conv2(x))
        for i, (blocks, merge) in enumerate(zip(self.stages, self.merges)):
            if last_stage_input and i == len(self.stages) - 1:
                return x
            y = x.permute(0, 2, 3, 1)  # NHWC view of the channels-last map: no copy
            for block in blocks:  # type: ignore[union-attr, attr-defined]
                y = block(y)
            x = merge(y.permute(0, 3, 1, 2))
        x = self.neck_norm1(self.neck1(x).permute(0, 2, 3, 1)).permute(0, 3, 1, 2)
        return self.neck_norm2(self.neck2(x).permute(0, 2, 3, 1)).permute(0, 3, 1, 2)


# ============================================================================ public API
class FastEncoder:
    """Callable: (B, C, S, S) float images -> (B, P, n, n) float32 embeddings (inference mode)."""

    def __init__(self, module: FastTinyViT, precision: str, dtype: torch.dtype, device: torch.device,
                 image_size: int, in_chans: int) -> None:
        self.module, self.precision, self.dtype, self.device = module, precision, dtype, device
        self.image_size, self.in_chans = image_size, in_chans

    def __call__(self, images: Tensor, *, last_stage_input: bool = False) -> Tensor:
        """Like `Sam2D.encode`: images moved to the encoder's device; float32 result, no autograd. With
        `last_stage_input`: the input of the encoder's last stage (what training caches when that stage
        is trained, `voxsam.training.slice2d_family`), (B, C_last, n, n).

        Raises:
            InvalidImageError: wrong shape or non-finite pixels.
        """
        from voxsam.errors import InvalidImageError

        s, c = self.image_size, self.in_chans
        if not isinstance(images, Tensor) or images.ndim != 4 or tuple(images.shape[1:]) != (c, s, s):
            shape = tuple(images.shape) if isinstance(images, Tensor) else type(images).__name__
            raise InvalidImageError(f"fast encoder expects a (B, {c}, {s}, {s}) tensor, got {shape}")
        with torch.inference_mode():
            if not bool(torch.isfinite(images).all()):
                raise InvalidImageError("fast encoder: image contains NaN or infinite pixels")
            x = images.to(device=self.device, dtype=self.dtype).contiguous(memory_format=torch.channels_last)
            out = self.module(x, last_stage_input)
            return out.to(dtype=torch.float32, memory_format=torch.contiguous_format)

    def __repr__(self) -> str:
        return f"FastEncoder(precision={self.precision!r}, device={self.device})"


def fast_encoder(model: Any, precision: str = "float32", *, fused: bool | None = None) -> FastEncoder:
    """Inference-only fast encoder of a `Sam2D` (or its `TinyViT`): a snapshot of its current weights.

    Args:
        model: a `Sam2D` or a `TinyViT` (BatchNorm running statistics are used whatever its mode).
        precision: "float32" (the exact encoder to ~5e-6), "bfloat16" or "int8" (CPU only).
        fused: use oneDNN's fused conv/linear + GELU/add kernels (CPU only); default: where
            `fused_ops_available(dtype)` (for bfloat16 only where oneDNN has bf16 kernels: not on AVX2-only CPUs).
    Returns:
        a `FastEncoder`: images (B, 3, S, S) -> (B, P, n, n) float32 on the model's device.
    Raises:
        TypeError: not a Sam2D / TinyViT. ValueError: unknown precision; int8 or fused off the CPU.
    """
    from voxsam.models.sam2d.build import Sam2D

    encoder = model.image_encoder if isinstance(model, Sam2D) else model
    if not isinstance(encoder, TinyViT):
        raise TypeError(f"fast_encoder needs a Sam2D or TinyViT, got {type(model).__name__}")
    if precision not in PRECISIONS:
        raise ValueError(f"precision must be one of {PRECISIONS}, got {precision!r}")
    device = next(encoder.parameters()).device
    if precision == "int8" and device.type != "cpu":
        raise ValueError("int8 (dynamic quantisation) runs on the CPU only")
    dtype = torch.bfloat16 if precision == "bfloat16" else torch.float32
    if precision == "bfloat16" and device.type == "cpu" and not native_bf16():
        _warn_emulated_bf16()
    if fused is None:
        fused = device.type == "cpu" and fused_ops_available(dtype)
    elif fused and device.type != "cpu":
        raise ValueError("the fused oneDNN kernels run on the CPU only")
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the quantisation helpers warn about their deprecation
        module = FastTinyViT(encoder, fused=fused, int8=precision == "int8").eval().to(device=device, dtype=dtype)
        for conv in module.modules():
            if isinstance(conv, _Conv):
                conv.weight = conv.weight.contiguous(memory_format=torch.channels_last)
    module.requires_grad_(False)
    return FastEncoder(module, precision, dtype, device, encoder.image_size, int(module.stem1.weight.shape[1]))
