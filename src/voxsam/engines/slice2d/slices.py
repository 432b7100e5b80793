"""One slice in, one 2D mask out: intensity rule, display orientation, physical aspect, embedding cache.

A slice of array axis `axis` is turned to display orientation (`transforms.slices`), mapped to [0, 1]
(CT: the [-160, 240] HU window by default; MRI: the volume's 0.5–99.5 percentiles), resized so that its longest side
is 256 model pixels with its aspect ratio in millimetres (a 0.7 × 5 mm coronal pixel is not square),
zero-padded to 256² and encoded once; the embedding is cached (float16, least recently used dropped
first within a memory budget). Prompts are given in display pixels (row, column).
"""
from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass, field, replace
from typing import Any, Callable

import numpy as np

from voxsam.errors import InvalidImageError
from voxsam.io.volume import Volume
from voxsam.models.sam2d.preprocess import CT_WINDOW
from voxsam.transforms.slices import SliceView, slice_view

SIZE = 256
EMBEDDING_BYTES = 256 * 64 * 64 * 2  # one float16 embedding


@dataclass
class SliceInput:
    """Where a display slice (H, W) sits in the model input: resized to (h, w) at the top-left."""

    shape: tuple[int, int]
    resized: tuple[int, int]

    def to_input(self, rc: np.ndarray) -> np.ndarray:
        """(N, 2) display (row, column) -> (N, 2) model-input (x, y)."""
        rc = np.asarray(rc, dtype=np.float64).reshape(-1, 2)
        sy, sx = self.resized[0] / self.shape[0], self.resized[1] / self.shape[1]
        return np.stack([rc[:, 1] * sx, rc[:, 0] * sy], axis=1)


@dataclass
class PreparedVolume:
    """A volume ready for slice work: the image as stored, intensity mapping, per-axis views, embedding cache.

    Nothing is computed on the whole grid: a slice is converted to float32 when it is used (`display`)."""

    source: np.ndarray  # (X, Y, Z) channel 0 as stored (not copied)
    affine: np.ndarray
    lo: float
    hi: float
    cache_bytes: int
    is_ct: bool = False
    views: dict[int, SliceView] = field(default_factory=dict)
    # keyed (axis, index, lo, hi): the same slice under another intensity window is another embedding
    embeddings: OrderedDict[tuple[int, int, float, float], Any] = field(default_factory=OrderedDict)
    calls: list[int] = field(default_factory=lambda: [0])  # encodings, shared with `windowed` copies

    @property
    def encoder_calls(self) -> int:
        """Slices encoded so far for this volume (under any window)."""
        return self.calls[0]

    def windowed(self, lo: float, hi: float) -> "PreparedVolume":
        """The same volume mapped to [0, 1] from `lo`..`hi` instead; shares views, embedding cache and counter."""
        if (lo, hi) == (self.lo, self.hi):
            return self
        return replace(self, lo=float(lo), hi=float(hi))

    @property
    def shape(self) -> tuple[int, int, int]:
        s = self.source.shape
        return (s[0], s[1], s[2])

    def display(self, axis: int, index: int) -> np.ndarray:
        """Slice `index` of `axis` in display orientation, float32 (the values of a float32 copy of the volume)."""
        plane: list[Any] = [slice(None)] * 3
        plane[axis] = index  # basic indexing: a view (np.take would first copy a Fortran-order volume whole)
        return np.asarray(self.view(axis).to_display(self.source[tuple(plane)]), dtype=np.float32)

    @property
    def image(self) -> np.ndarray:
        """The whole volume as float32 (X, Y, Z), C order (built on demand, not kept)."""
        return np.ascontiguousarray(self.source, dtype=np.float32)

    def view(self, axis: int) -> SliceView:
        if axis not in self.views:
            self.views[axis] = slice_view(self.affine, axis)
        return self.views[axis]


