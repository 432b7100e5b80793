"""DICOM pixels: decode a sorted series into an (X, Y, Z) array, in contiguous slice chunks, on several threads.

The sequential path (`dicom_stack._read_pixels`: one `ImageSeriesReader` over the whole list, then
`sitk_to_array_affine`) copies the decoded volume out of SimpleITK and transposes it whole, which on a
512 x 512 x 300 CT costs more than the decoding. Here contiguous chunks of the sorted file list are read by
separate readers, each written straight into its slab of the (X, Y, Z) output; SimpleITK releases the GIL
while it decodes, so on a machine with free cores the chunks are read by threads side by side. The result is
the whole-list read's, voxel for voxel and affine for affine:

- geometry (origin, direction, in-plane spacing, slice spacing = |last - first position| / (n - 1)) is what
  one reader over the whole list computes: it is taken from a reader over the first and the last file;
- the voxel type is the first file's (the whole-list reader casts every slice to it): a chunk decoded to
  another type or size (per-slice rescale differences) sends the read back to the whole-list path, as does any
  chunk that fails, so errors (the failing file named) are the whole-list path's own.

`decode_threads` picks the path: the whole-list reader for small series, threads where there are several
cores (bounded by the cores and MAX_THREADS), the chunks on the calling thread on one core.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np

# thresholds measured with benchmarks/dicom_read.py on 2 cores (docs/benchmarks.md, big volumes)
PARALLEL_MIN_SLICES = 16  # below: one reader over the whole list (threads and chunks cost more than they save)
CHUNKED_MIN_SLICES = 48  # on one core, below this: the whole list (the chunks decode 2 slices more)
MIN_SLICES_PER_THREAD = 8
MAX_THREADS = 8  # upper bound whatever the machine; decoding is also bound by memory bandwidth
CHUNK_SLICES = 32  # slices per chunk: evens out the threads' work, bounds the chunk buffers in flight
THREADS_ENV = "VOXSAM_DICOM_THREADS"  # 0: one reader over the whole list; N: at most N threads (1: none)


class _Fallback(Exception):
    """A chunk could not be read as the whole-list reader would: redo the read with the whole-list reader."""


def available_cores() -> int:
    """CPU cores this process may run on (its affinity mask where the OS has one)."""
    try:
        return max(len(os.sched_getaffinity(0)), 1)
    except (AttributeError, OSError):  # pragma: no cover - macOS, Windows
        return max(os.cpu_count() or 1, 1)


def decode_threads(n_slices: int, cores: int | None = None) -> int:
    """How to decode a series of `n_slices` single-frame files: 0 = one reader over the whole list, 1 =
    chunks on the calling thread, N > 1 = chunks on N threads.

    Below PARALLEL_MIN_SLICES: 0. With several cores: min(cores, MAX_THREADS, n_slices //
    MIN_SLICES_PER_THREAD) threads. With one core (or a cap of 1): 1 from CHUNKED_MIN_SLICES slices on, else 0.
    $VOXSAM_DICOM_THREADS, where set to an integer, caps the threads (0 forces the whole-list reader).
    """
    env = os.environ.get(THREADS_ENV, "").strip()
    cap = int(env) if env.isdigit() else MAX_THREADS
    if n_slices < PARALLEL_MIN_SLICES or cap == 0:
        return 0
    cores = available_cores() if cores is None else cores
    threads = min(cores, cap, MAX_THREADS, n_slices // MIN_SLICES_PER_THREAD)
    if threads <= 1:
        return 1 if n_slices >= CHUNKED_MIN_SLICES else 0
    return threads


def read_series_array(folder: Path, files: list[Path], threads: int | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Decode `files` (sorted along the slice normal) into (array, affine).

    Args:
        folder: the series' folder (for messages).
        files: one single-frame DICOM file per slice, in stacking order.
        threads: None picks `decode_threads(len(files))`; 0 = one reader over the whole list (the sequential
            path); 1 = chunks on the calling thread; N > 1 = chunks on N threads (at most MAX_THREADS).
    Returns: array (columns, rows, slices[, components]) in the first file's voxel type (rescale applied by
        GDCM), and its RAS affine (4, 4) in mm; the same whichever path reads it.
    Raises: CorruptFileError naming the failing file (from the whole-list path, which a failing chunk falls
        back to).
    """
    from voxsam.io.dicom_stack import _read_pixels
    from voxsam.transforms.geometry import sitk_to_array_affine

    n = decode_threads(len(files)) if threads is None else max(0, min(int(threads), MAX_THREADS))
    if n >= 1 and len(files) >= 3:
        try:
            return _read_chunks(files, n)
        except _Fallback:
            pass
    return sitk_to_array_affine(_read_pixels(folder, files))


