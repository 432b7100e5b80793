"""Training data: sources -> cached 1.5 mm volumes -> deterministic (image, target) crops.

1. `list_cases` expands each configured source (MSD / nnU-Net folder, image/label pairs, label maps
   without images) into `TrainCase`s, honouring the held-out `exclude` patterns.
2. `prepare_cache` resamples every case once onto its canonical grid (closest-RAS axes, `spacing_mm`,
   anchored like the engine's crops, so a training crop has exactly the voxels the engine would sample),
   clamps CT, and stores `image.npy` / `label.npy` (memory-mapped later) and `meta.json` (per-label voxel
   counts and bounding boxes). A cache entry is keyed by the files' contents (`hash_case_files`).
3. `TrainSamples[i]` is a pure function of (seed, i): source by weight, case uniformly, target label
   uniformly among the case's labels (so small structures are not drowned by large ones), a random target
   voxel placed at a random fraction `offset_range` of the crop, optional label-map synthesis, augmentation,
   then SAM-Med3D's z-normalisation over voxels > 0. Resuming a run therefore needs only the step number.
"""
from __future__ import annotations

import fnmatch
import hashlib
import json
import logging
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import numpy as np
from torch.utils.data import Dataset

from voxsam.errors import DatasetError, VoxsamError
from voxsam.training.config import DataSection, SourceSection

log = logging.getLogger(__name__)

CACHE_VERSION = 2
GRID_PAD = 1  # cached grid index = engine canonical grid index + GRID_PAD


@dataclass(frozen=True)
class TrainCase:
    """One labelled volume (or a label map alone when `image_paths` is empty)."""

    source: str
    case_id: str
    image_paths: tuple[Path, ...]
    label_path: Path
    modality: str  # "CT" or "MR"
    labels: tuple[int, ...] = ()  # restrict targets to these values (empty = all)


@dataclass
class CachedCase:
    case: TrainCase
    folder: Path
    label_stats: dict[int, dict[str, Any]]  # value -> {"count": n, "lo": [3], "hi": [3]} at spacing_mm
    shape: tuple[int, int, int]
    has_image: bool
    _arrays: dict[str, np.ndarray] = field(default_factory=dict, repr=False)

    def array(self, name: str) -> np.ndarray:
        """`image` (float32) or `label` (uint16), memory-mapped and kept open."""
        if name not in self._arrays:
            self._arrays[name] = np.load(self.folder / f"{name}.npy", mmap_mode="r")
        return self._arrays[name]


def _matches(case_id: str, patterns: list[str]) -> bool:
    return any(fnmatch.fnmatchcase(case_id, p) for p in patterns)


def _case_id(path: Path) -> str:
    from voxsam.io.datasets import split_name

    return split_name(path)[0] if path.is_file() else path.name


def list_cases(source: SourceSection) -> list[TrainCase]:
    """The cases of one source after `include` / `exclude` (DatasetError when the source is unusable)."""
    from voxsam.io.datasets import open_dataset

    labels = tuple(int(v) for v in source.labels)
    cases: list[TrainCase] = []
    if source.path is not None:
        ds = open_dataset(source.path)
        modality = source.modality or ds.modality or "MR"
        for c in ds.cases:
            if c.label_path is None:
                continue
            cases.append(TrainCase(source.name, c.case_id, tuple(c.image_paths), c.label_path, modality, labels))
    for image, label in source.pairs:
        for p in (image, label):
            if not Path(p).exists():
                raise DatasetError(f"source {source.name}: {p} does not exist")
        cases.append(TrainCase(source.name, _case_id(Path(image)), (Path(image),), Path(label), source.modality or "MR", labels))
    for label in source.label_maps:
        if not Path(label).exists():
            raise DatasetError(f"source {source.name}: {label} does not exist")
        cases.append(TrainCase(source.name, _case_id(Path(label)), (), Path(label), source.modality or "MR", labels))
    kept = [c for c in cases if (not source.include or _matches(c.case_id, source.include)) and not _matches(c.case_id, source.exclude)]
    if not kept:
        raise DatasetError(f"source {source.name}: no case left after include/exclude")
    return kept


