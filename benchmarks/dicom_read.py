"""Reading a 512 x 512 x 300 CT DICOM series: sequential vs parallel slice decoding, phase by phase.

    python benchmarks/dicom_read.py --json runs/bench/dicom_read.json
    python benchmarks/dicom_read.py --repeats 5 --syntax explicit jpegls

The series (built once into ``--workdir``): the CT of ``big_volume_latency.py`` (TotalSegmentator example CT
resampled to 512 x 512 x 300 with ``../shared/data`` present, else its procedural body), written slice by
slice with pydicom as int16 CT (rescale slope 1, intercept -1024), one file per slice, in each transfer
syntax asked for: ``explicit`` (Explicit VR Little Endian, uncompressed) and ``jpegls`` (JPEG-LS lossless,
encoded with pyjpegls, decoded by SimpleITK's GDCM).

Per syntax, ``--repeats`` rounds (medians reported), the variants alternating in order within each round:
the header scan and the stack check; the pixel decode into the (X, Y, Z) array by each path
(``whole_list``: one SimpleITK reader over the sorted files, then copy and transposition, the sequential
path; ``chunks_1_thread``; ``chunks_N_threads``), all checked equal (array, voxel type, affine); the whole
``voxsam.io.read_volume(folder)`` with ``VOXSAM_DICOM_THREADS=0`` (sequential) and as it picks by default;
the decode of the first 16, 32, ... slices each way (where chunks and threads start to pay). Peak RSS
of one read in a fresh process, each way. The machine (CPU model, flags, cores) and the load average before
and after are in the JSON.
"""
from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "src"))
sys.path.insert(0, str(REPO / "benchmarks"))

from big_volume_latency import SHAPE, SHARED, _procedural_ct, _real_ct, machine  # noqa: E402
from _report import emit_json  # noqa: E402  (benchmarks/_report.py; scripts run from benchmarks/)

SYNTAXES = ("explicit", "jpegls")
SERIES_UID = "1.2.826.0.1.3680043.8.498.19003"


def build_series(workdir: Path, syntax: str, procedural: bool = False) -> Path:
    """Write (once) the 512 x 512 x 300 CT as one DICOM file per slice; returns the folder."""
    tag = "procedural" if procedural or not (SHARED / "totalseg_ct" / "example_ct.nii.gz").is_file() else "totalseg"
    folder = workdir / f"dicom_{tag}_{syntax}_{SHAPE[0]}x{SHAPE[1]}x{SHAPE[2]}"
    if folder.is_dir() and len(list(folder.glob("*.dcm"))) == SHAPE[2]:
        return folder
    array, _, affine = _real_ct() if tag == "totalseg" else _procedural_ct()
    spacing = np.linalg.norm(affine[:3, :3], axis=0)
    tmp = folder.with_name(folder.name + ".part")
    tmp.mkdir(parents=True, exist_ok=True)
    for k in range(array.shape[2]):
        write_ct_slice(tmp / f"IM{k:04d}.dcm", array[:, :, k].T, (-180.0, -150.0, -100.0 + k * float(spacing[2])),
                       (float(spacing[1]), float(spacing[0])), instance=k + 1, syntax=syntax)
    tmp.rename(folder)
    return folder


def write_ct_slice(path: Path, hu: np.ndarray, position: tuple[float, float, float], spacing: tuple[float, float],
                   instance: int, syntax: str = "explicit", series_uid: str = SERIES_UID) -> Path:
    """One axial CT slice: `hu` is (rows, columns) in HU, stored as int16 = HU + 1024 (slope 1, intercept
    -1024); `position` is ImagePositionPatient (LPS mm), `spacing` PixelSpacing (row, column mm)."""
    from pydicom.dataset import Dataset, FileMetaDataset
    from pydicom.uid import CTImageStorage, ExplicitVRLittleEndian, JPEGLSLossless, generate_uid

    uid = generate_uid()
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID, meta.MediaStorageSOPInstanceUID = CTImageStorage, uid
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = Dataset()
    ds.file_meta = meta
    ds.SOPClassUID, ds.SOPInstanceUID = CTImageStorage, uid
    ds.StudyInstanceUID, ds.SeriesInstanceUID = "1.2.826.0.1.3680043.8.498.19001", series_uid
    ds.Modality, ds.SeriesDescription, ds.PatientName, ds.PatientID = "CT", "benchmark CT", "Bench^Dicom", "bench"
    ds.InstanceNumber = instance
    ds.ImagePositionPatient = [round(v, 4) for v in position]
    ds.ImageOrientationPatient = [1.0, 0.0, 0.0, 0.0, 1.0, 0.0]
    ds.PixelSpacing = [round(v, 6) for v in spacing]
    ds.SliceThickness = 1.0
    stored = np.ascontiguousarray(np.clip(hu.astype(np.int32) + 1024, -32768, 32767).astype(np.int16))
    ds.Rows, ds.Columns = stored.shape
    ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 16, 15, 1
    ds.RescaleIntercept, ds.RescaleSlope = -1024, 1
    ds.PixelData = stored.tobytes()
    if syntax == "jpegls":
        ds.compress(JPEGLSLossless, stored, encoding_plugin="pyjpegls")
    elif syntax != "explicit":
        raise ValueError(f"unknown syntax {syntax!r}")
    ds.save_as(str(path), enforce_file_format=True)
    return path


