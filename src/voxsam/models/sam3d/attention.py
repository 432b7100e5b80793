"""Image-encoder attention of SAM-Med3D with relative positions, in two exact implementations.

Notation: the token grid has side n (8 for 128^3 / 16), an attention grid has side S (n for global
blocks, ``window_size`` = 14 for windowed blocks), c = head dim, q[a, b, e] is the *unscaled* query of
the token at grid position (a, b, e) and ``s = c**-0.5``.

Relative-position term added to the logit of query (qd, qh, qw) and key (kd, kh, kw):

- ``released`` (what the released weights were trained with; a 2D broadcast carried into 3D)::

      q[qd,qh,qw] . Rd[qd - kw + S - 1] + q[qd,qh,kd] . Rh[qh - kw + S - 1] + q[qd,qh,kh] . Rw[kh - kw + S - 1]

- ``decomposed`` (textbook)::

      q[qd,qh,qw] . (Rd[qd - kd + S - 1] + Rh[qh - kh + S - 1] + Rw[qw - kw + S - 1])

Windowed blocks zero-pad the normalised tokens from n^3 to S^3 and attend as one window of S^3 tokens
without masking, then crop back to n^3; a padded token therefore has q = b_q, k = b_k, v = b_v (the qkv
biases).

``reference`` mode is the literal released computation, in the released implementation's op order and
layout: pad, qkv linear over all S^3 tokens, reshape to (B*heads, S^3, c), (q*s) @ k^T for all heads at
once, the rel-pos terms added out of place by broadcasting a 7-D view, softmax, @ v, proj over the S^3
tokens, crop. It holds several (B*heads, S^3, S^3) float32 tensors at once (about 0.36 GB each for
``vit_b_ori``) and is the baseline that the speed of ``fast`` is measured against.

``fast`` mode computes the same function for the n^3 real queries only. Per query, the logit of a
padded key is ``s q.b_k + a(kw) + b(kd, kw) + c(kh, kw)`` (released form), so the padded keys' total
softmax mass factorises::

    M = e^{s q.b_k} * sum_{(kd,kh,kw) not all < n} e^{a(kw)} e^{b(kd,kw)} e^{c(kh,kw)}
      = e^{s q.b_k} * [ sum_{kw >= n} e^{a} B_all C_all + sum_{kw < n} e^{a} (B_pad C_all + B_in C_pad) ]

with B_in/B_pad/B_all = sum of e^{b(kd, kw)} over kd < n / kd >= n / all (likewise C over kh), every
term positive (no cancellation), evaluated with logsumexp. Their value contribution is M * b_v. Both
enter one ``scaled_dot_product_attention`` call as a *virtual key* k = b_k, v = b_v whose additive mask is
log(M / e^{s q.b_k}); the n^3 real keys get the rel-pos terms as an additive float mask. The decomposed
form factorises the same way over (kd, kh, kw).
"""
from __future__ import annotations

import contextlib
import math
from typing import ContextManager, Literal

import torch
import torch.nn.functional as F
from torch import Tensor, nn

AttentionMode = Literal["reference", "fast"]
RelPosForm = Literal["released", "decomposed"]


def _autocast_off(device_type: str) -> ContextManager[object]:
    """Disable autocast for ``device_type`` if it is on (no-op for devices without autocast)."""
    try:
        on = torch.is_autocast_enabled(device_type)
    except (RuntimeError, TypeError):
        return contextlib.nullcontext()
    return torch.autocast(device_type=device_type, enabled=False) if on else contextlib.nullcontext()


def rel_pos_table(rel_pos: Tensor, q_len: int, k_len: int, size: int) -> Tensor:
    """Gather ``table[i, j] = rel_pos[i - j + size - 1]`` for i < q_len, j < k_len.

    Args:
        rel_pos: (2*size - 1, c) learned relative-position embeddings.
        q_len, k_len: number of query / key coordinates (<= size).
        size: side S of the attention grid.
    Returns:
        (q_len, k_len, c)
    """
    if rel_pos.shape[0] != 2 * size - 1:
        raise ValueError(f"rel_pos has {rel_pos.shape[0]} rows, expected {2 * size - 1} for size {size}")
    i = torch.arange(q_len, device=rel_pos.device)[:, None]
    j = torch.arange(k_len, device=rel_pos.device)[None, :]
    return rel_pos[i - j + (size - 1)]


