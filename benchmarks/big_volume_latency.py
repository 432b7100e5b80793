"""A 512 x 512 x 300 CT from file to first mask, and each further click, for every engine.

    python benchmarks/big_volume_latency.py --json runs/bench/big_volume.json
    python benchmarks/big_volume_latency.py --engines classic --procedural

The volume: an int16 CT NIfTI (.nii.gz) of 512 x 512 x 300 voxels, built once into ``--workdir``. With
``../shared/data`` present it is the TotalSegmentator example CT (3 mm, 122 x 101 x 112) resampled (linear,
corner voxel centres kept) to that size, ~0.72 x 0.59 x 1.12 mm, and the target is its right kidney (label
resampled nearest); otherwise (or with ``--procedural``) a procedural body with organs, bones, noise.

Per engine (classic, sam3d, slice2d), each in a fresh process so that its peak RSS is its own:

- ``cli_s``: process start -> mask written for ``voxsam segment IMAGE --out MASK --point CENTRE --engine E``
  (``python -m voxsam.cli.main``), and whether that process imported torch;
- through the Python API (`voxsam.io.read_volume`, `voxsam.Session`): ``read_s``, ``engine_load_s``,
  ``prepare_s``, ``first_click_s``, then 10 further clicks (an oracle: each at a fixed offset from the
  centre, positive where the label is the target, negative elsewhere), each a whole `Session.add_point`
  including the session's mask update and the returned mask: median and max, with the engine's own share
  (``engine_s``: time inside `Engine.predict`/`propagate`); ``mask_s`` (`Session.mask`), ``write_s``
  (`write_mask` .nii.gz), ``peak_rss_mb``; the first and the final mask's voxel count and SHA-1 (results
  must not change when the code gets faster; classic's further clicks keep the ROI of the last full solve
  since issue 19, so its final mask differs from a from-scratch solve of all clicks).

The machine (CPU model, the flags that matter, cores, load average before and after) is in the JSON.
Targets of issue 19 for the default engine (classic): <= 3 s start -> file, <= 50 ms per further click,
peak RSS <= 2 GB.
"""
from __future__ import annotations

import argparse
import hashlib
import json
import os
import platform
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
from _report import emit_json  # noqa: E402  (benchmarks/_report.py; scripts run from benchmarks/)

REPO = Path(__file__).resolve().parents[1]
SHARED = REPO.parent / "shared" / "data"
SHAPE = (512, 512, 300)
FLAGS = ("avx2", "avx512f", "avx512_bf16", "avx512_vnni", "amx_tile", "amx_bf16", "amx_int8")
TARGETS = {"cli_s": 3.0, "further_click_s": 0.05, "peak_rss_mb": 2048.0}
ENGINES = ("classic", "sam3d", "slice2d")
TARGET_LABEL = 2  # kidney_right in TotalSegmentator's `total` map: inside the volume, ~95 slices long
# further clicks at these fractions of the target's half extent from its centre (inside: positive)
OFFSETS = [(0.5, 0, 0), (-0.5, 0, 0), (0, 0.5, 0), (0, -0.5, 0), (0, 0, 0.5), (0, 0, -0.5), (1.3, 0, 0), (0, -1.3, 0), (0.3, 0.3, 0.3), (0, 0, 1.2)]


def machine() -> dict[str, Any]:
    model, flags = platform.processor() or "?", set()
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            for line in f:
                if line.startswith("model name") and model in ("?", "x86_64", ""):
                    model = line.split(":", 1)[1].strip()
                elif line.startswith("flags") and not flags:
                    flags = set(line.split(":", 1)[1].split())
    except OSError:
        pass
    from importlib.metadata import version

    return {"cpu": model, "cpu_count": os.cpu_count(), "flags": {f: f in flags for f in FLAGS},
            "python": sys.version.split()[0], "torch": version("torch"), "numpy": np.__version__}


