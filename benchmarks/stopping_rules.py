"""Choosing the slice engines' stopping rule: trace propagation without one, then replay candidate rules.

    python benchmarks/stopping_rules.py --json runs/bench/stopping_rules.json
    python benchmarks/stopping_rules.py --trace runs/stop/trace.json --json OUT   # replay a saved trace only

Tuning data: cases of the *training* splits only, never the held-out cases docs/benchmarks.md reports on:
head-and-neck CT (hn_ct_openkbp pt010, pt020, pt030, pt040, pt050; the held-out split is the last 12 ids) and
left-atrium MRI (5 la_mri cases after the first 10, which the sam3d validation split holds out). A rule is
ranked by the mean over datasets of each dataset's mean Dice, so 26 CT organs do not outvote 5 MRI atria
(a rule chosen on CT alone cut the atrium walks short). Per target (every label of a case): an exact 2D box
on its largest slice along the acquisition axis (the `slice-box` protocol's first prompt), then each engine
propagates with every stopping rule off (`stop_iou` 0, `min_stability` 0, `intensity_agreement` 0, no leak
ratio; a direction ends only on an empty mask or 8 slices past the organ's last slice, so the trace stays
short). Each visited slice records the predicted IoU, the mask's stability (SAM's score: logit > 1 over
logit > -1), its area, its overlap with the truth, and the share of its pixels in the prompted slice's
intensity band.

A rule only truncates a direction, so replaying it on the trace gives the 3D Dice that rule would have
scored (up to memory3d's bank, which would hold fewer slices from the other direction). The JSON holds,
per engine, the Dice of the current defaults and of every rule on a grid, best first.
"""
from __future__ import annotations

import argparse
import itertools
import json
import platform
import time
from pathlib import Path
from typing import Any

import numpy as np

REPO = Path(__file__).resolve().parents[1]
DATA = REPO.parent / "shared" / "data"
CASES = ",".join([*(f"hn_ct_openkbp/openkbp_pt0{i}0" for i in range(1, 6)),
                  *(f"la_mri/la_{c}" for c in ("4498CA6DZWELOXCBRYRF", "57SGAJMLCTCH92QUA0EE", "5QFK2PMHNX7UALK52NNA",
                                                "78NJ5YFQF72BGC8RO51C", "8ZG2TRZ81MAWHZPN9KKG"))])
PAST_END = 8
# the engines' defaults before the stability rule (2026-12-05), replayed for comparison
PREVIOUS = {"slice2d": {"stop_iou": 0.55, "min_stability": 0.0, "intensity_agreement": 0.6, "stability_grace": 0},
            "memory3d": {"stop_iou": 0.35, "min_stability": 0.0, "intensity_agreement": 0.6, "stability_grace": 0}}
GRID = {"stop_iou": [0.0, 0.2, 0.35, 0.45, 0.55, 0.6], "min_stability": [0.0, 0.6, 0.65, 0.7, 0.75, 0.8, 0.85],
        "intensity_agreement": [0.0, 0.4, 0.6, 0.7, 0.75, 0.8], "stability_grace": [0, 1, 2, 3]}


