"""`sam3d` engine: SAM-Med3D's input rules around the model.

Pipeline (the reference's, made interactive):
  1. a 128³ crop at 1.5 mm on the volume's closest-RAS axes, centred on the first click (or box centre);
  2. CT clamped to [-1000, 1000] HU, then z-normalised with mean/std of the crop's voxels > 0;
  3. the crop's image embedding is computed once and cached: later clicks cost only the decoder;
  4. clicks are passed as crop voxel indices with the previous low-res logits as mask prompt (zeros at the
     first click, as the reference does);
  5. logits -> trilinear 128³ -> > 0 -> nearest-neighbour paste-back onto the volume grid;
  6. when the mask touches a crop face that is inside the volume, a neighbour window shifted by half a crop
     toward that face (50% overlap) is segmented from the clicks inside it plus a positive point at the
     deepest voxel of the current mask in the overlap; windows are merged by union, at most
     `max_windows` in all.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from voxsam.engines.base import Capabilities, Engine, Prediction, ProgressFn, Region
from voxsam.errors import ConfigError, PromptError
from voxsam.io.volume import Volume
from voxsam.prompts import Change, PromptKind, PromptSet
from voxsam.transforms.crop import CropGrid, crop_around, paste_into, sample_block_into, volume_box
from voxsam.transforms.geometry import apply_affine
from voxsam.transforms.intensity import clamp_ct, znorm_positive

log = logging.getLogger(__name__)

BUNDLED = Path(__file__).resolve().parents[2] / "weights" / "sam3d_small.pt"


@dataclass
class _Prepared:
    source: np.ndarray  # (X, Y, Z) channel 0 as stored (not copied)
    ct: bool  # clamp to CT_CLAMP_HU (voxel-wise, so only the voxels a crop reads are clamped)
    affine: np.ndarray
    shape: tuple[int, int, int]
    embeddings: dict[tuple[int, int, int], Any] = field(default_factory=dict)  # crop start -> (1, P, n, n, n)
    grids: dict[tuple[int, int, int], CropGrid] = field(default_factory=dict)

    def intensities(self, block: np.ndarray) -> np.ndarray:
        """Step 2's voxel-wise part on some voxels: float32, CT clamped."""
        return clamp_ct(block) if self.ct else block.astype(np.float32, copy=False)

    @property
    def image(self) -> np.ndarray:
        """The whole volume as the crops see it (float32, CT clamped); built on demand, not kept."""
        return self.intensities(self.source)


