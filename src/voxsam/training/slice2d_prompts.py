"""Prompts of the `slice2d` family's training samples and its simulated-interaction loss (RadSAM's recipe).

Prompts are built the way the engine builds them.

Every prompt lands in the 256 x 256 model input exactly as `voxsam.engines.slice2d.slices.SliceModel.segment`
puts it there:

- clicks: display (row, column) pixels through `SliceInput.to_input`;
- a box: the display bounding box's corners (row0, col0), (row1 + 1, col1 + 1) through `to_input`, each side
  then moved outwards by a jitter (the engine grows a propagated box by `box_expand_px`), clipped to the
  resized region;
- a mask: BINARY, the display mask resized bilinearly to the resized region and thresholded at 0.5 (`to_grid`),
  zero-padded to 256 x 256.

Randomness comes only from the `numpy.random.Generator` passed in (seeded by the caller from the run seed and
the sample number), so a sample is a pure function of (seed, index); the loss's corrective clicks draw from
generators seeded by (run seed, the rows' global sample numbers) of its `StepInfo`.
"""
from __future__ import annotations

from typing import TYPE_CHECKING, Any, Mapping

import numpy as np
import torch
from torch import Tensor

if TYPE_CHECKING:  # pragma: no cover
    from voxsam.engines.slice2d.slices import SliceInput
    from voxsam.models.sam2d import Sam2D
    from voxsam.training.family import StepInfo
    from voxsam.training.slice2d_data import CachedSlice
    from voxsam.training.slice2d_config import Slice2DTrainConfig
    from voxsam.training.slice2d_config import Slice2DPromptSection

SIZE = 256


def to_grid(display: np.ndarray, resized: tuple[int, int]) -> np.ndarray:
    """(H, W) display mask -> (256, 256) uint8 mask in the model grid: bilinear to `resized`, > 0.5, zero pad
    (what the engine feeds as a mask prompt, and the target of the loss)."""
    import torch.nn.functional as F

    out = np.zeros((SIZE, SIZE), dtype=np.uint8)
    h, w = resized
    t = torch.from_numpy(np.ascontiguousarray(display, dtype=np.float32))[None, None]
    small = F.interpolate(t, size=(h, w), mode="bilinear", align_corners=False)[0, 0]
    out[:h, :w] = (small > 0.5).numpy()
    return out


def _edt(mask: np.ndarray, sampling: tuple[float, float] | None = None) -> np.ndarray:
    """Distance (mm with `sampling`, else pixels) of each pixel of `mask` to the nearest pixel outside it; the
    image border counts as outside."""
    from scipy import ndimage

    padded = np.pad(mask.astype(bool), 1)
    return np.asarray(ndimage.distance_transform_edt(padded, sampling=sampling))[1:-1, 1:-1]


def interior_pixels(mask: np.ndarray, rng: np.random.Generator, n: int, frac: float = 0.5,
                    sampling: tuple[float, float] | None = None) -> np.ndarray:
    """(n, 2) (row, col) pixels of `mask` whose distance to its contour is >= frac x the largest one (away from
    the contour, as a user clicks); drawn without replacement while there are enough."""
    dist = _edt(mask, sampling)
    peak = float(dist.max())
    if peak <= 0:
        return np.zeros((0, 2), dtype=np.float64)
    cand = np.argwhere(dist >= frac * peak - 1e-9)
    pick = rng.choice(len(cand), size=n, replace=len(cand) < n)
    return cand[pick].astype(np.float64)


def negative_pixels(mask: np.ndarray, rng: np.random.Generator, n: int,
                    spacing: tuple[float, float]) -> np.ndarray:
    """(<= n, 2) (row, col) background pixels near the object: in a ring from 1.5 pixels to
    max(3 pixels, 0.3 x the object's equivalent diameter) around it (mm distances)."""
    from scipy import ndimage

    if n <= 0 or not mask.any():
        return np.zeros((0, 2), dtype=np.float64)
    out = np.asarray(ndimage.distance_transform_edt(~mask.astype(bool), sampling=spacing))
    pix = max(spacing)
    reach = max(3.0 * pix, 0.3 * 2.0 * np.sqrt(float(mask.sum()) * spacing[0] * spacing[1] / np.pi))
    cand = np.argwhere((out > 1.5 * pix) & (out <= reach))
    if len(cand) == 0:
        return np.zeros((0, 2), dtype=np.float64)
    pick = rng.choice(len(cand), size=min(n, len(cand)), replace=False)
    return cand[pick].astype(np.float64)


