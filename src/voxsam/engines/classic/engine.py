"""`classic`: a training-free seeded 3D segmentation, the floor every learned engine must beat.

How one prediction is made (all prompts of the object, every time; nothing is learned). Prompts: 3D
points and boxes, and 2D ones: a click on a slice is a point at its voxel coordinates, a box drawn on a
slice is a flat box (below); with several boxes the most recent one is used.

1. **ROI.** The bounding box of the positive clicks grown by `margin_mm` (or, with a 3D box, the box grown
   by `box_margin_mm`), clipped to the image. If it holds more than `max_roi_voxels` (128³ by default) it
   is resampled (linear) onto a coarser working grid: the finest axes are coarsened first, so an
   anisotropic ROI becomes closer to isotropic.
2. **Intensities** of the working ROI are normalised robustly: clipped to its 0.5–99.5 percentiles and
   scaled to [0, 1], then lightly smoothed (`smooth_mm`).
3. **Seeds.** Positive: a ball of `seed_radius_mm` around each positive click (with a box and no positive
   click, the box centre). Negative: a ball around each negative click; with a 3D box, everything outside
   the box (a flat box — extent < 1 voxel along an axis, or a box drawn on a slice — is a 2D box: outside
   its rectangle on its slice); and the **ROI border**. A ROI face inside the image is background. A ROI
   face that is the image border is different: the target may be cut by the border (cropped scans: la_mri,
   spleen_ct, the 30-slice TotalSegmentator crop), so there only the voxels whose intensity is unlike the
   clicked target (|I − median| > max(`border_contrast` robust SDs of the intensities around the positive
   clicks, 0.1) and at least two voxels from any voxel like it, so the blurred rim of a cut target stays
   free) become background; voxels that look like the target stay free. When that leaves no background at
   all, the whole ROI border is used.
4. **Solve** (`method`):
   - ``"growcut"`` (default): Fast GrowCut (Zhu et al. 2014): every voxel takes the label of the seed it
     reaches with the cheapest path, path cost = Σ (|ΔI|/σ + `growcut_lambda`·step/min spacing), σ = RMS
     of ΔI over the ROI's 6-neighbour edges; one multi-source Dijkstra (`scipy.sparse.csgraph`). Its
     working grid is capped by `growcut_max_voxels` (96³), so a 128³ ROI runs on a 96³ grid (Dijkstra on
     the full 128³ grid takes ~2.1 s here, over the 2 s budget).
   - ``"random_walker"``: Grady's random walker with his intensity prior. Edge weights on the 6-neighbour
     graph w = exp(−beta·(ΔI/σ)²) + 1e-6; every voxel is also tied to the foreground with weight
     `prior_weight`·p(I) and to the background with `prior_weight`·(1 − p(I)), p a Gaussian around the
     clicked target's intensity. The foreground probability solves (L + γI)_UU x_U = γ p_U − L_US x_S
     (seeds fixed) with Jacobi-preconditioned conjugate gradients, matrix-free on the grid, coarse to fine
     (each 2× coarser level's solution, interpolated, starts the next), float32. Foreground = x ≥ 0.5.
5. **Clean-up.** Click voxels get their click's label, a 3D box clips the mask, and only the connected
   component(s) (6-connectivity) holding a positive seed are kept. The mask is pasted into a full-size
   (X, Y, Z) bool array; `Prediction.region` is the bounding box of this ROI and the previous one (outside
   both, both masks are empty), so the session compares only that box.
6. **Further clicks** (GrowCut, `incremental`, default on): a full solve keeps its working image, seeds,
   distances, winning labels and edge costs in the prepared volume (`incremental.py`; the state carries a
   token). A click that only adds points, with every new positive click at least `reuse_margin_mm` (30 mm)
   inside the previous ROI's faces (image-border faces excepted), keeps that ROI and adds its seeds to the
   solution: an exact label-correcting update from the new seed voxels, pruned where it does not lower the
   stored distance (`growcut.add_seeds`); the ROI mask is re-thresholded only on the tiles whose labels
   changed, the clean-up runs on the mask's bounding box, and `region` is the old and new masks' boxes.
   The mask equals a full solve on the same ROI voxel for voxel (except exact cost ties between a
   foreground and a background seed); a seed removed or relabelled (a negative ball over a positive one),
   a box, an undo to a state whose cache is gone, or a click nearer the ROI faces gives a full solve with
   a new ROI. So the ROI depends on the click history: a from-scratch solve would grow it by up to
   margin_mm − reuse_margin_mm on a side (`incremental=False`: every click from scratch).

Code: `engine.py` (this: ROI, the steps in order, clean-up), `grid.py` (ROI, working grid, resampling,
normalisation), `seeds.py` (step 3), `growcut.py` and `random_walker.py` (step 4), `incremental.py` (step 6),
`options.py` (the options).

Why GrowCut is the default (measured with the harness, `center` protocol, docs/benchmarks.md "Choice of
the classic method"): mean Dice at 1 / 3 / 5 / 10 clicks, GrowCut vs random walker — la_mri (10 cases)
0.68 / 0.70 / 0.72 / 0.74 vs 0.48 / 0.47 / 0.47 / 0.48; acdc_mri (60 targets) 0.51 / 0.67 / 0.69 / 0.73 vs
0.23 / 0.43 / 0.38 / 0.38; TotalSegmentator CT (43 organs) 0.45 / 0.65 / 0.69 / 0.77 vs 0.38 / 0.41 / 0.40 /
0.40 (the random walker won only on the single spleen_ct case, 0.95 vs 0.79 at one click). The reason is
the random walker's small-seed bias: a click is a few voxels against a whole ROI border of background, so
its probability decays with distance and falls below 0.5 long before a weak boundary, and a correction
click changes the potential only near itself; the prior helps the first click but not the corrections.
GrowCut's geodesic competition lets every click claim the region it reaches without crossing an edge, so
each correction click moves the boundary where it was placed and Dice rises with the clicks. The random
walker stays available for comparison (`--engine-option method=random_walker`).

Latency: `benchmarks/classic_latency.py` measures seconds per click on a 128³ ROI (docs/benchmarks.md);
`benchmarks/big_volume_latency.py --engines classic` a 512 × 512 × 300 CT (docs/benchmarks.md "Big volumes"):
a further click went from 1.08 s median (every click a full solve) to 26–28 ms median, ≤ 32 ms max, session
included (2 shared cores, load ~2; ~24 ms of CPU per click).
"""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from voxsam.engines.base import Capabilities, Engine, Prediction, ProgressFn, Region
from voxsam.engines.classic.grid import Roi, normalise, resize, true_box, union, working_shape
from voxsam.engines.classic.growcut import add_seeds, growcut_solve
from voxsam.engines.classic.incremental import MAX_BYTES, SolveCache, SolveCaches, reusable, update_raw
from voxsam.engines.classic.options import ClassicOptions
from voxsam.engines.classic.random_walker import intensity_prior, random_walker
from voxsam.engines.classic.seeds import box_bounds, build_seeds, positive_points
from voxsam.engines.options import validate_options
from voxsam.errors import ConfigError
from voxsam.io.volume import Volume
from voxsam.prompts import Box, Change, PromptKind, PromptSet


