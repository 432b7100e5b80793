"""Ship trained weights: a run's model.pt -> a compact weights file (float16 storage by default), through
the model family's `load_weights` / `save_weights` (default sam3d: a voxsam sam3d file).

    python -m voxsam.training.export runs/sam3d_small/model.pt src/voxsam/weights/sam3d_small.pt [--family NAME]

float16 halves the file (the `small` preset: 36 MB -> 18 MB); the engine loads it back as float32. The
export reports the largest weight change and the Dice between float32 and float16 masks on a random input
so the rounding is known, not assumed.

    python -m voxsam.training.export A.pt DEST.pt --family memory3d --average-with B.pt [C.pt ...]

writes the mean of the runs' weights instead (a weight average, "model soup", of runs that share their
initialisation and architecture); parts of a file outside the model's state (memory3d's frozen encoder tail) are
the first file's.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path
from collections.abc import Sequence
from typing import Any

from voxsam.errors import ConfigError


def export_weights(src: str | Path, dest: str | Path, half: bool = True, extra: dict[str, Any] | None = None,
                   family: str = "sam3d", average_with: Sequence[str | Path] = ()) -> dict[str, Any]:
    """Write `src`'s weights to `dest` (atomically), or with `average_with` the mean of theirs and those files'.
    Returns facts about the export (size, rounding)."""
    from voxsam.training.registry import get_family

    fam = get_family(family)
    model, meta = fam.load_weights(Path(src))
    info = {"source": str(src), **{k: v for k, v in meta.items() if isinstance(v, (int, float, str))}, **(extra or {})}
    if average_with:
        average_into(model, [fam.load_weights(Path(p))[0] for p in average_with])
        info["averaged_with"] = ", ".join(str(p) for p in average_with)
    fam.save_weights(model, Path(dest), extra=info, half=half)
    back, _ = fam.load_weights(Path(dest))
    ref, new = model.state_dict(), back.state_dict()
    max_change = max(float((ref[k].float() - new[k].float()).abs().max()) for k in ref)
    return {"dest": str(dest), "bytes": Path(dest).stat().st_size, "max_weight_change": max_change,
            **fam.export_check(model, back)}


def average_into(model: Any, others: Sequence[Any]) -> None:
    """Set every floating tensor of `model`'s state to its mean over `model` and `others` (in place).

    Raises:
        ConfigError: a model whose state has other names or shapes (another architecture).
    """
    import torch

    state = model.state_dict()
    states = [o.state_dict() for o in others]
    for i, other in enumerate(states, start=1):
        if other.keys() != state.keys() or any(other[k].shape != v.shape for k, v in state.items()):
            raise ConfigError(f"average: model {i + 1} has another architecture than the first (state names or shapes differ)")
    with torch.no_grad():
        for name, value in state.items():
            if value.is_floating_point():
                value.copy_(torch.stack([value.float(), *(o[name].float() for o in states)]).mean(dim=0).to(value.dtype))


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description="Export trained weights for shipping (float16 storage).")
    ap.add_argument("src", type=Path)
    ap.add_argument("dest", type=Path)
    ap.add_argument("--float32", action="store_true", help="keep float32 storage")
    ap.add_argument("--family", default="sam3d", help="the model family of the weights (default sam3d)")
    ap.add_argument("--average-with", nargs="+", type=Path, default=[], metavar="WEIGHTS",
                    help="more weights files of the same architecture: write the mean of all (a weight average)")
    args = ap.parse_args(argv)
    print(export_weights(args.src, args.dest, half=not args.float32, family=args.family, average_with=args.average_with))
    return 0


if __name__ == "__main__":
    sys.exit(main())
