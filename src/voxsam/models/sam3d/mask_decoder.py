"""SAM-Med3D mask decoder: two-way transformer, 3D output upscaling and hypernetwork masks.

Keys (under ``mask_decoder.``): ``transformer.*``, ``iou_token.weight`` (1, P), ``mask_tokens.weight``
(4, P), ``output_upscaling.{0,1,3}``, ``output_hypernetworks_mlps.{0..3}.layers.{0,1,2}``,
``iou_prediction_head.layers.{0,1,2}``.
"""
from __future__ import annotations

from typing import cast

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from voxsam.errors import PromptError
from voxsam.models.sam3d.image_encoder import LayerNorm3d
from voxsam.models.sam3d.transformer import TwoWayTransformer


class MLP(nn.Module):
    """``num_layers`` Linear layers with ReLU between them (``layers.{i}``)."""

    def __init__(self, input_dim: int, hidden_dim: int, output_dim: int, num_layers: int) -> None:
        super().__init__()
        dims = [input_dim] + [hidden_dim] * (num_layers - 1)
        outs = [hidden_dim] * (num_layers - 1) + [output_dim]
        self.layers = nn.ModuleList(nn.Linear(i, o) for i, o in zip(dims, outs))

    def forward(self, x: Tensor) -> Tensor:
        """x: (..., input_dim) -> (..., output_dim)."""
        for i, layer in enumerate(self.layers):
            x = layer(x)
            if i < len(self.layers) - 1:
                x = F.relu(x)
        return x


