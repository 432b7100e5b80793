"""The ROI and its working grid: shape choice, resampling, intensity normalisation (shared by the solvers)."""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from voxsam.engines.base import Region


@dataclass
class Roi:
    """A box of the volume and the (possibly coarser) grid the solver works on.

    Attributes:
        lo: (3,) int, inclusive start on the volume grid.
        hi: (3,) int, exclusive end.
        work_shape: the working grid's shape (the ROI's own shape, or coarser; see `working_shape`).
    """

    lo: np.ndarray
    hi: np.ndarray
    work_shape: tuple[int, int, int]

    @property
    def shape(self) -> tuple[int, int, int]:
        return tuple(int(v) for v in self.hi - self.lo)  # type: ignore[return-value]

    @property
    def slices(self) -> Region:
        return tuple(slice(int(a), int(b)) for a, b in zip(self.lo, self.hi))  # type: ignore[return-value]

    def to_work(self, ijk: np.ndarray) -> np.ndarray:
        """(N, 3) volume voxel coordinates -> (N, 3) continuous working-grid coordinates."""
        n = np.asarray(self.shape, dtype=np.float64)
        m = np.asarray(self.work_shape, dtype=np.float64)
        scale = np.where(n > 1, (m - 1) / np.maximum(n - 1, 1), 1.0)
        return (np.asarray(ijk, dtype=np.float64) - self.lo) * scale

    def work_spacing(self, spacing: np.ndarray) -> np.ndarray:
        """(3,) voxel size (mm) of the working grid, corner voxel centres aligned with the ROI's."""
        n = np.asarray(self.shape)
        m = np.asarray(self.work_shape)
        coarse = spacing * (n - 1).clip(min=1) / (m - 1).clip(min=1)
        return np.where(n > 1, coarse, spacing)


def working_shape(roi_shape: tuple[int, int, int], spacing: np.ndarray, max_voxels: int) -> tuple[int, int, int]:
    """Working grid shape for a ROI: the ROI itself, or coarser (finest axes first) to hold <= max_voxels."""
    n = np.asarray(roi_shape, dtype=np.float64)
    if float(np.prod(n)) <= max_voxels:
        return tuple(int(v) for v in n)  # type: ignore[return-value]
    extent = n * spacing

    def shape_at(t: float) -> np.ndarray:
        return np.maximum(np.minimum(np.round(extent / np.maximum(spacing, t)), n), np.minimum(n, 2))

    lo, hi = float(spacing.min()), float(extent.max())
    for _ in range(60):
        mid = 0.5 * (lo + hi)
        if float(np.prod(shape_at(mid))) <= max_voxels:
            hi = mid
        else:
            lo = mid
    return tuple(int(v) for v in shape_at(hi))  # type: ignore[return-value]


def resize(array: np.ndarray, shape: tuple[int, ...]) -> np.ndarray:
    """Linear resampling of an (X, Y, Z) array onto `shape`, corner voxel centres aligned; float32."""
    from scipy import ndimage

    a = np.asarray(array, dtype=np.float32)
    if a.shape == tuple(shape):
        return a
    zoom = [t / s for t, s in zip(shape, a.shape)]
    out = ndimage.zoom(a, zoom, order=1, mode="nearest", grid_mode=False)
    if out.shape != tuple(shape):  # rounding guard; zoom normally hits the shape exactly
        out = out[tuple(slice(0, t) for t in shape)]
        pad = [(0, t - s) for t, s in zip(shape, out.shape)]
        out = np.pad(out, pad, mode="edge")
    return out


