"""Position encodings of the memory model: a 2D sine grid encoding and the slice-offset encoding."""
from __future__ import annotations

import math

import torch
from torch import Tensor, nn


def sine_position_encoding(dim: int, height: int, width: int, device: torch.device | str | None = None,
                           dtype: torch.dtype = torch.float32, temperature: float = 10000.0) -> Tensor:
    """DETR / SAM2 2D sine encoding of an ``height x width`` grid (normalised to [0, 2 pi]).

    Channels ``[0, dim/2)`` encode the row, ``[dim/2, dim)`` the column; within each half,
    even channels are ``sin``, odd ``cos`` of ``(index + 1) / size * 2 pi / temperature^(2k / (dim/2))``.

    Args:
        dim: channels (divisible by 4).
        height, width: grid size.
    Returns:
        (1, dim, height, width).
    """
    if dim % 4:
        raise ValueError(f"sine_position_encoding needs dim divisible by 4, got {dim}")
    half = dim // 2
    scale = 2.0 * math.pi
    ys = torch.arange(1, height + 1, device=device, dtype=torch.float32) / (height + 1e-6) * scale
    xs = torch.arange(1, width + 1, device=device, dtype=torch.float32) / (width + 1e-6) * scale
    k = torch.arange(half, device=device, dtype=torch.float32)
    dim_t = temperature ** (2.0 * torch.div(k, 2, rounding_mode="floor") / half)

    def enc(v: Tensor) -> Tensor:  # (L,) -> (L, half) interleaved sin/cos
        a = v[:, None] / dim_t
        return torch.stack([a[:, 0::2].sin(), a[:, 1::2].cos()], dim=2).flatten(1)

    pos_y = enc(ys)[:, None, :].expand(height, width, half)
    pos_x = enc(xs)[None, :, :].expand(height, width, half)
    return torch.cat([pos_y, pos_x], dim=2).permute(2, 0, 1).unsqueeze(0).to(dtype).contiguous()


class SliceOffsetEncoding(nn.Module):
    """Signed slice offset (memory slice minus current slice, in slices) -> (..., out_dim).

    ``[sin(o w_k), cos(o w_k)]`` for frequencies ``w_k = temperature^(-k / num_feats)``,
    k = 0..num_feats-1 (periods from 2 pi slices up), then a linear projection (``proj``). ``sin`` is odd,
    so +o and -o have different encodings: the model can tell slices above from slices below.

    Args:
        out_dim: D, channels of the memory tokens.
        num_feats: K frequencies (2K features before the projection).
        temperature: the longest period / (2 pi), in slices.
    """

    freqs: Tensor

    def __init__(self, out_dim: int, num_feats: int = 32, temperature: float = 10000.0) -> None:
        super().__init__()
        k = torch.arange(num_feats, dtype=torch.float32)
        self.register_buffer("freqs", temperature ** (-k / num_feats), persistent=False)
        self.proj = nn.Linear(2 * num_feats, out_dim)

    def features(self, offsets: Tensor) -> Tensor:
        """(...) offsets -> (..., 2K) sinusoids (before the projection)."""
        a = offsets.to(self.freqs.dtype)[..., None] * self.freqs
        return torch.cat([a.sin(), a.cos()], dim=-1)

    def forward(self, offsets: Tensor) -> Tensor:
        """(...) float or int offsets -> (..., out_dim)."""
        f = self.features(offsets)
        return self.proj(f.to(self.proj.weight.dtype))
