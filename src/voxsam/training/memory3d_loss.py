"""Samples and loss of the memory3d family: a window of consecutive cached slices, a prompt on one of them,
the others predicted through the memory bank in both directions - the engine's propagation, differentiable.

Per window: the prompted slice p is decoded from its prompt (no memory) and becomes the conditioning memory;
then each direction walks away from p: slice j is conditioned on `select_memories` of the chain's bank
(p + the most recent slices of this direction, with their signed offsets), decoded with the previous
prediction's box (`carry_box`, as the engine's `propagation_prompt=box`), and memorised from its binarised
prediction. Loss = mean over the window's slices of Dice + BCE + IoU-head MSE (inside each slice's resized
region) + `bd_weight` x class-balanced boundary BCE + `srpp_weight` x SRPP (all ordered pairs of the window).
"""
from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np
import torch
from torch import Tensor

from voxsam.training.family import StepInfo
from voxsam.training.memory3d_config import Memory3DTrainConfig
from voxsam.training.memory3d_data import Window

SIZE = 256


class WindowSamples(torch.utils.data.Dataset[dict[str, Any]]):
    """`self[i]`, a pure function of (seed, i): a source by weight, one of its windows, a sub-window of a drawn
    length, a prompted slice holding the object, and its prompt."""

    def __init__(self, windows: dict[str, list[Window]], cfg: Memory3DTrainConfig) -> None:
        weights = {s.name: s.weight for s in cfg.data.sources}
        self.names = sorted(n for n in windows if windows[n])
        self.windows = windows
        w = np.array([weights.get(n, 1.0) for n in self.names], dtype=np.float64)
        self.probs = w / w.sum()
        self.cfg = cfg

    def __len__(self) -> int:
        return 2**62

    def __getitem__(self, i: int) -> dict[str, Any]:
        rng = np.random.default_rng([self.cfg.run.seed & 0xFFFFFFFF, int(i), 0x3D])
        for _ in range(20):  # a window whose drawn part holds the object somewhere (most do at once)
            source = self.names[int(rng.choice(len(self.names), p=self.probs))]
            window = self.windows[source][int(rng.integers(len(self.windows[source])))]
            length = min(int(rng.choice(self.cfg.window.lengths)), len(window.slices))
            start = int(rng.integers(0, len(window.slices) - length + 1))
            part = window.slices[start:start + length]
            truths = [cs.masks()[1] for cs in part]
            holding = [j for j, t in enumerate(truths) if t.sum() >= self.cfg.data.min_pixels]
            if holding:
                break
        else:
            raise RuntimeError("memory3d: no window holds its object")
        p = holding[int(rng.integers(len(holding)))]
        sample = prompt_of(part[p], truths[p], rng, self.cfg)
        from voxsam.training.slice2d_prompts import to_grid

        sample.update({
            "emb": np.stack([np.load(cs.emb_path) for cs in part]),
            "target": np.stack([to_grid(t, cs.resized) for t, cs in zip(truths, part)]),
            # positions in steps of the window's stride (as the engine's memories sit at slice index / stride)
            "resized": part[0].resized, "prompted": p, "first": window.first // window.stride + start,
            "info": f"{source}:{window.name}/a{window.axis}_{window.first + start * window.stride}+{length}x{window.stride}",
        })
        return sample


def prompt_of(cached: Any, truth: np.ndarray, rng: np.random.Generator, cfg: Memory3DTrainConfig) -> dict[str, Any]:
    """The prompted slice's prompt: a jittered box, clicks away from the contour (+ negatives), or both."""
    from voxsam.engines.slice2d.slices import SliceInput
    from voxsam.training.slice2d_prompts import interior_pixels, jittered_box, negative_pixels

    w = cfg.window
    geom = SliceInput(cached.shape, cached.resized)
    kinds = ("box", "points", "box_points")
    probs = np.array([w.p_box, w.p_points, w.p_box_points], dtype=np.float64)
    kind = kinds[int(rng.choice(3, p=probs / probs.sum()))]
    out: dict[str, Any] = {"kind": kind, "box": None, "points": None, "labels": None}
    if "box" in kind:
        out["box"] = jittered_box(truth, geom, rng, w.box_jitter_px, w.box_jitter_ref_px)
    if "points" in kind:
        pos = interior_pixels(truth, rng, int(rng.integers(1, 4)), 0.5, sampling=cached.spacing_rc)
        neg = negative_pixels(truth, rng, int(rng.integers(0, 2)), cached.spacing_rc)
        rc = np.concatenate([pos, neg])
        if len(pos):
            out["points"] = geom.to_input(rc).astype(np.float32)
            out["labels"] = np.array([1] * len(pos) + [0] * len(neg), dtype=np.int64)
    if out["box"] is None and out["points"] is None:  # no interior pixel found: a box always exists
        out["box"] = jittered_box(truth, geom, rng, w.box_jitter_px, w.box_jitter_ref_px)
    return out


def collate(items: list[dict[str, Any]]) -> dict[str, Any]:
    """Windows differ in length: the batch is the list of samples."""
    return {"windows": items, "info": [i["info"] for i in items]}


def binary_logits(mask: Tensor) -> Tensor:
    """A binary (1, 1, 256, 256) mask as the large +/- logits a memory is made from."""
    return mask.float() * 20.0 - 10.0