def engine_box(mask: np.ndarray, geom: SliceInput) -> np.ndarray:
    """(4,) x0, y0, x1, y1 input pixels of a display mask's bounding box, unjittered, as the engine makes it."""
    from voxsam.engines.slice2d.slices import bbox_rc

    box = bbox_rc(mask)
    if box is None:
        raise ValueError("empty mask has no box")
    return geom.to_input(np.array([[box[0], box[1]], [box[2] + 1, box[3] + 1]])).reshape(4)


def jittered_box(mask: np.ndarray, geom: SliceInput, rng: np.random.Generator, jitter: tuple[float, float],
                 ref_px: float) -> np.ndarray:
    """(4,) float32 box: `engine_box` with each side moved outwards by U(jitter) input pixels (negative:
    inwards) times min(1, max(0.25, side / ref_px)) so small objects are not drowned, kept >= 1 pixel wide,
    clipped to the resized region like the engine."""
    x0, y0, x1, y1 = engine_box(mask, geom)
    scale = np.clip(np.array([x1 - x0, y1 - y0, x1 - x0, y1 - y0]) / ref_px, 0.25, 1.0)
    d = rng.uniform(jitter[0], jitter[1], size=4) * scale
    box = np.array([x0 - d[0], y0 - d[1], x1 + d[2], y1 + d[3]])
    for lo, hi in ((0, 2), (1, 3)):
        if box[hi] - box[lo] < 1.0:
            mid = 0.5 * (box[lo] + box[hi])
            box[lo], box[hi] = mid - 0.5, mid + 0.5
    h, w = geom.resized
    return np.clip(box, 0, [w, h, w, h]).astype(np.float32)


def noisy_mask(base: np.ndarray, resized: tuple[int, int], rng: np.random.Generator,
               cfg: Slice2DPromptSection) -> np.ndarray:
    """(256, 256) uint8 binary mask prompt: `base` (a grid mask) rotated by U(+-rotate_deg), scaled by
    U(scale), shifted by U(+-translate_px) per axis about its centroid, then eroded or dilated (50/50) by
    0..morph_px pixels; restricted to the resized region. Falls back to `base` when that empties it."""
    from scipy import ndimage

    if not base.any():
        return base.astype(np.uint8)
    c = np.argwhere(base).mean(axis=0)  # (row, col) centroid
    theta = np.deg2rad(rng.uniform(-cfg.rotate_deg, cfg.rotate_deg))
    s = rng.uniform(cfg.scale[0], cfg.scale[1])
    t = rng.uniform(-cfg.translate_px, cfg.translate_px, size=2)
    rot = np.array([[np.cos(theta), -np.sin(theta)], [np.sin(theta), np.cos(theta)]])
    # output pixel o comes from input pixel i = M (o - c - t) + c with M = R^T / s
    m = rot.T / s
    moved = ndimage.affine_transform(base.astype(np.float32), m, offset=c - m @ (c + t), order=1, mode="constant") > 0.5
    r = int(rng.integers(0, cfg.morph_px + 1))
    if r > 0:
        if rng.random() < 0.5:
            moved = np.asarray(ndimage.distance_transform_edt(~moved)) <= r  # dilation by a disk of radius r
        else:
            moved = _edt(moved) > r  # erosion by a disk of radius r
    h, w = resized
    moved[h:, :] = False
    moved[:, w:] = False
    return (moved if moved.any() else base.astype(bool)).astype(np.uint8)


def largest_error_click(pred: np.ndarray, target: np.ndarray, valid: np.ndarray, rng: np.random.Generator,
                        frac: float = 0.5) -> tuple[float, float, int] | None:
    """A corrective click (x, y, label) in grid pixels inside the largest connected error region of a
    prediction (positive in a false-negative region, negative in a false-positive one), away from the
    region's contour; None when the prediction is right everywhere."""
    from scipy import ndimage

    best: tuple[int, np.ndarray, int] | None = None
    for region, label in ((target & ~pred & valid, 1), (pred & ~target & valid, 0)):
        if not region.any():
            continue
        comps, n = ndimage.label(region)
        sizes = np.bincount(comps.ravel())[1:]
        j = int(np.argmax(sizes))
        if best is None or sizes[j] > best[0]:
            best = (int(sizes[j]), comps == j + 1, label)
    if best is None:
        return None
    rc = interior_pixels(best[1], rng, 1, frac)[0]
    return float(rc[1]), float(rc[0]), best[2]


