"""SAM-Med3D prompt encoder: points, this project's box corners, and low-res mask input.

Keys (under ``prompt_encoder.``): ``pe_layer.positional_encoding_gaussian_matrix`` (3, P/3, a buffer
saved in the state dict), ``point_embeddings.{0,1}.weight`` (1, P), ``not_a_point_embed.weight``,
``mask_downscaling.{0,1,3,4,6}``, ``no_mask_embed.weight`` and - not in released checkpoints -
``box_corner_embed.weight`` (2, P).

Coordinates are voxel indices (float allowed) into the ``image_size``^3 input, in the order of its last
three axes. No range check is made: the positional encoding is defined everywhere; callers that
need clicks inside the crop check that themselves.
"""
from __future__ import annotations

import math
from typing import Any, cast

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from voxsam.errors import PromptError
from voxsam.models.sam3d.image_encoder import LayerNorm3d


class PositionEmbeddingRandom3D(nn.Module):
    """Random Fourier features: c in [0,1]^3 -> f = 2 pi (2c - 1) @ G -> [sin f, cos f, sin f]."""

    positional_encoding_gaussian_matrix: Tensor  # (3, num_pos_feats) buffer

    def __init__(self, num_pos_feats: int, scale: float = 1.0) -> None:
        super().__init__()
        self.register_buffer("positional_encoding_gaussian_matrix", scale * torch.randn(3, num_pos_feats))

    def _pe_encoding(self, coords: Tensor) -> Tensor:
        """coords: (..., 3) normalised to [0, 1] -> (..., 3 * num_pos_feats)."""
        g = self.positional_encoding_gaussian_matrix
        f = (2.0 * math.pi) * ((2.0 * coords.to(g.dtype) - 1.0) @ g)
        s = torch.sin(f)
        return torch.cat([s, torch.cos(f), s], dim=-1)

    def forward_with_coords(self, coords: Tensor, image_size: int) -> Tensor:
        """coords: (B, N, 3) voxel coordinates (already +0.5) -> (B, N, P)."""
        return self._pe_encoding(coords / image_size)

    def dense(self, n: int) -> Tensor:
        """(P, n, n, n): encoding of the cell centres with the first two axes swapped (released).

        dense[:, i, j, k] = encoding of normalised point ((j + .5) / n, (i + .5) / n, (k + .5) / n).
        """
        g = self.positional_encoding_gaussian_matrix
        c = (torch.arange(n, device=g.device, dtype=g.dtype) + 0.5) / n
        i, j, k = torch.meshgrid(c, c, c, indexing="ij")
        pe = self._pe_encoding(torch.stack([j, i, k], dim=-1))  # (n, n, n, P)
        return pe.permute(3, 0, 1, 2)


def _finite(t: Tensor) -> bool:
    """All values finite (meta tensors, which hold no values, count as finite)."""
    return t.device.type == "meta" or bool(torch.isfinite(t).all())


def _tensor(x: Any, name: str) -> Tensor:
    if isinstance(x, Tensor):
        return x
    try:
        return torch.as_tensor(x)
    except Exception as e:  # noqa: BLE001 - any conversion failure is a bad prompt
        raise PromptError(f"{name} is not array-like: {e}") from None


