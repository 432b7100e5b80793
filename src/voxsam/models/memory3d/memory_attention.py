"""Memory attention: the current slice's embedding attends to the memory bank (SAM2's design, pooled for CPU).

    conditioned = memory_attention(embedding, bank, current)     # (B, P, n, n) -> (B, P, n, n)

- queries: the embedding average-pooled by ``attention_stride`` ((B, (n/s)^2, P) = 1024 tokens for
  LiteMedSAM) with a 2D sine encoding;
- keys / values: every memory's features pooled by ``memory_pool`` ((n/p)^2 tokens of D channels per
  memory), plus the encoding of the memory's signed slice offset (`SliceOffsetEncoding`) and, for a
  conditioning (prompted) slice, the learned ``conditioning_embed``; the keys also get the memory's 2D
  position encoding;
- ``num_layers`` pre-norm layers: self-attention (sine PE on q and k), cross-attention to the memory
  tokens (D -> P projections of k and v), GELU MLP; then LayerNorm and ``out_proj``;
- the output is a residual: upsampled bilinearly to n x n and added to the embedding. ``out_proj``
  starts at zero, so an untrained model returns its input exactly; with an empty bank the output is
  ``embedding + no_memory`` (``no_memory`` also starts at zero).
"""
from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from voxsam.models.sam2d.transformer import Attention, MLPBlock
from voxsam.models.memory3d.bank import Memory
from voxsam.models.memory3d.position import SliceOffsetEncoding, sine_position_encoding


class KVAttention(Attention):
    """sam2d's `Attention` with keys/values of another width and ``F.scaled_dot_product_attention``.

    Args:
        embedding_dim: C, width of the queries and of the output.
        num_heads: heads.
        kv_dim: width of the keys and values (C when None).
        downsample_rate: internal width = C / downsample_rate.
    """

    def __init__(self, embedding_dim: int, num_heads: int, kv_dim: int | None = None, downsample_rate: int = 1) -> None:
        super().__init__(embedding_dim, num_heads, downsample_rate)
        inner = embedding_dim // downsample_rate
        if kv_dim is not None and kv_dim != embedding_dim:
            self.k_proj = nn.Linear(kv_dim, inner)
            self.v_proj = nn.Linear(kv_dim, inner)

    def forward(self, q: Tensor, k: Tensor, v: Tensor) -> Tensor:
        """q (B, Nq, C), k and v (B, Nk, kv_dim) -> (B, Nq, C)."""
        qh, kh, vh = self._heads(self.q_proj(q)), self._heads(self.k_proj(k)), self._heads(self.v_proj(v))
        out = F.scaled_dot_product_attention(qh, kh, vh)
        b, h, n, d = out.shape
        return self.out_proj(out.transpose(1, 2).reshape(b, n, h * d))


class MemoryAttentionLayer(nn.Module):
    """Pre-norm: x += self_attn(LN x + pe); x += cross_attn(LN x + pe -> memory (+ its pe on keys)); x += mlp(LN x)."""

    def __init__(self, dim: int, memory_dim: int, num_heads: int, mlp_dim: int) -> None:
        super().__init__()
        self.norm1 = nn.LayerNorm(dim)
        self.self_attn = KVAttention(dim, num_heads)
        self.norm2 = nn.LayerNorm(dim)
        self.cross_attn = KVAttention(dim, num_heads, kv_dim=memory_dim)
        self.norm3 = nn.LayerNorm(dim)
        self.mlp = MLPBlock(dim, mlp_dim, nn.GELU)

    def forward(self, x: Tensor, pos: Tensor, memory: Tensor, memory_keys: Tensor) -> Tensor:
        """x (B, T, C) with pos (1, T, C); memory (B, M, D) values and memory_keys (B, M, D) = memory +
        its position encoding -> (B, T, C)."""
        t = self.norm1(x)
        q = t + pos
        x = x + self.self_attn(q, q, t)
        t = self.norm2(x)
        x = x + self.cross_attn(t + pos, memory_keys, memory)
        return x + self.mlp(self.norm3(x))