def resize_block(array: np.ndarray, shape: tuple[int, int, int], block: Region) -> np.ndarray:
    """`resize(array, shape)[block]`, bit for bit, computing only the block (an (X, Y, Z) array; float32).

    `ndimage.zoom` maps output voxel k to input coordinate k·z (z = (m − 1)/(n − 1) per axis);
    `ndimage.affine_transform` with a diagonal matrix z and offset o runs the same code with (k + o/z)·z, so
    an offset whose quotient o/z is exactly the block start gives the same coordinates. Where no float64
    offset divides back exactly, the block is started a voxel earlier (0 always works) and cropped.
    """
    from scipy import ndimage

    a = np.asarray(array, dtype=np.float32)
    if a.shape == tuple(shape):
        return a[block]
    zoom = np.array([(s - 1) / (t - 1) if t > 1 else 1.0 for s, t in zip(a.shape, shape)], dtype=np.float64)
    starts, offsets = [], []
    for axis in range(3):
        start = int(block[axis].start)
        while True:
            off = start * zoom[axis]
            for _ in range(4):
                q = off / zoom[axis]
                if q == start:
                    break
                off = float(np.nextafter(off, np.inf if q < start else -np.inf))
            if off / zoom[axis] == start or start == 0:
                break
            start -= 1
        starts.append(start)
        offsets.append(off)
    out_shape = tuple(int(block[a].stop) - starts[a] for a in range(3))
    out = ndimage.affine_transform(a, zoom, offset=np.array(offsets), output_shape=out_shape, order=1, mode="nearest")
    return out[tuple(slice(int(block[a].start) - starts[a], None) for a in range(3))]


def true_box(mask: np.ndarray, within: Region | None = None) -> Region | None:
    """The bounding box (explicit slices) of the True voxels of an (X, Y, Z) bool array, searched inside
    `within` (None: all of it); None when there are none."""
    if within is None:
        within = (slice(0, mask.shape[0]), slice(0, mask.shape[1]), slice(0, mask.shape[2]))
    part: np.ndarray = mask[within]
    if part.size == 0:
        return None
    plane = np.any(part, axis=2)
    xs, ys, zs = np.flatnonzero(plane.any(axis=1)), np.flatnonzero(plane.any(axis=0)), np.flatnonzero(part.any(axis=(0, 1)))
    if xs.size == 0:
        return None
    return tuple(slice(int(w.start) + int(h[0]), int(w.start) + int(h[-1]) + 1) for w, h in zip(within, (xs, ys, zs)))  # type: ignore[return-value]


def normalise(img: np.ndarray, smooth_mm: float, spacing: np.ndarray) -> np.ndarray:
    """Clip to the 0.5-99.5 percentiles (of a strided sample), scale to [0, 1], smooth; float32."""
    from scipy import ndimage

    sample = img[:: max(1, img.shape[0] // 64), :: max(1, img.shape[1] // 64), :: max(1, img.shape[2] // 64)]
    lo, hi = np.percentile(sample, [0.5, 99.5])
    if hi - lo < 1e-6:
        lo, hi = float(img.min()), float(img.max())
    if hi - lo < 1e-6:
        return np.zeros(img.shape, dtype=np.float32)
    out = np.clip((img - np.float32(lo)) / np.float32(hi - lo), 0.0, 1.0).astype(np.float32)
    if smooth_mm > 0:
        sigma = smooth_mm / spacing
        sigma = np.where(sigma >= 0.25, sigma, 0.0)
        if sigma.any():
            out = ndimage.gaussian_filter(out, sigma=sigma, mode="nearest", truncate=2.5)
    return out


def edge_rms(img: np.ndarray) -> float:
    """RMS of the intensity differences over the 6-neighbour edges (at least 1e-4): the solvers' contrast unit."""
    total, count = 0.0, 0
    for axis in range(3):
        if img.shape[axis] > 1:
            d = np.diff(img, axis=axis)
            total += float(np.square(d, dtype=np.float64).sum())
            count += d.size
    return max(float(np.sqrt(total / max(count, 1))), 1e-4)


def union(a: Region, b: Region) -> Region:
    """The bounding box of two regions (slices with explicit start and stop)."""
    return tuple(slice(min(x.start, y.start), max(x.stop, y.stop)) for x, y in zip(a, b))  # type: ignore[return-value]
