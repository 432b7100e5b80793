"""TinyViT image encoder of the 2D SAM family (LiteMedSAM / MobileSAM variant).

    (B, 3, S, S) float image -> (B, P, n, n) embedding; LiteMedSAM: S = 256, P = 256, n = 64.

Layout (state-dict names under ``image_encoder.``, as in the released checkpoints):

- ``patch_embed.seq.{0,2}``: stem, two convolution+BatchNorm units (``.c``, ``.bn``) with a GELU
  between; LiteMedSAM uses 1x1 kernels at stride 1, so stage 0 runs at the full 256x256 input grid.
- ``layers.0``: MBConv blocks (``blocks.i.conv1/conv2/conv3``: 1x1 expand, 3x3 depthwise, 1x1
  project, GELU after each and after the residual sum), then ``downsample`` (patch merging).
- ``layers.1..3``: TinyViT blocks, each ``attn`` (pre-norm windowed multi-head attention with a
  learned bias per head and per |dy|, |dx| offset inside the window: ``attention_biases`` (heads,
  window^2)), ``local_conv`` (depthwise conv+BN on the map, no residual) and ``mlp`` (pre-norm MLP,
  residual). Stages 1 and 2 end with ``downsample``.
- ``downsample``: 1x1 conv+BN, GELU, 3x3 depthwise conv+BN with the stage's merge stride, GELU,
  1x1 conv+BN.
- ``neck.{0..3}``: 1x1 conv (no bias) to P, LayerNorm2d, 3x3 conv (no bias), LayerNorm2d.

Windowed attention: the (H, W) token grid is zero-padded at the bottom/right to a multiple of the
window side and cut into windows; padded tokens are not masked (they are keys of every window they
fall in), which is what the released weights were trained with. The bias table is indexed at every
forward pass (no cached copy that could go stale after ``load_state_dict``).

BatchNorm layers use running statistics in eval mode: call ``model.eval()`` for inference.
"""
from __future__ import annotations

from typing import Callable

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from voxsam.models.sam2d.common import LayerNorm2d
from voxsam.models.sam2d.config import Sam2DConfig