def trace(engines: list[str], cases: list[str], axis_override: int | None) -> list[dict[str, Any]]:
    import torch

    from voxsam.engines import create_engine
    from voxsam.engines.base import acquisition_axis
    from voxsam.engines.slice2d.extent import intensity_band
    from voxsam.io import read_volume
    from voxsam.prompts import Box, PromptSet, SliceRef

    torch.set_num_threads(1)
    off = dict(stop_iou=0.0, min_stability=0.0, intensity_agreement=0.0, max_area_ratio=1e6, min_area_px=1, cache_mb=2000, cross_views=False,
               slice_step=1)  # every slice decided: a replayed rule may stop on any of them
    built = {name: create_engine(name, **off) for name in engines}
    records = []
    for item in cases:
        dataset, case = item.split("/")
        folder = DATA / dataset
        path = folder / "imagesTr" / f"{case}_0000.nii.gz"
        image = read_volume(path if path.is_file() else folder / "imagesTr" / f"{case}.nii.gz")
        labels = np.asarray(read_volume(folder / "labelsTr" / f"{case}.nii.gz").array).astype(int)
        axis = acquisition_axis(image.affine) if axis_override is None else axis_override
        prepared = built[engines[0]].prepare(image)  # one embedding cache for every engine (same encoder)
        view = prepared.view(axis)
        other = tuple(a for a in range(3) if a != axis)
        for label in sorted(set(np.unique(labels).tolist()) - {0}):
            truth = labels == label
            areas = truth.sum(axis=other)
            hit = np.flatnonzero(areas)
            k0 = int(np.argmax(areas))
            plane = np.take(truth, k0, axis=axis)
            u, v = (np.flatnonzero(plane.any(axis=a)) for a in (1, 0))
            lo, hi = [0.0] * 3, [0.0] * 3
            lo[other[0]], hi[other[0]], lo[other[1]], hi[other[1]] = float(u[0]), float(u[-1]), float(v[0]), float(v[-1])
            lo[axis] = hi[axis] = float(k0)
            prompts = PromptSet(boxes=(Box((lo[0], lo[1], lo[2]), (hi[0], hi[1], hi[2]), SliceRef(axis, k0)),))
            for name, engine in built.items():
                seen: list[tuple[int, float, float, np.ndarray]] = []
                segment_with = engine.slices.segment_with

                def spy(prep: Any, ax: int, k: int, *args: Any, **kwargs: Any) -> Any:
                    result = segment_with(prep, ax, k, *args, **kwargs)
                    if k < hit[0] - PAST_END or k > hit[-1] + PAST_END:
                        result.mask = np.zeros_like(result.mask)  # the trace ends here
                    else:
                        seen.append((k, result.iou, result.stability, result.mask))
                    return result

                engine.slices.segment_with = spy  # type: ignore[method-assign]
                start = time.perf_counter()
                steps = engine.propagate(prepared, prompts, None)
                try:
                    while True:
                        next(steps)
                except StopIteration as done:
                    predicted = done.value.mask
                finally:
                    engine.slices.segment_with = segment_with  # type: ignore[method-assign]
                band = intensity_band(prepared.display(axis, k0), view.take(predicted, k0))
                slices = []
                for k, iou, stability, mask in seen:
                    pixels = prepared.display(axis, k)[mask]
                    agree = float(np.mean((pixels >= band[0]) & (pixels <= band[1]))) if mask.any() else 0.0
                    slices.append({"k": int(k), "iou": float(iou), "stability": float(stability), "area": int(mask.sum()),
                                   "overlap": int((mask & view.take(truth, k)).sum()), "agree": agree})
                records.append({"engine": name, "dataset": dataset, "case": case, "label": int(label), "axis": axis, "anchor": k0,
                                "truth_voxels": int(truth.sum()), "slices": slices, "seconds": time.perf_counter() - start})
                print(f"{name} {case} label {label}: {len(slices)} slices traced", flush=True)
    return records


def replay(records: list[dict[str, Any]], rule: dict[str, float]) -> float:
    """Mean over datasets of the mean 3D Dice of their traced targets had propagation stopped by `rule`."""
    by_dataset = per_dataset(records, rule)
    return float(np.mean(list(by_dataset.values())))


def per_dataset(records: list[dict[str, Any]], rule: dict[str, float]) -> dict[str, float]:
    """Each dataset's mean 3D Dice had propagation stopped by `rule` (the slice2d engine's test)."""
    dices: dict[str, list[float]] = {}
    for r in records:
        dices.setdefault(r.get("dataset", "hn_ct_openkbp"), []).append(_replay_one(r, rule))
    return {name: float(np.mean(d)) for name, d in dices.items()}


