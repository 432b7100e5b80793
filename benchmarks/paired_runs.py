"""Is run A better than run B on the same targets? Paired differences of Dice with a bootstrap interval (JSON).

    python benchmarks/paired_runs.py runs/val/s14b_split_slice2d runs/val/split_classic --click 1

A RUN folder is what `voxsam eval --out` writes (`results.csv`), or a folder of such folders (the layout of
`benchmarks/validation_split.sh`). Targets are matched by (dataset, case, label); only targets in both runs count.
The interval resamples targets with replacement (`--resamples`, fixed seed), so a difference whose interval
holds 0 is one the targets do not settle. `--worst N` lists the N targets where A loses most.
"""
from __future__ import annotations

import argparse
import csv
import json
from pathlib import Path

import numpy as np

Key = tuple[str, str, str]


def dice_by_target(run: Path, click: int) -> dict[Key, tuple[float, str]]:
    """(dataset, case, label) -> (Dice, label name) at `click` from every results.csv under `run`."""
    files = sorted(run.rglob("results.csv"))
    if not files:
        raise SystemExit(f"{run}: no results.csv (run voxsam eval first)")
    out: dict[Key, tuple[float, str]] = {}
    for f in files:
        with f.open(newline="") as fh:
            for row in csv.DictReader(fh):
                if int(row["click"]) == click and row["dice"] not in ("", "nan"):
                    out[(row["dataset"], row["case"], row["label"])] = (float(row["dice"]), row["label_name"])
    return out


def paired(a: dict[Key, tuple[float, str]], b: dict[Key, tuple[float, str]], resamples: int, seed: int = 0) -> dict:
    keys = sorted(set(a) & set(b))
    if not keys:
        raise SystemExit("the two runs share no target")
    diff = np.array([a[k][0] - b[k][0] for k in keys])
    rng = np.random.default_rng(seed)
    means = diff[rng.integers(0, len(diff), size=(resamples, len(diff)))].mean(axis=1)
    return {
        "targets": len(keys),
        "mean_a": round(float(np.mean([a[k][0] for k in keys])), 4),
        "mean_b": round(float(np.mean([b[k][0] for k in keys])), 4),
        "difference": round(float(diff.mean()), 4),
        "interval_95": [round(float(np.percentile(means, 2.5)), 4), round(float(np.percentile(means, 97.5)), 4)],
        "a_better": int((diff > 0).sum()),
        "b_better": int((diff < 0).sum()),
        "_order": [keys[i] for i in np.argsort(diff)],
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("a", type=Path)
    ap.add_argument("b", type=Path)
    ap.add_argument("--click", type=int, default=1, help="interaction count to compare (default 1)")
    ap.add_argument("--resamples", type=int, default=10000)
    ap.add_argument("--worst", type=int, default=0, help="also list the N targets where A loses most")
    args = ap.parse_args()
    a, b = dice_by_target(args.a, args.click), dice_by_target(args.b, args.click)
    result = paired(a, b, args.resamples)
    order = result.pop("_order")
    result = {"a": str(args.a), "b": str(args.b), "click": args.click, **result}
    if args.worst:
        result["a_loses_most"] = [
            {"dataset": k[0], "case": k[1], "label": a[k][1], "a": a[k][0], "b": b[k][0]} for k in order[: args.worst]
        ]
    print(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
