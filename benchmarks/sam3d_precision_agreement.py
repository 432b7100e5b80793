"""int8 vs float32 masks of a sam3d checkpoint on real volumes: does the reduced-precision encoder agree?

    python benchmarks/sam3d_precision_agreement.py IMAGE::LABEL [IMAGE::LABEL ...] [--checkpoint PATH]
        [--clicks 5] [--json OUT]

For every foreground label of every pair, the `center` protocol runs `--clicks` clicks with the float32
encoder; the same clicks are replayed with `precision="int8"`, and the Dice between the two masks after each
click is recorded (agreement, not accuracy). Prints and writes JSON: per target the Dice after each click,
and the minimum and mean over all. Without --checkpoint the bundled weights are used.
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np


def agreement(a: np.ndarray, b: np.ndarray) -> float:
    """Dice of two boolean masks; 1.0 when both are empty."""
    total = int(a.sum()) + int(b.sum())
    return 1.0 if total == 0 else 2.0 * float((a & b).sum()) / total


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("pairs", nargs="+", help="IMAGE::LABEL")
    parser.add_argument("--checkpoint", type=Path, default=None)
    parser.add_argument("--trust-checkpoint", action="store_true")
    parser.add_argument("--clicks", type=int, default=5)
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args()

    from voxsam.engines.sam3d import Sam3DEngine
    from voxsam.evaluation.protocols import center
    from voxsam.io import read_volume
    from voxsam.session import Session

    engines = {p: Sam3DEngine(checkpoint=args.checkpoint, trust_checkpoint=args.trust_checkpoint, precision=p)
               for p in ("float32", "int8")}
    targets = []
    for pair in args.pairs:
        image_path, label_path = pair.split("::")
        volume, labels = read_volume(image_path), read_volume(label_path).array
        for value in (int(v) for v in np.unique(labels) if v != 0):
            target = labels == value
            fp32 = center(Session(volume, engines["float32"]), target, args.clicks)
            replay = Session(volume, engines["int8"])
            dices = []
            for prompt, mask in zip(fp32.prompts, fp32.masks):
                if prompt is None:  # the float32 run stopped early (mask == target)
                    break
                ijk = tuple(float(v) for v in prompt["ijk"])
                dices.append(round(agreement(mask, replay.add_point(ijk, positive=prompt["positive"]) > 0), 4))
            targets.append({"image": Path(image_path).name, "label": value, "dice_int8_vs_fp32": dices})
            print(targets[-1], flush=True)
    every = [d for t in targets for d in t["dice_int8_vs_fp32"]]
    report = {"checkpoint": str(args.checkpoint or "bundled"), "clicks": args.clicks, "targets": targets,
              "min_dice": min(every), "mean_dice": round(float(np.mean(every)), 4), "masks_compared": len(every)}
    print(json.dumps({k: v for k, v in report.items() if k != "targets"}, indent=2))
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(report, indent=2) + "\n")


if __name__ == "__main__":
    main()