@dataclass
class ClassicPrepared:
    """What `ClassicEngine.prepare` keeps for one volume: nothing is computed on the whole grid.

    Attributes:
        source: (X, Y, Z) channel 0 of the volume as stored (any dtype; not copied).
        spacing: (3,) float64 voxel size in mm along x, y, z.
        modality: "CT", "MR" or None.
        solves: the objects' last GrowCut solves, for further clicks (`incremental.SolveCaches`): at most
            4 entries and min(256 MiB, 4 bytes per volume voxel), the latest always kept. A server counts
            4 bytes per voxel for an engine's prepared volume; classic keeps no copy, only this cache.
    A prediction converts only its ROI (`crop`): the same float32 values, non-finite ones as 0, that a
    float32 copy of the whole volume would hold there.
    """

    source: np.ndarray
    spacing: np.ndarray
    modality: str | None
    _image: np.ndarray | None = None
    solves: SolveCaches = field(default_factory=SolveCaches)

    @property
    def shape(self) -> tuple[int, int, int]:
        return tuple(int(s) for s in self.source.shape)  # type: ignore[return-value]

    def crop(self, region: Region) -> np.ndarray:
        """The float32 image inside `region`, C-contiguous, non-finite values replaced by 0."""
        return _as_float(self.source[region])

    @property
    def image(self) -> np.ndarray:
        """The whole volume as float32 (X, Y, Z), C-contiguous (built on first use, then kept)."""
        if self._image is None:
            self._image = _as_float(self.source)
        return self._image


