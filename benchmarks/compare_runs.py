"""A Markdown table of mean Dice per dataset and click count for several `voxsam eval` runs side by side.

    python benchmarks/compare_runs.py sam3d=runs/val/sam3d_center classic=runs/val/classic_center

Each RUN folder holds one sub-folder per dataset with the `summary.json` that `voxsam eval` writes (the
layout `benchmarks/validation_split.sh` produces), or is itself such a folder. Rows: dataset x engine;
columns: Dice (mean ± std over targets) at each click count, then the number of targets. The pooled row
("all") weights every target equally.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path


def _summaries(run: Path) -> list[dict]:
    files = [run / "summary.json"] if (run / "summary.json").is_file() else sorted(run.glob("*/summary.json"))
    if not files:
        raise SystemExit(f"{run}: no summary.json (run voxsam eval / benchmarks/validation_split.sh first)")
    return [json.loads(f.read_text()) for f in files]


def collect(run: Path) -> tuple[dict[str, dict[int, dict]], list[int]]:
    """dataset -> click -> dice stats (the 'all labels' groups), and the click counts."""
    table: dict[str, dict[int, dict]] = {}
    clicks: set[int] = set()
    for s in _summaries(run):
        for g in s["groups"]:
            if g["label"] == "all" and g["dataset"] != "overall":
                table.setdefault(g["dataset"], {})[int(g["click"])] = g["dice"]
                clicks.add(int(g["click"]))
    return table, sorted(clicks)


def pooled(table: dict[str, dict[int, dict]], click: int) -> tuple[float, int]:
    total = n = 0
    for per_click in table.values():
        d = per_click.get(click)
        if d:
            total += d["mean"] * d["n"]
            n += d["n"]
    return (total / n if n else float("nan")), n


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("runs", nargs="+", help="NAME=FOLDER")
    args = ap.parse_args(argv)
    runs = []
    for spec in args.runs:
        name, _, folder = spec.partition("=")
        if not folder:
            raise SystemExit(f"{spec!r}: expected NAME=FOLDER")
        runs.append((name, *collect(Path(folder))))
    clicks = sorted({c for _, _, cs in runs for c in cs})
    datasets = sorted({d for _, t, _ in runs for d in t})
    head = "| dataset | engine | " + " | ".join(f"Dice@{c}" for c in clicks) + " | targets |"
    lines = [head, "|" + "---|" * 2 + "---:|" * (len(clicks) + 1)]
    for ds in datasets + ["all"]:
        for name, table, _ in runs:
            cells, n = [], 0
            for c in clicks:
                if ds == "all":
                    mean, n = pooled(table, c)
                    cells.append(f"{mean:.3f}")
                else:
                    d = table.get(ds, {}).get(c)
                    cells.append(f"{d['mean']:.3f} ± {d['std']:.3f}" if d else "–")
                    n = d["n"] if d else n
            lines.append(f"| {ds} | {name} | " + " | ".join(cells) + f" | {n} |")
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