class MemoryAttention(nn.Module):
    """Conditions a slice embedding on the memory bank (see the module docstring).

    Args:
        embed_dim: P (256). memory_dim: D (64).
        num_layers, num_heads, mlp_dim: the layer stack (2, 8, 1024).
        attention_stride: query grid = n / stride (2). memory_pool: memory grid = n / pool (2).
        offset_feats, offset_temperature: the `SliceOffsetEncoding`.
    """

    def __init__(self, embed_dim: int, memory_dim: int, num_layers: int = 2, num_heads: int = 8,
                 mlp_dim: int = 1024, attention_stride: int = 2, memory_pool: int = 2,
                 offset_feats: int = 32, offset_temperature: float = 10000.0) -> None:
        super().__init__()
        self.embed_dim, self.memory_dim = embed_dim, memory_dim
        self.attention_stride, self.memory_pool = attention_stride, memory_pool
        self.layers = nn.ModuleList(MemoryAttentionLayer(embed_dim, memory_dim, num_heads, mlp_dim)
                                    for _ in range(num_layers))
        self.norm = nn.LayerNorm(embed_dim)
        self.out_proj = nn.Linear(embed_dim, embed_dim)
        nn.init.zeros_(self.out_proj.weight)
        nn.init.zeros_(self.out_proj.bias)
        self.no_memory = nn.Parameter(torch.zeros(embed_dim))
        self.offset_encoding = SliceOffsetEncoding(memory_dim, offset_feats, offset_temperature)
        self.conditioning_embed = nn.Parameter(torch.zeros(memory_dim))
        nn.init.trunc_normal_(self.conditioning_embed, std=0.02)

    def memory_tokens(self, bank: Sequence[Memory], current: float | Tensor, batch: int) -> tuple[Tensor, Tensor]:
        """Key/value tokens of a bank.

        Args:
            bank: M memories with features (1 or B, D, n, n).
            current: index of the current slice (int or (B,) tensor).
            batch: B.
        Returns:
            tokens (B, M T, D) (pooled features + offset encoding + conditioning embedding) and their
            position encodings (1 or B, M T, D), T = (n / memory_pool)^2.
        """
        tokens, poses = [], []
        for m in bank:
            f = m.features
            p = m.pos
            if self.memory_pool > 1:
                f = F.avg_pool2d(f, self.memory_pool)
                p = F.avg_pool2d(p, self.memory_pool)
            f = f.flatten(2).transpose(1, 2)                      # (b, T, D)
            extra = self.offset_encoding(m.offset(current)).to(f.dtype)  # (D,) or (B, D)
            if m.conditioning:
                extra = extra + self.conditioning_embed
            f = f + extra.reshape(-1, 1, self.memory_dim)
            tokens.append(f.expand(batch, -1, -1))
            poses.append(p.flatten(2).transpose(1, 2))
        pos_batch = max(p.shape[0] for p in poses)
        return torch.cat(tokens, dim=1), torch.cat([p.expand(pos_batch, -1, -1) for p in poses], dim=1)

    def forward(self, embedding: Tensor, bank: Sequence[Memory], current: float | Tensor = 0) -> Tensor:
        """The memory-conditioned embedding.

        Args:
            embedding: (B, P, n, n) the current slice's image embedding.
            bank: memories (features (1 or B, D, n, n)); empty for a slice without memory.
            current: the current slice's index (int, or (B,) tensor); offsets are ``memory.index - current``.
        Returns:
            (B, P, n, n): ``embedding + no_memory`` for an empty bank, else ``embedding +
            upsample(out_proj(LN(layers(pool(embedding)))))``.
        """
        if not bank:
            return embedding + self.no_memory.to(embedding.dtype)[None, :, None, None]
        b, c, h, w = embedding.shape
        s = self.attention_stride
        x = F.avg_pool2d(embedding, s) if s > 1 else embedding
        hq, wq = x.shape[-2:]
        x = x.flatten(2).transpose(1, 2)                          # (B, T, P)
        pos = sine_position_encoding(c, hq, wq, x.device, x.dtype).flatten(2).transpose(1, 2)
        memory, memory_pos = self.memory_tokens(bank, current, b)
        memory_keys = memory + memory_pos
        for layer in self.layers:
            x = layer(x, pos, memory, memory_keys)
        r = self.out_proj(self.norm(x)).transpose(1, 2).reshape(b, c, hq, wq)
        if s > 1:
            r = F.interpolate(r, size=(h, w), mode="bilinear", align_corners=False)
        return embedding + r