class ConvBN(nn.Module):
    """Convolution without bias (``c``) followed by BatchNorm (``bn``)."""

    def __init__(self, in_ch: int, out_ch: int, kernel: int = 1, stride: int = 1, groups: int = 1,
                 bn_weight: float = 1.0) -> None:
        super().__init__()
        self.c = nn.Conv2d(in_ch, out_ch, kernel, stride, kernel // 2, groups=groups, bias=False)
        self.bn = nn.BatchNorm2d(out_ch)
        nn.init.constant_(self.bn.weight, bn_weight)
        nn.init.zeros_(self.bn.bias)

    def forward(self, x: Tensor) -> Tensor:
        """(B, in_ch, H, W) -> (B, out_ch, H', W')."""
        return self.bn(self.c(x))


class Stem(nn.Module):
    """Two conv+BN units with a GELU between them (``seq.0``, ``seq.2``)."""

    def __init__(self, in_ch: int, out_ch: int, kernel: int, stride: int) -> None:
        super().__init__()
        self.seq = nn.Sequential(ConvBN(in_ch, out_ch // 2, kernel, stride), nn.GELU(),
                                 ConvBN(out_ch // 2, out_ch, kernel, stride))

    def forward(self, x: Tensor) -> Tensor:
        """(B, in_ch, S, S) -> (B, out_ch, S / stride^2, S / stride^2)."""
        return self.seq(x)


class MBConv(nn.Module):
    """Inverted residual block: expand 1x1, depthwise 3x3, project 1x1, residual, GELU."""

    def __init__(self, channels: int, expand_ratio: float) -> None:
        super().__init__()
        hidden = int(channels * expand_ratio)
        self.conv1 = ConvBN(channels, hidden, 1)
        self.conv2 = ConvBN(hidden, hidden, 3, groups=hidden)
        self.conv3 = ConvBN(hidden, channels, 1, bn_weight=0.0)
        self.act = nn.GELU()

    def forward(self, x: Tensor) -> Tensor:
        """(B, C, H, W) -> (B, C, H, W)."""
        y = self.act(self.conv1(x))
        y = self.act(self.conv2(y))
        return self.act(self.conv3(y) + x)


class PatchMerging(nn.Module):
    """Change width (and, with stride 2, halve the grid): 1x1, depthwise 3x3 / stride, 1x1."""

    def __init__(self, in_ch: int, out_ch: int, stride: int) -> None:
        super().__init__()
        self.conv1 = ConvBN(in_ch, out_ch, 1)
        self.conv2 = ConvBN(out_ch, out_ch, 3, stride=stride, groups=out_ch)
        self.conv3 = ConvBN(out_ch, out_ch, 1)
        self.act = nn.GELU()

    def forward(self, x: Tensor) -> Tensor:
        """(B, in_ch, H, W) -> (B, out_ch, ceil(H / stride), ceil(W / stride))."""
        x = self.act(self.conv1(x))
        x = self.act(self.conv2(x))
        return self.conv3(x)


class WindowAttention(nn.Module):
    """Pre-norm multi-head self-attention inside one window, with learned relative-offset biases.

    ``qkv`` packs, per head, [query (d), key (d), value (d)] with d = dim / heads; the attention
    bias of a query/key pair is ``attention_biases[head, |dy| * window + |dx|]``.
    """

    attention_bias_idxs: Tensor  # (window^2, window^2) long buffer, not saved

    def __init__(self, dim: int, num_heads: int, window: int) -> None:
        super().__init__()
        self.num_heads = num_heads
        self.head_dim = dim // num_heads
        self.norm = nn.LayerNorm(dim)
        self.qkv = nn.Linear(dim, 3 * dim)
        self.proj = nn.Linear(dim, dim)
        self.attention_biases = nn.Parameter(torch.zeros(num_heads, window * window))
        rows = torch.arange(window).repeat_interleave(window)  # row of each token in the window
        cols = torch.arange(window).repeat(window)
        offsets = (rows[:, None] - rows[None, :]).abs() * window + (cols[:, None] - cols[None, :]).abs()
        self.register_buffer("attention_bias_idxs", offsets, persistent=False)

    def forward(self, x: Tensor) -> Tensor:
        """(B', T, C) tokens of B' windows (T = window^2) -> (B', T, C)."""
        b, t, c = x.shape
        qkv = self.qkv(self.norm(x)).view(b, t, self.num_heads, 3 * self.head_dim).transpose(1, 2)
        q, k, v = qkv.split(self.head_dim, dim=-1)  # each (B', heads, T, d)
        bias = self.attention_biases[:, self.attention_bias_idxs].to(q.dtype)  # (heads, T, T)
        attn = torch.softmax((q @ k.transpose(-2, -1)) * self.head_dim ** -0.5 + bias, dim=-1)
        out = attn @ v
        return self.proj(out.transpose(1, 2).reshape(b, t, c))


class FeedForward(nn.Module):
    """Pre-norm MLP: LayerNorm, Linear, GELU, Linear."""

    def __init__(self, dim: int, hidden: int) -> None:
        super().__init__()
        self.norm = nn.LayerNorm(dim)
        self.fc1 = nn.Linear(dim, hidden)
        self.fc2 = nn.Linear(hidden, dim)
        self.act = nn.GELU()

    def forward(self, x: Tensor) -> Tensor:
        """(..., C) -> (..., C)."""
        return self.fc2(self.act(self.fc1(self.norm(x))))



Grid = tuple[int, int, int, int, int, int, int]  # b, h, w, c, window, rows of windows, columns of windows


def window_partition(x: Tensor, s: int) -> tuple[Tensor, Grid]:
    """(B, H, W, C) map -> (B·nh·nw, s·s, C) non-overlapping s×s windows (zero-padded bottom/right) and the
    grid `window_merge` needs to undo it."""
    b, h, w, c = x.shape
    pad_h, pad_w = (-h) % s, (-w) % s
    if pad_h or pad_w:
        x = F.pad(x, (0, 0, 0, pad_w, 0, pad_h))
    nh, nw = (h + pad_h) // s, (w + pad_w) // s
    return x.view(b, nh, s, nw, s, c).transpose(2, 3).reshape(b * nh * nw, s * s, c), (b, h, w, c, s, nh, nw)


def window_merge(windows: Tensor, grid: Grid) -> Tensor:
    """Inverse of `window_partition`: (B·nh·nw, s·s, C) -> (B, H, W, C), padding cut (contiguous)."""
    b, h, w, c, s, nh, nw = grid
    out = windows.view(b, nh, nw, s, s, c).transpose(2, 3).reshape(b, nh * s, nw * s, c)
    return out[:, :h, :w].contiguous() if (nh * s, nw * s) != (h, w) else out

class TinyViTBlock(nn.Module):
    """Windowed attention (residual), depthwise local conv (no residual), MLP (residual)."""

    def __init__(self, dim: int, num_heads: int, window: int, mlp_ratio: float, local_conv_size: int) -> None:
        super().__init__()
        self.window = window
        self.attn = WindowAttention(dim, num_heads, window)
        self.local_conv = ConvBN(dim, dim, local_conv_size, groups=dim)
        self.mlp = FeedForward(dim, int(dim * mlp_ratio))

    def _attend(self, x: Tensor) -> Tensor:
        """(B, H, W, C) channels-last map -> attention output of the same shape."""
        windows, grid = window_partition(x, self.window)
        return window_merge(self.attn(windows), grid)

    def forward(self, x: Tensor) -> Tensor:
        """(B, H, W, C) channels-last map -> (B, H, W, C)."""
        x = x + self._attend(x)
        x = self.local_conv(x.permute(0, 3, 1, 2)).permute(0, 2, 3, 1)
        return x + self.mlp(x)


class ConvStage(nn.Module):
    """Stage 0: MBConv ``blocks`` then ``downsample`` (maps in, maps out)."""

    def __init__(self, dim: int, depth: int, expand_ratio: float, downsample: nn.Module | None) -> None:
        super().__init__()
        self.blocks = nn.ModuleList(MBConv(dim, expand_ratio) for _ in range(depth))
        self.downsample = downsample

    def forward(self, x: Tensor) -> Tensor:
        """(B, C, H, W) -> (B, C_next, H', W')."""
        for block in self.blocks:
            x = block(x)
        return x if self.downsample is None else self.downsample(x)


class AttentionStage(nn.Module):
    """Stages 1..: TinyViT ``blocks`` (on channels-last maps) then optional ``downsample``."""

    def __init__(self, dim: int, depth: int, num_heads: int, window: int, mlp_ratio: float,
                 local_conv_size: int, downsample: nn.Module | None) -> None:
        super().__init__()
        self.blocks = nn.ModuleList(TinyViTBlock(dim, num_heads, window, mlp_ratio, local_conv_size)
                                    for _ in range(depth))
        self.downsample = downsample

    def forward(self, x: Tensor) -> Tensor:
        """(B, C, H, W) -> (B, C_next, H', W')."""
        x = x.permute(0, 2, 3, 1)
        for block in self.blocks:
            x = block(x)
        x = x.permute(0, 3, 1, 2)
        return x if self.downsample is None else self.downsample(x)


def _init_weights(module: nn.Module) -> None:
    if isinstance(module, nn.Linear):
        nn.init.trunc_normal_(module.weight, std=0.02)
        if module.bias is not None:
            nn.init.zeros_(module.bias)
    elif isinstance(module, nn.LayerNorm):
        nn.init.ones_(module.weight)
        nn.init.zeros_(module.bias)


class TinyViT(nn.Module):
    """TinyViT encoder + neck: (B, in_chans, S, S) -> (B, P, n, n) (see the module docstring)."""

    def __init__(self, config: Sam2DConfig) -> None:
        super().__init__()
        cfg = config
        self.image_size = cfg.image_size
        dims = cfg.embed_dims
        self.patch_embed = Stem(cfg.in_chans, dims[0], cfg.stem_kernel_size, cfg.stem_stride)
        merge: Callable[[int], nn.Module | None] = (
            lambda i: PatchMerging(dims[i], dims[i + 1], cfg.merge_strides[i]) if i + 1 < len(dims) else None)
        layers: list[nn.Module] = [ConvStage(dims[0], cfg.depths[0], cfg.mbconv_expand_ratio, merge(0))]
        for i in range(1, len(dims)):
            layers.append(AttentionStage(dims[i], cfg.depths[i], cfg.num_heads[i], cfg.window_sizes[i],
                                         cfg.mlp_ratio, cfg.local_conv_size, merge(i)))
        self.layers = nn.ModuleList(layers)
        self.apply(_init_weights)
        p = cfg.prompt_embed_dim
        self.neck = nn.Sequential(
            nn.Conv2d(dims[-1], p, kernel_size=1, bias=False),
            LayerNorm2d(p),
            nn.Conv2d(p, p, kernel_size=3, padding=1, bias=False),
            LayerNorm2d(p),
        )

    def forward(self, x: Tensor) -> Tensor:
        """(B, in_chans, S, S) float -> (B, P, n, n) image embedding."""
        x = self.patch_embed(x)
        for layer in self.layers:
            x = layer(x)
        return self.neck(x)