def _as_float(array: np.ndarray) -> np.ndarray:
    image = np.ascontiguousarray(array, dtype=np.float32)
    if not np.all(np.isfinite(image)):
        image = np.nan_to_num(image, nan=0.0, posinf=0.0, neginf=0.0)
    return image


class ClassicEngine(Engine):
    """Training-free seeded 3D segmentation (Fast GrowCut or random walker) on a ROI around the prompts.

    Args:
        options: validated `ClassicOptions` (None: the defaults).
        overrides: option values replacing those of `options`, validated the same way
            (`ClassicEngine(method="random_walker", margin_mm=63.5)`).
    Raises: ConfigError naming an unknown option, or a bad value and what is allowed.
    """

    name = "classic"
    capabilities = Capabilities(
        prompts=frozenset({PromptKind.POINT, PromptKind.BOX, PromptKind.SLICE_POINT, PromptKind.SLICE_BOX})
    )

    def __init__(self, options: ClassicOptions | None = None, **overrides: Any) -> None:
        if options is not None and not isinstance(options, ClassicOptions):
            raise ConfigError(f"engine 'classic' takes ClassicOptions, got {type(options).__name__}")
        if options is None or overrides:
            values = {**(options.model_dump() if options is not None else {}), **overrides}
            parsed = validate_options(self.name, ClassicOptions, values)
            assert isinstance(parsed, ClassicOptions)
            options = parsed
        self.options: ClassicOptions = options

    # ------------------------------------------------------------------ Engine API
    def prepare(self, volume: Volume, progress: ProgressFn | None = None) -> ClassicPrepared:
        """Keep channel 0 of the volume (no copy) and its spacing (mm); predictions read only their ROI."""
        if progress is not None:
            progress(1.0, "classic: image ready")
        spacing = np.asarray(volume.spacing, dtype=np.float64)
        solves = SolveCaches(max_bytes=min(MAX_BYTES, 4 * int(np.prod(volume.shape))))
        return ClassicPrepared(source=volume.channel(0), spacing=spacing, modality=volume.modality, solves=solves)

    def predict(
        self, prepared: ClassicPrepared, prompts: PromptSet, previous: Prediction | None, change: Change | None = None
    ) -> Prediction:
        """Segment one object from all its prompts: from scratch, or (GrowCut, a further click that the
        reuse rule allows, `incremental`) by updating the previous solve.

        Returns an (X, Y, Z) bool mask on the volume grid, state {"roi": (lo, hi), "work_shape": ...,
        "solve": token of the cached solve (GrowCut without a box)} and the region outside which the mask
        equals `previous.mask`. Only negative clicks (no positive click, no box) give an empty mask.
        """
        opts = self.options
        shape = prepared.shape
        pos = np.array([p.ijk for p in prompts.points if p.positive], dtype=np.float64).reshape(-1, 3)
        neg = np.array([p.ijk for p in prompts.points if not p.positive], dtype=np.float64).reshape(-1, 3)
        box = prompts.box
        if len(pos) == 0 and box is None:
            empty: Region = (slice(0, 0), slice(0, 0), slice(0, 0))
            return Prediction(np.zeros(shape, dtype=bool), state=None, region=_region(empty, previous))
        if opts.method == "growcut" and opts.incremental and box is None and previous is not None:
            further = self._further(prepared, previous, pos, neg)
            if further is not None:
                return further
        roi = self._roi(shape, prepared.spacing, pos, box)
        return self.solve_in(prepared, roi, pos, neg, box, previous)

    def solve_in(
        self, prepared: ClassicPrepared, roi: Roi, pos: np.ndarray, neg: np.ndarray, box: Box | None,
        previous: Prediction | None = None,
    ) -> Prediction:
        """A full solve on a given ROI (what `predict` does after choosing the ROI; tests compare with it).

        Args:
            pos, neg: (N, 3) float64 volume coordinates of the positive / negative clicks (pos or box given).
        """
        opts = self.options
        shape = prepared.shape
        spacing = prepared.spacing
        img = prepared.crop(roi.slices)
        work_spacing = roi.work_spacing(spacing)
        if roi.work_shape != roi.shape:
            img = resize(img, roi.work_shape)
        norm = normalise(img, opts.smooth_mm, work_spacing)
        seeds = build_seeds(norm, roi, work_spacing, shape, pos, neg, box, opts.seed_radius_mm, opts.border_contrast)
        sol = None
        if opts.method == "random_walker":
            prior = None
            if opts.prior_weight > 0:
                prior = intensity_prior(norm, seeds.fg_median, seeds.fg_sd, opts.prior_width)
            field = random_walker(
                norm, seeds.labels, opts.beta, opts.cg_tol, opts.cg_max_iter, prior, opts.prior_weight
            )
        else:
            sol = growcut_solve(norm, seeds.labels, work_spacing, opts.growcut_lambda, opts.growcut_power)
            field = sol.field
        if roi.work_shape != roi.shape:
            field = resize(field, roi.shape)
        mask = field >= 0.5
        raw_box = true_box(mask)
        kept, kept_box = _clean(lambda r: mask[r].copy(), raw_box, roi, pos, neg, box)
        out, mask_box = _paste(shape, roi, kept, kept_box)
        state: dict[str, Any] = {"roi": (roi.lo.tolist(), roi.hi.tolist()), "work_shape": roi.work_shape}
        if sol is not None and opts.incremental and box is None:
            raw = mask[raw_box].copy() if raw_box is not None else np.zeros((0, 0, 0), dtype=bool)
            cache = SolveCache(opts.model_dump(), roi, pos, neg, norm, seeds.labels, sol, raw, raw_box, mask_box)
            state["solve"] = prepared.solves.put(cache)
        return Prediction(out, state=state, region=_region(roi.slices, previous))

    def _further(self, prepared: ClassicPrepared, previous: Prediction, pos: np.ndarray, neg: np.ndarray) -> Prediction | None:
        """A further click as an update of the previous solve (`incremental`); None: it needs a full solve."""
        opts = self.options
        state = previous.state
        cache = prepared.solves.take(state.get("solve") if isinstance(state, dict) else None)
        if cache is None or len(pos) == 0:
            return None
        shape, spacing = prepared.shape, prepared.spacing
        if not reusable(cache, opts.model_dump(), pos, neg, shape, spacing, opts.reuse_margin_mm):
            return None
        roi = cache.roi
        work_spacing = roi.work_spacing(spacing)
        seeds = build_seeds(cache.norm, roi, work_spacing, shape, pos, neg, None, opts.seed_radius_mm, opts.border_contrast).labels
        new = np.flatnonzero(seeds.ravel() != cache.seeds.ravel())
        if np.any(cache.seeds.ravel()[new] != 0):
            return None  # a seed was removed or relabelled: solve again
        changed = add_seeds(cache.sol, new, seeds.ravel()[new])
        cache.seeds, cache.pos, cache.neg = seeds, pos, neg
        update_raw(cache, changed)
        kept, kept_box = _clean(cache.raw_in, cache.raw_box, roi, pos, neg, None)
        out, mask_box = _paste(shape, roi, kept, kept_box)
        region = _boxes_union(cache.mask_box, mask_box)
        cache.mask_box = mask_box
        state = {"roi": (roi.lo.tolist(), roi.hi.tolist()), "work_shape": roi.work_shape, "solve": prepared.solves.put(cache)}
        return Prediction(out, state=state, region=region)

    # ------------------------------------------------------------------ ROI
    def _roi(self, shape: tuple[int, int, int], spacing: np.ndarray, pos: np.ndarray, box: Box | None) -> Roi:
        """The positive clicks grown by `margin_mm`, or the box grown by `box_margin_mm` (by `margin_mm`
        along its flat axes) and holding the clicks; clipped to the image, with its working grid."""
        opts = self.options
        dims = np.asarray(shape)
        margin = opts.margin_mm / spacing
        if box is not None:
            blo, bhi, flat = box_bounds(box)
            bm = np.maximum(np.ceil(opts.box_margin_mm / spacing), 2)
            lo_f = np.where(flat, blo - margin, blo - bm)
            hi_f = np.where(flat, bhi + margin, bhi + bm)
            if len(pos):
                lo_f = np.minimum(lo_f, pos.min(axis=0) - bm)
                hi_f = np.maximum(hi_f, pos.max(axis=0) + bm)
        else:
            lo_f = pos.min(axis=0) - margin
            hi_f = pos.max(axis=0) + margin
        lo = np.clip(np.floor(lo_f + 0.5), 0, dims - 1).astype(int)
        hi = np.clip(np.floor(hi_f + 0.5) + 1, lo + 1, dims).astype(int)
        cap = opts.max_roi_voxels
        if opts.method == "growcut":
            cap = min(cap, opts.growcut_max_voxels)
        size = hi - lo
        work = working_shape((int(size[0]), int(size[1]), int(size[2])), spacing, cap)
        return Roi(lo, hi, work)