# ---------------------------------------------------------------------------- the volume
def build_volume(workdir: Path, procedural: bool) -> dict[str, Any]:
    """Write (once) the CT and its target label; returns paths, source and the first click (voxel)."""
    import nibabel as nib

    source = "procedural" if procedural or not (SHARED / "totalseg_ct" / "example_ct.nii.gz").is_file() else "totalseg_ct/example_ct (right kidney)"
    tag = "procedural" if source == "procedural" else "totalseg"
    image, label = workdir / f"ct_{tag}_512x512x300.nii.gz", workdir / f"ct_{tag}_512x512x300_target.npy"
    if not image.is_file() or not label.is_file():
        workdir.mkdir(parents=True, exist_ok=True)
        array, target, affine = _real_ct() if tag == "totalseg" else _procedural_ct()
        img = nib.Nifti1Image(array, affine)
        img.set_data_dtype(np.int16)
        img.set_qform(affine, code=1)
        img.set_sform(affine, code=1)
        img.header["descrip"] = b"CT"
        nib.save(img, str(image))
        np.save(label, np.packbits(target, axis=None))
    from scipy import ndimage

    target = np.unpackbits(np.load(label), count=int(np.prod(SHAPE))).astype(bool).reshape(SHAPE)
    sub = tuple(slice(max(0, int(a.min()) - 2), int(a.max()) + 3) for a in np.nonzero(target))
    depth = ndimage.distance_transform_edt(target[sub])
    centre = np.array(np.unravel_index(int(np.argmax(depth)), depth.shape)) + [s.start for s in sub]
    affine = nib.load(str(image)).affine
    return {"image": image, "target": target, "centre": centre.tolist(), "affine": affine, "source": source,
            "file_mb": round(image.stat().st_size / 2**20, 1), "target_voxels": int(target.sum())}


def _real_ct() -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    import nibabel as nib
    from scipy import ndimage

    ct = nib.load(str(SHARED / "totalseg_ct" / "example_ct.nii.gz"))
    seg = nib.load(str(SHARED / "totalseg_ct" / "example_ct_seg_fast_force_split.nii.gz"))
    src = np.asarray(ct.dataobj, dtype=np.float32)
    zoom = [t / s for t, s in zip(SHAPE, src.shape)]  # output shape; scipy aligns the corner voxel centres
    array = np.rint(ndimage.zoom(src, zoom, order=1, grid_mode=False, mode="nearest")).astype(np.int16)
    target = ndimage.zoom((np.asarray(seg.dataobj) == TARGET_LABEL).astype(np.uint8), zoom, order=0, grid_mode=False, mode="nearest") > 0
    assert array.shape == SHAPE and target.shape == SHAPE
    affine = ct.affine.copy()
    affine[:3, :3] = affine[:3, :3] * np.asarray([(s - 1) / (t - 1) for t, s in zip(SHAPE, src.shape)])[None, :]
    return array, target, affine


