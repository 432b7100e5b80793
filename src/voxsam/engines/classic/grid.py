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
