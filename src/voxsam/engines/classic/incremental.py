"""Further GrowCut clicks without solving the ROI again: the solver cache and the rule for reusing it.

A full GrowCut solve keeps, per object, what a further click needs (`SolveCache`): the ROI, the normalised
working image and its seed map, the solution (distances, winning labels, edge costs; `growcut.GrowcutSolution`)
and the thresholded ROI mask before clean-up (only its bounding box). The cache lives in the prepared volume
(`SolveCaches`, least recently used first out, at most `MAX_ENTRIES` entries and `MAX_BYTES`, the engine
lowering that to 4 bytes per volume voxel; the latest entry is always kept), keyed by a token that the
prediction's state carries, so undo/redo and the history never copy it (the history counts nothing for it):
a state whose token is no longer cached (evicted, or consumed by a later click after an undo) just gets a
full solve. A cached entry for 96³ working voxels holds ~37 MB (costs 24 B, distances 8, image 4, field 4,
seeds and labels 2 per working voxel) plus the thresholded mask's box (1 B per ROI voxel).

The rule (`reusable`): a further click reuses the previous solve when the prompts are the previous ones
plus new points only (no box, same engine options), and every new positive click lies inside the previous
ROI at least `reuse_margin_mm` from each ROI face that is not the image border. The ROI is then the one the
last full solve chose, which a solve from scratch would grow by at most margin_mm − reuse_margin_mm on a
side: results depend on the click history in that way (`incremental=False` turns it off). The seeds are
rebuilt on the kept working image; if any earlier seed voxel is no longer a seed or changes label (a
negative ball over a positive one, a new intensity model moving the image-border background), the click
gets a full solve. Otherwise only seeds were added, and `growcut.add_seeds` updates the solution exactly;
the ROI mask is resampled only over the blocks whose working-grid stencil holds a changed label (per
`TILE`³ tile, `update_raw`), and the clean-up (connected components) runs on the bounding box of the
thresholded mask, not the whole ROI.
"""
from __future__ import annotations

import itertools
import threading
from collections import OrderedDict
from dataclasses import dataclass
from typing import Any

import numpy as np

from voxsam.engines.base import Region
from voxsam.engines.classic.grid import Roi, resize_block, true_box, union
from voxsam.engines.classic.growcut import GrowcutSolution

MAX_ENTRIES = 4
MAX_BYTES = 256 * 2**20
TILE = 8  # working voxels per side of the tiles a changed region is resampled by
_tokens = itertools.count(1)


@dataclass
class SolveCache:
    """One object's last GrowCut solve.

    Attributes:
        options: the engine options it was made with (`ClassicOptions.model_dump()`).
        roi: the ROI and working grid.
        pos, neg: (N, 3), (M, 3) float64 volume coordinates of the positive and negative clicks.
        norm: (X, Y, Z) float32 normalised working image; seeds: int8 working seed map (0 free, 1 fg, 2 bg).
        sol: the solution on the working grid.
        raw, raw_box: the ROI mask before clean-up (field ≥ 0.5), as its block `raw_box` (ROI-local
            slices; None: no True voxel).
        mask_box: volume-grid box holding every voxel of the cleaned mask (None: empty).
    """

    options: dict[str, Any]
    roi: Roi
    pos: np.ndarray
    neg: np.ndarray
    norm: np.ndarray
    seeds: np.ndarray
    sol: GrowcutSolution
    raw: np.ndarray
    raw_box: Region | None
    mask_box: Region | None

    @property
    def nbytes(self) -> int:
        return int(self.norm.nbytes + self.seeds.nbytes + self.sol.nbytes + self.raw.nbytes)

    def raw_in(self, region: Region) -> np.ndarray:
        """bool copy of the pre-clean-up ROI mask over `region` (ROI-local slices)."""
        out = np.zeros(tuple(s.stop - s.start for s in region), dtype=bool)
        if self.raw_box is not None:
            common = [slice(max(a.start, b.start), min(a.stop, b.stop)) for a, b in zip(region, self.raw_box)]
            if all(c.stop > c.start for c in common):
                dst = tuple(slice(c.start - r.start, c.stop - r.start) for c, r in zip(common, region))
                src = tuple(slice(c.start - b.start, c.stop - b.start) for c, b in zip(common, self.raw_box))
                out[dst] = self.raw[src]
        return out

    def grow_raw(self, block: Region) -> bool:
        """Make the kept block of the pre-clean-up mask hold `block` too (ROI-local); True if it grew."""
        box = block if self.raw_box is None else union(self.raw_box, block)
        if box == self.raw_box:
            return False
        self.raw, self.raw_box = self.raw_in(box), box
        return True

    def set_raw(self, block: Region, values: np.ndarray) -> None:
        """Write `values` (bool, the block's shape) into the pre-clean-up mask over `block` (ROI-local)."""
        self.grow_raw(block)
        assert self.raw_box is not None
        self.raw[tuple(slice(b.start - o.start, b.stop - o.start) for b, o in zip(block, self.raw_box))] = values

    def tighten(self) -> None:
        """Shrink the kept block to the bounding box of its True voxels."""
        if self.raw_box is None:
            return
        tight = true_box(self.raw)
        if tight is None:
            self.raw, self.raw_box = np.zeros((0, 0, 0), dtype=bool), None
        elif self.raw[tight].size < self.raw.size:
            self.raw = self.raw[tight].copy()
            self.raw_box = tuple(slice(o.start + t.start, o.start + t.stop) for o, t in zip(self.raw_box, tight))  # type: ignore[assignment]


