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

    python -m voxsam.training.export src/voxsam/weights/slice2d_decoder.pt DEST.pt --family slice2d --pretrained-share 0.5

moves every exported weight that share of the way back to the released (pretrained) weights the run started from:
(1 - s) fine-tuned + s pretrained, a weight-space ensemble of the two (WiSE-FT, Wortsman et al. 2022). Fine-tuning
on a few sources sharpens the model there and loses some of what the pretrained model did elsewhere; the mix keeps
part of both (measured for slice2d in docs/benchmarks.md). Families with pretrained weights only (slice2d).
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path
from collections.abc import Sequence
from typing import Any

from voxsam.errors import ConfigError


def export_weights(src: str | Path, dest: str | Path, half: bool = True, extra: dict[str, Any] | None = None,
                   family: str = "sam3d", average_with: Sequence[str | Path] = (),
                   pretrained_share: float = 0.0) -> dict[str, Any]:
    """Write `src`'s weights to `dest` (atomically), or with `average_with` the mean of theirs and those files';
    with `pretrained_share` s in (0, 1) the result mixed with the family's pretrained weights, (1 - s) own + s
    pretrained. Returns facts about the export (size, rounding).

    Raises:
        ConfigError: a share outside [0, 1), or a family without pretrained weights given a share.
    """
    from voxsam.training.registry import get_family

    fam = get_family(family)
    model, meta = fam.load_weights(Path(src))
    info = {"source": str(src), **{k: v for k, v in meta.items() if isinstance(v, (int, float, str))}, **(extra or {})}
    if average_with:
        average_into(model, [fam.load_weights(Path(p))[0] for p in average_with])
        info["averaged_with"] = ", ".join(str(p) for p in average_with)
    if pretrained_share:
        if not 0 < pretrained_share < 1:
            raise ConfigError(f"the pretrained share must lie in (0, 1), got {pretrained_share}")
        pretrained = fam.pretrained_weights(model)
        if pretrained is None:
            raise ConfigError(f"model family {family!r} has no pretrained weights to mix in")
        mix_into(model, pretrained, pretrained_share)
        info["pretrained_share"] = pretrained_share
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
    states = [o.state_dict() for o in others]
    for i, other in enumerate(states, start=1):
        if other.keys() != model.state_dict().keys():
            raise ConfigError(f"average: model {i + 1} has another architecture than the first (state names or shapes differ)")
    _combine(model, states, [1.0 / (len(states) + 1)] * (len(states) + 1), "average")


def mix_into(model: Any, pretrained: Any, share: float) -> None:
    """Set every floating tensor v of `model`'s state to (1 - share) v + share p, p the same-named tensor of
    `pretrained` (in place; `pretrained` may hold more, e.g. the whole encoder of which `model` keeps the tail).

    Raises:
        ConfigError: a tensor of `model` that `pretrained` lacks or holds in another shape.
    """
    _combine(model, [pretrained.state_dict()], [1.0 - share, share], "pretrained mix")


def _combine(model: Any, states: Sequence[Any], weights: Sequence[float], what: str) -> None:
    """model's floating tensors <- weights[0] · own + Σ weights[i] · states[i-1]'s (computed in float32)."""
    import torch

    state = model.state_dict()
    for i, other in enumerate(states, start=1):
        bad = [k for k, v in state.items() if k not in other or other[k].shape != v.shape]
        if bad:
            raise ConfigError(f"{what}: model {i + 1} has another architecture than the first ({bad[0]} missing or reshaped)")
    with torch.no_grad():
        for name, value in state.items():
            if value.is_floating_point():
                mixed = weights[0] * value.float()
                for w, other in zip(weights[1:], states):
                    mixed += w * other[name].float()
                value.copy_(mixed.to(value.dtype))


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description="Export trained weights for shipping (float16 storage).")
    ap.add_argument("src", type=Path)
    ap.add_argument("dest", type=Path)
    ap.add_argument("--float32", action="store_true", help="keep float32 storage")
    ap.add_argument("--family", default="sam3d", help="the model family of the weights (default sam3d)")
    ap.add_argument("--average-with", nargs="+", type=Path, default=[], metavar="WEIGHTS",
                    help="more weights files of the same architecture: write the mean of all (a weight average)")
    ap.add_argument("--pretrained-share", type=float, default=0.0, metavar="S",
                    help="mix the family's pretrained weights in: (1 - S) these + S pretrained (WiSE-FT; slice2d)")
    args = ap.parse_args(argv)
    try:
        print(export_weights(args.src, args.dest, half=not args.float32, family=args.family,
                             average_with=args.average_with, pretrained_share=args.pretrained_share))
    except ConfigError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
