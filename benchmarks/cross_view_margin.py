"""Choosing `cross_view_margin`: replay slice2d's stopping-rule trace with each new walk bounded by its cross views.

    python benchmarks/cross_view_margin.py --trace runs/stop/trace_s12_slice2d.json --json OUT.json

The trace (`benchmarks/stopping_rules.py --engines slice2d --trace ...`: training-split cases only, a box on each
target's largest slice, every stopping rule off) holds each visited slice's area, overlap with the truth and
stopping signals. Here the two slices across the prompted one are segmented from one click at the deepest point
of the prompted slice's *true* mask (what the engine does with its predicted mask), with the engine's click rule,
its longer boxes where a box cut the object lengthwise, and the bundled weights; each direction is then truncated by the engine's default stopping rules and by the cross-view
extent widened by 0-3 slices, and the 3D Dice is averaged per dataset.
"""
from __future__ import annotations

import argparse
import json
import platform
from pathlib import Path
from collections.abc import Iterator
from typing import Any

import numpy as np

from stopping_rules import DATA, _replay_one  # type: ignore[import-not-found]

MARGINS = (0, 1, 2, 3)


def engine_rule(options: Any) -> dict[str, float]:
    """The slice2d engine's stopping rule, as `stopping_rules._replay_one` takes it."""
    o = options
    return dict(stop_iou=o.stop_iou, min_stability=o.min_stability, stability_grace=o.stability_grace,
                intensity_agreement=o.intensity_agreement, max_area_ratio=o.max_area_ratio, min_area_px=o.min_area_px)


def traced_spans(records: list[dict[str, Any]]) -> Iterator[tuple[dict[str, Any], tuple[int, int] | None, dict[str, Any], dict[str, float]]]:
    """Each traced target with its cross views' span (segmented by the default slice2d engine from the prompted
    slice's true mask), the common fields of its result row and the engine's stopping rule."""
    from voxsam.engines.slice2d.engine import Slice2DEngine
    from voxsam.io.datasets import open_dataset

    engine = Slice2DEngine()
    rule = engine_rule(engine.options)
    loaded: dict[tuple[str, str], Any] = {}
    for r in records:
        key = (r["dataset"], r["case"])
        if key not in loaded:
            case = open_dataset(DATA / r["dataset"]).case(r["case"])
            image = case.load_image()
            loaded.clear()
            loaded[key] = (np.asarray(case.load_label(image).array), engine.prepare(image))
        labels, prepared = loaded[key]
        truth, axis, anchor = labels == r["label"], r["axis"], r["anchor"]
        span = engine._cross_extent(prepared, axis, anchor, np.take(truth, anchor, axis=axis))
        covered = np.flatnonzero(truth.any(axis=tuple(a for a in range(3) if a != axis)))
        row = {"dataset": r["dataset"], "case": r["case"], "label": r["label"], "truth_span": [int(covered[0]), int(covered[-1])],
               "cross_view_span": list(span) if span else None, "rules": _replay_one(r, rule)}
        yield r, span, row, rule


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--trace", type=Path, required=True)
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args()

    records = [r for r in json.loads(args.trace.read_text()) if r["engine"] == "slice2d"]
    rows = []
    for r, span, row, rule in traced_spans(records):
        anchor = r["anchor"]
        for margin in MARGINS:
            lo, hi = (span[0] - margin, span[1] + margin) if span else (-10**9, 10**9)
            bounded = dict(r, slices=[s for s in r["slices"] if lo <= s["k"] <= hi or s["k"] == anchor])
            row[f"rules+views_m{margin}"] = _replay_one(bounded, rule)
        rows.append(row)
        print(json.dumps(row), flush=True)
    variants = ["rules", *(f"rules+views_m{m}" for m in MARGINS)]
    summary = {ds: {v: round(float(np.mean([x[v] for x in rows if x["dataset"] == ds])), 4) for v in variants}
               for ds in sorted({x["dataset"] for x in rows})}
    cpu = next((line.split(":", 1)[1].strip() for line in open("/proc/cpuinfo") if line.startswith("model name")), platform.processor())
    out = {"benchmark": "cross_view_margin", "cpu": cpu, "trace": str(args.trace),
           "rule": rule, "mean_dice": summary, "targets": rows}
    print(json.dumps(summary, indent=1))
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(out, indent=1))


if __name__ == "__main__":
    main()
