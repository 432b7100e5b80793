"""SAM mask decoder (2D): two-way transformer, 4x output upscaling, hypernetwork MLPs, IoU head.

Keys (under ``mask_decoder.``): ``transformer.*``, ``iou_token.weight`` (1, P),
``mask_tokens.weight`` (M + 1, P), ``output_upscaling.{0,1,3}`` (ConvTranspose P -> P/4,
LayerNorm2d, ConvTranspose P/4 -> P/8), ``output_hypernetworks_mlps.i.layers.{0,1,2}``,
``iou_prediction_head.layers.{0,1,2}``.

Tokens fed to the transformer: [IoU token, M + 1 mask tokens, prompt tokens]. The image embedding
plus the dense prompt embedding is upscaled 4x to P/8 channels; mask i is the dot product of
hypernetwork MLP i applied to output mask token i with every upscaled pixel. Mask token 0 is the
single-mask output; tokens 1..M are the multimask outputs.
"""
from __future__ import annotations

import torch
from torch import Tensor, nn

from voxsam.models.sam2d.common import MLP, LayerNorm2d
from voxsam.models.sam2d.transformer import TwoWayTransformer


class MaskDecoder(nn.Module):
    """Predicts mask logits and IoU estimates from an image embedding and prompt embeddings.

    Args:
        transformer_dim: P.
        transformer: the `TwoWayTransformer`.
        num_multimask_outputs: M (3).
        iou_head_depth, iou_head_hidden_dim: IoU MLP (3, 256).
    """

    def __init__(self, transformer_dim: int, transformer: TwoWayTransformer, num_multimask_outputs: int = 3,
                 iou_head_depth: int = 3, iou_head_hidden_dim: int = 256) -> None:
        super().__init__()
        p = transformer_dim
        self.transformer = transformer
        self.num_multimask_outputs = num_multimask_outputs
        self.num_mask_tokens = num_multimask_outputs + 1
        self.iou_token = nn.Embedding(1, p)
        self.mask_tokens = nn.Embedding(self.num_mask_tokens, p)
        self.output_upscaling = nn.Sequential(
            nn.ConvTranspose2d(p, p // 4, kernel_size=2, stride=2),
            LayerNorm2d(p // 4),
            nn.GELU(),
            nn.ConvTranspose2d(p // 4, p // 8, kernel_size=2, stride=2),
            nn.GELU(),
        )
        self.output_hypernetworks_mlps = nn.ModuleList(MLP(p, p, p // 8, 3) for _ in range(self.num_mask_tokens))
        self.iou_prediction_head = MLP(p, iou_head_hidden_dim, self.num_mask_tokens, iou_head_depth)

    def predict_masks(self, image_embeddings: Tensor, image_pe: Tensor, sparse: Tensor,
                      dense: Tensor) -> tuple[Tensor, Tensor]:
        """All M + 1 masks: ((B, M+1, 4n, 4n) logits, (B, M+1) IoU estimates).

        image_embeddings: (B, P, n, n) (one per prompt set); image_pe: (1, P, n, n);
        sparse: (B, T, P); dense: (B, P, n, n).
        """
        b = sparse.shape[0]
        out_tokens = torch.cat([self.iou_token.weight, self.mask_tokens.weight], dim=0)
        tokens = torch.cat([out_tokens.unsqueeze(0).expand(b, -1, -1), sparse], dim=1)
        src = image_embeddings + dense
        pos = image_pe.expand(b, -1, -1, -1)
        _, c, h, w = src.shape
        hs, src_out = self.transformer(src, pos, tokens)
        iou_out = hs[:, 0]
        mask_out = hs[:, 1:1 + self.num_mask_tokens]
        upscaled = self.output_upscaling(src_out.transpose(1, 2).reshape(b, c, h, w))
        hyper = torch.stack([mlp(mask_out[:, i]) for i, mlp in enumerate(self.output_hypernetworks_mlps)], dim=1)
        _, c_up, h_up, w_up = upscaled.shape
        masks = (hyper @ upscaled.reshape(b, c_up, h_up * w_up)).reshape(b, -1, h_up, w_up)
        return masks, self.iou_prediction_head(iou_out)

    def forward(self, image_embeddings: Tensor, image_pe: Tensor, sparse: Tensor, dense: Tensor,
                multimask_output: bool = False) -> tuple[Tensor, Tensor]:
        """Masks for the prompts.

        Returns:
            low-res logits (B, 1 or M, 4n, 4n) and IoU estimates (B, 1 or M): mask token 0 when
            ``multimask_output`` is False, tokens 1..M otherwise.
        """
        masks, iou = self.predict_masks(image_embeddings, image_pe, sparse, dense)
        sel = slice(1, None) if multimask_output else slice(0, 1)
        return masks[:, sel], iou[:, sel]