def canonical_grid(shape: tuple[int, int, int], affine: np.ndarray, spacing: float) -> tuple[tuple[int, int, int], np.ndarray]:
    """Shape and affine of the whole volume resampled to `spacing` mm on its closest-RAS axes.

    The grid is the engine's canonical grid (same axes and phase, see `voxsam.transforms.crop`) widened by
    `GRID_PAD` points on every side.
    """
    from voxsam.transforms.crop import canonical_grid_affine
    from voxsam.transforms.geometry import apply_affine, corner_points

    grid = canonical_grid_affine(shape, affine, spacing)
    idx = apply_affine(np.linalg.inv(grid), corner_points(shape, affine))
    dims = np.floor(idx.max(axis=0) + 1e-6).astype(int) + 1
    # one extra grid point on every side: linear interpolation still blends the edge voxels with the
    # zero outside there (the engine's crops see that rim too); same phase, indices shifted by GRID_PAD
    grid = grid.copy()
    grid[:3, 3] = apply_affine(grid, np.full(3, -float(GRID_PAD)))
    return tuple(int(d) + 2 * GRID_PAD for d in np.maximum(dims, 1)), grid  # type: ignore[return-value]


def _case_files(case: TrainCase) -> list[tuple[Path, str]]:
    """(file, name within its folder or '') of every image and label file of a case, in a fixed order."""
    out: list[tuple[Path, str]] = []
    for p in (*case.image_paths, case.label_path):
        root = Path(p)
        if root.is_dir():
            out += [(f, str(f.relative_to(root))) for f in sorted(f for f in root.rglob("*") if f.is_file())]
        else:
            out.append((root, ""))
    return out


def hash_case_files(h: Any, case: TrainCase) -> Any:
    """Feed a case's image and label files to hash `h` by content (names within a folder, sizes, bytes), not
    by path or time: a copied or re-mounted data folder keeps its caches, an edited file gets new ones."""
    for f, name in _case_files(case):
        h.update(f"|{name}|{f.stat().st_size}|".encode())
        with open(f, "rb") as stream:
            for chunk in iter(lambda: stream.read(1 << 20), b""):
                h.update(chunk)
    return h


def content_key(case: TrainCase, salt: str, memo_dir: Path | None = None) -> str:
    """SHA-1 (hex) of `salt` and the case's file contents (`hash_case_files`). With `memo_dir`, the key is
    remembered there under the files' paths, sizes and mtimes, so unchanged files are read once, not on every run
    (a copied, re-mounted or edited file is hashed again)."""
    memo = None
    if memo_dir is not None:
        stamp = hashlib.sha1(salt.encode())
        for f, _ in _case_files(case):
            st = f.stat()
            stamp.update(f"|{f.resolve()}|{st.st_size}|{st.st_mtime_ns}".encode())
        memo = Path(memo_dir) / "content_keys" / f"{stamp.hexdigest()}.txt"
        if memo.is_file():
            known = memo.read_text().strip()
            if len(known) == 40:
                return known
    key = str(hash_case_files(hashlib.sha1(salt.encode()), case).hexdigest())
    if memo is not None:
        memo.parent.mkdir(parents=True, exist_ok=True)
        tmp = memo.with_name(f"{memo.name}.{os.getpid()}.tmp")
        tmp.write_text(key)
        os.replace(tmp, memo)
    return key


def _cache_key(case: TrainCase, spacing: float, memo_dir: Path | None = None) -> str:
    return content_key(case, f"v{CACHE_VERSION}|{spacing:.6f}|{case.modality}", memo_dir)[:16]


def _label_stats(label: np.ndarray, wanted: tuple[int, ...]) -> dict[int, dict[str, Any]]:
    from scipy import ndimage

    values = [int(v) for v in np.unique(label) if v != 0 and (not wanted or int(v) in wanted)]
    if not values:
        return {}
    boxes = ndimage.find_objects(label.astype(np.int32), max_label=max(values))
    counts = np.bincount(label.ravel().astype(np.int64), minlength=max(values) + 1)
    return {
        v: {"count": int(counts[v]), "lo": [s.start for s in boxes[v - 1]], "hi": [s.stop - 1 for s in boxes[v - 1]]}
        for v in values
        if boxes[v - 1] is not None
    }