# ---------------------------------------------------------------------- clean-up and region
def _clean(
    raw_in: Callable[[Region], np.ndarray], raw_box: Region | None, roi: Roi, pos: np.ndarray, neg: np.ndarray,
    box: Box | None,
) -> tuple[np.ndarray, Region]:
    """Click labels, 3D-box clipping, and only the components (6-connectivity) holding a positive seed.

    Args:
        raw_in: region (ROI-local slices) -> a writable bool copy of the thresholded ROI mask there.
        raw_box: ROI-local box holding every True voxel of that mask (None: none).
    Returns: (the kept mask over a ROI-local block, that block); the block holds every kept voxel. Run on
    the box of the mask and the positive click voxels, which holds every component that can be kept.
    """
    import cc3d

    roi_shape = np.asarray(roi.shape)
    fg_vox = np.rint(positive_points(pos, box) - roi.lo).astype(int).clip(0, roi_shape - 1)
    lo, hi = fg_vox.min(axis=0), fg_vox.max(axis=0) + 1
    if raw_box is not None:
        lo = np.minimum(lo, [s.start for s in raw_box])
        hi = np.maximum(hi, [s.stop for s in raw_box])
    block: Region = (slice(int(lo[0]), int(hi[0])), slice(int(lo[1]), int(hi[1])), slice(int(lo[2]), int(hi[2])))
    part = raw_in(block)
    if box is not None:
        blo, bhi, flat = box_bounds(box)
        if not flat.any():
            grid = [np.arange(roi.lo[a] + lo[a], roi.lo[a] + hi[a]) for a in range(3)]
            ok = [(g >= blo[a] - 0.5) & (g <= bhi[a] + 0.5) for a, g in enumerate(grid)]
            part &= ok[0][:, None, None] & ok[1][None, :, None] & ok[2][None, None, :]
    for p in np.rint(neg - roi.lo).astype(int) - lo if len(neg) else []:
        if np.all((p >= 0) & (p < hi - lo)):
            part[tuple(p)] = False
    fg_part = fg_vox - lo
    for p in fg_part:
        part[tuple(p)] = True
    labels = cc3d.connected_components(part, connectivity=6)
    keep = np.unique(labels[tuple(fg_part.T)])  # the positive click voxels are True: no 0 among them
    if len(keep) <= 8:  # a few comparisons beat a lookup-table gather (~15x faster per component)
        part = labels == keep[0]
        for k in keep[1:]:
            part |= labels == k
    else:
        part = np.isin(labels, keep)
    tight = true_box(part)
    assert tight is not None  # the positive click voxels are kept
    kept_block: Region = tuple(slice(b.start + t.start, b.start + t.stop) for b, t in zip(block, tight))  # type: ignore[assignment]
    return part[tight], kept_block


