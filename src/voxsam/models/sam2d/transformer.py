"""SAM's two-way transformer (2D): prompt tokens and image tokens attend to each other.

Keys (under ``mask_decoder.transformer.``): ``layers.i.{self_attn, norm1, cross_attn_token_to_image,
norm2, mlp.lin1, mlp.lin2, norm3, norm4, cross_attn_image_to_token}``, ``final_attn_token_to_image``,
``norm_final_attn``; every attention has ``q_proj, k_proj, v_proj, out_proj``.

Each layer: token self-attention (without positional terms in the first layer, whose queries are
the raw prompt tokens), tokens -> image cross-attention, token MLP (ReLU), image -> tokens
cross-attention; post-norm residuals. The prompt tokens are re-added as positional terms to the
queries, and the dense positional encoding to the image keys, at every attention. A final
tokens -> image attention and layer norm close the stack. Cross attentions work at width
P / ``attention_downsample_rate``.
"""
from __future__ import annotations

import math

import torch
from torch import Tensor, nn


class Attention(nn.Module):
    """Multi-head attention with projections to ``embedding_dim / downsample_rate`` channels."""

    def __init__(self, embedding_dim: int, num_heads: int, downsample_rate: int = 1) -> None:
        super().__init__()
        inner = embedding_dim // downsample_rate
        self.num_heads = num_heads
        self.q_proj = nn.Linear(embedding_dim, inner)
        self.k_proj = nn.Linear(embedding_dim, inner)
        self.v_proj = nn.Linear(embedding_dim, inner)
        self.out_proj = nn.Linear(inner, embedding_dim)

    def _heads(self, x: Tensor) -> Tensor:
        b, n, c = x.shape
        return x.view(b, n, self.num_heads, c // self.num_heads).transpose(1, 2)

    def forward(self, q: Tensor, k: Tensor, v: Tensor) -> Tensor:
        """q (B, Nq, C), k and v (B, Nk, C) -> (B, Nq, C)."""
        qh, kh, vh = self._heads(self.q_proj(q)), self._heads(self.k_proj(k)), self._heads(self.v_proj(v))
        logits = (qh @ kh.transpose(-2, -1)) / math.sqrt(qh.shape[-1])
        out = torch.softmax(logits, dim=-1) @ vh
        b, h, n, d = out.shape
        return self.out_proj(out.transpose(1, 2).reshape(b, n, h * d))


class MLPBlock(nn.Module):
    """``lin1``, activation, ``lin2``."""

    def __init__(self, dim: int, hidden: int, act: type[nn.Module] = nn.ReLU) -> None:
        super().__init__()
        self.lin1 = nn.Linear(dim, hidden)
        self.lin2 = nn.Linear(hidden, dim)
        self.act = act()

    def forward(self, x: Tensor) -> Tensor:
        """(..., dim) -> (..., dim)."""
        return self.lin2(self.act(self.lin1(x)))


class TwoWayAttentionBlock(nn.Module):
    """Self-attention, token->image, MLP, image->token (see the module docstring)."""

    def __init__(self, dim: int, num_heads: int, mlp_dim: int, downsample_rate: int,
                 skip_first_layer_pe: bool) -> None:
        super().__init__()
        self.self_attn = Attention(dim, num_heads)
        self.norm1 = nn.LayerNorm(dim)
        self.cross_attn_token_to_image = Attention(dim, num_heads, downsample_rate)
        self.norm2 = nn.LayerNorm(dim)
        self.mlp = MLPBlock(dim, mlp_dim)
        self.norm3 = nn.LayerNorm(dim)
        self.norm4 = nn.LayerNorm(dim)
        self.cross_attn_image_to_token = Attention(dim, num_heads, downsample_rate)
        self.skip_first_layer_pe = skip_first_layer_pe

    def forward(self, queries: Tensor, keys: Tensor, query_pe: Tensor, key_pe: Tensor) -> tuple[Tensor, Tensor]:
        """queries (B, T, C) tokens, keys (B, HW, C) image tokens, with their positional terms."""
        if self.skip_first_layer_pe:
            queries = self.self_attn(queries, queries, queries)
        else:
            q = queries + query_pe
            queries = queries + self.self_attn(q, q, queries)
        queries = self.norm1(queries)

        k = keys + key_pe
        queries = self.norm2(queries + self.cross_attn_token_to_image(queries + query_pe, k, keys))
        queries = self.norm3(queries + self.mlp(queries))

        q = queries + query_pe
        keys = self.norm4(keys + self.cross_attn_image_to_token(k, q, queries))
        return queries, keys


class TwoWayTransformer(nn.Module):
    """``depth`` two-way blocks + final token->image attention.

    Args:
        depth: number of blocks (2).
        embedding_dim: P.
        num_heads: heads of every attention (8).
        mlp_dim: hidden width of the token MLP (2048).
        attention_downsample_rate: width divisor of the cross attentions (2).
    """

    def __init__(self, depth: int, embedding_dim: int, num_heads: int, mlp_dim: int,
                 attention_downsample_rate: int = 2) -> None:
        super().__init__()
        self.layers = nn.ModuleList(
            TwoWayAttentionBlock(embedding_dim, num_heads, mlp_dim, attention_downsample_rate,
                                 skip_first_layer_pe=(i == 0))
            for i in range(depth))
        self.final_attn_token_to_image = Attention(embedding_dim, num_heads, attention_downsample_rate)
        self.norm_final_attn = nn.LayerNorm(embedding_dim)

    def forward(self, image_embedding: Tensor, image_pe: Tensor, point_embedding: Tensor) -> tuple[Tensor, Tensor]:
        """image_embedding and image_pe (B, C, h, w), point_embedding (B, T, C) ->
        (tokens (B, T, C), image tokens (B, h*w, C))."""
        keys = image_embedding.flatten(2).transpose(1, 2)
        key_pe = image_pe.flatten(2).transpose(1, 2)
        queries = point_embedding
        for layer in self.layers:
            queries, keys = layer(queries, keys, point_embedding, key_pe)
        attn = self.final_attn_token_to_image(queries + point_embedding, keys + key_pe, keys)
        return self.norm_final_attn(queries + attn), keys
