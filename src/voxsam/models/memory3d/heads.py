"""SAM2-3dMed's auxiliary heads: SRPP (slice relative position prediction) and BD (boundary detection).

    offsets = srpp_head(f_i, f_j)                     # (N, P), (N, P) -> (N,) predicted j - i
    loss = srpp_head.loss(features, positions)        # (W, P), (W,) -> MSE over ordered pairs
    logits = boundary_head(conditioned)               # (B, P, n, n) -> (B, 1, 4n, 4n)
    loss = boundary_loss(logits, boundary_target(mask))
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from voxsam.models.sam2d.common import MLP, LayerNorm2d
from voxsam.models.sam2d.transformer import MLPBlock
from voxsam.models.memory3d.memory_attention import KVAttention
from voxsam.models.memory3d.position import sine_position_encoding


# ============================================================================ SRPP
class SRPPHead(nn.Module):
    """Predicts the signed offset j - i (in slices) from the pooled features of slices i and j.

    ``mlp`` (3 linear layers, ReLU) on ``[f_i, f_j, f_j - f_i]``.

    Args:
        embed_dim: P, width of the pooled features (256).
        hidden_dim: hidden width (256).
    """

    def __init__(self, embed_dim: int, hidden_dim: int = 256) -> None:
        super().__init__()
        self.mlp = MLP(3 * embed_dim, hidden_dim, 1, 3)

    def forward(self, f_i: Tensor, f_j: Tensor) -> Tensor:
        """f_i, f_j (N, P) pooled features -> (N,) predicted j - i."""
        return self.mlp(torch.cat([f_i, f_j, f_j - f_i], dim=-1)).squeeze(-1)

    def loss(self, features: Tensor, positions: Tensor) -> Tensor:
        """MSE of the predicted offsets over all ordered pairs (i, j), i != j, of a window.

        Args:
            features: (W, P) pooled features of the W slices of a window (`pool_features`), or
                (G, W, P) for G windows.
            positions: (W,) or (G, W) the slices' indices (offsets are ``positions[j] - positions[i]``).
        Returns:
            scalar: mean over the G W (W - 1) ordered pairs of ``(pred - (pos_j - pos_i))^2``
            (0 for W < 2).
        """
        if features.ndim == 2:
            features, positions = features[None], positions[None]
        g, w, _ = features.shape
        if w < 2:
            return features.sum() * 0.0
        ii, jj = torch.meshgrid(torch.arange(w, device=features.device), torch.arange(w, device=features.device),
                                indexing="ij")
        keep = ii != jj
        i, j = ii[keep], jj[keep]                                   # W (W - 1) ordered pairs
        pred = self(features[:, i].flatten(0, 1), features[:, j].flatten(0, 1))
        pos = positions.to(device=features.device, dtype=pred.dtype)
        target = (pos[:, j] - pos[:, i]).flatten()
        return F.mse_loss(pred, target)


def pool_features(conditioned: Tensor) -> Tensor:
    """(B, P, n, n) conditioned embeddings -> (B, P) global averages (the SRPP head's input)."""
    return conditioned.mean(dim=(2, 3))


# ============================================================================ BD
class BoundaryHead(nn.Module):
    """Boundary map from a conditioned embedding: boundary queries cross-attend to the slice features.

    1. ``branch`` (1 x 1 conv P -> C) of the conditioned embedding (B, P, n, n), average-pooled by
       ``stride``: the (n/s)^2 boundary queries (B, T, C) (+ 2D sine encoding);
    2. one pre-norm cross-attention (queries -> keys/values = the conditioned embedding pooled to the
       same grid, P channels, with its 2D sine encoding on the keys) and a GELU MLP, both residual;
    3. ``upscale``: transposed convolutions 2x to n (plus the unpooled branch features), 2x, 2x ->
       (B, C/4, 4n, 4n) for s = 2 (one fewer for s = 1), then a 1 x 1 convolution to one logit.

    Args:
        embed_dim: P. dim: C (128). num_heads: heads of the cross-attention (4). stride: s (2).
    """

    def __init__(self, embed_dim: int, dim: int = 128, num_heads: int = 4, stride: int = 2) -> None:
        super().__init__()
        self.embed_dim, self.dim, self.stride = embed_dim, dim, stride
        self.branch = nn.Conv2d(embed_dim, dim, kernel_size=1)
        self.norm_q = nn.LayerNorm(dim)
        self.norm_kv = nn.LayerNorm(embed_dim)
        self.cross_attn = KVAttention(dim, num_heads, kv_dim=embed_dim)
        self.norm_mlp = nn.LayerNorm(dim)
        self.mlp = MLPBlock(dim, 2 * dim, nn.GELU)
        ups: list[nn.Module] = []
        c, side = dim, stride
        while side > 1:  # back to n
            ups += [nn.ConvTranspose2d(c, c, kernel_size=2, stride=2)]
            side //= 2
        self.to_embedding_grid = nn.Sequential(*ups)
        self.upscale = nn.Sequential(
            LayerNorm2d(dim), nn.GELU(),
            nn.ConvTranspose2d(dim, dim // 2, kernel_size=2, stride=2), LayerNorm2d(dim // 2), nn.GELU(),
            nn.ConvTranspose2d(dim // 2, dim // 4, kernel_size=2, stride=2), nn.GELU(),
        )
        self.predict = nn.Conv2d(dim // 4, 1, kernel_size=1)

    def forward(self, conditioned: Tensor) -> Tensor:
        """(B, P, n, n) conditioned embedding -> (B, 1, 4n, 4n) boundary logits."""
        b, p, h, w = conditioned.shape
        s = self.stride
        branch = self.branch(conditioned)                                  # (B, C, n, n)
        q = F.avg_pool2d(branch, s) if s > 1 else branch
        kv = F.avg_pool2d(conditioned, s) if s > 1 else conditioned
        hq, wq = q.shape[-2:]
        q = q.flatten(2).transpose(1, 2)                                   # (B, T, C)
        kv = self.norm_kv(kv.flatten(2).transpose(1, 2))                   # (B, T, P)
        pos_q = sine_position_encoding(self.dim, hq, wq, q.device, q.dtype).flatten(2).transpose(1, 2)
        pos_kv = sine_position_encoding(p, hq, wq, q.device, q.dtype).flatten(2).transpose(1, 2)
        q = q + self.cross_attn(self.norm_q(q) + pos_q, kv + pos_kv, kv)
        q = q + self.mlp(self.norm_mlp(q))
        x = self.to_embedding_grid(q.transpose(1, 2).reshape(b, self.dim, hq, wq)) + branch
        return self.predict(self.upscale(x))


def boundary_target(mask: Tensor, width_px: int = 2) -> Tensor:
    """The morphological boundary of a mask: dilation minus erosion (square structuring elements).

    ``width_px`` = 1: the inner boundary (mask minus its 3 x 3 erosion); 2: one pixel inside and one
    outside (3 x 3 dilation minus 3 x 3 erosion); w in general: ceil(w/2) inside, floor(w/2) outside.
    The image edge is not a boundary (pixels outside the grid count as neither inside nor outside).

    Args:
        mask: (B, 1, H, W) bool (or 0/1) masks on the low-res grid (256 x 256).
        width_px: boundary width in pixels (>= 1).
    Returns:
        (B, 1, H, W) bool.
    """
    if width_px < 1:
        raise ValueError(f"width_px must be >= 1, got {width_px}")
    m = mask.float()
    r_in, r_out = (width_px + 1) // 2, width_px // 2
    eroded = -F.max_pool2d(-m, 2 * r_in + 1, stride=1, padding=r_in)
    dilated = F.max_pool2d(m, 2 * r_out + 1, stride=1, padding=r_out) if r_out else m
    return (dilated - eroded) > 0.5


def boundary_loss(logits: Tensor, target: Tensor, normalize: bool = True) -> Tensor:
    """Class-balanced BCE (HED): boundary pixels weighted by the fraction of non-boundary pixels, and
    non-boundary pixels by the fraction of boundary pixels, per image.

    Args:
        logits: (B, 1, H, W) boundary logits. target: (B, 1, H, W) bool boundary (`boundary_target`).
        normalize: divide each image's weighted sum by the sum of its weights (then the loss is
            ``(mean BCE on boundary + mean BCE off boundary) / 2``); False: divide by the pixel count
            (HED's sum, scaled by 1 / HW). An image without boundary pixels gives 0 either way.
    Returns:
        scalar, the mean over the batch.
    """
    t = target.to(logits.dtype)
    dims = tuple(range(1, t.ndim))
    frac_pos = t.mean(dim=dims, keepdim=True)                              # (B, 1, 1, 1)
    weight = torch.where(target.bool(), 1.0 - frac_pos, frac_pos)
    bce = F.binary_cross_entropy_with_logits(logits, t, reduction="none")
    total = (weight * bce).sum(dim=dims)
    if normalize:
        per_image = total / weight.sum(dim=dims).clamp_min(torch.finfo(logits.dtype).tiny)
    else:
        per_image = total / t[0].numel()
    return per_image.mean()
