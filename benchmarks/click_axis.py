"""Which slice axis answers a lone 3D click best: the acquisition axis, or the one the model rates highest?

    python benchmarks/click_axis.py --json runs/bench/click_axis.json

A lone 3D click starts slice2d's walk on the acquisition axis. The cross views segment the same click on the two
other axes anyway, and on a liver of the held-out split the sagittal mask was far better than the axial one
(docs/benchmarks.md, "Past the cross views, and a larger click box"). Before any rule walks along another axis,
this measures on *training-split* cases only (5 head-and-neck CT, 5 left-atrium MRI, 3 ACDC patients x 2 frames)
whether the predicted IoU can tell: per target, the `center` protocol's click (the truth's interior point), the
engine's click rule on the slice through it along each axis, and that slice mask's Dice with the truth on the
same slice, its predicted IoU, and the axis spacing. Printed (and written) as JSON: per dataset the mean 2D Dice
of the acquisition axis, of the axis with the best predicted IoU, and of the best axis in hindsight.
"""
from __future__ import annotations

import argparse
import json
import platform
from pathlib import Path
from typing import Any

import numpy as np

REPO = Path(__file__).resolve().parents[1]
DATA = REPO.parent / "shared" / "data"
CASES = {
    "hn_ct_openkbp": [f"openkbp_pt0{i}0" for i in range(1, 6)],
    "la_mri": ["la_4498CA6DZWELOXCBRYRF", "la_57SGAJMLCTCH92QUA0EE", "la_5QFK2PMHNX7UALK52NNA", "la_78NJ5YFQF72BGC8RO51C",
               "la_8ZG2TRZ81MAWHZPN9KKG"],
    "acdc_mri": [f"acdc_patient0{p}_frame0{f}" for p in (30, 39, 45) for f in (1, 2)],
}


def dice2(a: np.ndarray, b: np.ndarray) -> float:
    return float(2 * (a & b).sum() / max(1, int(a.sum() + b.sum())))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args()

    import torch

    from voxsam.engines.base import acquisition_axis
    from voxsam.engines.slice2d.engine import Slice2DEngine
    from voxsam.evaluation.targets import interior_point
    from voxsam.io.datasets import open_dataset

    torch.set_num_threads(1)
    engine = Slice2DEngine()
    one = np.ones(1, dtype=np.int64)
    rows: list[dict[str, Any]] = []
    for dataset, cases in CASES.items():
        for name in cases:
            case = open_dataset(DATA / dataset).case(name)
            image = case.load_image()
            labels = np.asarray(case.load_label(image).array).astype(int)
            prepared = engine.prepare(image)
            spacing = np.linalg.norm(np.asarray(image.affine, dtype=np.float64)[:3, :3], axis=0)
            acquired = acquisition_axis(image.affine)
            for label in sorted(set(np.unique(labels).tolist()) - {0}):
                truth = labels == label
                point = [int(v) for v in interior_point(truth, tuple(float(s) for s in spacing))]
                axes = []
                for axis in range(3):
                    view = prepared.view(axis)
                    rc = np.array([view.point_to_display(np.array(point, dtype=np.float64), prepared.shape)])
                    mask, _, iou = engine._from_clicks(prepared, axis, point[axis], rc, one)
                    axes.append({"axis": axis, "spacing_mm": float(spacing[axis]), "iou": float(iou),
                                 "dice": dice2(mask, view.to_display(np.take(truth, point[axis], axis=axis)))})
                rated = max(axes, key=lambda a: a["iou"])
                row = {"dataset": dataset, "case": name, "label": label, "acquisition_axis": acquired, "axes": axes,
                       "acquisition_dice": axes[acquired]["dice"], "rated_axis": rated["axis"], "rated_dice": rated["dice"],
                       "best_dice": max(a["dice"] for a in axes)}
                rows.append(row)
                print(json.dumps(row), flush=True)
    summary = {}
    for dataset in CASES:
        mine = [r for r in rows if r["dataset"] == dataset]
        summary[dataset] = {"targets": len(mine), **{k: round(float(np.mean([r[k] for r in mine])), 4)
                                                      for k in ("acquisition_dice", "rated_dice", "best_dice")},
                            "rated_not_acquisition": sum(r["rated_axis"] != r["acquisition_axis"] for r in mine)}
    from _report import emit_json  # type: ignore[import-not-found]

    cpu = next((line.split(":", 1)[1].strip() for line in open("/proc/cpuinfo") if line.startswith("model name")), platform.processor())
    emit_json({"benchmark": "click_axis", "cpu": cpu, "summary": summary, "per_target": rows}, args.json, indent=1)


if __name__ == "__main__":
    main()