class MaskDecoder3D(nn.Module):
    """Predicts low-res mask logits (B, K, 4n, 4n, 4n) and IoU scores (B, K), K = 1 or multimask.

    Args:
        transformer_dim: P.
        transformer: the two-way transformer.
        num_multimask_outputs: 3; the decoder has one more mask token (the single-mask output).
        iou_head_depth, iou_head_hidden_dim: IoU MLP (3, 256).
    """

    def __init__(self, transformer_dim: int, transformer: TwoWayTransformer,
                 num_multimask_outputs: int = 3, iou_head_depth: int = 3,
                 iou_head_hidden_dim: int = 256) -> None:
        super().__init__()
        p = transformer_dim
        self.transformer_dim = p
        self.transformer = transformer
        self.num_multimask_outputs = num_multimask_outputs
        self.num_mask_tokens = num_multimask_outputs + 1
        self.iou_token = nn.Embedding(1, p)
        self.mask_tokens = nn.Embedding(self.num_mask_tokens, p)
        self.output_upscaling = nn.Sequential(
            nn.ConvTranspose3d(p, p // 4, kernel_size=2, stride=2),
            LayerNorm3d(p // 4),
            nn.GELU(),
            nn.ConvTranspose3d(p // 4, p // 8, kernel_size=2, stride=2),
            nn.GELU(),
        )
        self.output_hypernetworks_mlps = nn.ModuleList(
            MLP(p, p, p // 8, 3) for _ in range(self.num_mask_tokens))
        self.iou_prediction_head = MLP(p, iou_head_hidden_dim, self.num_mask_tokens, iou_head_depth)
        #: evaluate output_upscaling + hypernetwork product as channels-last matrix products, for the
        #: requested masks only (same function as the module path; set False to use the modules)
        self.fused_upscaling = True

    def forward(self, image_embeddings: Tensor, image_pe: Tensor, sparse_prompt_embeddings: Tensor,
                dense_prompt_embeddings: Tensor, multimask_output: bool = False) -> tuple[Tensor, Tensor]:
        """
        Args:
            image_embeddings: (B or 1, P, n, n, n).
            image_pe: (1, P, n, n, n).
            sparse_prompt_embeddings: (B, T, P).
            dense_prompt_embeddings: (B, P, n, n, n).
            multimask_output: masks 1..K-1 instead of mask 0.
        Returns:
            masks (B, 1 or K-1, 4n, 4n, 4n) logits and iou_pred (B, 1 or K-1).
        """
        sl = slice(1, None) if multimask_output else slice(0, 1)
        masks, iou_pred = self.predict_masks(image_embeddings, image_pe, sparse_prompt_embeddings,
                                             dense_prompt_embeddings, sl)
        return masks, iou_pred[:, sl]

    def predict_masks(self, image_embeddings: Tensor, image_pe: Tensor, sparse_prompt_embeddings: Tensor,
                      dense_prompt_embeddings: Tensor, select: slice = slice(None)) -> tuple[Tensor, Tensor]:
        """Masks ``select`` of the K mask tokens (B, k, 4n, 4n, 4n) and all IoU predictions (B, K)."""
        bs = sparse_prompt_embeddings.shape[0]
        out_tokens = torch.cat([self.iou_token.weight, self.mask_tokens.weight], dim=0)
        tokens = torch.cat([out_tokens[None].expand(bs, -1, -1), sparse_prompt_embeddings], dim=1)
        if image_embeddings.shape[0] != bs:
            if image_embeddings.shape[0] != 1:
                raise PromptError(f"image embeddings batch {image_embeddings.shape[0]} does not match "
                                  f"prompt batch {bs}")
            image_embeddings = image_embeddings.expand(bs, -1, -1, -1, -1)
        src = image_embeddings + dense_prompt_embeddings
        pos_src = image_pe.expand(bs, -1, -1, -1, -1)
        b, c, d, h, w = src.shape
        hs, src_tokens = self.transformer(src, pos_src, tokens)
        iou_token_out = hs[:, 0, :]
        mask_tokens_out = hs[:, 1:1 + self.num_mask_tokens, :]
        idx = range(self.num_mask_tokens)[select]
        hyper_in = torch.stack([self.output_hypernetworks_mlps[i](mask_tokens_out[:, i, :]) for i in idx],
                               dim=1)  # (B, k, P/8)
        if self.fused_upscaling:
            masks = self._upscale_fused(src_tokens, hyper_in, (d, h, w))
        else:
            upscaled = self.output_upscaling(src_tokens.transpose(1, 2).reshape(b, c, d, h, w))
            b, c2, d2, h2, w2 = upscaled.shape
            masks = (hyper_in @ upscaled.reshape(b, c2, d2 * h2 * w2)).reshape(b, -1, d2, h2, w2)
        return masks, self.iou_prediction_head(iou_token_out)

    def _upscale_fused(self, tokens: Tensor, hyper_in: Tensor, grid: tuple[int, int, int]) -> Tensor:
        """``output_upscaling`` then ``hyper_in @ upscaled``, channels-last.

        A ConvTranspose3d with kernel = stride = 2 maps every voxel independently to its 2^3 block, so
        both layers are matrix products over voxels; the voxel order is restored only at the end, on
        the k requested masks instead of the P/8 channels.

        Args:
            tokens: (B, n^3, P) image tokens from the transformer (voxel order d, h, w).
            hyper_in: (B, k, P/8) hypernetwork outputs of the requested masks.
            grid: (D, H, W) token grid.
        Returns:
            (B, k, 4D, 4H, 4W) mask logits.
        """
        seq = self.output_upscaling
        up1, up2 = cast(nn.ConvTranspose3d, seq[0]), cast(nn.ConvTranspose3d, seq[3])
        ln = cast(LayerNorm3d, seq[1])
        b, nv, _ = tokens.shape
        d, h, w = grid
        c1, c2 = up1.out_channels, up2.out_channels
        # weights (Ci, Co, 2, 2, 2) -> ([i, j, k, Co], Ci); bias repeated for the 8 offsets
        w1 = up1.weight.permute(2, 3, 4, 1, 0).reshape(8 * c1, up1.in_channels)
        w2 = up2.weight.permute(2, 3, 4, 1, 0).reshape(8 * c2, up2.in_channels)
        b1 = None if up1.bias is None else up1.bias.repeat(8)
        b2 = None if up2.bias is None else up2.bias.repeat(8)
        y = F.linear(tokens, w1, b1).reshape(b, nv * 8, c1)                  # voxels (d,h,w,i,j,k)
        y = F.gelu(F.layer_norm(y, (c1,), ln.weight, ln.bias, ln.eps))
        y = F.gelu(F.linear(y, w2, b2).reshape(b, nv * 64, c2))              # (..,i2,j2,k2)
        m = y @ hyper_in.transpose(1, 2)                               # (B, nv*64, k)
        k = m.shape[-1]
        m = m.reshape(b, d, h, w, 2, 2, 2, 2, 2, 2, k)
        #          b  k  d  i  i2 h  j  j2 w  k  k2
        m = m.permute(0, 10, 1, 4, 7, 2, 5, 8, 3, 6, 9)
        return m.reshape(b, k, 4 * d, 4 * h, 4 * w)
