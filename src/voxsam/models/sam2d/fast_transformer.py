"""`TwoWayTransformer.forward` for inference, rearranged: folded projections and token bands.

    queries, keys = fast_transformer.transformer(mask_decoder.transformer, keys, key_pe, tokens)

Used by `voxsam.models.sam2d.fast_decoder` (autograd off). Same function as the exact modules, reading
their live parameters; the rearrangements (exact in real arithmetic):

- tokens -> image attention (T ~ 7 queries over N = 4096 image tokens): the key projection is folded
  into the queries (``q_h . (W_k,h x + b_k,h) = (W_k,h^T q_h) . x + q_h . b_k,h``) and the value
  projection applied after the softmax (``softmax @ (x W_v,h^T + b_v,h) = (softmax @ x) W_v,h^T + b_v,h``,
  its rows summing to 1): (B, heads*T, P) x (B, P, N) products instead of (N, P) x (P, P/2) projections;
- image -> tokens attention (N queries over T tokens): the query projection folded into the keys, the
  output projection into the values (``W_o sum_h P_h V_h = sum_h P_h (V_h W_o,h^T)``, its bias spread
  over the heads' weights, which sum to 1), the softmax over the tokens taken along a non-last axis;
- every per-token step on the image side runs in bands of tokens sized for the L2 cache: image -> tokens
  attention, residual, ``norm4``, ``keys + key_pe`` and the next tokens -> image attention's logits. The
  token side of layer i + 1 (self-attention, ``norm1``) does not depend on layer i's image -> tokens
  attention, so its logits can be formed in the same band pass; only the softmax over all N image tokens
  and the product with the values stay whole.
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor

from voxsam.models.sam2d.transformer import Attention, TwoWayAttentionBlock, TwoWayTransformer

BAND_BYTES = 512 << 10  # bytes of one (B, band, P) image-token tensor


def _heads(attn: Attention) -> tuple[int, int]:
    """(heads, head width d) of an attention."""
    return attn.num_heads, attn.q_proj.out_features // attn.num_heads


def fold_queries(attn: Attention, q_in: Tensor) -> tuple[Tensor, Tensor]:
    """Tokens -> image logits as an affine map of the image tokens.

    Args:
        q_in: (B, T, P) tokens with their positional terms.
    Returns:
        a (B, h*T, P) and c (B, h*T, 1): the logits of ``attn(q_in, x, .)`` are ``a @ x^T + c`` for
        image tokens x (B, N, P) (scaled by 1 / sqrt(d)).
    """
    h, d = _heads(attn)
    b, t, p = q_in.shape
    q = attn.q_proj(q_in).view(b, t, h, d).transpose(1, 2) * (1.0 / math.sqrt(d))  # (B, h, T, d)
    a = torch.einsum("bhtd,hdp->bhtp", q, attn.k_proj.weight.view(h, d, p)).reshape(b, h * t, p)
    c = torch.einsum("bhtd,hd->bht", q, attn.k_proj.bias.view(h, d)).reshape(b, h * t, 1)
    return a, c


def attend_tokens(attn: Attention, probs: Tensor, values: Tensor) -> Tensor:
    """Tokens -> image attention output from its softmax.

    Args:
        probs: (B, h*T, N) softmax of the logits of `fold_queries` over the N image tokens.
        values: (B, N, P) image tokens (before the value projection).
    Returns:
        (B, T, P), as `Attention.forward`.
    """
    h, d = _heads(attn)
    b, ht, _ = probs.shape
    p = values.shape[-1]
    y = torch.bmm(probs, values).view(b, h, ht // h, p)  # attention over the raw values, projected after
    out = torch.einsum("bhtp,hdp->bthd", y, attn.v_proj.weight.view(h, d, p)) + attn.v_proj.bias.view(h, d)
    return attn.out_proj(out.reshape(b, ht // h, h * d))


def fold_keys(attn: Attention, k_in: Tensor, v_in: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """Image -> tokens attention as maps of the image tokens.

    Args:
        k_in: (B, T, P) tokens with their positional terms; v_in: (B, T, P) tokens.
    Returns:
        a (B, h*T, P) and c (B, h*T, 1), the logits being ``a @ q^T + c`` for image queries q (B, N, P);
        vo (B, h*T, P): ``residual + attn(q, k_in, v_in) = residual + softmax_T(logits)^T @ vo``.
    """
    h, d = _heads(attn)
    b, t, p = k_in.shape
    k = attn.k_proj(k_in).view(b, t, h, d).transpose(1, 2) * (1.0 / math.sqrt(d))  # (B, h, T, d)
    v = attn.v_proj(v_in).view(b, t, h, d).transpose(1, 2)
    a = torch.einsum("bhtd,hdp->bhtp", k, attn.q_proj.weight.view(h, d, p)).reshape(b, h * t, p)
    c = torch.einsum("bhtd,hd->bht", k, attn.q_proj.bias.view(h, d)).reshape(b, h * t, 1)
    wo = attn.out_proj.weight  # (P, h*d)
    vo = torch.einsum("bhtd,phd->bhtp", v, wo.view(wo.shape[0], h, d)) + attn.out_proj.bias / h
    return a, c, vo.reshape(b, h * t, wo.shape[0])


def self_attend(layer: TwoWayAttentionBlock, queries: Tensor, query_pe: Tensor) -> Tensor:
    """The token side of a block before its cross attentions: self-attention and ``norm1``; (B, T, P)."""
    if layer.skip_first_layer_pe:
        return layer.norm1(layer.self_attn(queries, queries, queries))
    q = queries + query_pe
    return layer.norm1(queries + layer.self_attn(q, q, queries))


def transformer(tr: TwoWayTransformer, keys: Tensor, key_pe: Tensor, tokens: Tensor,
                band_bytes: int | None = None) -> tuple[Tensor, Tensor]:
    """`TwoWayTransformer.forward` on token-major inputs (see the module docstring).

    Args:
        keys: (B, N, P) contiguous image tokens (embedding + dense prompt), updated in place.
        band_bytes: bytes of one band of image tokens (default `BAND_BYTES`).
        key_pe: (1, N, P) positional encoding of the image tokens.
        tokens: (B, T, P) output + prompt tokens (also their positional terms).
    Returns:
        tokens (B, T, P) and image tokens (B, N, P) (``keys``).
    """
    layers = [layer for layer in tr.layers if isinstance(layer, TwoWayAttentionBlock)]
    assert len(layers) == len(tr.layers)
    b, n, p = keys.shape
    band_bytes = BAND_BYTES if band_bytes is None else band_bytes
    rows = max(1, min(n, band_bytes // max(1, b * p * keys.element_size())))
    bands = [(s, min(n, s + rows)) for s in range(0, n, rows)]
    scratch = keys.new_empty(b, rows, p)

    queries = self_attend(layers[0], tokens, tokens) if layers else tokens
    first = layers[0].cross_attn_token_to_image if layers else tr.final_attn_token_to_image
    a, c = fold_queries(first, queries + tokens)
    logits = keys.new_empty(b, a.shape[1], n)
    for s, e in bands:
        k = torch.add(keys[:, s:e], key_pe[:, s:e], out=scratch[:, :e - s])
        logits[:, :, s:e] = torch.baddbmm(c, a, k.transpose(1, 2))
    for i, layer in enumerate(layers):
        out = attend_tokens(layer.cross_attn_token_to_image, torch.softmax(logits, dim=-1), keys)
        queries = layer.norm2(queries + out)
        queries = layer.norm3(queries + layer.mlp(queries))
        a2, c2, vo = fold_keys(layer.cross_attn_image_to_token, queries + tokens, queries)
        heads = layer.cross_attn_image_to_token.num_heads
        if i + 1 < len(layers):  # the next block's token side needs only these queries
            queries_next = self_attend(layers[i + 1], queries, tokens)
            a, c = fold_queries(layers[i + 1].cross_attn_token_to_image, queries_next + tokens)
        else:
            queries_next = queries
            a, c = fold_queries(tr.final_attn_token_to_image, queries + tokens)
        norm = layer.norm4
        for s, e in bands:
            kb, pb = keys[:, s:e], key_pe[:, s:e]
            k = torch.add(kb, pb, out=scratch[:, :e - s])
            probs = torch.softmax(torch.baddbmm(c2, a2, k.transpose(1, 2)).view(b, heads, -1, e - s), dim=2)
            kb.copy_(F.layer_norm(torch.baddbmm(kb, probs.view(b, -1, e - s).transpose(1, 2), vo),
                                  norm.normalized_shape, norm.weight, norm.bias, norm.eps))
            k = torch.add(kb, pb, out=scratch[:, :e - s])
            logits[:, :, s:e] = torch.baddbmm(c, a, k.transpose(1, 2))
        queries = queries_next
    out = attend_tokens(tr.final_attn_token_to_image, torch.softmax(logits, dim=-1), keys)
    return tr.norm_final_attn(queries + out), keys