class SolveCaches:
    """The solves of one prepared volume, by token; least recently used first out (thread-safe)."""

    def __init__(self, max_entries: int = MAX_ENTRIES, max_bytes: int = MAX_BYTES) -> None:
        self.max_entries, self.max_bytes = int(max_entries), int(max_bytes)
        self._entries: OrderedDict[int, SolveCache] = OrderedDict()
        self._lock = threading.Lock()

    @property
    def nbytes(self) -> int:
        with self._lock:
            return sum(e.nbytes for e in self._entries.values())

    def __len__(self) -> int:
        return len(self._entries)

    def put(self, entry: SolveCache) -> int:
        """Keep `entry`, evicting the oldest beyond the bounds; returns its new token."""
        token = next(_tokens)
        with self._lock:
            self._entries[token] = entry
            while len(self._entries) > 1 and (
                len(self._entries) > self.max_entries or sum(e.nbytes for e in self._entries.values()) > self.max_bytes
            ):
                self._entries.popitem(last=False)
        return token

    def take(self, token: Any) -> SolveCache | None:
        """Remove and return the entry of `token` (None when absent): it is updated in place, then re-put."""
        if not isinstance(token, int):
            return None
        with self._lock:
            return self._entries.pop(token, None)


def reusable(
    cache: SolveCache, options: dict[str, Any], pos: np.ndarray, neg: np.ndarray, shape: tuple[int, int, int],
    spacing: np.ndarray, reuse_margin_mm: float,
) -> bool:
    """Whether a prediction from (pos, neg), no box, may update `cache` (the rule in the module docstring).

    Args:
        pos, neg: (N, 3) float64 volume coordinates of all positive / negative clicks, in order.
        shape: the volume's shape; spacing: (3,) mm.
    """
    if options != cache.options or len(pos) < len(cache.pos) or len(neg) < len(cache.neg):
        return False
    if not (np.array_equal(pos[: len(cache.pos)], cache.pos) and np.array_equal(neg[: len(cache.neg)], cache.neg)):
        return False
    new = pos[len(cache.pos):]
    if len(new) == 0:
        return True
    lo, hi = cache.roi.lo.astype(np.float64), cache.roi.hi.astype(np.float64) - 1.0
    inner_lo = np.where(cache.roi.lo > 0, lo + reuse_margin_mm / spacing, lo - 0.5)
    inner_hi = np.where(cache.roi.hi < np.asarray(shape), hi - reuse_margin_mm / spacing, hi + 0.5)
    return bool(np.all((new >= inner_lo) & (new <= inner_hi)))


def changed_blocks(changed: np.ndarray, work_shape: tuple[int, int, int], roi_shape: tuple[int, int, int]) -> list[Region]:
    """ROI-local blocks holding every voxel whose linear-interpolation stencil holds a changed working voxel:
    one block per `TILE`³ tile of the working grid with a changed voxel (the changes of a click are scattered,
    so one bounding box would be mostly unchanged).

    Args:
        changed: (K,) int64 flat working-grid indices.
    """
    if changed.size == 0:
        return []
    ijk = np.stack(np.unravel_index(changed, work_shape), axis=1)
    tiles = ijk // TILE
    key = (tiles[:, 0] * (work_shape[1] // TILE + 1) + tiles[:, 1]) * (work_shape[2] // TILE + 1) + tiles[:, 2]
    order = np.argsort(key, kind="stable")
    key, ijk = key[order], ijk[order]
    starts = np.flatnonzero(np.r_[True, key[1:] != key[:-1]])
    lows, highs = np.minimum.reduceat(ijk, starts, axis=0), np.maximum.reduceat(ijk, starts, axis=0)
    bounds = []
    for axis in range(3):
        m, n = work_shape[axis], roi_shape[axis]
        z = (m - 1) / (n - 1) if n > 1 else 1.0
        # ROI voxel k reads working voxels first[k] and first[k] + 1: k·z and its floor are computed as
        # scipy's zoom computes them (one float64 product), so these ranges are exact
        first = np.floor(np.arange(n) * z)
        lo = np.searchsorted(first, lows[:, axis] - 1, side="left")
        hi = np.searchsorted(first, highs[:, axis], side="right")
        bounds.append((lo.clip(0, n), hi.clip(0, n)))
    lo = np.stack([b[0] for b in bounds], axis=1)
    hi = np.stack([b[1] for b in bounds], axis=1)
    return [(slice(int(a[0]), int(b[0])), slice(int(a[1]), int(b[1])), slice(int(a[2]), int(b[2]))) for a, b in zip(lo, hi)]


def update_raw(cache: SolveCache, changed: np.ndarray) -> None:
    """Re-threshold the pre-clean-up ROI mask where the labels `changed` (flat working indices) reach."""
    blocks = changed_blocks(changed, cache.roi.work_shape, cache.roi.shape)
    if not blocks:
        return
    field = cache.sol.field
    lo = np.min([[s.start for s in b] for b in blocks], axis=0)  # grow the kept block once to hold every tile
    hi = np.max([[s.stop for s in b] for b in blocks], axis=0)
    grew = cache.grow_raw((slice(int(lo[0]), int(hi[0])), slice(int(lo[1]), int(hi[1])), slice(int(lo[2]), int(hi[2]))))
    for block in blocks:
        cache.set_raw(block, resize_block(field, cache.roi.shape, block) >= 0.5)
    if grew:  # shrink it again only after it grew (a bounding box search per click costs ~1 ms)
        cache.tighten()