def prepare_volume(volume: Volume, cache_mb: int, ct_window: tuple[float, float] = CT_WINDOW) -> PreparedVolume:
    """Channel 0 as float32 and its [0, 1] mapping (CT: `ct_window` in HU, or MRI percentiles of a voxel sample)."""
    if min(volume.shape) < 1 or sum(n >= 2 for n in volume.shape) < 3:
        raise InvalidImageError(f"slice2d needs a 3D volume with at least 2 voxels along every axis, got shape {volume.shape}")
    source = volume.channel(0)
    size = int(np.prod(source.shape))
    # every step-th voxel in C order, as a strided view of a C-order copy would give them, without the copy
    flat = np.arange(0, size, max(1, size // 2_000_000))
    sample = np.asarray(source[np.unravel_index(flat, source.shape)], dtype=np.float32)
    sample = sample[np.isfinite(sample)]
    is_ct = volume.modality == "CT" or (volume.modality is None and sample.size > 0 and float(np.percentile(sample, 1)) < -500)
    if is_ct:
        lo, hi = ct_window
    else:
        nonzero = sample[sample != 0]
        pool = nonzero if nonzero.size else sample
        lo, hi = (float(v) for v in np.percentile(pool, [0.5, 99.5])) if pool.size else (0.0, 1.0)
    return PreparedVolume(source, np.asarray(volume.affine, dtype=np.float64), float(lo), float(hi), int(cache_mb) * 2**20, is_ct)


def model_input(prepared: PreparedVolume, axis: int, index: int) -> tuple[np.ndarray, SliceInput]:
    """(3, 256, 256) float32 input of slice `index` and how the display slice sits in it."""
    import torch
    import torch.nn.functional as F

    view = prepared.view(axis)
    display = prepared.display(axis, index)
    scaled = (np.clip(np.nan_to_num(display), prepared.lo, prepared.hi) - prepared.lo) / max(prepared.hi - prepared.lo, 1e-6)
    H, W = display.shape
    height_mm, width_mm = H * view.spacing_rc[0], W * view.spacing_rc[1]
    scale = SIZE / max(height_mm, width_mm)
    h, w = max(1, min(SIZE, int(height_mm * scale + 0.5))), max(1, min(SIZE, int(width_mm * scale + 0.5)))
    t = torch.from_numpy(np.ascontiguousarray(scaled, dtype=np.float32))[None, None]
    resized = F.interpolate(t, size=(h, w), mode="bilinear", align_corners=False, antialias=h < H or w < W)[0, 0]
    out = np.zeros((3, SIZE, SIZE), dtype=np.float32)
    out[:, :h, :w] = resized.numpy()[None]
    return out, SliceInput((H, W), (h, w))


class SliceModel:
    """A 2D SAM applied to display slices of a prepared volume (encoder cached per slice).

    Encoder: for a real `Sam2D`, an inference-only fast copy of its image encoder
    (`voxsam.models.sam2d.fast.fast_encoder`: BatchNorm folded, channels-last, fused oneDNN kernels),
    built on the first encoding and kept: a snapshot of the encoder's weights at that moment (the
    decoder's weights may change freely). Precision "float32": equal to the exact encoder within
    ~1e-5 (identical masks); "bfloat16": bf16 weights and activations, ~2.5x faster again where the
    CPU has bf16 natively but masks differ (see docs/models/sam2d.md, "Speed"). Any other model
    object (a stand-in with `encode`/`decode`/`device`) is called through its own `encode` (under
    bf16 autocast for "bfloat16"); so is a `Sam2D` when `fast=False` (the exact encoder).

    Decoder: `model.decode` (or `decoder`) under inference mode, i.e. for a `Sam2D` / `Memory3D` the fast
    float32 decoder path (`voxsam.models.sam2d.fast_decoder`: the live weights, equal to the exact modules
    to ~3e-5 on logits) in both precisions: a bf16 decoder moved masks too much (docs/models/sam2d.md).
    """

    def __init__(self, model: Any, precision: str = "float32", fast: bool = True) -> None:
        self.model = model
        self.precision = precision
        self.fast = fast
        self._encode: Any = None
        self.decoder: Callable[..., Any] | None = None  # replaces model.decode when set (memory3d: its own decoder)

    def encoder(self) -> Any:
        """The callable (B, 3, 256, 256) -> (B, 256, 64, 64) float32 used for `embedding` (built once)."""
        if self._encode is None:
            self._encode = self._build_encoder()
        return self._encode

    def _build_encoder(self) -> Any:
        import torch

        from voxsam.models.sam2d.build import Sam2D

        if self.fast and isinstance(self.model, Sam2D):
            from voxsam.models.sam2d.fast import fast_encoder

            return fast_encoder(self.model, self.precision)
        model = self.model
        if self.precision == "bfloat16":
            def encode_bf16(images: Any) -> Any:
                with torch.autocast(device_type=model.device.type, dtype=torch.bfloat16):
                    return model.encode(images).float()
            return encode_bf16
        return model.encode

    def embedding(self, prepared: PreparedVolume, axis: int, index: int) -> tuple[Any, SliceInput]:
        """(1, 256, 64, 64) float32 embedding of a slice, from the cache or the encoder."""
        import torch

        key = (axis, index, prepared.lo, prepared.hi)
        if key in prepared.embeddings:
            prepared.embeddings.move_to_end(key)
            emb, geom = prepared.embeddings[key]
            return emb.float(), geom
        image, geom = model_input(prepared, axis, index)
        encode = self.encoder()
        with torch.inference_mode():
            emb = encode(torch.from_numpy(image)[None])
        prepared.calls[0] += 1
        prepared.embeddings[key] = (emb.half(), geom)
        while len(prepared.embeddings) * EMBEDDING_BYTES > prepared.cache_bytes and len(prepared.embeddings) > 1:
            prepared.embeddings.popitem(last=False)
        return emb, geom

    def segment(
        self,
        prepared: PreparedVolume,
        axis: int,
        index: int,
        points_rc: np.ndarray | None = None,
        labels: np.ndarray | None = None,
        box_rc: np.ndarray | None = None,
        mask: np.ndarray | None = None,
        box_expand_px: float = 0.0,
    ) -> tuple[np.ndarray, float]:
        """Segment one display slice.

        Args:
            points_rc: (N, 2) display (row, column) clicks; labels (N,) 1 positive / 0 negative.
            box_rc: (4,) display box (row0, col0, row1, col1), inclusive pixel indices.
            mask: (H, W) bool display mask prompt (binary, as RadSAM feeds it).
            box_expand_px: grow the box by this many model-input pixels per side.
        Returns:
            (H, W) bool display mask and the model's predicted IoU.
        """
        result = self.segment_with(prepared, axis, index, points_rc, labels, box_rc, mask, box_expand_px)
        return result.mask, result.iou

    def segment_with(
        self,
        prepared: PreparedVolume,
        axis: int,
        index: int,
        points_rc: np.ndarray | None = None,
        labels: np.ndarray | None = None,
        box_rc: np.ndarray | None = None,
        mask: np.ndarray | None = None,
        box_expand_px: float = 0.0,
        decode: Callable[..., Any] | None = None,
    ) -> SliceResult:
        """`segment`, with another decoder (`decode(embedding, **prompt tensors) -> (low logits, iou)`, e.g. one
        that conditions the embedding on memories first), keeping the embedding and the low-res logits."""
        import torch

        emb, geom = self.embedding(prepared, axis, index)
        kwargs = prompt_tensors(geom, points_rc, labels, box_rc, mask, box_expand_px)
        with torch.inference_mode():
            low, iou = (decode or self.decoder or self.model.decode)(emb, **kwargs)
        return SliceResult(display_mask(low, geom), float(iou[0, 0]), low, emb, geom)


@dataclass
class SliceResult:
    """One segmented slice: display mask (H, W) bool, predicted IoU, low-res logits (1, 1, 256, 256),
    the slice's embedding (1, 256, 64, 64) and its geometry."""

    mask: np.ndarray
    iou: float
    low: Any
    embedding: Any
    geom: SliceInput

    @property
    def stability(self) -> float:
        """SAM's stability score: pixels with logit > 1 over pixels with logit > -1, on the low-res grid's
        image region (1.0 for an empty mask: nothing to be unsure about)."""
        h, w = self.geom.resized
        logits = self.low[0, 0, :h, :w]
        loose = int((logits > -1).sum())
        return 1.0 if loose == 0 else int((logits > 1).sum()) / loose


def prompt_tensors(
    geom: SliceInput,
    points_rc: np.ndarray | None = None,
    labels: np.ndarray | None = None,
    box_rc: np.ndarray | None = None,
    mask: np.ndarray | None = None,
    box_expand_px: float = 0.0,
) -> dict[str, Any]:
    """Display-slice prompts as the decoder's keyword tensors (points, labels, boxes, mask_input) in model-input
    pixels; a mask prompt is binary on the 256 grid, as RadSAM feeds it."""
    import torch
    import torch.nn.functional as F

    kwargs: dict[str, Any] = {}
    if points_rc is not None and len(points_rc):
        xy = geom.to_input(points_rc)
        kwargs["points"] = torch.tensor(xy, dtype=torch.float32)[None]
        kwargs["labels"] = torch.tensor(np.asarray(labels, dtype=np.int64))[None]
    if box_rc is not None:
        corners = geom.to_input(np.array([[box_rc[0], box_rc[1]], [box_rc[2] + 1, box_rc[3] + 1]]))
        corners = corners + np.array([[-box_expand_px, -box_expand_px], [box_expand_px, box_expand_px]])
        corners = np.clip(corners, 0, [geom.resized[1], geom.resized[0]])
        kwargs["boxes"] = torch.tensor(corners.reshape(1, 4), dtype=torch.float32)
    if mask is not None:
        t = torch.from_numpy(np.ascontiguousarray(mask, dtype=np.float32))[None, None]
        small = F.interpolate(t, size=geom.resized, mode="bilinear", align_corners=False)
        dense = torch.zeros((1, 1, SIZE, SIZE))
        dense[..., : geom.resized[0], : geom.resized[1]] = (small > 0.5).float()
        kwargs["mask_input"] = dense
    return kwargs


def display_mask(low: Any, geom: SliceInput) -> np.ndarray:
    """(H, W) bool display mask from (1, 1, 256, 256) low-res logits: the resized region back to the slice."""
    import torch.nn.functional as F

    h, w = geom.resized
    logits = F.interpolate(low[:, :, :h, :w].float(), size=geom.shape, mode="bilinear", align_corners=False)
    return (logits[0, 0] > 0).numpy()


def bbox_rc(mask: np.ndarray) -> np.ndarray | None:
    """(4,) (row0, col0, row1, col1) inclusive bounding box of a 2D mask, or None when empty."""
    rows, cols = np.flatnonzero(mask.any(axis=1)), np.flatnonzero(mask.any(axis=0))
    if rows.size == 0:
        return None
    return np.array([rows[0], cols[0], rows[-1], cols[-1]], dtype=np.float64)


def main_parts_box(mask: np.ndarray, min_part: float) -> np.ndarray | None:
    """`bbox_rc` of a 2D mask's connected parts of at least `min_part` times its largest part's area (0: all).

    A decoded mask often carries a few stray pixels beside the object; one of them can double the box that
    prompts the next slice, and the decoder then answers another structure inside it.
    """
    if min_part <= 0:
        return bbox_rc(mask)
    from scipy import ndimage

    parts, n = ndimage.label(mask)
    if n <= 1:
        return bbox_rc(mask)
    areas = np.bincount(parts.ravel())[1:]
    keep = np.flatnonzero(areas >= min_part * areas.max()) + 1
    return bbox_rc(np.isin(parts, keep))


def dice2d(a: np.ndarray, b: np.ndarray) -> float:
    total = int(a.sum()) + int(b.sum())
    return 1.0 if total == 0 else 2.0 * int(np.logical_and(a, b).sum()) / total


def grow_box_to(box: np.ndarray | None, points: np.ndarray | None, labels: np.ndarray | None, margin: float = 3.0) -> np.ndarray | None:
    """A (row0, col0, row1, col1) box grown to hold the positive clicks with a margin (display pixels)."""
    if box is None or points is None or labels is None or not labels.any():
        return box
    pos = points[labels == 1]
    lo = np.minimum(box[:2], pos.min(axis=0) - margin)
    hi = np.maximum(box[2:], pos.max(axis=0) + margin)
    return np.concatenate([np.maximum(lo, 0), hi])


def reaches_border(mask: np.ndarray, box: np.ndarray, margin: float = 2.0) -> bool:
    """Whether `mask` comes within `margin` pixels of a side of `box` (row0, col0, row1, col1) that lies inside
    the slice (a side on the slice's edge cuts nothing)."""
    rows, cols = np.nonzero(mask)
    if rows.size == 0:
        return False
    h, w = mask.shape
    r0, c0, r1, c1 = (float(v) for v in box)
    return bool((r0 > 0.5 and rows.min() <= r0 + margin) or (c0 > 0.5 and cols.min() <= c0 + margin)
                or (r1 < h - 1.5 and rows.max() >= r1 - margin) or (c1 < w - 1.5 and cols.max() >= c1 - margin))