def _time(fn: Any) -> tuple[float, Any]:
    t0 = time.perf_counter()
    out = fn()
    return time.perf_counter() - t0, out


def measure(folder: Path, repeats: int, threads: int, sizes: list[int]) -> dict[str, Any]:
    """Alternating runs of the three decoding paths and of the whole read; medians (s) and every run."""
    from voxsam.io import dicom_pixels, read_volume
    from voxsam.io.dicom_scan import _scan
    from voxsam.io.dicom_stack import _check_stack

    variants = {"whole_list": 0, "chunks_1_thread": 1, f"chunks_{threads}_threads": threads}
    runs: dict[str, list[float]] = {"scan": [], "check": [], **{k: [] for k in variants}, "read_volume_sequential": [], "read_volume_default": []}
    read_volume(folder)  # warm the page cache and the imports: every run reads from memory
    for rep in range(repeats):
        dt, (slices, _, _) = _time(lambda: _scan(folder))
        runs["scan"].append(dt)
        dt, (ordered, _, _, _) = _time(lambda: _check_stack(folder, slices))
        runs["check"].append(dt)
        files = [s.path for s in ordered]
        ref = None
        names = list(variants) if rep % 2 == 0 else list(reversed(variants))
        for name in names:
            dt, got = _time(lambda: dicom_pixels.read_series_array(folder, files, threads=variants[name]))
            runs[name].append(dt)
            if ref is None:
                ref = got
            assert np.array_equal(got[0], ref[0]) and got[0].dtype == ref[0].dtype and np.array_equal(got[1], ref[1]), name
            del got
        for name in (("read_volume_sequential", "read_volume_default") if rep % 2 == 0 else ("read_volume_default", "read_volume_sequential")):
            os.environ[dicom_pixels.THREADS_ENV] = "0" if name == "read_volume_sequential" else ""
            dt, vol = _time(lambda: read_volume(folder))
            runs[name].append(dt)
            del vol
        os.environ.pop(dicom_pixels.THREADS_ENV, None)
    small: dict[str, dict[str, float]] = {}
    ordered_all = [s.path for s in _check_stack(folder, _scan(folder)[0])[0]]
    for n in sizes:  # the first n slices: where do the chunks and the threads start to pay?
        per: dict[str, list[float]] = {k: [] for k in variants}
        for rep in range(max(repeats, 3)):
            for name in (list(variants) if rep % 2 == 0 else list(reversed(variants))):
                per[name].append(_time(lambda: dicom_pixels.read_series_array(folder, ordered_all[:n], threads=variants[name]))[0])
        small[str(n)] = {k: round(statistics.median(v), 4) for k, v in per.items()}
    return {"median_s": {k: round(statistics.median(v), 4) for k, v in runs.items()},
            "runs_s": {k: [round(x, 4) for x in v] for k, v in runs.items()},
            "default_threads": dicom_pixels.decode_threads(len(ordered_all)), "first_n_slices_median_s": small}


def peak_rss_mb(folder: Path, threads_env: str) -> float:
    """Peak RSS (MB) of a fresh process that imports voxsam.io and reads the series once."""
    import subprocess

    # VmHWM, not ru_maxrss: a child's ru_maxrss keeps the (large) peak of the parent it was forked from
    code = ("import sys; from voxsam.io import read_volume; read_volume(sys.argv[1]); "
            "print([int(l.split()[1]) / 1024 for l in open('/proc/self/status') if l.startswith('VmHWM')][0])")
    env = {**os.environ, "PYTHONPATH": str(REPO / "src"), "VOXSAM_DICOM_THREADS": threads_env}
    out = subprocess.run([sys.executable, "-c", code, str(folder)], env=env, capture_output=True, text=True, check=True)
    return round(float(out.stdout.split()[-1]), 1)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--workdir", type=Path, default=REPO / "runs" / "bench" / "dicom_read")
    ap.add_argument("--syntax", nargs="+", choices=SYNTAXES, default=list(SYNTAXES))
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--threads", type=int, default=0, help="threads of the parallel variant (0: as the reader picks)")
    ap.add_argument("--sizes", type=int, nargs="*", default=[16, 32, 48, 96], help="also time the first N slices")
    ap.add_argument("--procedural", action="store_true", help="the procedural CT even where ../shared/data exists")
    ap.add_argument("--json", type=Path, help="also write the result here")
    args = ap.parse_args()
    from voxsam.io.dicom_pixels import available_cores, decode_threads

    threads = args.threads or max(decode_threads(SHAPE[2]), 2)
    result: dict[str, Any] = {"machine": machine(), "cores_available": available_cores(), "shape": list(SHAPE),
                              "threads": threads, "repeats": args.repeats, "loadavg_before": list(os.getloadavg()), "series": {}}
    for syntax in args.syntax:
        folder = build_series(args.workdir, syntax, args.procedural)
        result["series"][syntax] = {"folder": str(folder), "mb": round(sum(p.stat().st_size for p in folder.iterdir()) / 2**20, 1),
                                    **measure(folder, args.repeats, threads, args.sizes),
                                    "peak_rss_mb": {"sequential": peak_rss_mb(folder, "0"), "default": peak_rss_mb(folder, "")}}
    result["loadavg_after"] = list(os.getloadavg())
    emit_json(result, args.json, indent=1)


if __name__ == "__main__":
    main()
