"""Training throughput of sam3d: samples per second of the full recipe on this machine.

    python benchmarks/train_throughput.py --json train_throughput.json [--preset small] [--steps 12]
    python benchmarks/train_throughput.py --config configs/sam3d_small.yaml --json OUT   # real data
    python benchmarks/train_throughput.py --config configs/sam3d_small.yaml --init src/voxsam/weights/sam3d_small.pt \
        [--keep-denormals] --json OUT                               # trained weights, as a continuing run

Without --config a procedural dataset is written to a temporary folder (four 160 x 160 x 120 volumes at
1.5 mm with ellipsoidal "organs", no ../shared needed). The run uses the project's training loop with
`optim.batch_size`, `interaction.rounds` and `run.threads` as given; the first `--warmup` steps (model
build, first allocations, data-cache fill) are left out of the mean. Prints and writes JSON: seconds per
step (mean, median), samples per second, peak RSS, and the settings.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np


def write_dataset(root: Path, cases: int = 4, seed: int = 0) -> Path:
    """An MSD folder of `cases` volumes with 4 labelled ellipsoids each (intensity per label + noise)."""
    import nibabel as nib

    rng = np.random.default_rng(seed)
    (root / "imagesTr").mkdir(parents=True)
    (root / "labelsTr").mkdir()
    shape = (160, 160, 120)
    g = np.indices(shape, dtype=np.float32)
    for i in range(cases):
        label = np.zeros(shape, np.uint8)
        for v in range(1, 5):
            c = rng.uniform(0.3, 0.7, 3) * np.array(shape)
            r = rng.uniform(8, 30, 3)
            label[sum(((g[a] - c[a]) / r[a]) ** 2 for a in range(3)) <= 1] = v
        image = 30 + 40 * label + rng.normal(0, 8, shape)
        aff = np.diag([1.5, 1.5, 1.5, 1.0])
        nib.save(nib.Nifti1Image(image.astype(np.float32), aff), str(root / "imagesTr" / f"case_{i:03d}.nii.gz"))
        nib.save(nib.Nifti1Image(label, aff), str(root / "labelsTr" / f"case_{i:03d}.nii.gz"))
    (root / "dataset.json").write_text(json.dumps({"name": "procedural", "modality": {"0": "MRI"}}))
    return root


def _cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--config", type=Path, help="a training YAML (default: procedural data, settings below)")
    ap.add_argument("--preset", default="small")
    ap.add_argument("--steps", type=int, default=12)
    ap.add_argument("--warmup", type=int, default=2)
    ap.add_argument("--batch-size", type=int, default=2)
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--num-workers", type=int, default=1)
    ap.add_argument("--init", type=Path, help="start from these weights (a trained model meets denormal floats)")
    ap.add_argument("--keep-denormals", action="store_true", help="run.flush_denormals=false (to measure their cost)")
    ap.add_argument("--json", type=Path)
    args = ap.parse_args(argv)

    import torch

    from voxsam.training.config import Sam3DTrainConfig
    from voxsam.training.load import build_config, load_config
    from voxsam.training.trainer import train

    with tempfile.TemporaryDirectory(prefix="voxsam_bench_train_") as tmp:
        tmp_path = Path(tmp)
        overrides = [f"run.out_dir={tmp_path / 'run'}", f"run.steps={args.steps}", "run.checkpoint_every=100000",
                     f"run.threads={args.threads}", f"run.num_workers={args.num_workers}",
                     f"optim.batch_size={args.batch_size}", f"interaction.rounds={args.rounds}"]
        if args.init:
            overrides.append(f"model.init={args.init.resolve()}")
        if args.keep_denormals:
            overrides.append("run.flush_denormals=false")
        if args.config:
            cfg = load_config(args.config, overrides)
        else:
            data = write_dataset(tmp_path / "data")
            raw = {"model": {"preset": args.preset},
                   "data": {"cache_dir": str(tmp_path / "cache"), "sources": [{"name": "procedural", "path": str(data)}]}}
            cfg = build_config(raw, overrides)
        if not isinstance(cfg, Sam3DTrainConfig):
            raise SystemExit(f"{args.config}: a {cfg.family} config; this benchmark measures the sam3d recipe")
        t0 = time.monotonic()
        train(cfg)
        wall = time.monotonic() - t0
        lines = [json.loads(x) for x in (Path(cfg.run.out_dir) / "metrics.jsonl").read_text().splitlines()]
    timed = [m["seconds"] for m in lines if m["step"] > args.warmup]
    samples_per_step = cfg.optim.batch_size * cfg.optim.accumulate
    result = {
        "benchmark": "train_throughput",
        "preset": cfg.model.preset,
        "data": str(args.config) if args.config else "procedural (4 cases, 160x160x120 at 1.5 mm)",
        "crop": cfg.data.crop_size,
        "batch_size": cfg.optim.batch_size,
        "accumulate": cfg.optim.accumulate,
        "rounds": cfg.interaction.rounds,
        "threads": args.threads,
        "num_workers": cfg.run.num_workers,
        "init": str(args.init) if args.init else None,
        "flush_denormals": cfg.run.flush_denormals,
        "steps_timed": len(timed),
        "seconds_per_step_mean": round(statistics.fmean(timed), 3),
        "seconds_per_step_median": round(statistics.median(timed), 3),
        "samples_per_s": round(samples_per_step / statistics.fmean(timed), 3),
        "wall_s_total": round(wall, 1),
        "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
        "torch": torch.__version__,
        "cpu": _cpu_name(),
        "cpu_count": os.cpu_count(),
        "load_avg_at_end": [round(x, 2) for x in os.getloadavg()],
    }
    text = json.dumps(result, indent=2)
    print(text)
    if args.json:
        args.json.write_text(text + "\n")
    return result


if __name__ == "__main__":
    sys.exit(0 if main() else 1)