def _procedural_ct(seed: int = 0) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Air, an elliptic body (fat rim, soft tissue), a spine, a liver-like and a spleen-like organ, noise."""
    rng = np.random.default_rng(seed)
    spacing = np.array([0.75, 0.75, 1.0])
    x = ((np.arange(SHAPE[0]) - 255.5) * spacing[0])[:, None, None]
    y = ((np.arange(SHAPE[1]) - 255.5) * spacing[1])[None, :, None]
    z = ((np.arange(SHAPE[2]) - 149.5) * spacing[2])[None, None, :]
    array = np.full(SHAPE, -1000, dtype=np.int16)
    body = (x / 170.0) ** 2 + (y / 125.0) ** 2 <= 1.0
    array[np.broadcast_to(body, SHAPE)] = -90
    array[np.broadcast_to((x / 160.0) ** 2 + (y / 115.0) ** 2 <= 1.0, SHAPE)] = 40
    array[np.broadcast_to(x ** 2 + (y + 70) ** 2 <= 18.0 ** 2, SHAPE)] = 700
    liver = ((x + 60) / 70.0) ** 2 + ((y - 10) / 55.0) ** 2 + (z / 80.0) ** 2 <= 1.0
    spleen = ((x - 85) / 28.0) ** 2 + ((y + 5) / 40.0) ** 2 + ((z - 20) / 50.0) ** 2 <= 1.0
    array[liver] = 60
    array[spleen] = 110
    noise = rng.normal(0.0, 12.0, SHAPE[:2] + (1,)).astype(np.int16)
    for k in range(SHAPE[2]):
        array[:, :, k] += np.roll(noise[:, :, 0], k * 7, axis=0)
    affine = np.diag([*spacing, 1.0])
    affine[:3, 3] = -np.asarray(SHAPE) / 2 * spacing
    return array, spleen, affine


def further_clicks(info: dict[str, Any]) -> list[tuple[list[float], bool]]:
    where = np.nonzero(info["target"])
    half = np.array([(int(a.max()) - int(a.min())) / 2 for a in where])
    out = []
    for off in OFFSETS:
        p = np.clip(np.rint(np.asarray(info["centre"]) + np.asarray(off) * half), 0, np.asarray(SHAPE) - 1).astype(int)
        out.append(([float(v) for v in p], bool(info["target"][tuple(p)])))
    return out


# ---------------------------------------------------------------------------- one engine, in its own process
def worker(engine: str, image: str, first: list[float], clicks: list[tuple[list[float], bool]], out: str) -> dict[str, Any]:
    t0 = time.perf_counter()
    from voxsam.engines import create_engine
    from voxsam.io import read_volume, write_mask
    from voxsam.session import Session

    imports = time.perf_counter() - t0
    t = time.perf_counter()
    built = create_engine(engine)
    engine_load = time.perf_counter() - t
    inside: list[float] = []
    for name in ("predict", "propagate"):
        inner = getattr(built, name)

        def timed(*a: Any, _inner: Any = inner, _name: str = name, **k: Any) -> Any:
            s = time.perf_counter()
            if _name == "propagate":
                result = yield from _inner(*a, **k)
            else:
                result = _inner(*a, **k)
            inside.append(time.perf_counter() - s)
            return result

        if name == "predict" and not built.capabilities.propagates:
            setattr(built, name, lambda *a, _inner=inner, **k: _timed_call(inside, _inner, *a, **k))
        elif name == "propagate" and built.capabilities.propagates:
            setattr(built, name, timed)
    t = time.perf_counter()
    vol = read_volume(image)
    read = time.perf_counter() - t
    session = Session(vol, built)
    t = time.perf_counter()
    session.prepare()
    prepare = time.perf_counter() - t
    t = time.perf_counter()
    mask = session.add_point(tuple(first))  # type: ignore[arg-type]
    first_click = time.perf_counter() - t
    first_engine = inside[-1] if inside else float("nan")
    first_voxels = int(np.count_nonzero(mask))
    first_sha1 = hashlib.sha1(np.ascontiguousarray(mask, dtype=np.uint8).tobytes()).hexdigest()[:16]
    first_encodes = _encoder_calls(built, session)
    from voxsam.errors import PromptError

    secs, engine_secs, refused = [], [], []
    for xyz, positive in clicks:
        n = len(inside)
        t = time.perf_counter()
        try:
            mask = session.add_point(tuple(xyz), positive=positive)  # type: ignore[arg-type]
        except PromptError as exc:  # the engine's rule (e.g. slice2d: a negative click alone on an empty slice)
            refused.append(f"{xyz} {'+' if positive else '-'}: {exc}")
            continue
        secs.append(time.perf_counter() - t)
        engine_secs.append(sum(inside[n:]))
    t = time.perf_counter()
    final = session.mask
    mask_s = time.perf_counter() - t
    t = time.perf_counter()
    write_mask(final, vol, out)
    write = time.perf_counter() - t
    return {
        "imports_s": round(imports, 3), "engine_load_s": round(engine_load, 3), "read_s": round(read, 3),
        "prepare_s": round(prepare, 3), "first_click_s": round(first_click, 3), "first_click_engine_s": round(first_engine, 3),
        "first_mask_voxels": first_voxels, "first_mask_sha1": first_sha1, "refused_clicks": refused,
        "further_click_s": [round(s, 4) for s in secs], "further_click_median_s": round(statistics.median(secs), 4),
        "further_click_max_s": round(max(secs), 4), "further_click_engine_median_s": round(statistics.median(engine_secs), 4),
        "further_click_overhead_median_s": round(statistics.median([a - b for a, b in zip(secs, engine_secs)]), 4),
        "mask_s": round(mask_s, 3), "write_s": round(write, 3), "mask_file_mb": round(os.path.getsize(out) / 2**20, 2),
        "final_mask_voxels": int(np.count_nonzero(final)),
        "final_mask_sha1": hashlib.sha1(np.ascontiguousarray(final, dtype=np.uint8).tobytes()).hexdigest()[:16],
        "encoder_calls_first_click": first_encodes, "encoder_calls_total": _encoder_calls(built, session),
        "peak_rss_mb": peak_rss_mb(),
    }


def _encoder_calls(engine: Any, session: Any) -> int | None:
    """Image encodings so far: sam3d counts crops, slice2d slices (`PreparedVolume.encoder_calls`)."""
    calls = getattr(engine, "encoder_calls", None)
    if calls is None:
        calls = getattr(session._prepared, "encoder_calls", None)
    return None if calls is None else int(calls)


def peak_rss_mb() -> float:
    """VmHWM of this process (ru_maxrss would carry the parent's peak over fork + exec on Linux)."""
    try:
        with open("/proc/self/status", encoding="utf-8") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return round(int(line.split()[1]) / 1024.0, 1)
    except OSError:
        pass
    return round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0, 1)


def _timed_call(inside: list[float], fn: Any, *a: Any, **k: Any) -> Any:
    s = time.perf_counter()
    result = fn(*a, **k)
    inside.append(time.perf_counter() - s)
    return result


