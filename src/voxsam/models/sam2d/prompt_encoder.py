"""SAM prompt encoder (2D): points, boxes and a dense mask prompt.

Keys (under ``prompt_encoder.``): ``pe_layer.positional_encoding_gaussian_matrix`` (2, P/2, a buffer
saved in the state dict), ``point_embeddings.{0,1,2,3}.weight`` (1, P: negative point, positive
point, box top-left corner, box bottom-right corner), ``not_a_point_embed.weight``,
``mask_downscaling.{0,1,3,4,6}``, ``no_mask_embed.weight``.

Coordinates are (x, y) = (column, row) pixel indices (floats allowed) in the S x S model input
(256 for LiteMedSAM); the encoder adds 0.5 to reach the pixel centre and divides by S.

Rules (as SAM):

- points with labels 1 (positive), 0 (negative) or -1 (padding: the "not a point" embedding only,
  no positional term). When points are given without boxes, one padding point is appended.
- each box (x0, y0, x1, y1) becomes two tokens, its corners, with the corner embeddings added.
  Several boxes per image are accepted (2 tokens each); the released LiteMedSAM was trained with
  one box per image, so more than one is outside its training distribution.
- a dense mask prompt (B, 1, 4n, 4n) (previous low-res logits) goes through ``mask_downscaling``
  (two stride-2 convolutions to the n x n embedding grid); without one, ``no_mask_embed`` is
  broadcast over the grid.
"""
from __future__ import annotations

import math
from typing import cast

import torch
from torch import Tensor, nn

from voxsam.models.sam2d.common import LayerNorm2d


class PositionEmbeddingRandom(nn.Module):
    """Random Fourier features: c in [0,1]^2 -> f = 2 pi (2c - 1) @ G -> [sin f, cos f]."""

    positional_encoding_gaussian_matrix: Tensor  # (2, num_pos_feats) buffer, saved

    def __init__(self, num_pos_feats: int, scale: float = 1.0) -> None:
        super().__init__()
        self.register_buffer("positional_encoding_gaussian_matrix", scale * torch.randn(2, num_pos_feats))

    def encode(self, coords: Tensor) -> Tensor:
        """coords: (..., 2) as (x, y) normalised to [0, 1] -> (..., 2 * num_pos_feats)."""
        g = self.positional_encoding_gaussian_matrix
        f = (2.0 * math.pi) * ((2.0 * coords.to(g.dtype) - 1.0) @ g)
        return torch.cat([torch.sin(f), torch.cos(f)], dim=-1)

    def forward_with_coords(self, coords: Tensor, image_size: tuple[int, int]) -> Tensor:
        """coords: (B, N, 2) (x, y) input-pixel coordinates (already at pixel centres);
        image_size: (H, W) of the input -> (B, N, P)."""
        h, w = image_size
        size = torch.tensor([float(w), float(h)], dtype=coords.dtype, device=coords.device)
        return self.encode(coords / size)

    def dense(self, size: tuple[int, int]) -> Tensor:
        """(P, h, w): encoding of the cell centres ((j + .5) / w, (i + .5) / h) of an h x w grid."""
        h, w = size
        g = self.positional_encoding_gaussian_matrix
        ys = (torch.arange(h, device=g.device, dtype=g.dtype) + 0.5) / h
        xs = (torch.arange(w, device=g.device, dtype=g.dtype) + 0.5) / w
        yy, xx = torch.meshgrid(ys, xs, indexing="ij")
        return self.encode(torch.stack([xx, yy], dim=-1)).permute(2, 0, 1)