def click_box(truth: np.ndarray, geom: SliceInput, rng: np.random.Generator, cfg: Slice2DPromptSection,
              spacing_rc: tuple[float, float]) -> tuple[np.ndarray, np.ndarray]:
    """A click alone as the engine answers it: ((1, 2) display (row, col) of one interior click, (4,) float32
    input-pixel box) - a square of side log-U(`click_box_mm`) mm centred on the click, clipped like the
    engine's boxes. The box may cut the object: the IoU head then learns that its mask is not the object."""
    rc = interior_pixels(truth, rng, 1, cfg.interior, sampling=spacing_rc)
    lo_mm, hi_mm = cfg.click_box_mm
    side = float(np.exp(rng.uniform(np.log(lo_mm), np.log(max(hi_mm, lo_mm)))))
    half = side / 2 / np.asarray(spacing_rc, dtype=np.float64)
    corners = geom.to_input(np.stack([rc[0] - half, rc[0] + half + 1]))
    h, w = geom.resized
    return rc, np.clip(corners.reshape(4), 0, [w, h, w, h]).astype(np.float32)


def bbox_xy(mask: np.ndarray) -> np.ndarray | None:
    """(4,) float32 x0, y0, x1, y1 (exclusive) of a grid mask, or None when empty."""
    rows, cols = np.flatnonzero(mask.any(axis=1)), np.flatnonzero(mask.any(axis=0))
    if rows.size == 0:
        return None
    return np.array([cols[0], rows[0], cols[-1] + 1, rows[-1] + 1], dtype=np.float32)


# ---------------------------------------------------------------------- one training sample
KINDS = ("points", "box", "mask", "box_mask", "points_mask", "click_box")
MAX_POINTS = 8  # initial clicks at most; padded with label -1 (the loss slices them back off)


def make_sample(cached: CachedSlice, rng: np.random.Generator, cfg: Slice2DPromptSection,
                correction_prob: float) -> dict[str, Any]:
    """One sample of a cached slice: embedding, grid target and an initial prompt of a random kind."""
    from voxsam.engines.slice2d.slices import SliceInput

    masks = cached.masks()  # (3, H, W) display masks of slices k-1, k, k+1
    geom = SliceInput(cached.shape, cached.resized)
    truth = masks[1]
    if cached.beyond:
        return _beyond_sample(cached, masks, geom, rng, cfg, correction_prob)
    probs = np.array([getattr(cfg, f"p_{k}") for k in KINDS], dtype=np.float64)
    kind = KINDS[int(rng.choice(len(KINDS), p=probs / probs.sum()))]
    points = np.zeros((MAX_POINTS, 2), dtype=np.float32)
    labels = np.full(MAX_POINTS, -1, dtype=np.int64)
    n_points = 0
    if kind == "click_box":
        rc, click_box_xy = click_box(truth, geom, rng, cfg, cached.spacing_rc)
        n_points = 1
        points[:1] = geom.to_input(rc)
        labels[:1] = 1
    if kind.startswith("points"):
        pos = interior_pixels(truth, rng, int(rng.integers(cfg.positives[0], cfg.positives[1] + 1)), cfg.interior,
                              sampling=cached.spacing_rc)
        neg = negative_pixels(truth, rng, int(rng.integers(cfg.negatives[0], cfg.negatives[1] + 1)), cached.spacing_rc)
        rc = np.concatenate([pos, neg])[:MAX_POINTS]
        n_points = len(rc)
        points[:n_points] = geom.to_input(rc)
        labels[:n_points] = ([1] * len(pos) + [0] * len(neg))[:MAX_POINTS]
    box = np.zeros(4, dtype=np.float32)
    if kind == "click_box":
        box = click_box_xy
    elif "box" in kind:
        box = jittered_box(truth, geom, rng, cfg.box_jitter_px, cfg.box_jitter_ref_px)
    mask = np.zeros((SIZE, SIZE), dtype=np.uint8)
    if "mask" in kind:
        source = truth
        if rng.random() < cfg.neighbour_prob:
            near = [m for m in (masks[0], masks[2]) if m.any()]
            if near:
                source = near[int(rng.integers(len(near)))]
        mask = noisy_mask(to_grid(source, cached.resized).astype(bool), cached.resized, rng, cfg)
    return {
        "emb": np.load(cached.emb_path),
        "target": to_grid(truth, cached.resized),
        "resized": cached.resized,
        "points": points, "labels": labels, "n_points": n_points,
        "box": box, "has_box": "box" in kind,
        "mask": mask, "has_mask": "mask" in kind,
        "corrections": bool(rng.random() < correction_prob),
        "kind": kind,
    }


