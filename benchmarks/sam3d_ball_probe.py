"""What one click gives on synthetic balls: a probe of a sam3d checkpoint's size and contrast behaviour.

    python benchmarks/sam3d_ball_probe.py [--checkpoint PATH] [--json OUT]

A 96³ block at 1.5 mm with Gaussian noise (sd 10) and one ball at its centre, bright on dark (300 on 100)
or dark on bright (100 on 300), radius 6, 10 or 14 voxels (9, 15, 21 mm); one positive click at the
centre. Prints and writes JSON: per case the Dice with the ball and the voxels of the mask and the ball.
Without --checkpoint the bundled weights are probed (the model card's "Limitations" quote this).
"""
from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
from _report import emit_json  # noqa: E402  (benchmarks/_report.py; scripts run from benchmarks/)


def ball_case(radius: int, inside: float, outside: float, size: int = 96, seed: int = 0):
    """(image, ball mask): a centred ball of `radius` voxels in a noisy block, both (size, size, size)."""
    rng = np.random.default_rng(seed)
    g = np.indices((size,) * 3, dtype=np.float32)
    ball = ((g - size // 2) ** 2).sum(0) <= radius**2
    image = np.where(ball, inside, outside) + rng.normal(0, 10, ball.shape)
    return image.astype(np.float32), ball


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--checkpoint", type=Path, default=None)
    parser.add_argument("--trust-checkpoint", action="store_true")
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args()

    from voxsam.engines.sam3d import Sam3DEngine
    from voxsam.io.volume import Volume
    from voxsam.session import Session

    engine = Sam3DEngine(checkpoint=args.checkpoint, trust_checkpoint=args.trust_checkpoint)
    cases = []
    for contrast, (inside, outside) in {"bright": (300.0, 100.0), "dark": (100.0, 300.0)}.items():
        for radius in (6, 10, 14):
            image, ball = ball_case(radius, inside, outside)
            volume = Volume(image, np.diag([1.5, 1.5, 1.5, 1.0]), modality="MR")
            centre = tuple(s // 2 for s in image.shape)
            mask = Session(volume, engine).add_point(centre) > 0
            dice = 2 * float((mask & ball).sum()) / float(mask.sum() + ball.sum())
            cases.append({"contrast": contrast, "radius_mm": radius * 1.5, "dice": round(dice, 3),
                          "mask_voxels": int(mask.sum()), "ball_voxels": int(ball.sum())})
    report = {"checkpoint": str(args.checkpoint or "bundled"), "cases": cases}
    emit_json(report, args.json)


if __name__ == "__main__":
    main()
