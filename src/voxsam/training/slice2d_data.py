"""Training data of the `slice2d` family: target slices of labelled volumes, their frozen-encoder embeddings
cached on disk (float16), and the samples drawn from them.

1. Survey (cached per case, `cases/*.json`): each case is read once (its label resampled in physical space
   onto the image grid when the grids differ) and the pixel count of every label on every slice of every axis
   is stored.
2. Plan (deterministic, from the surveys and `data`): a target is one label of one case; it is sliced along
   the acquisition axis (`voxsam.engines.base.acquisition_axis`: largest spacing, axial on ties), and also
   along the two other axes when the volume's spacings differ by at most `other_axes_max_ratio`. Of the slices
   where the label has >= `min_pixels` pixels, up to `slices_per_target` (acquisition axis) /
   `other_axes_slices` are chosen: the middle, both ends (propagation needs the small end slices), then the
   quarters, eighths...; the other axes join the round-robin `other_axes_delay` rounds late; an interior choice snaps to a nearby slice another target already encodes. Sources share
   `max_embeddings` by weight (water-filling: what a small source cannot use goes to the others). With
   `beyond_ends`, each chosen target also gets the slice just past each of its ends along the acquisition
   axis (on top of the budget): the label is absent there, so the model can learn where a walk stops.
3. Build (resumable): for every planned slice, the engine's own model input
   (`voxsam.engines.slice2d.slices.prepare_volume` + `model_input`: display orientation, CT window / MRI
   percentiles, mm-aspect resize to 256, zero pad) is encoded once and saved as a float16 `.npy`, atomically;
   per case one `masks_*.npz` holds each target slice's geometry and the display masks of slices k-1, k, k+1
   (cropped, bit-packed). An interrupted build continues where it stopped.
"""
from __future__ import annotations

import hashlib
import json
import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable

import numpy as np

from voxsam.errors import VoxsamError

if TYPE_CHECKING:  # pragma: no cover
    from voxsam.io.volume import Volume
    from voxsam.training.data import TrainCase
    from voxsam.training.slice2d_config import Slice2DDataSection

log = logging.getLogger(__name__)

CACHE_VERSION = 1
Progress = Callable[[int, int, str], None]


def _files_key(case: TrainCase, memo_dir: Path | None = None) -> str:
    from voxsam.training.data import content_key

    return f"{case.source}__{case.case_id}__{content_key(case, f'v{CACHE_VERSION}|{case.modality}|{case.labels}', memo_dir)[:12]}"


def _save(path: Path, save: Callable[[Any], None]) -> None:
    with open(path, "wb") as f:
        save(f)


def _atomic_write(path: Path, write: Callable[[Path], Any]) -> None:
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        write(tmp)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def read_case(case: TrainCase) -> tuple[Volume, np.ndarray]:
    """(image volume as the engine would get it, integer label array on the image grid)."""
    from voxsam.io import read_volume
    from voxsam.transforms.geometry import resample_to_grid, same_grid

    image = read_volume(list(case.image_paths) if len(case.image_paths) > 1 else case.image_paths[0])
    # C order (same values): np.take along an axis of a Fortran-ordered array copies the whole volume per slice
    image.array = np.ascontiguousarray(image.array)
    if case.modality == "CT":  # dataset.json or the config says CT: the engine's session sets it the same way
        image.modality = "CT"
    lab = read_volume(case.label_path)
    raw = np.asarray(lab.channel(0))
    raw = raw if np.issubdtype(raw.dtype, np.integer) else np.rint(raw)
    if lab.shape == image.shape and same_grid(lab.shape, lab.affine, image.shape, image.affine, tol_mm=1e-3):
        label = raw.astype(np.int32)
    else:
        label = resample_to_grid(raw.astype(np.int32), lab.affine, image.shape, image.affine, order=0).astype(np.int32)
    if case.labels:
        label = np.where(np.isin(label, case.labels), label, 0)
    return image, np.ascontiguousarray(label)


