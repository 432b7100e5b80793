"""Seconds per click of the `classic` engine on a 128³ ROI.

    python benchmarks/classic_latency.py --json classic_latency.json [--method growcut|random_walker|both]

A synthetic 192³ phantom at 1 mm (ellipsoidal "organs" of different intensities, a smooth bias field and
Gaussian noise). The first click sits in the middle with a ROI margin chosen so the ROI is exactly 128³;
the next clicks follow the `center` protocol (largest error component), so the ROI grows and is resampled
onto a working grid of at most 128³ voxels (the engine's cap). Every click is a full `Session.add_point`
(engine work plus the session's bookkeeping); the first one also includes `prepare`. The JSON (printed
and written to --json) holds each click's seconds, the ROI / working-grid shapes and summary statistics.
"""
from __future__ import annotations

import argparse
import os
import platform
import sys
import time
from pathlib import Path

import numpy as np
from _report import emit_json  # noqa: E402  (benchmarks/_report.py; scripts run from benchmarks/)


def phantom(size: int = 192, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """(image float32 (size³), target bool): organs of intensity 40..120 in a body of 0, noise SD 8."""
    rng = np.random.default_rng(seed)
    g = np.indices((size, size, size), dtype=np.float32)
    c = (size - 1) / 2.0
    body = (((g[0] - c) / (0.45 * size)) ** 2 + ((g[1] - c) / (0.4 * size)) ** 2) <= 1.0
    img = np.where(body, 20.0, -80.0).astype(np.float32)
    target = np.zeros(img.shape, dtype=bool)
    organs: list[tuple[tuple[float, ...], tuple[float, ...], float]] = [((c, c, c), (38, 30, 44), 100.0)]  # the target
    for _ in range(8):
        at = rng.uniform(0.2 * size, 0.8 * size, 3)
        semi_axes = rng.uniform(8, 22, 3)
        organs.append((tuple(at), tuple(semi_axes), float(rng.uniform(40, 120))))
    for i, (centre, radii, value) in enumerate(organs):
        inside = sum(((g[a] - centre[a]) / radii[a]) ** 2 for a in range(3)) <= 1.0
        if i == 0:
            target = inside
        else:
            inside &= ~target
        img[inside] = value
    bias = 1.0 + 0.1 * np.sin(g[0] / size * np.pi) * np.cos(g[1] / size * np.pi)
    img = img * bias + rng.normal(0.0, 8.0, img.shape).astype(np.float32)
    return img.astype(np.float32), target


def measure(method: str, clicks: int, image: np.ndarray, target: np.ndarray, **options: float) -> dict:
    from voxsam.engines.base import Prediction
    from voxsam.engines.classic import ClassicEngine
    from voxsam.evaluation.metrics import dice
    from voxsam.evaluation.protocols import center
    from voxsam.io.volume import Volume
    from voxsam.prompts import Point, PromptSet
    from voxsam.session import Session

    volume = Volume(image, np.eye(4))
    # the first click is the target's centre (voxel 95 or 96); ± 63.5 mm around it is a 128³ ROI
    engine = ClassicEngine(None, method=method, margin_mm=63.5, **options)
    session = Session(volume, engine)
    result = center(session, target, clicks, seed=0)
    shapes = []
    # replay the prompts one by one on the engine to read each click's ROI (its state) without timing it
    replay = ClassicEngine(None, method=method, margin_mm=63.5, **options)
    prepared = replay.prepare(volume)
    prompts = PromptSet()
    previous: Prediction | None = None
    for p in result.prompts:
        if p is None:
            break
        i, j, k = (float(v) for v in p["ijk"])
        prompts, _ = prompts.with_prompt(Point((i, j, k), bool(p["positive"])))
        previous = replay.predict(prepared, prompts, previous)
        st = previous.state
        lo, hi = st["roi"]
        shapes.append({"roi": [int(b - a) for a, b in zip(lo, hi)], "work": list(st["work_shape"])})
    secs = [s for s, p in zip(result.seconds, result.prompts) if p is not None]
    return {
        "method": method,
        "options": options,
        "seconds_per_click": [round(s, 4) for s in secs],
        "roi_per_click": shapes,
        "first_click_s": round(secs[0], 4),
        "median_s": round(float(np.median(secs)), 4),
        "mean_s": round(float(np.mean(secs)), 4),
        "max_s": round(float(np.max(secs)), 4),
        "dice_per_click": [round(dice(m, target), 4) for m in result.masks[: len(secs)]],
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--json", type=Path, default=None, help="also write the JSON here")
    parser.add_argument("--method", choices=["growcut", "random_walker", "both"], default="both")
    parser.add_argument("--clicks", type=int, default=5)
    args = parser.parse_args(argv)

    image, target = phantom()
    methods = ["growcut", "random_walker"] if args.method == "both" else [args.method]
    # warm up imports and caches outside the measurement
    measure(methods[0], 1, image[:64, :64, :64].copy(), _tiny())
    runs = [measure(m, args.clicks, image, target) for m in methods]
    out = {
        "benchmark": "classic engine seconds per click, 128^3 ROI",
        "volume_shape": list(image.shape),
        "clicks": args.clicks,
        "machine": {"cpus": os.cpu_count(), "python": sys.version.split()[0], "platform": platform.platform()},
        "time": time.strftime("%Y-%m-%d %H:%M:%S"),
        "runs": runs,
    }
    emit_json(out, args.json)
    return 0


def _tiny() -> np.ndarray:
    t = np.zeros((64, 64, 64), dtype=bool)
    t[28:36, 28:36, 28:36] = True
    return t


if __name__ == "__main__":
    raise SystemExit(main())
