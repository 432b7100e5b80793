"""Ship trained weights: a run's model.pt -> a compact weights file (float16 storage by default), through
the model family's `load_weights` / `save_weights` (default sam3d: a voxsam sam3d file).

    python -m voxsam.training.export runs/sam3d_small/model.pt src/voxsam/weights/sam3d_small.pt [--family NAME]

float16 halves the file (the `small` preset: 36 MB -> 18 MB); the engine loads it back as float32. The
export reports the largest weight change and the Dice between float32 and float16 masks on a random input
so the rounding is known, not assumed.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any


def export_weights(src: str | Path, dest: str | Path, half: bool = True, extra: dict[str, Any] | None = None,
                   family: str = "sam3d") -> dict[str, Any]:
    """Write `src`'s weights to `dest` (atomically). Returns facts about the export (size, rounding)."""
    from voxsam.training.registry import get_family

    fam = get_family(family)
    model, meta = fam.load_weights(Path(src))
    info = {"source": str(src), **{k: v for k, v in meta.items() if isinstance(v, (int, float, str))}, **(extra or {})}
    fam.save_weights(model, Path(dest), extra=info, half=half)
    back, _ = fam.load_weights(Path(dest))
    ref, new = model.state_dict(), back.state_dict()
    max_change = max(float((ref[k].float() - new[k].float()).abs().max()) for k in ref)
    return {"dest": str(dest), "bytes": Path(dest).stat().st_size, "max_weight_change": max_change,
            **fam.export_check(model, back)}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description="Export trained weights for shipping (float16 storage).")
    ap.add_argument("src", type=Path)
    ap.add_argument("dest", type=Path)
    ap.add_argument("--float32", action="store_true", help="keep float32 storage")
    ap.add_argument("--family", default="sam3d", help="the model family of the weights (default sam3d)")
    args = ap.parse_args(argv)
    print(export_weights(args.src, args.dest, half=not args.float32, family=args.family))
    return 0


if __name__ == "__main__":
    sys.exit(main())
