"""Whether a walk should go on past its cross views' extent when the model is sure: replayed on a trace.

    python benchmarks/past_cross_views.py --trace runs/stop/trace_s22_hn.json [--trace ...] --json OUT.json

The cross views (`engines/slice2d/extent.py`) bound a new object's walk to the extent the two slices across its
first mask show. They keep head-and-neck CT walks from running past organ ends, but where a cross view holds
only part of a long object (a vena cava, a back muscle) they cut the walk short. This replays slice2d's
stopping-rule traces (`benchmarks/stopping_rules.py --engines slice2d --trace ...`: training-split cases only,
an exact box on each target's largest slice, every stopping rule off) three ways per target: the engine's
stopping rules alone; bounded by the cross views; and bounded by them except that a slice past the bound is
still taken while it passes a stricter test (mask stability >= S and predicted IoU >= I, on a grid). The cross
views are segmented as the engine does (its click rule through the deepest point of the prompted slice's true
mask, longer boxes where a box cut the object), with the weights the engine loads by default.
Score: per dataset the mean 3D Dice, and their mean.
"""
from __future__ import annotations

import argparse
import itertools
import json
import platform
from pathlib import Path
from typing import Any

import numpy as np

from cross_view_margin import traced_spans  # type: ignore[import-not-found]
from stopping_rules import _replay_one  # type: ignore[import-not-found]

STABILITY = (0.8, 0.85, 0.9, 0.93, 0.95, 0.97)
IOU = (0.0, 0.7, 0.8, 0.85, 0.9)


def replay_past(r: dict[str, Any], rule: dict[str, float], span: tuple[int, int] | None,
                past: tuple[float, float] | None) -> float:
    """One target's 3D Dice with its directions bounded by `span` (None: unbounded); past the bound a slice is
    still taken while its stability and predicted IoU reach `past` (None: never)."""
    if span is None:
        return _replay_one(r, rule)
    lo, hi = span
    kept = []
    for step in (-1, 1):
        for s in sorted((s for s in r["slices"] if (s["k"] - r["anchor"]) * step > 0), key=lambda s: s["k"] * step):
            if lo <= s["k"] <= hi:
                kept.append(s)
            elif past is not None and s["stability"] >= past[0] and s["iou"] >= past[1]:
                kept.append(s)
            else:
                break
    anchor = [s for s in r["slices"] if s["k"] == r["anchor"]]
    return _replay_one(dict(r, slices=anchor + kept), rule)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--trace", type=Path, action="append", required=True)
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args()

    import torch

    torch.set_num_threads(1)
    records = [r for path in args.trace for r in json.loads(path.read_text()) if r["engine"] == "slice2d"]
    grid = [None, *itertools.product(STABILITY, IOU)]
    rows = []
    for r, span, row, rule in traced_spans(records):
        row["views"] = {("off" if p is None else f"s{p[0]}_i{p[1]}"): replay_past(r, rule, span, p) for p in grid}
        rows.append(row)
        print(json.dumps({k: v for k, v in row.items() if k != "views"} | {"views_off": row["views"]["off"]}), flush=True)
    datasets = sorted({x["dataset"] for x in rows})

    def score(pick: Any) -> dict[str, float]:
        means = {ds: float(np.mean([pick(x) for x in rows if x["dataset"] == ds])) for ds in datasets}
        return {**{k: round(v, 4) for k, v in means.items()}, "mean": round(float(np.mean(list(means.values()))), 4)}

    variants = {"rules": score(lambda x: x["rules"])}
    for name in rows[0]["views"]:
        variants[f"views_{name}"] = score(lambda x, n=name: x["views"][n])
    ranked = sorted(variants.items(), key=lambda kv: -kv[1]["mean"])
    cpu = next((line.split(":", 1)[1].strip() for line in open("/proc/cpuinfo") if line.startswith("model name")), platform.processor())
    out = {"benchmark": "past_cross_views", "cpu": cpu, "traces": [str(p) for p in args.trace], "rule": rule,
           "targets": len(rows), "variants": dict(ranked), "per_target": rows}
    print(json.dumps(dict(ranked[:8]), indent=1))
    print("rules alone", variants["rules"], "views (engine today)", variants["views_off"])
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(out, indent=1))


if __name__ == "__main__":
    main()