_CLI = (
    "import sys\nfrom voxsam.cli.main import main\ntry:\n    main(sys.argv[1:])\nfinally:\n"
    "    print('BENCH torch_imported=%s' % ('torch' in sys.modules), file=sys.stderr)\n"
)


def run_cli(engine: str, image: Path, centre: list[float], out: Path, env: dict[str, str]) -> dict[str, Any]:
    cmd = [sys.executable, "-c", _CLI, "segment", str(image), "--out", str(out), "--overwrite",
           "--point", ",".join(str(int(v)) for v in centre), "--engine", engine]
    t = time.perf_counter()
    done = subprocess.run(cmd, env=env, capture_output=True, text=True)
    seconds = time.perf_counter() - t
    if done.returncode != 0:
        return {"cli_error": done.stderr.strip().splitlines()[-3:]}
    return {"cli_s": round(seconds, 3), "cli_imported_torch": "torch_imported=True" in done.stderr,
            "cli_mask_file_mb": round(out.stat().st_size / 2**20, 2)}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--json", type=Path, default=None, help="also write the JSON here")
    parser.add_argument("--engines", default=",".join(ENGINES))
    parser.add_argument("--workdir", type=Path, default=Path(os.environ.get("TMPDIR", "/tmp")) / "voxsam_big_volume")
    parser.add_argument("--procedural", action="store_true", help="a procedural CT even when ../shared/data is present")
    parser.add_argument("--no-cli", action="store_true", help="skip the `voxsam segment` runs")
    parser.add_argument("--src", type=Path, default=REPO / "src", help="the voxsam source tree to measure (e.g. an older checkout's src)")
    parser.add_argument("--worker", nargs=4, metavar=("ENGINE", "IMAGE", "PLAN", "OUT"), help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.worker:
        engine, image, plan, out = args.worker
        spec = json.loads(Path(plan).read_text())
        print(json.dumps(worker(engine, image, spec["first"], [tuple(c) for c in spec["clicks"]], out)))  # type: ignore[misc]
        return 0
    env = dict(os.environ, PYTHONPATH=str(args.src.resolve()) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    t = time.perf_counter()
    info = build_volume(args.workdir, args.procedural)
    build_s = time.perf_counter() - t
    clicks = further_clicks(info)
    plan = args.workdir / "plan.json"
    plan.write_text(json.dumps({"first": info["centre"], "clicks": clicks}))
    result: dict[str, Any] = {
        "benchmark": "big volume: 512x512x300 int16 CT, file -> first mask and further clicks",
        "command": "python benchmarks/big_volume_latency.py" + (" " + " ".join(argv if argv is not None else sys.argv[1:])).rstrip(),
        "src": str(args.src.resolve()), "machine": machine(), "load_before": round(os.getloadavg()[0], 2), "time": time.strftime("%Y-%m-%d %H:%M:%S"),
        "volume": {"shape": list(SHAPE), "dtype": "int16", "source": info["source"], "file_mb": info["file_mb"],
                   "spacing_mm": [round(float(s), 4) for s in np.linalg.norm(info["affine"][:3, :3], axis=0)],
                   "first_click": info["centre"], "target_voxels": info["target_voxels"], "build_s": round(build_s, 1)},
        "further_clicks": [{"ijk": c, "positive": p} for c, p in clicks],
        "targets_default_engine": TARGETS, "engines": {},
    }
    for engine in [e for e in args.engines.split(",") if e]:
        out = args.workdir / f"mask_{engine}.nii.gz"
        row: dict[str, Any] = {}
        if not args.no_cli:
            row.update(run_cli(engine, info["image"], info["centre"], args.workdir / f"cli_{engine}.nii.gz", env))
        done = subprocess.run([sys.executable, __file__, "--worker", engine, str(info["image"]), str(plan), str(out)],
                              env=env, capture_output=True, text=True)
        if done.returncode != 0:
            row["api_error"] = done.stderr.strip().splitlines()[-3:]
        else:
            row.update(json.loads(done.stdout.strip().splitlines()[-1]))
        result["engines"][engine] = row
        print(f"{engine}: {json.dumps(row)}", file=sys.stderr)
    classic = result["engines"].get("classic", {})
    if "cli_s" in classic:
        result["default_engine_targets_met"] = {
            "cli_s": classic["cli_s"] <= TARGETS["cli_s"],
            "further_click_s": classic.get("further_click_max_s", 1e9) <= TARGETS["further_click_s"],
            "peak_rss_mb": classic.get("peak_rss_mb", 1e9) <= TARGETS["peak_rss_mb"],
        }
    result["load_after"] = round(os.getloadavg()[0], 2)
    emit_json(result, args.json)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
