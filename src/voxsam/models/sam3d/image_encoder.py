"""SAM-Med3D image encoder: 3D ViT (patch 16, absolute + relative positions) and a conv neck.

Keys (under ``image_encoder.``): ``pos_embed`` (1, n, n, n, C), ``patch_embed.proj``,
``blocks.{i}.{norm1, attn.{rel_pos_d, rel_pos_h, rel_pos_w, qkv, proj}, norm2, mlp.{lin1, lin2}}``,
``neck.{0, 1, 2, 3}``.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from voxsam.models.sam3d.attention import AttentionMode, EncoderAttention, RelPosForm
from voxsam.models.sam3d.config import Sam3DConfig
from voxsam.models.sam3d.transformer import MLPBlock


class LayerNorm3d(nn.Module):
    """LayerNorm over the channel axis of (B, C, D, H, W) tensors (biased variance)."""

    def __init__(self, num_channels: int, eps: float = 1e-6) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.ones(num_channels))
        self.bias = nn.Parameter(torch.zeros(num_channels))
        self.eps = eps

    def forward(self, x: Tensor) -> Tensor:
        """x: (B, C, D, H, W) -> same shape."""
        y = F.layer_norm(x.permute(0, 2, 3, 4, 1), (x.shape[1],), self.weight, self.bias, self.eps)
        return y.permute(0, 4, 1, 2, 3)


class PatchEmbed3D(nn.Module):
    """Conv3d(in_chans, C, kernel = stride = patch) -> channels-last (B, n, n, n, C).

    The non-overlapping convolution is evaluated as one matrix product over the patches (the same
    function; about 20% faster than the CPU convolution kernel).
    """

    def __init__(self, patch_size: int = 16, in_chans: int = 1, embed_dim: int = 768) -> None:
        super().__init__()
        self.patch_size = patch_size
        self.proj = nn.Conv3d(in_chans, embed_dim, kernel_size=patch_size, stride=patch_size)

    def forward(self, x: Tensor) -> Tensor:
        """x: (B, in_chans, D, H, W) -> (B, D/p, H/p, W/p, C)."""
        b, ci, d, h, w = x.shape
        p = self.patch_size
        if d % p or h % p or w % p:
            return self.proj(x).permute(0, 2, 3, 4, 1)
        nd, nh, nw = d // p, h // p, w // p
        patches = (x.reshape(b, ci, nd, p, nh, p, nw, p).permute(0, 2, 4, 6, 1, 3, 5, 7)
                   .reshape(b, nd, nh, nw, ci * p ** 3))
        return F.linear(patches, self.proj.weight.reshape(self.proj.out_channels, -1), self.proj.bias)


class Block(nn.Module):
    """Pre-norm transformer block: x + attn(norm1(x)), then x + mlp(norm2(x)); LayerNorm eps 1e-6."""

    def __init__(self, dim: int, num_heads: int, mlp_ratio: float, grid_size: int, attn_size: int,
                 use_rel_pos: bool, rel_pos_form: RelPosForm) -> None:
        super().__init__()
        self.norm1 = nn.LayerNorm(dim, eps=1e-6)
        self.attn = EncoderAttention(dim, num_heads, grid_size, attn_size, use_rel_pos, rel_pos_form)
        self.norm2 = nn.LayerNorm(dim, eps=1e-6)
        self.mlp = MLPBlock(dim, int(dim * mlp_ratio), nn.GELU)

    def forward(self, x: Tensor, mode: AttentionMode = "fast") -> Tensor:
        """x: (B, n, n, n, C) -> (B, n, n, n, C)."""
        if torch.is_grad_enabled():
            x = x + self.attn(self.norm1(x), mode)
            return x + self.mlp(self.norm2(x))
        x = x + self.attn(self.norm1(x), mode)  # inference: second residual in place
        return x.add_(self.mlp(self.norm2(x)))


class ImageEncoderViT3D(nn.Module):
    """(B, 1, D, H, W) intensity-normalised volume -> (B, P, D/16, H/16, W/16) image embedding.

    ``attention`` ("fast" or "reference") selects the implementation of every block's attention;
    both compute the same function.
    """

    def __init__(self, config: Sam3DConfig) -> None:
        super().__init__()
        c, n = config.encoder_embed_dim, config.grid_size
        self.img_size = config.image_size
        self.grid_size = n
        self.attention: AttentionMode = config.attention
        self.pos_embed = nn.Parameter(torch.zeros(1, n, n, n, c))
        self.patch_embed = PatchEmbed3D(config.patch_size, 1, c)
        self.blocks = nn.ModuleList(
            Block(c, config.encoder_num_heads, config.mlp_ratio, n, config.attn_grid(i),
                  config.use_rel_pos, config.rel_pos)
            for i in range(config.encoder_depth)
        )
        p = config.prompt_embed_dim
        self.neck = nn.Sequential(
            nn.Conv3d(c, p, kernel_size=1, bias=False),
            LayerNorm3d(p),
            nn.Conv3d(p, p, kernel_size=3, padding=1, bias=False),
            LayerNorm3d(p),
        )

    def forward(self, x: Tensor) -> Tensor:
        """x: (B, 1, D, H, W) -> (B, P, n, n, n)."""
        x = self.patch_embed(x) + self.pos_embed
        for blk in self.blocks:
            x = blk(x, self.attention)
        return self.neck(x.permute(0, 4, 1, 2, 3))