# ---------------------------------------------------------------------- 1. survey
@dataclass
class Survey:
    key: str
    case: TrainCase
    shape: tuple[int, int, int]
    spacing: tuple[float, float, float]
    acq_axis: int
    counts: dict[int, list[tuple[int, list[int]]]]  # label -> per axis (first slice, pixel counts from it)

    def valid_slices(self, label: int, axis: int, min_pixels: int) -> np.ndarray:
        lo, counts = self.counts[label][axis]
        return lo + np.flatnonzero(np.asarray(counts) >= min_pixels)

    def beyond_slices(self, label: int, axis: int) -> list[int]:
        """The slices just before the label's first and just after its last along `axis`, inside the volume."""
        lo, counts = self.counts[label][axis]
        return [k for k in (lo - 1, lo + len(counts)) if 0 <= k < self.shape[axis]]


def survey_case(case: TrainCase, cache_dir: Path) -> Survey:
    from voxsam.engines.base import acquisition_axis

    key = _files_key(case, cache_dir)
    path = cache_dir / "cases" / f"{key}.json"
    if path.is_file():
        d = json.loads(path.read_text())
    else:
        image, label = read_case(case)
        top = int(label.max()) if label.size else 0
        values = [int(v) for v in np.flatnonzero(np.bincount(label.ravel(), minlength=top + 1)) if v > 0]
        per_axis = []
        for axis in range(3):
            moved = np.moveaxis(label, axis, 0).reshape(label.shape[axis], -1)
            per_axis.append(np.stack([np.bincount(s, minlength=top + 1) for s in moved]))  # (slices, top + 1)
        counts: dict[str, list[Any]] = {}
        for v in values:
            entry = []
            for axis in range(3):
                c = per_axis[axis][:, v]
                nz = np.flatnonzero(c)
                entry.append([int(nz[0]), c[nz[0]:nz[-1] + 1].tolist()])
            counts[str(v)] = entry
        d = {"shape": list(image.shape), "spacing": list(image.spacing), "acq_axis": acquisition_axis(image.affine),
             "counts": counts}
        path.parent.mkdir(parents=True, exist_ok=True)
        _atomic_write(path, lambda p: p.write_text(json.dumps(d)))
    return Survey(key, case, tuple(d["shape"]), tuple(d["spacing"]), int(d["acq_axis"]),  # type: ignore[arg-type]
                  {int(v): [(int(a[0]), list(a[1])) for a in e] for v, e in d["counts"].items()})


def survey_sources(sources: list[Any], cache_dir: Path) -> tuple[list[Survey], list[str]]:
    """The surveys of every case of `sources` (SourceSections) and the problems of those skipped."""
    from voxsam.training.data import list_cases

    problems: list[str] = []
    surveys = []
    for src in sources:
        try:
            cases = list_cases(src)
        except VoxsamError as exc:
            problems.append(str(exc))
            continue
        for case in cases:
            try:
                surveys.append(survey_case(case, cache_dir))
            except VoxsamError as exc:
                problems.append(f"{case.source}/{case.case_id}: {exc}")
    return surveys, problems


# ---------------------------------------------------------------------- 2. plan
@dataclass
class Target:
    source: str
    survey: Survey
    label: int
    axis: int
    valid: np.ndarray  # slices with >= min_pixels
    want: int  # slices to choose
    delay: int = 0  # rounds of the round-robin it waits (other axes wait for the acquisition axis's first slices)
    beyond: tuple[int, ...] = ()  # slices past its ends (label absent) it also trains on

    def is_beyond(self, k: int) -> bool:
        return k in self.beyond


def priority(n: int, want: int) -> list[int]:
    """Positions (0..n-1) in the order they are taken: the middle, both ends, the quarters, the eighths..."""
    order: list[int] = []
    fracs = [0.5, 0.0, 1.0]
    depth = 1
    while len(order) < min(n, want) and depth < 12:
        for f in fracs:
            p = int(round(f * (n - 1)))
            if p not in order:
                order.append(p)
        depth += 1
        fracs = [(2 * j + 1) / 2 ** depth for j in range(2 ** (depth - 1))]
    return order[:min(n, want)]


