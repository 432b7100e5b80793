"""Training data of the `memory3d` family: runs of consecutive slices (windows) with their frozen-encoder
embeddings, cached on disk exactly as the slice2d family caches single slices (same folders, same files:
an embedding computed for one family serves the other).

Plan: a target is one label of one case along its acquisition axis. Each target gets `runs_per_target` runs of
`run_slices` slices, consecutive or, with `step_mm`, every n-th (n = floor(step_mm / slice spacing), the stride
the engines walk thin slices at, so the memory learns the change between the slices it will see as neighbours);
a run starts anywhere from `overhang` steps before the label's first slice to `overhang` steps after its last,
so runs also cover an object's ends and the empty slices beyond them (where propagation must stop). Sources
share `max_embeddings` by weight, as in slice2d.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from voxsam.training.slice2d_data import CachedSlice, Survey, Target, load_index, water_fill


@dataclass
class Window:
    """A run of slices of one target: `slices[i]` is slice `first + i * stride` along `axis`."""

    source: str
    name: str
    axis: int
    first: int
    slices: list[CachedSlice]
    stride: int = 1


def run_stride(survey: Survey, axis: int, step_mm: float | None) -> int:
    """Slices between a run's neighbours: 1, or as many as fit in `step_mm` (the engines' `slice_step` rule)."""
    if step_mm is None:
        return 1
    return max(1, int(np.floor(step_mm / float(survey.spacing[axis]) + 1e-6)))


def target_runs(target: Target, run_slices: int, runs: int, overhang: int, rng: np.random.Generator,
                stride: int = 1) -> list[list[int]]:
    """Slice indices of the runs of one target (each `run_slices` long, `stride` apart, inside the volume)."""
    n = target.survey.shape[target.axis]
    length = min(run_slices, (n - 1) // stride + 1)
    span = (length - 1) * stride + 1
    lo = max(0, int(target.valid[0]) - overhang * stride)
    hi = min(n - span, int(target.valid[-1]) + overhang * stride - span + 1)
    if hi < lo:  # a short object in a thin volume: centre the run on it
        lo = hi = int(np.clip((int(target.valid[0]) + int(target.valid[-1]) - span) // 2, 0, n - span))
    starts = sorted({int(s) for s in rng.integers(lo, hi + 1, size=runs)})
    return [list(range(s, s + span, stride)) for s in starts]


def make_window_plan(surveys: list[Survey], weights: dict[str, float], max_embeddings: int, run_slices: int,
                     runs_per_target: int, overhang: int, min_pixels: int, seed: int,
                     step_mm: float | None = None) -> list[tuple[Target, int]]:
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
            stride = run_stride(sv, axis, step_mm)
            for run in target_runs(t, run_slices, runs_per_target, overhang, rng, stride):
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


def load_windows(items: list[tuple[Target, int]], folders: dict[str, Path],
                 step_mm: float | None = None) -> dict[str, list[Window]]:
    """source -> its windows: the cached slices of each target cut into runs of indices `run_stride` apart
    (the `step_mm` of the plan)."""
    index = load_index(items, folders)
    strides = {folders[t.survey.key].name: run_stride(t.survey, t.axis, step_mm) for t, _ in items if t.survey.key in folders}
    out: dict[str, list[Window]] = {}
    for source, targets in index.items():
        for slices in targets:
            stride = strides.get(slices[0].emb_path.parent.name, 1) if slices else 1
            runs = split_runs(slices, stride)
            for run in runs:
                if len(run) >= 2:
                    axis, k = _axis_index(run[0].emb_path)
                    out.setdefault(source, []).append(Window(source, run[0].emb_path.parent.name, axis, k, run, stride))
    return out


def split_runs(slices: list[CachedSlice], stride: int) -> list[list[CachedSlice]]:
    """One target's cached slices (sorted by axis, then index) cut into runs of indices `stride` apart; runs
    of other phases (another run's slices between) are kept apart."""
    runs: list[list[CachedSlice]] = []
    ends: dict[tuple[int, int], int] = {}  # (axis, last slice) -> its run
    for cs in slices:
        axis, k = _axis_index(cs.emb_path)
        i = ends.pop((axis, k - stride), None)
        if i is None:
            i = len(runs)
            runs.append([])
        runs[i].append(cs)
        ends[(axis, k)] = i
    return runs


def _axis_index(path: Path) -> tuple[int, int]:
    """(axis, slice) from an embedding file name `a{axis}_{k:04d}.npy`."""
    axis, k = path.stem[1:].split("_")
    return int(axis), int(k)