BEYOND_KINDS = ("box", "mask", "box_mask")


def _beyond_sample(cached: CachedSlice, masks: np.ndarray, geom: SliceInput, rng: np.random.Generator,
                   cfg: Slice2DPromptSection, correction_prob: float) -> dict[str, Any]:
    """A slice past the object's end, prompted as a walk arrives there: the box and / or noisy mask of the
    neighbouring slice that still holds the object (kinds in proportion to p_box, p_mask, p_box_mask); the
    target is empty, so the model learns to answer "nothing here" and the walk stops."""
    last = masks[0] if masks[0].any() else masks[2]
    probs = np.array([getattr(cfg, f"p_{k}") for k in BEYOND_KINDS], dtype=np.float64)
    probs = probs / probs.sum() if probs.sum() > 0 else np.full(len(BEYOND_KINDS), 1 / len(BEYOND_KINDS))
    kind = BEYOND_KINDS[int(rng.choice(len(BEYOND_KINDS), p=probs))]
    box = jittered_box(last, geom, rng, cfg.box_jitter_px, cfg.box_jitter_ref_px) if "box" in kind else np.zeros(4, np.float32)
    mask = (noisy_mask(to_grid(last, cached.resized).astype(bool), cached.resized, rng, cfg) if "mask" in kind
            else np.zeros((SIZE, SIZE), dtype=np.uint8))
    return {
        "emb": np.load(cached.emb_path),
        "target": np.zeros((SIZE, SIZE), dtype=np.uint8),
        "resized": cached.resized,
        "points": np.zeros((MAX_POINTS, 2), dtype=np.float32), "labels": np.full(MAX_POINTS, -1, dtype=np.int64),
        "n_points": 0,
        "box": box, "has_box": "box" in kind,
        "mask": mask, "has_mask": "mask" in kind,
        "corrections": bool(rng.random() < correction_prob),
        "kind": f"beyond_{kind}",
    }


def collate(items: list[dict[str, Any]]) -> dict[str, Any]:
    """Samples -> one batch of tensors (valid: 1 inside each sample's resized region)."""
    def stack(key: str) -> Any:
        return torch.from_numpy(np.stack([i[key] for i in items]))

    valid = torch.zeros(len(items), SIZE, SIZE)
    for j, item in enumerate(items):
        h, w = item["resized"]
        valid[j, :h, :w] = 1.0
    return {
        "emb": stack("emb"), "target": stack("target").float(), "valid": valid,
        "points": stack("points"), "labels": stack("labels"),
        "n_points": torch.tensor([i["n_points"] for i in items]),
        "box": stack("box"), "has_box": torch.tensor([i["has_box"] for i in items]),
        "mask": stack("mask").float(), "has_mask": torch.tensor([i["has_mask"] for i in items]),
        "corrections": torch.tensor([i["corrections"] for i in items]),
        "info": [i.get("info", i["kind"]) for i in items],
    }


# ---------------------------------------------------------------------- the loss (simulated interaction)
def _decode(model: Sam2D, emb: Tensor, rows: list[int], points: list[np.ndarray], labels: list[np.ndarray],
            boxes: list[np.ndarray | None], masks: list[Tensor | None]) -> tuple[Tensor, Tensor]:
    """Low-res logits (R, 256, 256) and IoU (R,) of `rows`, decoded in groups of one prompt layout (the same
    tokens as the engine: no padding points)."""
    groups: dict[tuple[int, bool, bool], list[int]] = {}
    for j, b in enumerate(rows):
        groups.setdefault((len(points[b]), boxes[b] is not None, masks[b] is not None), []).append(j)
    out: list[tuple[Tensor, Tensor] | None] = [None] * len(rows)
    for (n, has_box, has_mask), js in groups.items():
        bs = [rows[j] for j in js]
        kw: dict[str, Any] = {}
        if n:
            kw["points"] = torch.from_numpy(np.stack([points[b] for b in bs]).astype(np.float32))
            kw["labels"] = torch.from_numpy(np.stack([labels[b] for b in bs]).astype(np.int64))
        if has_box:
            kw["boxes"] = torch.from_numpy(np.stack([boxes[b] for b in bs]).astype(np.float32))  # type: ignore[misc]
        if has_mask:
            kw["mask_input"] = torch.stack([masks[b] for b in bs])[:, None]  # type: ignore[misc]
        low, iou = model.decode(emb[bs], **kw)
        for i, j in enumerate(js):
            out[j] = (low[i, 0], iou[i, 0])
    return torch.stack([o[0] for o in out if o is not None]), torch.stack([o[1] for o in out if o is not None])