def _select(targets: list[Target], budget: int | None, rng_seed: int) -> tuple[set[tuple[str, int, int]], list[tuple[Target, int]]]:
    """Round-robin over targets (fixed shuffled order): embeddings (case key, axis, k) and items (target, k)."""
    order = np.random.default_rng(rng_seed).permutation(len(targets))
    chosen: set[tuple[str, int, int]] = set()
    items: list[tuple[Target, int]] = []
    queues = [priority(len(t.valid), t.want) for t in targets]
    taken: list[set[int]] = [set() for _ in targets]
    for step in range(max((len(q) + t.delay for q, t in zip(queues, targets)), default=0)):
        for ti in order:
            t, q = targets[ti], queues[ti]
            rank = step - t.delay
            if not 0 <= rank < len(q):
                continue
            pos = q[rank]
            k = int(t.valid[pos])
            if 0 < pos < len(t.valid) - 1:  # interior: snap to a nearby slice already encoded
                tol = (len(t.valid) - 1) // (2 * max(t.want, 1))
                for d in sorted(range(-tol, tol + 1), key=abs):
                    j = pos + d
                    if 0 <= j < len(t.valid) and (t.survey.key, t.axis, int(t.valid[j])) in chosen and int(t.valid[j]) not in taken[ti]:
                        k = int(t.valid[j])
                        break
            if k in taken[ti]:
                continue
            key = (t.survey.key, t.axis, k)
            if key not in chosen:
                if budget is not None and len(chosen) >= budget:
                    continue
                chosen.add(key)
            taken[ti].add(k)
            items.append((t, k))
    return chosen, items


def water_fill(weights: dict[str, float], demand: dict[str, int], total: int) -> dict[str, int]:
    """Split `total` by weight, no source above its demand; what a capped source leaves goes to the others."""
    budget = {s: 0 for s in weights}
    open_ = {s for s in weights if demand.get(s, 0) > 0}
    left = total
    while open_ and left > 0:
        wsum = sum(weights[s] for s in open_)
        share = {s: left * weights[s] / wsum for s in open_}
        capped = {s for s in open_ if budget[s] + share[s] >= demand[s]}
        if not capped:
            for s in open_:
                budget[s] += int(share[s])
            break
        for s in capped:
            left -= demand[s] - budget[s]
            budget[s] = demand[s]
        open_ -= capped
    return budget


def make_plan(surveys: list[Survey], cfg: Slice2DDataSection) -> list[tuple[Target, int]]:
    """The (target, slice) items to train on, every source within its share of `max_embeddings`."""
    weights = {s.name: s.weight for s in cfg.sources}
    by_source: dict[str, list[Target]] = {}
    for sv in surveys:
        sp = np.asarray(sv.spacing)
        axes = [sv.acq_axis] + ([a for a in range(3) if a != sv.acq_axis]
                                if sp.max() <= cfg.other_axes_max_ratio * sp.min() else [])
        for label in sorted(sv.counts):
            for axis in axes:
                if sv.shape[axis] < 2:
                    continue
                valid = sv.valid_slices(label, axis, cfg.min_pixels)
                want = cfg.slices_per_target if axis == sv.acq_axis else cfg.other_axes_slices
                if len(valid) and want:
                    delay = 0 if axis == sv.acq_axis else cfg.other_axes_delay
                    beyond = tuple(sv.beyond_slices(label, axis)) if cfg.beyond_ends and axis == sv.acq_axis else ()
                    by_source.setdefault(sv.case.source, []).append(
                        Target(sv.case.source, sv, label, axis, valid, want, delay, beyond))
    demand = {s: len(_select(ts, None, cfg.plan_seed)[0]) for s, ts in by_source.items()}
    budget = water_fill({s: weights[s] for s in by_source}, demand, cfg.max_embeddings)
    items: list[tuple[Target, int]] = []
    for s in sorted(by_source):
        chosen = _select(by_source[s], budget[s], cfg.plan_seed)[1]
        # past-the-end slices come on top of the budget, for the targets that got slices
        seen: dict[int, Target] = {id(t): t for t, _ in chosen}
        items += chosen + [(t, k) for t in seen.values() for k in t.beyond]
    return items