def _build_entry(case: TrainCase, spacing: float, folder: Path) -> None:
    """Resample one case onto its canonical grid and write the cache folder atomically (temp dir + rename)."""
    import os
    import shutil
    import tempfile

    from voxsam.io import read_volume
    from voxsam.transforms.geometry import resample_to_grid
    from voxsam.transforms.intensity import clamp_ct

    label_vol = read_volume(case.label_path)
    if label_vol.array.ndim != 3:
        raise DatasetError(f"{case.label_path}: a label map must be 3D, got shape {label_vol.array.shape}")
    ref = label_vol
    image = None
    if case.image_paths:
        image_vol = read_volume(list(case.image_paths) if len(case.image_paths) > 1 else case.image_paths[0])
        ref = image_vol
        image = image_vol.channel(0)
        image = clamp_ct(image) if case.modality == "CT" else image.astype(np.float32)
    shape, grid = canonical_grid(ref.shape, ref.affine, spacing)
    # labels in physical space onto the image's grid: a label on another grid (e.g. flipped) still lands right
    raw_label = np.asarray(label_vol.array)
    if not np.issubdtype(raw_label.dtype, np.integer):
        raw_label = np.rint(raw_label)
    label = resample_to_grid(raw_label.astype(np.uint16), label_vol.affine, shape, grid, order=0)
    stats = _label_stats(label, case.labels)
    tmp = Path(tempfile.mkdtemp(prefix=f".{folder.name}.", dir=folder.parent))
    try:
        np.save(tmp / "label.npy", label)
        if image is not None:
            np.save(tmp / "image.npy", resample_to_grid(image, ref.affine, shape, grid, order=1).astype(np.float32))
        meta = {"case": case.case_id, "source": case.source, "shape": list(shape), "affine": grid.tolist(),
                "spacing_mm": spacing, "modality": case.modality, "has_image": image is not None,
                "labels": {str(k): v for k, v in stats.items()}}
        (tmp / "meta.json").write_text(json.dumps(meta))
        if folder.exists():
            shutil.rmtree(folder)
        os.replace(tmp, folder)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)


def load_cached(case: TrainCase, spacing: float, cache_dir: Path) -> CachedCase | None:
    folder = Path(cache_dir) / f"{case.source}__{case.case_id}__{_cache_key(case, spacing, cache_dir)}"
    meta_file = folder / "meta.json"
    if not meta_file.is_file():
        return None
    meta = json.loads(meta_file.read_text())
    stats = {int(k): v for k, v in meta["labels"].items()}
    return CachedCase(case, folder, stats, tuple(meta["shape"]), bool(meta["has_image"]))  # type: ignore[arg-type]


def prepare_cache(
    cases: list[TrainCase], spacing: float, cache_dir: Path, progress: Callable[[int, int, str], None] | None = None
) -> tuple[list[CachedCase], list[str]]:
    """Make sure every case is cached. Returns (cached cases, one-line problems of the cases skipped)."""
    cache_dir = Path(cache_dir)
    cache_dir.mkdir(parents=True, exist_ok=True)
    done: list[CachedCase] = []
    problems: list[str] = []
    for i, case in enumerate(cases):
        entry = load_cached(case, spacing, cache_dir)
        if entry is None:
            if progress:
                progress(i, len(cases), f"{case.source}/{case.case_id}")
            try:
                folder = cache_dir / f"{case.source}__{case.case_id}__{_cache_key(case, spacing, cache_dir)}"
                _build_entry(case, spacing, folder)
            except VoxsamError as exc:
                problems.append(f"{case.source}/{case.case_id}: {exc}")
                continue
            entry = load_cached(case, spacing, cache_dir)
        if entry is not None:
            done.append(entry)
    return done, problems


# ---------------------------------------------------------------------- sampling
@dataclass(frozen=True)
class Target:
    entry: CachedCase
    value: int


class TargetTable:
    """Targets grouped by source, with the sources' sampling weights."""

    def __init__(self, entries: list[CachedCase], sources: list[SourceSection], min_voxels: int) -> None:
        weights = {s.name: s.weight for s in sources}
        by_source: dict[str, list[list[Target]]] = {}
        for e in entries:
            targets = [Target(e, v) for v, st in sorted(e.label_stats.items()) if st["count"] >= min_voxels]
            if targets:
                by_source.setdefault(e.case.source, []).append(targets)
        if not by_source:
            raise DatasetError(f"no training target has >= {min_voxels} voxels in any source")
        self.names = sorted(by_source)
        self.cases = [by_source[n] for n in self.names]
        w = np.array([weights[n] for n in self.names], float)
        self.probs = w / w.sum()

    def draw(self, rng: np.random.Generator) -> Target:
        s = int(rng.choice(len(self.names), p=self.probs))
        case_targets = self.cases[s][int(rng.integers(len(self.cases[s])))]
        return case_targets[int(rng.integers(len(case_targets)))]

    def summary(self) -> dict[str, dict[str, float]]:
        return {n: {"cases": len(c), "targets": sum(len(t) for t in c), "probability": round(float(p), 4)}
                for n, c, p in zip(self.names, self.cases, self.probs)}