def _row_losses(logits: Tensor, iou: Tensor, t: Tensor, v: Tensor, w_iou: float) -> tuple[Tensor, Tensor, Tensor]:
    """(Dice + BCE + w * IoU MSE per row, hard Dice per row, real IoU per row), inside the valid region."""
    import torch.nn.functional as F

    logits = logits.float()
    area = v.sum((1, 2)).clamp_min(1.0)
    bce = (F.binary_cross_entropy_with_logits(logits, t, reduction="none") * v).sum((1, 2)) / area
    p = torch.sigmoid(logits) * v
    dice = 1.0 - (2.0 * (p * t).sum((1, 2)) + 1.0) / (p.sum((1, 2)) + (t * v).sum((1, 2)) + 1.0)
    with torch.no_grad():
        hard = (logits > 0).float() * v
        inter, ps, ts = (hard * t).sum((1, 2)), hard.sum((1, 2)), (t * v).sum((1, 2))
        union = ps + ts - inter
        real = torch.where(union > 0, inter / union.clamp_min(1.0), torch.ones_like(union))
        hard_dice = torch.where(ps + ts > 0, 2 * inter / (ps + ts).clamp_min(1.0), torch.ones_like(union))
    return dice + bce + w_iou * (iou.float() - real) ** 2, hard_dice, real


def interactive_loss(model: Sam2D, cfg: Slice2DTrainConfig, batch: Mapping[str, Any],
                     step: StepInfo) -> tuple[Tensor, dict[str, float]]:
    """(loss, metrics) of a batch: the first prediction, then `correction_rounds` corrective rounds for the
    samples drawn for them; per round and sample Dice + BCE + IoU MSE, summed over rounds, mean over samples."""
    inter = cfg.interaction
    emb, target, valid = batch["emb"].float(), batch["target"], batch["valid"]
    b_size = emb.shape[0]
    rngs = [np.random.default_rng([step.seed & 0xFFFFFFFF, int(i), 0x51CE]) for i in step.indices]
    n_pts = [int(n) for n in batch["n_points"]]
    points = [batch["points"][b, :n_pts[b]].cpu().numpy() for b in range(b_size)]
    labels = [batch["labels"][b, :n_pts[b]].cpu().numpy() for b in range(b_size)]
    boxes: list[np.ndarray | None] = [batch["box"][b].cpu().numpy() if bool(batch["has_box"][b]) else None for b in range(b_size)]
    masks: list[Tensor | None] = [batch["mask"][b] if bool(batch["has_mask"][b]) else None for b in range(b_size)]
    corrects = [bool(c) for c in batch["corrections"]]
    box_from_pred = [False] * b_size
    total = emb.new_zeros(())
    dice_last = [0.0] * b_size
    metrics: dict[str, float] = {}
    for r in range(1 + inter.correction_rounds):
        rows = [b for b in range(b_size) if r == 0 or corrects[b]]
        if not rows:
            break
        logits, iou = _decode(model, emb, rows, points, labels, boxes, masks)
        t, v = target[rows], valid[rows]
        per_row, hard_dice, real = _row_losses(logits, iou, t, v, inter.iou_loss_weight)
        total = total + per_row.sum()
        for j, b in enumerate(rows):
            dice_last[b] = float(hard_dice[j])
        if r == 0:
            metrics["dice_first"] = float(hard_dice.mean())
            metrics["iou_err"] = float((iou.detach().float() - real).abs().mean())
        if r == inter.correction_rounds:
            break
        pred = ((logits.detach() > 0) & (v > 0)).cpu().numpy()
        tn, vn = t.cpu().numpy() > 0, v.cpu().numpy() > 0
        for j, b in enumerate(rows):
            if not corrects[b]:
                continue
            if r == 0:
                box_from_pred[b] = boxes[b] is None and rngs[b].random() < inter.correction_box_prob
            click = largest_error_click(pred[j], tn[j], vn[j], rngs[b])
            if click is not None:
                points[b] = np.concatenate([points[b], np.array([[click[0], click[1]]], dtype=np.float32)])
                labels[b] = np.concatenate([labels[b], np.array([click[2]], dtype=np.int64)])
            masks[b] = torch.from_numpy(pred[j].astype(np.float32)).to(emb.device)
            if box_from_pred[b]:
                boxes[b] = bbox_xy(pred[j])
    metrics["dice_last"] = float(np.mean(dice_last))
    return total / b_size, metrics
