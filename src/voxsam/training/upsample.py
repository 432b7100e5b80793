"""Trilinear upsampling as three small matrix products, for the training loss.

`F.interpolate(..., mode="trilinear", align_corners=False)` computes the same function, but its CPU backward
is a scalar scatter loop: at 32³ -> 128³ it took a quarter of a training step. Linear interpolation along
one axis is a fixed (n_out, n_in) matrix with two non-zeros per row, so the 3D resize is that matrix
applied along each axis in turn, and autograd's backward is three GEMMs too. Inference keeps
`Sam3D.upscale_logits` (PyTorch's kernel, the reference's call); the two agree to float rounding (tested).
"""
from __future__ import annotations

from functools import lru_cache

import torch
from torch import Tensor


@lru_cache(maxsize=16)
def _interp_matrix_cpu(n_in: int, n_out: int) -> Tensor:
    """(n_out, n_in) float64 weights of 1D linear interpolation, PyTorch's align_corners=False rule."""
    src = (torch.arange(n_out, dtype=torch.float64) + 0.5) * (n_in / n_out) - 0.5
    src = src.clamp(min=0.0)  # PyTorch clamps the left edge; the right edge repeats the last sample
    lo = src.floor().long().clamp(max=n_in - 1)
    hi = (lo + 1).clamp(max=n_in - 1)
    w_hi = src - lo
    m = torch.zeros((n_out, n_in), dtype=torch.float64)
    rows = torch.arange(n_out)
    m.index_put_((rows, lo), 1.0 - w_hi, accumulate=True)
    m.index_put_((rows, hi), w_hi, accumulate=True)
    return m


def interp_matrix(n_in: int, n_out: int, dtype: torch.dtype, device: torch.device) -> Tensor:
    return _interp_matrix_cpu(n_in, n_out).to(device=device, dtype=dtype)


def upsample_trilinear(x: Tensor, size: int | tuple[int, int, int]) -> Tensor:
    """Resize (B, C, D, H, W) to (B, C, *size) like trilinear `F.interpolate` with align_corners=False."""
    out = (size,) * 3 if isinstance(size, int) else tuple(size)
    b, c, d, h, w = x.shape
    a_d, a_h, a_w = (interp_matrix(n, m, x.dtype, x.device) for n, m in zip((d, h, w), out))
    y = torch.matmul(a_d, x.reshape(b, c, d, h * w)).reshape(b, c, out[0], h, w)
    y = torch.matmul(a_h, y)  # (H', H) @ (..., H, W) -> (..., H', W)
    return torch.matmul(y, a_w.transpose(0, 1))
