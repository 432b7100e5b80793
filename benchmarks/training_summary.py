"""What a training run has done so far, from its `metrics.jsonl`: steps, samples, hours, throughput, and
the training loss / Dice (first and last interaction round) early and late in the run.

    python benchmarks/training_summary.py runs/sam3d_small [--window 200] [--json OUT]

A resume repeats the steps after its checkpoint, so a later line replaces an earlier one with the same
step. Hours are the sum of per-step wall times (data loading included; start-up and cache building not).
"""
from __future__ import annotations

import argparse
import json
import statistics
import sys
from pathlib import Path


def load_steps(run: Path) -> list[dict]:
    """One record per step, the latest logged one, sorted by step."""
    path = run / "metrics.jsonl"
    if not path.is_file():
        raise SystemExit(f"{path}: not found (is {run} a `voxsam train` output folder?)")
    by_step: dict[int, dict] = {}
    for line in path.read_text().splitlines():
        if line.strip():
            row = json.loads(line)
            by_step[int(row["step"])] = row
    if not by_step:
        raise SystemExit(f"{path}: no steps logged yet")
    return [by_step[s] for s in sorted(by_step)]


def _window_means(rows: list[dict]) -> dict[str, float]:
    return {key: round(statistics.fmean(r[key] for r in rows), 4) for key in ("loss", "dice_first", "dice_last")}


def summarise(rows: list[dict], window: int) -> dict:
    samples = [r["samples_per_s"] * r["seconds"] for r in rows]
    seconds = sum(r["seconds"] for r in rows)
    return {
        "steps": rows[-1]["step"],
        "logged_steps": len(rows),
        "samples": round(sum(samples)),
        "train_hours": round(seconds / 3600, 2),
        "median_samples_per_s": round(statistics.median(r["samples_per_s"] for r in rows), 3),
        "lr_now": rows[-1]["lr"],
        "window": window,
        "first_window": _window_means(rows[:window]),
        "last_window": _window_means(rows[-window:]),
    }


def markdown(s: dict) -> str:
    lines = [
        f"- steps: {s['steps']} ({s['samples']} training samples), {s['train_hours']} h of training steps, "
        f"median {s['median_samples_per_s']} samples/s; learning rate now {s['lr_now']:.3g}",
        f"| training steps (mean of {s['window']}) | loss | Dice, round 1 | Dice, last round |",
        "|---|---:|---:|---:|",
    ]
    for name in ("first_window", "last_window"):
        w = s[name]
        label = "first" if name == "first_window" else "last"
        lines.append(f"| {label} | {w['loss']:.3f} | {w['dice_first']:.3f} | {w['dice_last']:.3f} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("run", type=Path, help="a `voxsam train` output folder (holds metrics.jsonl)")
    ap.add_argument("--window", type=int, default=200, help="steps averaged at the start and the end")
    ap.add_argument("--json", type=Path, help="also write the summary here")
    args = ap.parse_args(argv)
    summary = summarise(load_steps(args.run), max(1, args.window))
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(summary, indent=2) + "\n")
    print(markdown(summary))
    return 0


if __name__ == "__main__":
    sys.exit(main())
