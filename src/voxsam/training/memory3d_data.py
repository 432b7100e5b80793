"""Training data of the `memory3d` family: runs of consecutive slices (windows) with their frozen-encoder
embeddings, cached on disk exactly as the slice2d family caches single slices (same folders, same files:
an embedding computed for one family serves the other).

Plan: a target is one label of one case along its acquisition axis. Each target gets `runs_per_target` runs of
`run_slices` consecutive slices; a run starts anywhere from `overhang` slices before the label's first slice
to `overhang` slices after its last, so runs also cover an object's ends and the empty slices beyond them
(where propagation must stop). Sources share `max_embeddings` by weight, as in slice2d.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from voxsam.training.slice2d_data import CachedSlice, Survey, Target, load_index, water_fill


@dataclass
class Window:
    """A run of consecutive slices of one target: `slices[i]` is slice `first + i` along `axis`."""

    source: str
    name: str
    axis: int
    first: int
    slices: list[CachedSlice]


def target_runs(target: Target, run_slices: int, runs: int, overhang: int, rng: np.random.Generator) -> list[list[int]]:
    """Slice indices of the runs of one target (each `run_slices` long, inside the volume)."""
    n = target.survey.shape[target.axis]
    length = min(run_slices, n)
    lo = max(0, int(target.valid[0]) - overhang)
    hi = min(n - length, int(target.valid[-1]) + overhang - length + 1)
    if hi < lo:  # a short object in a thin volume: centre the run on it
        lo = hi = int(np.clip((int(target.valid[0]) + int(target.valid[-1]) - length) // 2, 0, n - length))
    starts = sorted({int(s) for s in rng.integers(lo, hi + 1, size=runs)})
    return [list(range(s, s + length)) for s in starts]


def make_window_plan(surveys: list[Survey], weights: dict[str, float], max_embeddings: int, run_slices: int,
                     runs_per_target: int, overhang: int, min_pixels: int, seed: int) -> list[tuple[Target, int]]:
    """The (target, slice) items of every run, sources within their weighted share of `max_embeddings`."""
    rng = np.random.default_rng(seed)
    by_source: dict[str, list[list[tuple[Target, int]]]] = {}
    for sv in surveys:
        axis = sv.acq_axis
        if sv.shape[axis] < 3:
            continue
        for label in sorted(sv.counts):
            valid = sv.valid_slices(label, axis, min_pixels)
            if len(valid) == 0:
                continue
            t = Target(sv.case.source, sv, label, axis, valid, run_slices)
            for run in target_runs(t, run_slices, runs_per_target, overhang, rng):
                by_source.setdefault(sv.case.source, []).append([(t, k) for k in run])
    demand = {s: sum(len(r) for r in runs) for s, runs in by_source.items()}
    budget = water_fill({s: weights.get(s, 1.0) for s in by_source}, demand, max_embeddings)
    items: list[tuple[Target, int]] = []
    for s in sorted(by_source):
        runs = by_source[s]
        order = np.random.default_rng(seed + 1).permutation(len(runs))
        used = 0
        for i in order:
            if used + len(runs[i]) > budget[s]:
                continue
            items += runs[i]
            used += len(runs[i])
    return items


def load_windows(items: list[tuple[Target, int]], folders: dict[str, Path]) -> dict[str, list[Window]]:
    """source -> its windows: the cached slices of each target cut into runs of consecutive indices."""
    index = load_index(items, folders)
    out: dict[str, list[Window]] = {}
    for source, targets in index.items():
        for slices in targets:
            runs: list[list[CachedSlice]] = []
            last: tuple[Any, int] | None = None
            for cs in slices:  # sorted by (axis, k) within a target
                axis, k = _axis_index(cs.emb_path)
                if last is not None and last == (axis, k - 1):
                    runs[-1].append(cs)
                else:
                    runs.append([cs])
                last = (axis, k)
            for run in runs:
                if len(run) >= 2:
                    axis, k = _axis_index(run[0].emb_path)
                    out.setdefault(source, []).append(Window(source, run[0].emb_path.parent.name, axis, k, run))
    return out


def _axis_index(path: Path) -> tuple[int, int]:
    """(axis, slice) from an embedding file name `a{axis}_{k:04d}.npy`."""
    axis, k = path.stem[1:].split("_")
    return int(axis), int(k)