def carried_box(prev: Tensor, expand: float, resized: tuple[int, int]) -> Tensor | None:
    """(1, 4) x0, y0, x1, y1 box of a (256, 256) bool prediction grown by `expand`, or None when empty."""
    rows = torch.nonzero(prev.any(dim=1)).flatten()
    cols = torch.nonzero(prev.any(dim=0)).flatten()
    if rows.numel() == 0:
        return None
    h, w = resized
    box = [max(0.0, float(cols[0]) - expand), max(0.0, float(rows[0]) - expand),
           min(float(w), float(cols[-1]) + 1 + expand), min(float(h), float(rows[-1]) + 1 + expand)]
    return torch.tensor([box], dtype=torch.float32)


def window_loss(model: Any, cfg: Memory3DTrainConfig, sample: Mapping[str, Any], preds: dict[int, Tensor] | None = None,
                stop_on_empty: bool = False, use_memory: bool = True) -> tuple[Tensor, dict[str, float]]:
    """(loss, metrics) of one window (see the module docstring). Evaluation: `preds` collects each decided
    slice's (256, 256) bool prediction; `stop_on_empty` ends a direction at an empty prediction, as the engine
    does; `use_memory=False` decodes every propagated slice without its bank."""
    from voxsam.models.memory3d import boundary_loss, boundary_target, select_memories
    from voxsam.training.slice2d_prompts import _row_losses

    w, mcfg = cfg.window, model.config
    emb = torch.from_numpy(sample["emb"]).float()
    target = torch.from_numpy(sample["target"]).float()
    n = emb.shape[0]
    h, wd = sample["resized"]
    valid = torch.zeros(1, SIZE, SIZE)
    valid[:, :h, :wd] = 1.0
    p, first = int(sample["prompted"]), int(sample["first"])
    kw: dict[str, Any] = {}
    if sample["box"] is not None:
        kw["boxes"] = torch.from_numpy(np.asarray(sample["box"], dtype=np.float32))[None]
    if sample["points"] is not None:
        kw["points"] = torch.from_numpy(sample["points"])[None]
        kw["labels"] = torch.from_numpy(sample["labels"])[None]
    seg: list[Tensor] = []
    edges: list[Tensor] = []
    dice: dict[int, float] = {}
    conditioned: dict[int, Tensor] = {}

    def step(j: int, cond: Tensor, prompts: dict[str, Any]) -> Tensor:
        low, iou = model.decode(cond, **prompts)
        per_row, hard, _ = _row_losses(low[:, 0], iou[:, 0], target[j:j + 1], valid, w.iou_loss_weight)
        seg.append(per_row.sum())
        dice[j] = float(hard[0])
        if mcfg.bd and w.bd_weight > 0:
            edges.append(boundary_loss(model.boundary(cond), boundary_target(target[j:j + 1, None] > 0)))
        conditioned[j] = cond
        decided = (low.detach()[0, 0] > 0) & (valid[0] > 0)
        if preds is not None:
            preds[j] = decided
        return decided

    start = step(p, model.condition(emb[p:p + 1], [], first + p), kw)
    bank = [model.memorize(emb[p:p + 1], binary_logits(start)[None, None], first + p, conditioning=True)]
    for direction in (-1, 1):
        chain, prev, j = list(bank), start, p + direction
        while 0 <= j < n and not (stop_on_empty and not bool(prev.any())):
            prompts: dict[str, Any] = {}
            box = carried_box(prev, w.box_expand_px, (h, wd)) if w.carry_box else None
            if box is not None:
                prompts["boxes"] = box
            memories = select_memories(chain, first + j, mcfg.max_bank, mcfg.max_conditioning) if use_memory else []
            prev = step(j, model.condition(emb[j:j + 1], memories, first + j), prompts)
            chain.append(model.memorize(emb[j:j + 1], binary_logits(prev)[None, None], first + j))
            j += direction
    total = torch.stack(seg).mean()
    metrics = {"dice_prompted": dice[p], "dice_propagated": float(np.mean([d for j, d in dice.items() if j != p])) if n > 1 else dice[p]}
    if edges:
        bd = torch.stack(edges).mean()
        total = total + w.bd_weight * bd
        metrics["bd"] = float(bd.detach())
    if mcfg.srpp and w.srpp_weight > 0 and n > 1:
        order = sorted(conditioned)
        srpp = model.srpp_loss(torch.cat([conditioned[j] for j in order]), torch.tensor([float(first + j) for j in order]))
        total = total + w.srpp_weight * srpp
        metrics["srpp"] = float(srpp.detach())
    return total, metrics


def batch_loss(model: Any, cfg: Memory3DTrainConfig, batch: Mapping[str, Any], step: StepInfo) -> tuple[Tensor, dict[str, float]]:
    """Mean of `window_loss` over the batch's windows; metrics averaged."""
    losses, metrics = [], []
    for sample in batch["windows"]:
        loss, m = window_loss(model, cfg, sample)
        losses.append(loss)
        metrics.append(m)
    keys = sorted({k for m in metrics for k in m})
    return torch.stack(losses).mean(), {k: float(np.mean([m[k] for m in metrics if k in m])) for k in keys}
