"""SAM-Med3D's training recipe for one batch: K rounds of simulated interaction on one image embedding.

Round 1 starts from a click uniform in the target, or (some steps) from the target's bounding box with its
corners jittered. Every later round adds a click uniform in the error region FN ∪ FP of the previous
prediction (positive when it falls in FN) - except "mask-only" rounds, which add nothing and let the model
refine from its own previous low-res logits, fed back as the mask prompt in every round. The loss is
Dice + cross-entropy of the upscaled logits against the target, summed over rounds, plus an MSE on the
IoU head against the real IoU of the round's mask.

Randomness: per-step choices (box or click start, mask-only rounds) come from `plan_step(seed, step)`,
per-sample choices (which error voxel, box jitter) from a generator seeded by the sample's global index,
so a sample gets the same clicks whatever the batch size or number of processes.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np
import torch
from torch import Tensor, nn

from voxsam.training.config import InteractionSection
from voxsam.training.upsample import upsample_trilinear

if TYPE_CHECKING:  # pragma: no cover
    from voxsam.models.sam3d import Sam3D


@dataclass(frozen=True)
class StepPlan:
    box_start: bool
    mask_only: tuple[bool, ...]  # per round; round 0 is never mask-only


def plan_step(seed: int, step: int, micro: int, cfg: InteractionSection) -> StepPlan:
    """The per-step interaction choices, identical on every process."""
    rng = np.random.default_rng([int(seed) & 0xFFFFFFFF, int(step), int(micro), 7])
    box = bool(rng.random() < cfg.box_prob)
    mask_only = tuple([False] + [bool(rng.random() < cfg.mask_only_prob) for _ in range(cfg.rounds - 1)])
    return StepPlan(box, mask_only)


def sample_generators(seed: int, indices: list[int]) -> list[torch.Generator]:
    gens = []
    for i in indices:
        g = torch.Generator()
        g.manual_seed(int(np.random.default_rng([int(seed) & 0xFFFFFFFF, int(i), 11]).integers(2**62)))
        gens.append(g)
    return gens


def _uniform_voxel(region: Tensor, gen: torch.Generator) -> Tensor | None:
    """Index (3,) of a voxel drawn uniformly from a (D, H, W) bool region, or None when it is empty."""
    flat = torch.nonzero(region.reshape(-1), as_tuple=False).squeeze(1)
    if flat.numel() == 0:
        return None
    k = flat[int(torch.randint(flat.numel(), (1,), generator=gen))]
    d, h, w = region.shape
    return torch.stack([k // (h * w), (k // w) % h, k % w])


def click_in(target: Tensor, pred: Tensor | None, gens: list[torch.Generator]) -> tuple[Tensor, Tensor]:
    """One click per sample: uniform in FN ∪ FP of `pred` (or in the target when pred is None).

    Args:
        target, pred: (B, 1, D, H, W) bool.
    Returns:
        points (B, 1, 3) float voxel indices, labels (B, 1) int64 (1 = the click fell in the target).
    """
    pts, lab = [], []
    for b in range(target.shape[0]):
        t = target[b, 0]
        region = t if pred is None else (pred[b, 0] ^ t)
        v = _uniform_voxel(region, gens[b])
        if v is None:  # a perfect mask (or empty target): confirm with a click inside the target
            v = _uniform_voxel(t, gens[b])
        if v is None:
            v = torch.tensor([s // 2 for s in t.shape])
        pts.append(v.float())
        lab.append(int(bool(t[tuple(v.tolist())])))
    return torch.stack(pts)[:, None].to(target.device), torch.tensor(lab, dtype=torch.int64, device=target.device)[:, None]


def jittered_boxes(target: Tensor, gens: list[torch.Generator], jitter: float) -> Tensor:
    """(B, 2, 3) box corners: the target's bounding box, each corner moved by up to `jitter` x its side."""
    boxes = []
    for b in range(target.shape[0]):
        idx = torch.nonzero(target[b, 0], as_tuple=False).float()
        size = torch.tensor(target.shape[2:], dtype=torch.float32)
        if idx.numel() == 0:
            lo, hi = size / 2 - 1, size / 2 + 1
        else:
            lo, hi = idx.min(0).values, idx.max(0).values
        side = (hi - lo + 1).clamp(min=1.0)
        noise = (torch.rand((2, 3), generator=gens[b]) * 2 - 1) * jitter * side
        corners = torch.stack([lo + noise[0], hi + noise[1]]).clamp(min=0).minimum(size - 1)
        boxes.append(torch.sort(corners, dim=0).values)
    return torch.stack(boxes).to(target.device)