class PromptEncoder3D(nn.Module):
    """Encodes prompts into sparse tokens (B, T, P) and a dense embedding (B, P, n, n, n).

    Args:
        embed_dim: P (divisible by 3).
        image_embedding_size: n, side of the token grid.
        input_image_size: side of the input volume (coordinates are divided by it).
        mask_in_chans: channels of the mask downscaling (16).
        box_prompts: add learned box-corner embeddings (this project's addition).
    """

    def __init__(self, embed_dim: int, image_embedding_size: int, input_image_size: int,
                 mask_in_chans: int = 16, box_prompts: bool = True) -> None:
        super().__init__()
        if embed_dim % 3:
            raise ValueError(f"prompt embed dim {embed_dim} must be divisible by 3")
        self.embed_dim = embed_dim
        self.image_embedding_size = image_embedding_size
        self.input_image_size = input_image_size
        self.mask_input_size = 4 * image_embedding_size
        self.pe_layer = PositionEmbeddingRandom3D(embed_dim // 3)
        self.point_embeddings = nn.ModuleList(nn.Embedding(1, embed_dim) for _ in range(2))
        self.not_a_point_embed = nn.Embedding(1, embed_dim)
        self.mask_downscaling = nn.Sequential(
            nn.Conv3d(1, mask_in_chans // 4, kernel_size=2, stride=2),
            LayerNorm3d(mask_in_chans // 4),
            nn.GELU(),
            nn.Conv3d(mask_in_chans // 4, mask_in_chans, kernel_size=2, stride=2),
            LayerNorm3d(mask_in_chans),
            nn.GELU(),
            nn.Conv3d(mask_in_chans, embed_dim, kernel_size=1),
        )
        self.no_mask_embed = nn.Embedding(1, embed_dim)
        #: evaluate mask_downscaling as channels-last matrix products (same function as the modules)
        self.fused_downscaling = True
        self.box_prompts = box_prompts
        if box_prompts:
            self.box_corner_embed = nn.Embedding(2, embed_dim)

    def get_dense_pe(self) -> Tensor:
        """(1, P, n, n, n) positional encoding of the image tokens."""
        return self.pe_layer.dense(self.image_embedding_size).unsqueeze(0)

    # ------------------------------------------------------------------ validation
    def validate(self, points: Any = None, labels: Any = None, boxes: Any = None,
                 masks: Any = None) -> tuple[Tensor | None, Tensor | None, Tensor | None, Tensor | None, int]:
        """Check shapes and values; return float points, long labels, float boxes, masks, batch size.

        Raises:
            PromptError: NaN/inf coordinates, labels outside {-1, 0, 1}, wrong or mismatched shapes.
        """
        dtype = self.no_mask_embed.weight.dtype
        device = self.no_mask_embed.weight.device
        batch: dict[str, int] = {}
        if (points is None) != (labels is None):
            raise PromptError("points and labels must be given together")
        if points is not None:
            points, labels = _tensor(points, "points"), _tensor(labels, "labels")
            if points.ndim != 3 or points.shape[-1] != 3:
                raise PromptError(f"points must have shape (B, N, 3), got {tuple(points.shape)}")
            if labels.shape != points.shape[:2]:
                raise PromptError(f"labels shape {tuple(labels.shape)} does not match points "
                                  f"{tuple(points.shape)} (expected (B, N))")
            if points.is_complex() or points.dtype == torch.bool:
                raise PromptError(f"points must be real numbers, got {points.dtype}")
            points = points.to(device=device, dtype=dtype)
            if not _finite(points):
                raise PromptError("points contain NaN or infinite coordinates")
            if labels.is_complex():
                raise PromptError(f"labels must be -1, 0 or 1, got dtype {labels.dtype}")
            lf = labels.to(torch.float64)
            ok = (lf == -1) | (lf == 0) | (lf == 1)
            if lf.device.type != "meta" and not bool(ok.all()):
                bad = sorted({float(v) for v in lf[~ok].flatten()[:5].tolist()})
                raise PromptError(f"labels must be -1 (padding), 0 (negative) or 1 (positive); got {bad}")
            labels = lf.to(device=device, dtype=torch.long)
            batch["points"] = points.shape[0]
        if boxes is not None:
            if not self.box_prompts:
                raise PromptError("this model was built without box prompts (box_prompts=False)")
            boxes = _tensor(boxes, "boxes")
            if boxes.ndim != 3 or tuple(boxes.shape[1:]) != (2, 3):
                raise PromptError(f"boxes must have shape (B, 2, 3) (two corners), got {tuple(boxes.shape)}")
            if boxes.is_complex() or boxes.dtype == torch.bool:
                raise PromptError(f"boxes must be real numbers, got {boxes.dtype}")
            boxes = boxes.to(device=device, dtype=dtype)
            if not _finite(boxes):
                raise PromptError("boxes contain NaN or infinite coordinates")
            batch["boxes"] = boxes.shape[0]
        if masks is not None:
            masks = _tensor(masks, "mask_input")
            m = self.mask_input_size
            if masks.ndim != 5 or tuple(masks.shape[1:]) != (1, m, m, m):
                raise PromptError(f"mask_input must have shape (B, 1, {m}, {m}, {m}), got {tuple(masks.shape)}")
            masks = masks.to(device=device, dtype=dtype)
            if not _finite(masks):
                raise PromptError("mask_input contains NaN or infinite values")
            batch["mask_input"] = masks.shape[0]
        if len(set(batch.values())) > 1:
            raise PromptError(f"prompt batch sizes differ: {batch}")
        bs = next(iter(batch.values())) if batch else 1
        return points, labels, boxes, masks, bs

    # ------------------------------------------------------------------ encoding
    def _embed_points(self, points: Tensor, labels: Tensor, pad: bool) -> Tensor:
        points = points + 0.5  # to voxel centres
        if pad:
            points = torch.cat([points, points.new_zeros(points.shape[0], 1, 3)], dim=1)
            labels = torch.cat([labels, labels.new_full((labels.shape[0], 1), -1)], dim=1)
        pe = self.pe_layer.forward_with_coords(points, self.input_image_size)
        lab = labels[..., None]
        pe = torch.where(lab == -1, self.not_a_point_embed.weight, pe)
        neg = cast(nn.Embedding, self.point_embeddings[0])
        pos = cast(nn.Embedding, self.point_embeddings[1])
        pe = pe + torch.where(lab == 0, neg.weight, 0.0)
        pe = pe + torch.where(lab == 1, pos.weight, 0.0)
        return pe

    def _embed_boxes(self, boxes: Tensor) -> Tensor:
        pe = self.pe_layer.forward_with_coords(boxes + 0.5, self.input_image_size)  # (B, 2, P)
        return pe + self.box_corner_embed.weight[None]

    def _downscale_fused(self, masks: Tensor) -> Tensor:
        """``mask_downscaling`` as matrix products: both kernel-2 stride-2 convolutions act on disjoint
        2^3 blocks, so the input is split once into (8^3 cells) x (2^3 level-2 offsets) x (2^3 level-1
        offsets). masks: (B, 1, 4n, 4n, 4n) -> (B, P, n, n, n)."""
        seq = self.mask_downscaling
        conv1, conv2, conv3 = cast(nn.Conv3d, seq[0]), cast(nn.Conv3d, seq[3]), cast(nn.Conv3d, seq[6])
        ln1, ln2 = cast(LayerNorm3d, seq[1]), cast(LayerNorm3d, seq[4])
        b = masks.shape[0]
        n = self.image_embedding_size
        x = masks.reshape(b, n, 2, 2, n, 2, 2, n, 2, 2)          # (d,i2,i1, h,j2,j1, w,k2,k1)
        x = x.permute(0, 1, 4, 7, 2, 5, 8, 3, 6, 9).reshape(b, n ** 3 * 8, 8)  # rows (d,h,w,i2,j2,k2)
        c1, c2 = conv1.out_channels, conv2.out_channels
        y = F.linear(x, conv1.weight.reshape(c1, 8), conv1.bias)              # (B, n^3*8, c1)
        y = F.gelu(F.layer_norm(y, (c1,), ln1.weight, ln1.bias, ln1.eps))
        w2 = conv2.weight.permute(0, 2, 3, 4, 1).reshape(c2, 8 * c1)         # columns (i2,j2,k2,ci)
        y = F.linear(y.reshape(b, n ** 3, 8 * c1), w2, conv2.bias)           # (B, n^3, c2)
        y = F.gelu(F.layer_norm(y, (c2,), ln2.weight, ln2.bias, ln2.eps))
        y = F.linear(y, conv3.weight.reshape(conv3.out_channels, c2), conv3.bias)  # (B, n^3, P)
        return y.transpose(1, 2).reshape(b, -1, n, n, n)

    def forward(self, points: Tensor | None = None, labels: Tensor | None = None,
                boxes: Tensor | None = None, masks: Tensor | None = None) -> tuple[Tensor, Tensor]:
        """Encode prompts.

        Args:
            points: (B, N, 3) voxel coordinates, or None.
            labels: (B, N) with 1 positive, 0 negative, -1 padding, or None.
            boxes: (B, 2, 3) two opposite corners (voxel coordinates), or None.
            masks: (B, 1, 4n, 4n, 4n) low-res mask logits, or None (then ``no_mask_embed``).
        Returns:
            sparse (B, N + 1 or N + 2 or 2, P) - a padding point is appended when no box is given -
            and dense (B, P, n, n, n).
        """
        points, labels, boxes, masks, bs = self.validate(points, labels, boxes, masks)
        w = self.no_mask_embed.weight
        sparse = w.new_zeros(bs, 0, self.embed_dim)
        if points is not None:
            if labels is None:  # validate() already enforces this; narrows the type
                raise PromptError("points and labels must be given together")
            sparse = torch.cat([sparse, self._embed_points(points, labels, pad=boxes is None)], dim=1)
        if boxes is not None:
            sparse = torch.cat([sparse, self._embed_boxes(boxes)], dim=1)
        if masks is not None:
            dense = self._downscale_fused(masks) if self.fused_downscaling else self.mask_downscaling(masks)
        else:
            n = self.image_embedding_size
            dense = w.reshape(1, -1, 1, 1, 1).expand(bs, -1, n, n, n)
        return sparse, dense
