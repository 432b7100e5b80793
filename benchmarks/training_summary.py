"""What a training run has done so far, from its `metrics.jsonl`: steps, samples, hours, throughput, and
the training loss and the family's metrics (sam3d: Dice of the first and last interaction round) early and
late in the run.

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


# what the loop logs for every family; the other keys of a line are the family's metrics
_LOOP_KEYS = {"step", "loss", "grad_norm", "lr", "seconds", "samples_per_s", "elapsed_s", "world"}
_LABELS = {"loss": "loss", "dice_first": "Dice, round 1", "dice_last": "Dice, last round"}


def _metric_keys(rows: list[dict]) -> list[str]:
    return ["loss", *[k for k in rows[-1] if k not in _LOOP_KEYS]]


def _window_means(rows: list[dict], keys: list[str]) -> dict[str, float]:
    return {key: round(statistics.fmean(r[key] for r in rows if key in r), 4) for key in keys}


def summarise(rows: list[dict], window: int) -> dict:
    samples = [r["samples_per_s"] * r["seconds"] for r in rows]
    keys = _metric_keys(rows)
    seconds = sum(r["seconds"] for r in rows)
    return {
        "steps": rows[-1]["step"],
        "logged_steps": len(rows),
        "samples": round(sum(samples)),
        "train_hours": round(seconds / 3600, 2),
        "median_samples_per_s": round(statistics.median(r["samples_per_s"] for r in rows), 3),
        "lr_now": rows[-1]["lr"],
        "window": window,
        "first_window": _window_means(rows[:window], keys),
        "last_window": _window_means(rows[-window:], keys),
    }


def markdown(s: dict) -> str:
    lines = [
        f"- steps: {s['steps']} ({s['samples']} training samples), {s['train_hours']} h of training steps, "
        f"median {s['median_samples_per_s']} samples/s; learning rate now {s['lr_now']:.3g}",
        f"| training steps (mean of {s['window']}) | {' | '.join(_LABELS.get(k, k) for k in s['last_window'])} |",
        "|---|" + "---:|" * len(s["last_window"]),
    ]
    for name in ("first_window", "last_window"):
        w = s[name]
        label = "first" if name == "first_window" else "last"
        lines.append(f"| {label} | {' | '.join(f'{v:.3f}' for v in w.values())} |")
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