def _paste(shape: tuple[int, int, int], roi: Roi, kept: np.ndarray, block: Region) -> tuple[np.ndarray, Region]:
    """The full (X, Y, Z) mask holding `kept` at `block` (ROI-local) and that block on the volume grid."""
    out = np.zeros(shape, dtype=bool)  # untouched pages stay unallocated: only the kept block is written
    where: Region = tuple(slice(int(lo) + b.start, int(lo) + b.stop) for lo, b in zip(roi.lo, block))  # type: ignore[assignment]
    out[where] = kept
    return out, where


def _boxes_union(a: Region | None, b: Region | None) -> Region:
    """The bounding box of two volume-grid boxes (either None: empty); both None: an empty region."""
    if a is None or b is None:
        return a if a is not None else (b if b is not None else (slice(0, 0), slice(0, 0), slice(0, 0)))
    return union(a, b)


def _region(new: Region, previous: Prediction | None) -> Region | None:
    """Where the new mask may differ from the previous one: the new ROI and the previous ROI (a classic
    mask is empty outside its ROI). None (anywhere) for a non-empty previous mask of unknown extent."""
    if previous is None:
        return new
    state = previous.state
    if isinstance(state, dict) and "roi" in state:
        lo, hi = state["roi"]
        old: Region = (slice(int(lo[0]), int(hi[0])), slice(int(lo[1]), int(hi[1])), slice(int(lo[2]), int(hi[2])))
        return old if new[0].start == new[0].stop else union(new, old)
    return new if not previous.mask.any() else None