def crop_padded(array: np.ndarray, start: np.ndarray, size: int) -> np.ndarray:
    """array[start : start + size] per axis, zero outside the array (a copy)."""
    out = np.zeros((size, size, size), dtype=array.dtype)
    lo = np.maximum(start, 0)
    hi = np.minimum(start + size, np.array(array.shape))
    if np.any(hi <= lo):
        return out
    dst = tuple(slice(int(a - s), int(b - s)) for a, b, s in zip(lo, hi, start))
    out[dst] = array[tuple(slice(int(a), int(b)) for a, b in zip(lo, hi))]
    return out


def sample_seed(seed: int, index: int, *salt: int) -> np.random.Generator:
    return np.random.default_rng([int(seed) & 0xFFFFFFFF, int(index), *salt])


class TrainSamples(Dataset[dict[str, Any]]):
    """Map-style dataset: `self[i]` -> {"image": (1,S,S,S) float32, "target": (1,S,S,S) float32, "info": str}."""

    def __init__(self, table: TargetTable, config: DataSection, seed: int, augment: bool = True) -> None:
        self.table = table
        self.config = config
        self.seed = seed
        self.augment = augment

    def __len__(self) -> int:  # effectively unbounded; indices are global sample numbers
        return 2**62

    def __getitem__(self, index: int) -> dict[str, Any]:
        from voxsam.training.augment import augment
        from voxsam.training.synthesis import synthesize_image
        from voxsam.transforms.intensity import znorm_positive

        cfg = self.config
        rng = sample_seed(self.seed, index)
        target = self.table.draw(rng)
        entry, size = target.entry, cfg.crop_size
        label_full = entry.array("label")
        stats = entry.label_stats[target.value]
        # a random voxel of the target, found inside its bounding box (cheap) and placed off-centre
        lo, hi = np.array(stats["lo"]), np.array(stats["hi"]) + 1
        box = np.asarray(label_full[lo[0]:hi[0], lo[1]:hi[1], lo[2]:hi[2]])
        flat = np.flatnonzero(box == target.value)
        voxel = lo + np.array(np.unravel_index(int(flat[int(rng.integers(len(flat)))]), box.shape))
        frac = rng.uniform(cfg.offset_range[0], cfg.offset_range[1], size=3)
        start = voxel - np.floor(frac * size).astype(int)
        labels = crop_padded(label_full, start, size)
        synth = (not entry.has_image) or rng.random() < cfg.synth_prob
        if synth:
            image = synthesize_image(labels, cfg.spacing_mm, rng, cfg.synthesis)
        else:
            image = crop_padded(entry.array("image"), start, size).astype(np.float32)
        mask = (labels == target.value).astype(np.uint8)
        if self.augment and cfg.augment.enabled:
            image, mask = augment(image, mask, rng, cfg.augment)
        image = znorm_positive(image)
        return {
            "image": np.ascontiguousarray(image[None], dtype=np.float32),
            "target": np.ascontiguousarray(mask[None], dtype=np.float32),
            "info": f"{entry.case.source}/{entry.case.case_id}#{target.value}{'/synth' if synth else ''}",
        }


def build_table(sources: list[SourceSection], config: DataSection, progress: Callable[[int, int, str], None] | None = None) -> tuple[TargetTable, list[str]]:
    """List, cache and index the sources' targets. Problems (skipped cases/sources) are returned, not raised."""
    cases: list[TrainCase] = []
    problems: list[str] = []
    for src in sources:
        try:
            cases += list_cases(src)
        except VoxsamError as exc:
            problems.append(str(exc))
    entries, skipped = prepare_cache(cases, config.spacing_mm, config.cache_dir, progress)
    problems += skipped
    for p in problems:
        log.warning("skipped: %s", p)
    return TargetTable(entries, sources, config.min_voxels), problems