def _replay_one(r: dict[str, Any], rule: dict[str, float]) -> float:
    """One target's 3D Dice: each direction truncated at the first slice the rule rejects."""
    by_k = {s["k"]: s for s in r["slices"]}
    anchor = by_k[r["anchor"]]
    overlap, area = anchor["overlap"], anchor["area"]
    for step in (-1, 1):
        prev, k, decided = anchor, r["anchor"] + step, 0
        while k in by_k:
            s = by_k[k]
            leak = s["area"] > rule.get("max_area_ratio", 2.5) * max(prev["area"], 64) or s["agree"] < rule["intensity_agreement"]
            judged = rule["min_stability"] > 0 and decided >= rule.get("stability_grace", 0)
            unsure = s["iou"] < rule["stop_iou"] or (judged and s["stability"] < rule["min_stability"])
            if s["area"] < rule.get("min_area_px", 8) or unsure or leak:
                break
            overlap, area, prev, k, decided = overlap + s["overlap"], area + s["area"], s, k + step, decided + 1
    return 2 * overlap / max(1, area + r["truth_voxels"])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--engines", default="memory3d,slice2d")
    parser.add_argument("--cases", default=CASES, help="DATASET/CASE ids of training splits only (never held-out cases)")
    parser.add_argument("--axis", type=int, default=None, help="slice axis (default: each volume's acquisition axis)")
    parser.add_argument("--trace", type=Path, default=None,
                        help="a saved trace: replayed; cases it lacks are traced and added (created when missing)")
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args()
    engines = args.engines.split(",")
    cases = args.cases.split(",")
    records = json.loads(args.trace.read_text()) if args.trace is not None and args.trace.is_file() else []
    have = {(r["engine"], f'{r.get("dataset", "hn_ct_openkbp")}/{r["case"]}') for r in records}
    for name in engines:
        missing = [c for c in cases if (name, c) not in have]
        if missing:
            records += trace([name], missing, args.axis)
            if args.trace is not None:
                args.trace.parent.mkdir(parents=True, exist_ok=True)
                args.trace.write_text(json.dumps(records))
    records = [r for r in records if f'{r.get("dataset", "hn_ct_openkbp")}/{r["case"]}' in cases]
    from voxsam.engines import engine_spec

    cpu = next((line.split(":", 1)[1].strip() for line in open("/proc/cpuinfo") if line.startswith("model name")), platform.processor())
    out: dict[str, Any] = {"benchmark": "stopping_rules", "cpu": cpu, "cases": cases,
                           "score": "mean over datasets of each dataset's mean 3D Dice", "engines": {}}
    for name in engines:
        mine = [r for r in records if r["engine"] == name]
        defaults = engine_spec(name).options()
        current = {key: float(getattr(defaults, key)) for key in GRID}
        grid = [dict(zip(GRID, values)) for values in itertools.product(*GRID.values())]
        scored = sorted(((replay(mine, rule), rule) for rule in grid), key=lambda t: -t[0])
        out["engines"][name] = {
            "targets": len(mine),
            "defaults": {"rule": current, "dice": replay(mine, current), "per_dataset": per_dataset(mine, current)},
            "previous_defaults": {"rule": PREVIOUS[name], "dice": replay(mine, PREVIOUS[name])} if name in PREVIOUS else None,
            "no_rule": replay(mine, {"stop_iou": 0.0, "min_stability": 0.0, "intensity_agreement": 0.0, "max_area_ratio": 1e9}),
            "best": [{"dice": d, "rule": rule, "per_dataset": per_dataset(mine, rule)} for d, rule in scored[:10]],
        }
        print(name, json.dumps(out["engines"][name]["defaults"]), "best", json.dumps(out["engines"][name]["best"][0]))
    text = json.dumps(out, indent=2)
    if args.json is not None:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(text + "\n")
    else:
        print(text)


if __name__ == "__main__":
    main()