class Sam3DEngine(Engine):
    """SAM-Med3D behind the Session API.

    Args:
        checkpoint: a SAM-Med3D checkpoint (released, plain state dict, or voxsam's); default: the bundled
            weights when present.
        trust_checkpoint: allow loading pickled training checkpoints (the released files need it).
        model: an already built `Sam3D` (tests, training loops); overrides `checkpoint`.
        spacing: engine voxel size in mm (1.5 for SAM-Med3D).
        max_windows: bound on crop windows per object (1 disables extension).
        device: torch device.
        precision: image encoder arithmetic, default the model config's ``compute_dtype`` (float32 unless
            built otherwise): "float32" (exact), "int8" (CPU: int8 dense layers
            in the second half of the encoder, ~1.15x faster on vit_b_ori) or "bfloat16" (autocast; fast
            only with native bf16 hardware). See docs/models/sam3d.md for their agreement with float32.
    """

    name = "sam3d"
    # a 2D click is a click; a 2D box is a box one voxel thick
    capabilities = Capabilities(frozenset({PromptKind.POINT, PromptKind.BOX, PromptKind.SLICE_POINT, PromptKind.SLICE_BOX}))

    def __init__(
        self,
        checkpoint: str | Path | None = None,
        trust_checkpoint: bool = False,
        model: Any = None,
        spacing: float = 1.5,
        max_windows: int = 6,
        device: str = "cpu",
        precision: str | None = None,
    ) -> None:
        from voxsam.models.sam3d.build import COMPUTE_DTYPES

        if precision is not None and precision not in COMPUTE_DTYPES:
            raise ConfigError(f"precision must be one of {', '.join(COMPUTE_DTYPES)}, got {precision!r}")
        if precision == "int8" and not str(device).startswith("cpu"):
            raise ConfigError("precision int8 runs on CPU only; use bfloat16 on a GPU")
        self.precision = precision
        if model is None:
            model = self._load(checkpoint, trust_checkpoint, device)
        self.model = model.eval()
        self.size = int(model.config.image_size)
        self.spacing = float(spacing)
        if max_windows < 1:
            raise ConfigError(f"max_windows must be >= 1, got {max_windows}")
        self.max_windows = int(max_windows)
        self.device = device
        self.encoder_calls = 0  # observable cache behaviour (tests, benchmarks)

    @staticmethod
    def _load(checkpoint: str | Path | None, trust: bool, device: str) -> Any:
        from voxsam.models.sam3d import load_sam3d_checkpoint

        if checkpoint is None:
            if not BUNDLED.is_file():
                raise ConfigError(
                    "the sam3d engine needs weights: pass --checkpoint PATH (e.g. the released sam_med3d_turbo.pth "
                    f"with --trust-checkpoint); the bundled weights are missing from this install: {BUNDLED}"
                )
            checkpoint = BUNDLED
        model, report = load_sam3d_checkpoint(checkpoint, map_location=device, trust=trust)
        log.info("%s", report.summary())
        return model

    # ------------------------------------------------------------------ Engine API
    def prepare(self, volume: Volume, progress: ProgressFn | None = None) -> _Prepared:
        """Nothing on the whole volume: each crop samples (and clamps) only the voxels it reads."""
        return _Prepared(source=volume.channel(0), ct=volume.modality == "CT", affine=volume.affine, shape=volume.shape)

    def predict(
        self, prepared: _Prepared, prompts: PromptSet, previous: Prediction | None, change: Change | None = None
    ) -> Prediction:
        import torch

        if not prompts.points and prompts.box is None:
            raise PromptError("sam3d needs at least one point or a box")
        state = dict(previous.state) if previous is not None and previous.state else {}
        if "primary" not in state:
            anchor = prompts.coords[0] if prompts.points else (np.array(prompts.box.lo) + np.array(prompts.box.hi)) / 2  # type: ignore[union-attr]
            state["primary"] = self._window(prepared, apply_affine(prepared.affine, anchor)).start
        logits_by_window: dict[tuple[int, int, int], Any] = dict(state.get("logits", {}))
        with torch.inference_mode():
            primary = prepared.grids[state["primary"]]
            low, mask = self._decode_window(prepared, primary, prompts, logits_by_window.get(primary.start), extra_point=None)
            new_logits = {primary.start: low}
            merged = np.zeros(prepared.shape, dtype=bool)  # written only inside the windows' boxes
            region = _previous_region(prepared, previous)
            region = _union(region, paste_into(merged, mask, primary, prepared.affine))
            queue = self._touched_neighbours(prepared, primary, mask)
            done = {primary.start}
            while queue and len(done) < self.max_windows:
                grid, seed = queue.pop(0)
                if grid.start in done:
                    continue
                done.add(grid.start)
                low, wmask = self._decode_window(prepared, grid, prompts, logits_by_window.get(grid.start), extra_point=seed)
                new_logits[grid.start] = low
                region = _union(region, paste_into(merged, wmask, grid, prepared.affine))
                queue += self._touched_neighbours(prepared, grid, wmask)
        state["logits"] = new_logits
        if region is None:
            region = (slice(0, 0), slice(0, 0), slice(0, 0))  # nothing pasted, nothing before: no change
        return Prediction(mask=merged, state=state, region=None if region is _ANYWHERE else region)

    # ------------------------------------------------------------------ internals
    def _window(self, prepared: _Prepared, center_world: np.ndarray, shift: tuple[int, int, int] = (0, 0, 0)) -> CropGrid:
        grid = crop_around(prepared.shape, prepared.affine, center_world, self.size, self.spacing, shift)
        prepared.grids.setdefault(grid.start, grid)
        return prepared.grids[grid.start]

    def _embedding(self, prepared: _Prepared, grid: CropGrid) -> Any:
        import torch

        if grid.start not in prepared.embeddings:
            crop = znorm_positive(sample_block_into(prepared.source, prepared.affine, grid, prepared.intensities))
            tensor = torch.from_numpy(np.ascontiguousarray(crop))[None, None].to(self.device)
            prepared.embeddings[grid.start] = self.model.encode(tensor, dtype=self.precision)
            self.encoder_calls += 1
        return prepared.embeddings[grid.start]

    def _decode_window(
        self, prepared: _Prepared, grid: CropGrid, prompts: PromptSet, prev_logits: Any, extra_point: np.ndarray | None
    ) -> tuple[Any, np.ndarray]:
        import torch

        to_crop = np.linalg.inv(grid.affine) @ prepared.affine
        pts = apply_affine(to_crop, prompts.coords) if prompts.points else np.zeros((0, 3))
        labels = prompts.labels
        inside = np.all((pts >= -0.5) & (pts <= self.size - 0.5), axis=1)
        pts, labels = pts[inside], labels[inside]
        if extra_point is not None:
            pts = np.vstack([pts, apply_affine(to_crop, extra_point)[None]])
            labels = np.append(labels, 1)
        boxes = None
        if prompts.box is not None and getattr(self.model.config, "box_prompts", False):
            corners = apply_affine(to_crop, np.array([prompts.box.lo, prompts.box.hi]))
            boxes = torch.tensor(np.clip(np.sort(corners, axis=0), 0, self.size - 1), dtype=torch.float32)[None].to(self.device)
        emb = self._embedding(prepared, grid)
        n4 = self.size // 4
        mask_in = prev_logits if prev_logits is not None else torch.zeros((1, 1, n4, n4, n4), device=self.device)
        points_t = torch.tensor(pts, dtype=torch.float32)[None].to(self.device) if len(pts) else None
        labels_t = torch.tensor(labels, dtype=torch.int64)[None].to(self.device) if len(pts) else None
        low, _iou = self.model.decode(emb, points_t, labels_t, mask_input=mask_in, boxes=boxes)
        full = self.model.upscale_logits(low)[0, 0]
        return low, (full > 0).cpu().numpy()

    def _touched_neighbours(self, prepared: _Prepared, grid: CropGrid, mask: np.ndarray) -> list[tuple[CropGrid, np.ndarray]]:
        """Neighbour windows (50% overlap) toward each crop face the mask touches, with a seed point (volume voxel)."""
        if self.max_windows <= 1 or not mask.any():
            return []
        out = []
        half = self.size // 2
        for axis in range(3):
            for side in (0, self.size - 1):
                if not np.take(mask, side, axis=axis).any():
                    continue
                shift = [0, 0, 0]
                shift[axis] = half if side else -half
                if not self._face_inside_volume(prepared, grid, axis, side):
                    continue
                # seed: deepest mask voxel in the half of this crop that the neighbour overlaps
                sl = [slice(None)] * 3
                sl[axis] = slice(half, None) if side else slice(0, half)
                part = np.zeros_like(mask)
                part[tuple(sl)] = mask[tuple(sl)]
                seed_crop = deepest_voxel(part)
                seed = apply_affine(np.linalg.inv(prepared.affine) @ grid.affine, seed_crop)
                neighbour = self._window(prepared, apply_affine(grid.affine, np.full(3, float(half)) + np.array(shift)))
                out.append((neighbour, seed))
        return out

    def _face_inside_volume(self, prepared: _Prepared, grid: CropGrid, axis: int, side: int) -> bool:
        """Is the touched crop face inside the volume (otherwise the mask just meets the image border)?"""
        face = np.full(3, (self.size - 1) / 2)
        face[axis] = side
        vox = apply_affine(np.linalg.inv(prepared.affine) @ grid.affine, face)
        return bool(np.all(vox >= 0) and np.all(vox <= np.array(prepared.shape) - 1))