class PromptEncoder(nn.Module):
    """Prompts -> sparse tokens (B, T, P) and a dense embedding (B, P, n, n).

    Args:
        embed_dim: P.
        image_embedding_size: n, side of the image embedding grid.
        input_image_size: S, side of the model input (coordinates are divided by it).
        mask_in_chans: hidden channels of the mask downscaling (16).
    """

    def __init__(self, embed_dim: int, image_embedding_size: int, input_image_size: int,
                 mask_in_chans: int) -> None:
        super().__init__()
        self.embed_dim = embed_dim
        self.image_embedding_size = (image_embedding_size, image_embedding_size)
        self.input_image_size = (input_image_size, input_image_size)
        self.mask_input_size = (4 * image_embedding_size, 4 * image_embedding_size)
        self.pe_layer = PositionEmbeddingRandom(embed_dim // 2)
        # 0: negative point, 1: positive point, 2: box top-left, 3: box bottom-right
        self.point_embeddings = nn.ModuleList(nn.Embedding(1, embed_dim) for _ in range(4))
        self.not_a_point_embed = nn.Embedding(1, embed_dim)
        c = mask_in_chans
        self.mask_downscaling = nn.Sequential(
            nn.Conv2d(1, c // 4, kernel_size=2, stride=2),
            LayerNorm2d(c // 4),
            nn.GELU(),
            nn.Conv2d(c // 4, c, kernel_size=2, stride=2),
            LayerNorm2d(c),
            nn.GELU(),
            nn.Conv2d(c, embed_dim, kernel_size=1),
        )
        self.no_mask_embed = nn.Embedding(1, embed_dim)

    def _point_embed(self, i: int) -> Tensor:
        """(1, P) learned embedding ``point_embeddings.i``."""
        return cast(nn.Embedding, self.point_embeddings[i]).weight

    def get_dense_pe(self, token_major: bool = False) -> Tensor:
        """Positional encoding of the image-embedding grid: (1, P, n, n), or (1, n*n, P) contiguous
        (row-major grid) when ``token_major``.

        Computed once and kept until the Gaussian matrix changes (``load_state_dict``, ``.to``: keyed on
        its storage, version, dtype and device) or the inference mode flips (an inference-mode tensor
        cannot enter autograd). Treat the result as read-only.
        """
        g = self.pe_layer.positional_encoding_gaussian_matrix
        key = (g.data_ptr(), g._version, g.dtype, g.device, torch.is_inference_mode_enabled())
        cache = self.__dict__.get("_dense_pe_cache")
        if cache is None or cache["key"] != key:
            with torch.no_grad():
                pe = self.pe_layer.dense(self.image_embedding_size).unsqueeze(0)
            cache = {"key": key, "channels": pe, "tokens": pe.flatten(2).transpose(1, 2).contiguous()}
            self.__dict__["_dense_pe_cache"] = cache  # replaced whole: a concurrent reader sees one or the other
        return cast(Tensor, cache["tokens" if token_major else "channels"])

    def embed_points(self, points: Tensor, labels: Tensor, pad: bool) -> Tensor:
        """points (B, N, 2) xy input pixels, labels (B, N) in {-1, 0, 1} -> (B, N (+1 if pad), P)."""
        points = points + 0.5
        labels = labels.to(points.device)
        if pad:
            points = torch.cat([points, points.new_zeros(points.shape[0], 1, 2)], dim=1)
            labels = torch.cat([labels, labels.new_full((labels.shape[0], 1), -1)], dim=1)
        emb = self.pe_layer.forward_with_coords(points, self.input_image_size)
        lab = labels[..., None]
        emb = torch.where(lab == -1, self.not_a_point_embed.weight, emb)
        emb = emb + (lab == 0) * self._point_embed(0) + (lab == 1) * self._point_embed(1)
        return emb

    def embed_boxes(self, boxes: Tensor) -> Tensor:
        """boxes (B, K, 4) x0, y0, x1, y1 input pixels -> (B, 2K, P) corner tokens."""
        b, k, _ = boxes.shape
        corners = (boxes + 0.5).reshape(b, 2 * k, 2)
        emb = self.pe_layer.forward_with_coords(corners, self.input_image_size)
        corner_embed = torch.cat([self._point_embed(2), self._point_embed(3)], dim=0)
        return emb + corner_embed.repeat(k, 1)

    def embed_mask(self, masks: Tensor) -> Tensor:
        """(B, 1, 4n, 4n) mask logits -> (B, P, n, n)."""
        return self.mask_downscaling(masks)

    def forward(self, points: Tensor | None, labels: Tensor | None, boxes: Tensor | None,
                masks: Tensor | None, batch_size: int) -> tuple[Tensor, Tensor]:
        """Sparse and dense prompt embeddings.

        Args:
            points: (B, N, 2) xy input pixels, or None; labels: (B, N) (with points).
            boxes: (B, K, 4) x0, y0, x1, y1 input pixels, or None.
            masks: (B, 1, 4n, 4n) float, or None.
            batch_size: B (used when no prompt gives it).
        Returns:
            sparse (B, T, P) with T = N (+1 padding point if no boxes) + 2K, and dense (B, P, n, n).
        """
        w = self.no_mask_embed.weight
        tokens = [w.new_zeros(batch_size, 0, self.embed_dim)]
        if points is not None:
            assert labels is not None
            tokens.append(self.embed_points(points.to(w.dtype), labels, pad=boxes is None))
        if boxes is not None:
            tokens.append(self.embed_boxes(boxes.to(w.dtype)))
        sparse = torch.cat(tokens, dim=1)
        if masks is not None:
            dense = self.embed_mask(masks.to(w.dtype))
        else:
            n_h, n_w = self.image_embedding_size
            dense = w.reshape(1, -1, 1, 1).expand(batch_size, -1, n_h, n_w)
        return sparse, dense