# ---------------------------------------------------------------------- 3. build
def _pack(masks: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(3, H, W) bool -> (crop box r0, c0, r1, c1, bit-packed crop)."""
    any_ = np.any(masks, axis=0)
    rows, cols = np.flatnonzero(any_.any(axis=1)), np.flatnonzero(any_.any(axis=0))
    if len(rows) == 0:  # a slice beyond the object's end (memory3d windows run past it): nothing to store
        return np.zeros(4, dtype=np.int64), np.zeros(0, dtype=np.uint8)
    box = np.array([rows[0], cols[0], rows[-1] + 1, cols[-1] + 1], dtype=np.int64)
    return box, np.packbits(masks[:, box[0]:box[2], box[1]:box[3]].ravel())


def unpack(box: np.ndarray, bits: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    """Inverse of `_pack`: (3, H, W) bool display masks of slices k-1, k, k+1."""
    r0, c0, r1, c1 = (int(v) for v in box)
    n = 3 * (r1 - r0) * (c1 - c0)
    out = np.zeros((3, *shape), dtype=bool)
    out[:, r0:r1, c0:c1] = np.unpackbits(bits, count=n).astype(bool).reshape(3, r1 - r0, c1 - c0)
    return out


def build_cache(items: list[tuple[Target, int]], cache_dir: Path, encoder_id: str,
                encoder: Callable[[], Any], progress: Progress | None = None,
                ct_window: tuple[float, float] | None = None) -> tuple[dict[str, Path], list[str]]:
    """Encode every planned slice not cached yet and write each case's masks file. Returns (case key -> its
    folder, problems of the cases skipped). `encoder()` gives the model (called only when something is
    missing). CT cases are encoded under `ct_window` (HU; default the engine's `CT_WINDOW`), which is part of
    their folder's name (a changed window never reuses embeddings)."""
    import torch

    from voxsam.engines.slice2d.slices import CT_WINDOW, model_input, prepare_volume

    window = tuple(float(v) for v in (ct_window or CT_WINDOW))
    ct_suffix = f"__ct{window[0]:g}_{window[1]:g}"

    by_case: dict[str, list[tuple[Target, int]]] = {}
    for t, k in items:
        by_case.setdefault(t.survey.key, []).append((t, k))
    total = len({(t.survey.key, t.axis, k) for t, k in items})
    done = 0
    folders: dict[str, Path] = {}
    problems: list[str] = []
    model: Any = None
    for key in sorted(by_case):
        case_items = sorted(by_case[key], key=lambda tk: (tk[0].label, tk[0].axis, tk[1]))
        slices = sorted({(t.axis, k) for t, k in case_items})
        plan = hashlib.sha1(json.dumps([(t.label, t.axis, k) for t, k in case_items]).encode()).hexdigest()[:12]
        case = case_items[0][0].survey.case
        folder = cache_dir / encoder_id / (key + (ct_suffix if case.modality == "CT" else ""))
        masks_file = folder / f"masks_{plan}.npz"
        missing = [(a, k) for a, k in slices if not (folder / f"a{a}_{k:04d}.npy").is_file()]
        if not missing and masks_file.is_file():
            folders[key] = folder
            done += len(slices)
            continue
        try:
            image, label = read_case(case)
            prepared = prepare_volume(image, 16, (window[0], window[1]))
        except VoxsamError as exc:
            problems.append(f"{case.source}/{case.case_id}: {exc}")
            done += len(slices)
            continue
        folder.mkdir(parents=True, exist_ok=True)
        geoms: dict[tuple[int, int], tuple[tuple[int, int], tuple[int, int]]] = {}
        for a, k in slices:
            if progress is not None and (a, k) in missing:
                progress(done, total, f"{case.source}/{case.case_id} axis {a} slice {k}")
            done += 1
            x, geom = model_input(prepared, a, k)
            geoms[(a, k)] = (geom.shape, geom.resized)
            if (a, k) not in missing:
                continue
            if model is None:
                model = encoder()
            with torch.inference_mode():
                emb = model.encode(torch.from_numpy(x)[None])[0].half().numpy()
            _atomic_write(folder / f"a{a}_{k:04d}.npy", lambda p: _save(p, lambda f: np.save(f, emb)))  # noqa: B023
        rows, boxes, bits = [], [], []
        for t, k in case_items:
            view = prepared.view(t.axis)
            n = prepared.shape[t.axis]
            stack = np.stack([view.take(label, j) == t.label if 0 <= j < n
                              else np.zeros(view.display_shape(prepared.shape), dtype=bool) for j in (k - 1, k, k + 1)])
            (H, W), (h, w) = geoms[(t.axis, k)]
            box, packed = _pack(stack)
            rows.append([t.label, t.axis, k, H, W, h, w, *view.spacing_rc])
            boxes.append(box)
            bits.append(packed)
        offsets = np.cumsum([0] + [len(b) for b in bits])
        arrays: dict[str, Any] = {"rows": np.asarray(rows, dtype=np.float64), "boxes": np.asarray(boxes, dtype=np.int64),
                  "offsets": offsets.astype(np.int64), "bits": np.concatenate(bits)}
        _atomic_write(masks_file, lambda p: _save(p, lambda f: np.savez(f, **arrays)))
        folders[key] = folder
    return folders, problems


@dataclass
class CachedSlice:
    """One training slice of one target: its embedding file, geometry and k-1, k, k+1 display masks."""

    emb_path: Path
    shape: tuple[int, int]
    resized: tuple[int, int]
    spacing_rc: tuple[float, float]
    box: np.ndarray
    bits: np.ndarray
    beyond: bool = False  # past the target's end: the label is absent here and in one neighbour's place

    def masks(self) -> np.ndarray:
        return unpack(self.box, self.bits, self.shape)


def load_index(items: list[tuple[Target, int]], folders: dict[str, Path]) -> dict[str, list[list[CachedSlice]]]:
    """source -> targets (one case's one label, all its axes) -> their cached slices."""
    by_case: dict[str, list[tuple[Target, int]]] = {}
    for t, k in items:
        by_case.setdefault(t.survey.key, []).append((t, k))
    out: dict[str, list[list[CachedSlice]]] = {}
    for key in sorted(by_case):
        if key not in folders:
            continue
        case_items = sorted(by_case[key], key=lambda tk: (tk[0].label, tk[0].axis, tk[1]))
        plan = hashlib.sha1(json.dumps([(t.label, t.axis, k) for t, k in case_items]).encode()).hexdigest()[:12]
        with np.load(folders[key] / f"masks_{plan}.npz") as z:
            rows, boxes, offsets, bits = z["rows"], z["boxes"], z["offsets"], z["bits"]
        per_label: dict[int, list[CachedSlice]] = {}
        for i, (t, k) in enumerate(case_items):
            r = rows[i]
            per_label.setdefault(t.label, []).append(CachedSlice(
                folders[key] / f"a{t.axis}_{k:04d}.npy", (int(r[3]), int(r[4])), (int(r[5]), int(r[6])),
                (float(r[7]), float(r[8])), boxes[i], bits[offsets[i]:offsets[i + 1]], t.is_beyond(k)))
        out.setdefault(case_items[0][0].source, []).extend(per_label[v] for v in sorted(per_label))
    return out