def _read_chunks(files: list[Path], threads: int) -> tuple[np.ndarray, np.ndarray]:
    """Chunks of `files` decoded on `threads` threads (1: this one) into one (X, Y, Z[, C]) array; _Fallback on
    any doubt (a chunk that fails or decodes to another voxel type or size)."""
    from concurrent.futures import ThreadPoolExecutor

    import SimpleITK as sitk

    from voxsam.io.quiet import quiet_native
    from voxsam.transforms.geometry import sitk_into_slab

    names = [str(f) for f in files]
    with quiet_native():
        try:
            ends = _execute([names[0], names[-1]])  # the whole-list reader's geometry and voxel type
        except RuntimeError:
            raise _Fallback from None
        if ends.GetDimension() != 3 or ends.GetSize()[2] != 2:
            raise _Fallback  # multi-frame or odd files: the sequential reader decides
        spacing = list(ends.GetSpacing())
        spacing[2] = spacing[2] / (len(names) - 1)  # ITK: |last - first| / (n - 1); the pair's is |last - first|
        columns, rows = ends.GetSize()[:2]
        comps = ends.GetNumberOfComponentsPerPixel()
        ref = sitk.GetArrayViewFromImage(ends)
        shape = (columns, rows, len(names)) + ((comps,) if comps > 1 else ())
        out = np.empty(shape, dtype=ref.dtype)
        chunks = min(max(threads, -(-len(names) // CHUNK_SLICES)), len(names) // 2)  # contiguous, >= 2 slices each
        bounds = np.linspace(0, len(names), chunks + 1).round().astype(int)

        def work(k0: int, k1: int) -> None:
            try:
                image = _execute(names[k0:k1])
            except RuntimeError:
                raise _Fallback from None
            if (image.GetPixelID() != ends.GetPixelID() or image.GetNumberOfComponentsPerPixel() != comps
                    or tuple(image.GetSize()) != (columns, rows, k1 - k0)):
                raise _Fallback
            sitk_into_slab(image, out, k0)

        if threads == 1:
            for a, b in zip(bounds[:-1], bounds[1:]):
                work(int(a), int(b))
            return out, _affine(ends, spacing)
        pool = ThreadPoolExecutor(max_workers=threads, thread_name_prefix="voxsam-dicom")
        try:
            for job in [pool.submit(work, int(a), int(b)) for a, b in zip(bounds[:-1], bounds[1:])]:
                job.result()  # re-raises a chunk's _Fallback
        finally:
            pool.shutdown(wait=True, cancel_futures=True)  # no thread outlives the read, even on a failure
    return out, _affine(ends, spacing)


def _affine(ends: Any, spacing: list[float]) -> np.ndarray:
    """RAS affine (4, 4) from the first file's origin and direction and the whole list's spacing (mm)."""
    from voxsam.transforms.geometry import affine_from_sitk_geometry

    return affine_from_sitk_geometry(ends.GetOrigin(), tuple(spacing), ends.GetDirection())


def _execute(names: list[str]) -> Any:
    """One `ImageSeriesReader` over `names` (SimpleITK image; RuntimeError when a file cannot be decoded)."""
    import SimpleITK as sitk

    reader = sitk.ImageSeriesReader()
    reader.SetFileNames(names)
    return reader.Execute()
