"""Prompt validation and decoding shared by every model with SAM's prompt encoder + mask decoder.

    prompts = check_prompts(embeddings, points, labels, boxes, mask_input, embed_dim=256,
                            embedding_size=64, mask_size=256, device=dev)
    logits, iou = decode_prompts(prompt_encoder, mask_decoder, prompts, multimask=False)

`voxsam.models.sam2d.build.Sam2D.decode` and `voxsam.models.memory3d.Memory3D.decode` both use it,
so that the two accept the same prompts with the same errors and decode them identically.
"""
from __future__ import annotations

from typing import Any

import torch
from torch import Tensor

from voxsam.errors import PromptError
from voxsam.models.sam2d.mask_decoder import MaskDecoder
from voxsam.models.sam2d.prompt_batch import Prompts
from voxsam.models.sam2d.prompt_encoder import PromptEncoder


def as_tensor(x: Any, name: str, device: torch.device) -> Tensor:
    """``x`` as a tensor on ``device``; `PromptError` naming ``name`` if it is not array-like."""
    if isinstance(x, Tensor):
        return x.to(device)
    try:
        return torch.as_tensor(x, device=device)
    except Exception as e:  # noqa: BLE001 - any conversion failure is a bad prompt
        raise PromptError(f"{name} is not array-like: {e}") from None


def finite(t: Tensor) -> bool:
    """True when every value is finite (always True on the meta device)."""
    return t.device.type == "meta" or bool(torch.isfinite(t).all())


def check_prompts(embeddings: Tensor, points: Any = None, labels: Any = None, boxes: Any = None,
                  mask_input: Any = None, *, embed_dim: int, embedding_size: int, mask_size: int,
                  device: torch.device) -> Prompts:
    """Validate and normalise the prompts of ``Sam2D.decode`` (same arguments, same rules).

    Args:
        embeddings: (B, P, n, n), or (1, P, n, n) shared by all B prompt sets.
        points: (B, N, 2) (x, y) input pixels, or None; labels: (B, N) in {1, 0, -1} or None (all 1).
        boxes: (B, 4) or (B, K, 4) x0, y0, x1, y1 input pixels, or None.
        mask_input: (B, 1, 4n, 4n) dense mask prompt (previous low-res logits), or None.
        embed_dim, embedding_size, mask_size: P, n and 4n of the model.
        device: where the prompt tensors go.
    Returns:
        `Prompts` on ``device`` (embeddings moved there and expanded to the batch).
    Raises:
        PromptError: bad shapes, NaN/inf coordinates, labels outside {-1, 0, 1}, batch mismatch.
    """
    p, n, m = embed_dim, embedding_size, mask_size
    if not isinstance(embeddings, Tensor) or embeddings.ndim != 4 or tuple(embeddings.shape[1:]) != (p, n, n):
        shape = tuple(embeddings.shape) if isinstance(embeddings, Tensor) else type(embeddings).__name__
        raise PromptError(f"embeddings must have shape (B, {p}, {n}, {n}), got {shape}")
    dev = device
    batch: dict[str, int] = {}
    if points is not None:
        points = as_tensor(points, "points", dev).float()
        if points.ndim != 3 or points.shape[-1] != 2:
            raise PromptError(f"points must have shape (B, N, 2), got {tuple(points.shape)}")
        if not finite(points):
            raise PromptError("points contain NaN or infinite coordinates")
        if labels is None:
            labels = torch.ones(points.shape[:2], dtype=torch.long, device=dev)
        labels = as_tensor(labels, "labels", dev)
        if tuple(labels.shape) != tuple(points.shape[:2]):
            raise PromptError(f"labels must have shape {tuple(points.shape[:2])}, got {tuple(labels.shape)}")
        if labels.is_floating_point() and not finite(labels):
            raise PromptError("labels contain NaN")
        if labels.is_floating_point() and labels.device.type != "meta" and not bool((labels == labels.round()).all()):
            raise PromptError("labels must be integers 1 (positive), 0 (negative) or -1 (padding)")
        labels = labels.long()
        if labels.numel() and labels.device.type != "meta" and not bool(((labels >= -1) & (labels <= 1)).all()):
            raise PromptError("labels must be 1 (positive), 0 (negative) or -1 (padding)")
        batch["points"] = points.shape[0]
    elif labels is not None:
        raise PromptError("labels given without points")
    if boxes is not None:
        boxes = as_tensor(boxes, "boxes", dev).float()
        if boxes.ndim == 2:
            boxes = boxes[:, None, :]
        if boxes.ndim != 3 or boxes.shape[-1] != 4:
            raise PromptError(f"boxes must have shape (B, 4) or (B, K, 4), got {tuple(boxes.shape)}")
        if not finite(boxes):
            raise PromptError("boxes contain NaN or infinite coordinates")
        batch["boxes"] = boxes.shape[0]
    if mask_input is not None:
        mask_input = as_tensor(mask_input, "mask_input", dev).float()
        if mask_input.ndim != 4 or tuple(mask_input.shape[1:]) != (1, m, m):
            raise PromptError(f"mask_input must have shape (B, 1, {m}, {m}), got {tuple(mask_input.shape)}")
        if not finite(mask_input):
            raise PromptError("mask_input contains NaN or infinite values")
        batch["mask_input"] = mask_input.shape[0]
    sizes = set(batch.values())
    if len(sizes) > 1:
        raise PromptError("prompt batch sizes differ: " + ", ".join(f"{k} {v}" for k, v in batch.items()))
    b = sizes.pop() if sizes else embeddings.shape[0]
    if embeddings.shape[0] not in (1, b):
        raise PromptError(f"embeddings batch {embeddings.shape[0]} does not match the prompts' batch {b}")
    emb = embeddings.to(dev).expand(b, -1, -1, -1)
    return Prompts(emb, points, labels, boxes, mask_input, b)


def decode_prompts(prompt_encoder: PromptEncoder, mask_decoder: MaskDecoder, prompts: Prompts,
                   multimask: bool = False, exact: bool = False) -> tuple[Tensor, Tensor]:
    """Low-res mask logits (B, 1 or M, 4n, 4n) and predicted IoU (B, 1 or M) for checked prompts.

    With autograd off (``torch.no_grad`` / ``torch.inference_mode``) and unless ``exact`` (or inside
    `fast_decoder.exact_decoder()`), the decoder runs `voxsam.models.sam2d.fast_decoder.fast_decode`
    (same results to float32 rounding, reading the live weights); with gradients on, always the exact
    modules (training).
    """
    from voxsam.models.sam2d import fast_decoder

    if not exact and fast_decoder.enabled(mask_decoder):
        return fast_decoder.fast_decode(prompt_encoder, mask_decoder, prompts, bool(multimask))
    sparse, dense = prompt_encoder(prompts.points, prompts.labels, prompts.boxes, prompts.mask_input,
                                   prompts.batch)
    return mask_decoder(prompts.embeddings, prompt_encoder.get_dense_pe(), sparse, dense,
                        multimask_output=bool(multimask))