def deepest_voxel(part: np.ndarray) -> np.ndarray:
    """(3,) float: the voxel `argmax(scipy.ndimage.distance_transform_edt(part))` names (the first, in C
    order, of largest distance to a False voxel), computed on the box of the True voxels grown by one voxel
    where the array goes on: the nearest False voxel of any voxel in the box lies in that grown box, so the
    distances there are the same (tests/engines/test_sam3d_regions.py)."""
    from scipy import ndimage

    where = [np.flatnonzero(part.any(axis=tuple(b for b in range(3) if b != a))) for a in range(3)]
    if any(w.size == 0 for w in where):
        return np.zeros(3)  # all distances 0: the first voxel
    lo = [max(int(w[0]) - 1, 0) for w in where]
    hi = [min(int(w[-1]) + 2, n) for w, n in zip(where, part.shape)]
    depth = ndimage.distance_transform_edt(part[lo[0]:hi[0], lo[1]:hi[1], lo[2]:hi[2]])
    return np.array(np.unravel_index(int(np.argmax(depth)), depth.shape), float) + np.asarray(lo, float)


# ---------------------------------------------------------------------- the region a prediction may change
_ANYWHERE: Any = object()  # a previous mask of unknown extent: the session compares the whole grid


def _previous_region(prepared: _Prepared, previous: Prediction | None) -> Region | None:
    """Where the previous mask may be non-zero: the boxes of the windows it was pasted from (a sam3d mask is
    the union of its windows' paste-backs, nothing else). None: empty; `_ANYWHERE`: not a sam3d mask."""
    if previous is None:
        return None
    state = previous.state if isinstance(previous.state, dict) else {}
    if "logits" not in state:
        return _ANYWHERE if previous.mask.any() else None
    region: Region | None = None
    for start in state["logits"]:
        grid = prepared.grids.get(start)
        if grid is None:
            return _ANYWHERE
        box = volume_box(grid, prepared.shape, prepared.affine)
        if box is not None:
            region = _union(region, (slice(int(box[0][0]), int(box[1][0])), slice(int(box[0][1]), int(box[1][1])), slice(int(box[0][2]), int(box[1][2]))))
    return region


def _union(a: Any, b: Region | None) -> Any:
    if a is _ANYWHERE or b is None:
        return a
    if a is None:
        return b
    return tuple(slice(min(x.start, y.start), max(x.stop, y.stop)) for x, y in zip(a, b))
