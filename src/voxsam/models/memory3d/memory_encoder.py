"""Memory encoder: a slice's embedding and its predicted mask -> compact memory features (SAM2's design).

    features, pos = memory_encoder(embedding, mask_logits)   # (B, D, n, n), (1, D, n, n)

1. the mask logits (B, 1, 4n, 4n) -> ``sigmoid * scale + bias`` (SAM2: 20, -10) -> `MaskDownSampler`:
   two stride-2 3 x 3 convolutions (LayerNorm2d, GELU) to n x n, a 1 x 1 convolution to P channels;
2. added to a 1 x 1-projected copy of the (frozen encoder's) embedding (B, P, n, n);
3. ``fuser_depth`` `FuserBlock`s: depthwise 7 x 7, LayerNorm2d, pointwise MLP, layer-scaled residual;
4. a 1 x 1 convolution to D = memory_dim channels, and the 2D sine encoding of the n x n grid.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from voxsam.models.sam2d.common import LayerNorm2d
from voxsam.models.memory3d.position import sine_position_encoding


class MaskDownSampler(nn.Module):
    """(B, 1, 4n, 4n) mask -> (B, out_dim, n, n): conv 3x3/2, LN2d, GELU, conv 3x3/2, LN2d, GELU, conv 1x1.

    Args:
        out_dim: P.
        chans: channels of the two strided convolutions ((16, 64)).
    """

    def __init__(self, out_dim: int, chans: tuple[int, ...] = (16, 64)) -> None:
        super().__init__()
        c1, c2 = chans
        self.encoder = nn.Sequential(
            nn.Conv2d(1, c1, kernel_size=3, stride=2, padding=1), LayerNorm2d(c1), nn.GELU(),
            nn.Conv2d(c1, c2, kernel_size=3, stride=2, padding=1), LayerNorm2d(c2), nn.GELU(),
            nn.Conv2d(c2, out_dim, kernel_size=1),
        )

    def forward(self, mask: Tensor) -> Tensor:
        """(B, 1, 4n, 4n) -> (B, out_dim, n, n)."""
        return self.encoder(mask)


class FuserBlock(nn.Module):
    """ConvNeXt block: depthwise 7x7, LayerNorm2d, Linear(dim, r dim), GELU, Linear(r dim, dim), x gamma, + x.

    ``gamma`` (layer scale) starts at 1e-6, as SAM2's fuser.
    """

    def __init__(self, dim: int, mlp_ratio: float = 2.0, layer_scale_init: float = 1e-6) -> None:
        super().__init__()
        hidden = max(1, int(round(dim * mlp_ratio)))
        self.dwconv = nn.Conv2d(dim, dim, kernel_size=7, padding=3, groups=dim)
        self.norm = LayerNorm2d(dim)
        self.pwconv1 = nn.Linear(dim, hidden)
        self.pwconv2 = nn.Linear(hidden, dim)
        self.gamma = nn.Parameter(torch.full((dim,), float(layer_scale_init)))

    def forward(self, x: Tensor) -> Tensor:
        """(B, dim, h, w) -> (B, dim, h, w)."""
        y = self.norm(self.dwconv(x)).permute(0, 2, 3, 1)
        y = self.pwconv2(F.gelu(self.pwconv1(y))) * self.gamma
        return x + y.permute(0, 3, 1, 2)


class MemoryEncoder(nn.Module):
    """Fuses a slice's embedding with its mask into memory features (see the module docstring).

    Args:
        embed_dim: P, channels of the embedding (256).
        memory_dim: D, channels of the memory features (64).
        mask_down_chans: channels of the mask downsampler's strided convolutions.
        fuser_depth: number of `FuserBlock`s (2).
        fuser_mlp_ratio: their MLP width ratio (2.0).
        mask_sigmoid_scale, mask_sigmoid_bias: ``sigmoid(logits) * scale + bias`` feeds the downsampler.
    """

    def __init__(self, embed_dim: int, memory_dim: int, mask_down_chans: tuple[int, ...] = (16, 64),
                 fuser_depth: int = 2, fuser_mlp_ratio: float = 2.0, mask_sigmoid_scale: float = 20.0,
                 mask_sigmoid_bias: float = -10.0) -> None:
        super().__init__()
        self.memory_dim = memory_dim
        self.mask_sigmoid_scale = float(mask_sigmoid_scale)
        self.mask_sigmoid_bias = float(mask_sigmoid_bias)
        self.mask_downsampler = MaskDownSampler(embed_dim, mask_down_chans)
        self.pix_feat_proj = nn.Conv2d(embed_dim, embed_dim, kernel_size=1)
        self.fuser = nn.Sequential(*(FuserBlock(embed_dim, fuser_mlp_ratio) for _ in range(fuser_depth)))
        self.out_proj = nn.Conv2d(embed_dim, memory_dim, kernel_size=1)

    def forward(self, embedding: Tensor, mask_logits: Tensor) -> tuple[Tensor, Tensor]:
        """Memory features of slices.

        Args:
            embedding: (B, P, n, n) the slices' image embeddings (not memory-conditioned, as SAM2).
            mask_logits: (B, 1, 4n, 4n) their predicted low-res mask logits (or (1, 1, 4n, 4n) shared).
        Returns:
            features (B, D, n, n) and their position encoding pos (1, D, n, n) (2D sine).
        """
        mask = torch.sigmoid(mask_logits.to(embedding.dtype)) * self.mask_sigmoid_scale + self.mask_sigmoid_bias
        x = self.pix_feat_proj(embedding) + self.mask_downsampler(mask)
        features = self.out_proj(self.fuser(x))
        h, w = features.shape[-2:]
        pos = sine_position_encoding(self.memory_dim, h, w, features.device, features.dtype)
        return features, pos
