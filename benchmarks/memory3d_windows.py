"""memory3d on held-out windows: the same propagation the engine runs, on cached runs of consecutive slices of
the held-out head-and-neck CT cases (never trained on), for several weight files at once.

For each window (a run of 12 consecutive slices of one organ, possibly running past its ends): the slice
where the organ is largest gets its exact bounding box; the model decodes it, then walks both ways, each
slice conditioned on the memory bank and prompted with the previous slice's box grown by 4 px, a direction
ending at an empty prediction (as the engine). Reported per model: mean and std over windows of the
window's Dice (all its slices, including those beyond the organ), and of the propagated slices alone.

    python benchmarks/memory3d_windows.py slice2d runs/m3d_full/model.pt runs/m3d_none/model.pt ...

`slice2d` stands for the untrained memory model on slice2d's bundled decoder: the memory attention's
output is zero, so it propagates exactly as the slice2d engine with `propagation_prompt=box`. The cache
(cache/slice2d, shared with training) is filled on the first run (~0.5-2 s per slice on 2 cores).
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

REPO = Path(__file__).resolve().parents[1]
VALIDATION = ["openkbp_pt055", "openkbp_pt057", "openkbp_pt058", "openkbp_pt059", "openkbp_pt060", "openkbp_pt061",
              "openkbp_pt062", "openkbp_pt064", "openkbp_pt065", "openkbp_pt066", "openkbp_pt067", "openkbp_pt068"]


def windows(data: Path, cache: Path) -> list[Any]:
    from voxsam.models.sam2d import LITEMEDSAM, load_litemedsam
    from voxsam.training.config import SourceSection
    from voxsam.training.data import list_cases
    from voxsam.training.memory3d_data import load_windows, make_window_plan
    from voxsam.training.slice2d_data import build_cache, survey_case

    src = SourceSection(name="hn_ct_val", path=data.resolve(), weight=1.0)
    cases = [c for c in list_cases(src) if c.case_id in VALIDATION]
    surveys = [survey_case(c, cache) for c in cases]
    items = make_window_plan(surveys, {"hn_ct_val": 1.0}, 600, 12, 1, 3, 20, 1)
    folders, problems = build_cache(items, cache, f"litemedsam_{LITEMEDSAM.sha256[:12]}", lambda: load_litemedsam().float().eval())
    if problems:
        print(f"skipped: {problems}", file=sys.stderr)
    return load_windows(items, folders)["hn_ct_val"]


def sample_of(window: Any) -> dict[str, Any]:
    from voxsam.engines.slice2d.slices import SliceInput
    from voxsam.training.slice2d_prompts import engine_box, to_grid

    truths = [cs.masks()[1] for cs in window.slices]
    p = int(np.argmax([t.sum() for t in truths]))
    cs = window.slices[p]
    return {"emb": np.stack([np.load(c.emb_path) for c in window.slices]),
            "target": np.stack([to_grid(t, c.resized) for t, c in zip(truths, window.slices)]),
            "resized": cs.resized, "prompted": p, "first": window.first,
            "box": engine_box(truths[p], SliceInput(cs.shape, cs.resized)).astype(np.float32), "points": None, "labels": None}


def load(name: str) -> Any:
    from voxsam.models.memory3d import build_memory3d, load_memory3d
    from voxsam.models.sam2d import load_litemedsam

    if name == "slice2d":
        return build_memory3d("litemedsam_mem", sam2d=load_litemedsam(), decoder_weights="bundled", memory_pool=4)
    return load_memory3d(name)


def dice(pred: np.ndarray, truth: np.ndarray) -> float:
    total = pred.sum() + truth.sum()
    return 1.0 if total == 0 else float(2 * (pred & truth).sum() / total)


def main() -> None:
    import torch

    from voxsam.training.memory3d_config import Memory3DTrainConfig
    from voxsam.training.memory3d_loss import window_loss

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("models", nargs="+", help="'slice2d' and/or memory3d weight files")
    parser.add_argument("--data", type=Path, default=REPO.parent / "shared" / "data" / "hn_ct_openkbp")
    parser.add_argument("--cache", type=Path, default=REPO / "cache" / "slice2d")
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    wins = windows(args.data, args.cache)
    samples = [sample_of(w) for w in wins]
    cfg = Memory3DTrainConfig.model_validate({"family": "memory3d", "data": {"sources": [{"name": "x", "path": str(args.data)}]},
                                              "window": {"srpp_weight": 0.0, "bd_weight": 0.0}})
    cpu = next((line.split(":", 1)[1].strip() for line in open("/proc/cpuinfo") if line.startswith("model name")), platform.processor())
    report: dict[str, Any] = {"benchmark": "memory3d_windows", "cpu": cpu, "threads": args.threads, "windows": len(samples),
                              "load_1min_before": os.getloadavg()[0], "models": {}}
    for name in args.models:
        model = load(name).float().eval()
        window_dice, prop_dice, slices, start = [], [], 0, time.perf_counter()
        with torch.inference_mode():
            for s in samples:
                preds: dict[int, Any] = {}
                window_loss(model, cfg, s, preds=preds, stop_on_empty=True)
                truth = s["target"] > 0
                full = np.zeros_like(truth)
                for j, m in preds.items():
                    full[j] = m.numpy()
                slices += len(preds)
                window_dice.append(dice(full, truth))
                others = [j for j in range(len(truth)) if j != s["prompted"]]
                prop_dice.append(dice(full[others], truth[others]))
        seconds = time.perf_counter() - start
        report["models"][name] = {"dice_window": round(float(np.mean(window_dice)), 4), "dice_window_std": round(float(np.std(window_dice)), 4),
                                  "dice_propagated": round(float(np.mean(prop_dice)), 4), "slices_decoded": slices,
                                  "ms_per_slice": round(1000 * seconds / max(slices, 1), 1)}
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