def dice_ce(logits: Tensor, target: Tensor) -> Tensor:
    """Mean over the batch of soft Dice loss + binary cross-entropy. logits/target (B, 1, D, H, W)."""
    prob = torch.sigmoid(logits)
    dims = tuple(range(1, logits.ndim))
    inter = (prob * target).sum(dims)
    dice = 1 - (2 * inter + 1e-5) / (prob.sum(dims) + target.sum(dims) + 1e-5)
    ce = nn.functional.binary_cross_entropy_with_logits(logits, target, reduction="none").mean(dims)
    return (dice + ce).mean()


def _overlap(pred: Tensor, target: Tensor) -> tuple[Tensor, Tensor]:
    """Per-sample (intersection, |pred| + |target|) of 0/1 masks, summed in float32: reductions over bool
    tensors are ~30x slower on CPU, and at 128³ x 5 rounds they took a tenth of a training step."""
    p, t = pred.float(), target.float()
    dims = tuple(range(1, p.ndim))
    return (p * t).sum(dims), p.sum(dims) + t.sum(dims)


def hard_dice(pred: Tensor, target: Tensor) -> Tensor:
    """(B,) Dice of 0/1 masks, bool or float (1 when both are empty)."""
    inter, total = _overlap(pred, target)
    return torch.where(total > 0, 2 * inter / total.clamp(min=1), torch.ones_like(total))


def hard_iou(pred: Tensor, target: Tensor) -> Tensor:
    """(B,) IoU of 0/1 masks, bool or float (1 when both are empty)."""
    inter, total = _overlap(pred, target)
    union = total - inter
    return torch.where(union > 0, inter / union.clamp(min=1), torch.ones_like(union))


def interactive_loss(model: Sam3D, cfg: InteractionSection, image: Tensor, target: Tensor, plan: StepPlan,
                     gens: list[torch.Generator]) -> tuple[Tensor, dict[str, float]]:
    """One simulated interaction on a batch. image (B,1,S,S,S) z-normalised; target (B,1,S,S,S) float 0/1.

    Returns (loss summed over rounds, {"dice_first", "dice_last"}: mean hard Dice of the first/last round)."""
    gt = target > 0.5
    emb = model.encode(image)
    b = image.shape[0]
    n4 = model.config.mask_size
    prev_low = torch.zeros((b, 1, n4, n4, n4), device=image.device, dtype=emb.dtype)
    points = torch.zeros((b, 0, 3), device=image.device)
    labels = torch.zeros((b, 0), dtype=torch.int64, device=image.device)
    boxes = jittered_boxes(gt, gens, cfg.box_jitter) if plan.box_start else None
    pred: Tensor | None = None
    total = image.new_zeros(())
    dices: list[float] = []
    for r in range(cfg.rounds):
        if not (r == 0 and boxes is not None) and not plan.mask_only[r]:
            p, lab = click_in(gt, pred, gens)
            points, labels = torch.cat([points, p], 1), torch.cat([labels, lab], 1)
        low, iou = model.decode(emb, points if points.shape[1] else None, labels if points.shape[1] else None,
                                mask_input=prev_low, boxes=boxes)
        logits = upsample_trilinear(low.float(), model.config.image_size)
        pred = logits.detach() > 0
        pred_f = pred.float()
        real_iou = hard_iou(pred_f, target)
        total = total + dice_ce(logits, target) + cfg.iou_loss_weight * nn.functional.mse_loss(iou[:, 0].float(), real_iou)
        dices.append(float(hard_dice(pred_f, target).mean()))
        prev_low = low.detach()
    return total, {"dice_first": dices[0], "dice_last": dices[-1]}


class InteractiveLoss(nn.Module):
    """Wraps a `Sam3D` so that one `forward` runs a whole simulated interaction (`interactive_loss`)."""

    def __init__(self, model: Sam3D, cfg: InteractionSection) -> None:
        super().__init__()
        self.model = model
        self.cfg = cfg

    def forward(self, image: Tensor, target: Tensor, plan: StepPlan, gens: list[torch.Generator]) -> tuple[Tensor, dict[str, float]]:
        """Args: image (B,1,S,S,S) z-normalised; target (B,1,S,S,S) float 0/1. Returns (loss, stats)."""
        return interactive_loss(self.model, self.cfg, image, target, plan, gens)