class EncoderAttention(nn.Module):
    """Multi-head self-attention of one encoder block over an S^3 attention grid.

    The input is the n^3 real token grid; when S > n the block behaves as the released windowed block
    (zero padding to S^3, one unmasked window, crop).

    Args:
        dim: token width C.
        num_heads: heads (head dim c = C / heads).
        grid_size: n, side of the real token grid.
        attn_size: S >= n, side of the attention grid.
        use_rel_pos: add relative-position terms (parameters ``rel_pos_d/h/w``, each (2S - 1, c)).
        rel_pos_form: "released" or "decomposed".
        qkv_bias: bias in the qkv projection (True in SAM-Med3D).
    """

    def __init__(self, dim: int, num_heads: int, grid_size: int, attn_size: int,
                 use_rel_pos: bool = True, rel_pos_form: RelPosForm = "released",
                 qkv_bias: bool = True) -> None:
        super().__init__()
        if attn_size < grid_size:
            raise ValueError(f"attention grid {attn_size} smaller than token grid {grid_size}")
        self.num_heads = num_heads
        self.head_dim = dim // num_heads
        self.scale = self.head_dim ** -0.5
        self.grid_size = grid_size
        self.attn_size = attn_size
        self.use_rel_pos = use_rel_pos
        self.rel_pos_form = rel_pos_form
        self.qkv = nn.Linear(dim, dim * 3, bias=qkv_bias)
        self.proj = nn.Linear(dim, dim)
        if use_rel_pos:
            self.rel_pos_d = nn.Parameter(torch.zeros(2 * attn_size - 1, self.head_dim))
            self.rel_pos_h = nn.Parameter(torch.zeros(2 * attn_size - 1, self.head_dim))
            self.rel_pos_w = nn.Parameter(torch.zeros(2 * attn_size - 1, self.head_dim))

    def forward(self, x: Tensor, mode: AttentionMode = "fast") -> Tensor:
        """x: (B, n, n, n, C) normalised tokens -> (B, n, n, n, C)."""
        if mode == "fast":
            return self._forward_fast(x)
        if mode == "reference":
            return self._forward_reference(x)
        raise ValueError(f"unknown attention mode {mode!r}")

    # ------------------------------------------------------------------ reference
    def _forward_reference(self, x: Tensor) -> Tensor:
        """Literal released computation (see the module docstring); x: (B, n, n, n, C) -> same."""
        b, n = x.shape[0], self.grid_size
        s_, h, c = self.attn_size, self.num_heads, self.head_dim
        pad = s_ - n
        xp = F.pad(x, (0, 0, 0, pad, 0, pad, 0, pad)) if pad else x  # one zero-padded S^3 window
        tokens = s_ ** 3
        qkv = self.qkv(xp).reshape(b, tokens, 3, h, c).permute(2, 0, 3, 1, 4)
        q, k, v = qkv.reshape(3, b * h, tokens, c).unbind(0)  # (B*h, S^3, c) each
        attn = (q * self.scale) @ k.transpose(-2, -1)  # (B*h, S^3, S^3)
        if self.use_rel_pos:
            attn = self._add_rel_pos_literal(attn, q)
        attn = attn.softmax(dim=-1)
        out = (attn @ v).view(b, h, s_, s_, s_, c).permute(0, 2, 3, 4, 1, 5).reshape(b, s_, s_, s_, h * c)
        out = self.proj(out)
        return out[:, :n, :n, :n].contiguous() if pad else out

    def _add_rel_pos_literal(self, attn: Tensor, q: Tensor) -> Tensor:
        """attn + rel-pos terms, out of place as released.

        Args:
            attn: (B*h, S^3, S^3) scaled logits.
            q: (B*h, S^3, c) unscaled queries.
        Returns:
            (B*h, S^3, S^3)
        """
        s_, bh = self.attn_size, attn.shape[0]
        td, th, tw = (rel_pos_table(r, s_, s_, s_) for r in (self.rel_pos_d, self.rel_pos_h, self.rel_pos_w))
        rq = q.reshape(bh, s_, s_, s_, -1)
        # rel_x[., d, h, w, k] = q[d, h, w] . T_x[<d|h|w>, k]
        rel_d = torch.einsum("bdhwc,dkc->bdhwk", rq, td)
        rel_h = torch.einsum("bdhwc,hkc->bdhwk", rq, th)
        rel_w = torch.einsum("bdhwc,wkc->bdhwk", rq, tw)
        a7 = attn.view(bh, s_, s_, s_, s_, s_, s_)  # (., qd, qh, qw, kd, kh, kw)
        if self.rel_pos_form == "released":
            # the 2-D broadcast carried into 3-D: every k index lands on kw;
            # q[qd,qh,qw].Rd[qd-kw] + q[qd,qh,kd].Rh[qh-kw] + q[qd,qh,kh].Rw[kh-kw]
            a7 = (a7 + rel_d[:, :, :, :, None, None] + rel_h[:, :, :, None, :, None]
                  + rel_w[:, :, :, None, None, :])
        else:
            # textbook: q[qd,qh,qw].(Rd[qd-kd] + Rh[qh-kh] + Rw[qw-kw])
            a7 = (a7 + rel_d[:, :, :, :, :, None, None] + rel_h[:, :, :, :, None, :, None]
                  + rel_w[:, :, :, :, None, None, :])
        return a7.reshape(bh, s_ ** 3, s_ ** 3)

    # ------------------------------------------------------------------ fast
    def _forward_fast(self, x: Tensor) -> Tensor:
        b, n = x.shape[0], self.grid_size
        h, c = self.num_heads, self.head_dim
        nt = n ** 3
        qkv = self.qkv(x.reshape(b, nt, -1)).reshape(b, nt, 3, h, c).permute(2, 0, 3, 1, 4)
        q, k, v = qkv[0], qkv[1], qkv[2]  # (B, h, n^3, c), real tokens only
        padded = self.attn_size > n
        bq = None
        if padded:
            if self.qkv.bias is not None:
                bq, bk, bv = self.qkv.bias.reshape(3, h, c).unbind(0)
            else:
                bq = bk = bv = q.new_zeros(h, c)
            # the padded keys enter as one virtual key: k = b_k, v = b_v, mask = log(mass)
            k = torch.cat([k, bk.to(k.dtype)[None, :, None, :].expand(b, h, 1, c)], dim=2)
            v = torch.cat([v, bv.to(v.dtype)[None, :, None, :].expand(b, h, 1, c)], dim=2)
        with _autocast_off(x.device.type):  # rel-pos terms and log-masses in float32
            mask = self.attn_mask(q.float(), None if bq is None else bq.float())
        if mask is not None and mask.dtype != q.dtype:
            mask = mask.to(q.dtype)
        out = F.scaled_dot_product_attention(q, k, v, attn_mask=mask)  # (B, h, n^3, c)
        out = out.transpose(1, 2).reshape(b, n, n, n, h * c)
        return self.proj(out)

    def attn_mask(self, q: Tensor, bq: Tensor | None) -> Tensor | None:
        """Additive float mask of the fast path.

        Args:
            q: (B, h, n^3, c) unscaled real queries (float32).
            bq: (h, c) query bias (the query of padded tokens); None when S == n.
        Returns:
            (B, h, n^3, n^3 [+ 1]): the rel-pos terms of the real keys, then - when S > n - the log
            of the padded keys' summed e^{rel-pos} (the virtual key's column); None when there is
            nothing to add (no rel-pos, no padding).
        """
        b, h, _, c = q.shape
        n, s_ = self.grid_size, self.attn_size
        nt = n ** 3
        padded = s_ > n
        if not self.use_rel_pos:
            if not padded:
                return None
            mask = q.new_zeros(b, h, nt, nt + 1)
            mask[..., nt] = math.log(s_ ** 3 - nt)
            return mask
        lse = torch.logsumexp
        qg = q.reshape(b, h, n, n, n, c)
        rd, rh, rw = self.rel_pos_d.float(), self.rel_pos_h.float(), self.rel_pos_w.float()
        log_mass: Tensor | None = None  # set exactly when padded
        # the real-key bias is x1 + x2, broadcast to (B,h,qd,qh,qw,kd,kh,kw)
        if self.rel_pos_form == "released":
            td = rel_pos_table(rd, n, s_, s_)   # [qd, kw]
            th = rel_pos_table(rh, n, s_, s_)   # [qh, kw]
            tw = rel_pos_table(rw, s_, s_, s_)  # [kh, kw]
            # q[qd, qh, e] for e < S: the third axis extends past n with the query bias
            if padded:
                if bq is None:
                    raise ValueError(f"attn_mask needs the query bias bq when the attention grid "
                                     f"({s_}) is larger than the token grid ({n})")
                ext = bq[None, :, None, None, None, :].expand(b, h, n, n, s_ - n, c)
                qx = torch.cat([qg, ext], dim=4)
            else:
                qx = qg
            a = torch.einsum("bhdxyc,dkc->bhdxyk", qg, td)    # (B,h,qd,qh,qw,kw)
            bt = torch.einsum("bhdxkc,xwc->bhdxkw", qx, th)   # (B,h,qd,qh,kd,kw)
            ct = torch.einsum("bhdxkc,kwc->bhdxkw", qx, tw)   # (B,h,qd,qh,kh,kw)
            bc = bt[:, :, :, :, :n, None, :n] + ct[:, :, :, :, None, :n, :n]  # (B,h,qd,qh,kd,kh,kw)
            x1, x2 = a[:, :, :, :, :, None, None, :n], bc[:, :, :, :, None]
            if padded:
                lb_in, lb_pad = lse(bt[..., :n, :], dim=-2), lse(bt[..., n:, :], dim=-2)  # (B,h,qd,qh,kw)
                lc_in, lc_pad = lse(ct[..., :n, :], dim=-2), lse(ct[..., n:, :], dim=-2)
                lb_all, lc_all = torch.logaddexp(lb_in, lb_pad), torch.logaddexp(lc_in, lc_pad)
                t_in = torch.logaddexp(lb_pad + lc_all, lb_in + lc_pad)[..., :n]  # kw < n
                t_out = (lb_all + lc_all)[..., n:]                                  # kw >= n
                t = torch.cat([t_in, t_out], dim=-1)                                # (B,h,qd,qh,kw)
                log_mass = lse(a + t[:, :, :, :, None, :], dim=-1)                  # (B,h,qd,qh,qw)
        else:  # decomposed (textbook)
            td, th, tw = (rel_pos_table(r, n, s_, s_) for r in (rd, rh, rw))
            dd = torch.einsum("bhdxyc,dkc->bhdxyk", qg, td)  # (B,h,qd,qh,qw,kd)
            hh = torch.einsum("bhdxyc,xkc->bhdxyk", qg, th)  # (..., kh)
            ww = torch.einsum("bhdxyc,ykc->bhdxyk", qg, tw)  # (..., kw)
            dh = dd[..., :n, None] + hh[..., None, :n]        # (..., kd, kh)
            x1, x2 = dh[..., None], ww[..., None, None, :n]
            if padded:
                ld_in, ld_pad = lse(dd[..., :n], -1), lse(dd[..., n:], -1)
                lh_in, lh_pad = lse(hh[..., :n], -1), lse(hh[..., n:], -1)
                lw_in, lw_pad = lse(ww[..., :n], -1), lse(ww[..., n:], -1)
                lh_all, lw_all = torch.logaddexp(lh_in, lh_pad), torch.logaddexp(lw_in, lw_pad)
                log_mass = lse(torch.stack([ld_pad + lh_all + lw_all,
                                            ld_in + lh_pad + lw_all,
                                            ld_in + lh_in + lw_pad]), dim=0)
        if torch.is_grad_enabled() and (q.requires_grad or self.rel_pos_d.requires_grad):
            bias = (x1 + x2).reshape(b, h, nt, nt)
            if log_mass is None:  # not padded
                return bias
            return torch.cat([bias, log_mass.reshape(b, h, nt, 1)], dim=-1)
        # inference: write the sum straight into the mask buffer (no intermediate copies)
        mask = q.new_empty(b, h, nt, nt + 1 if padded else nt)
        torch.add(x1, x2, out=mask[..., :nt].view(b, h, n, n, n, n, n, n))
        if log_mass is not None:  # padded
            mask[..., nt] = log_mass.reshape(b, h, nt)
        return mask
