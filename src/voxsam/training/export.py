"""Ship trained weights: a run's model.pt -> a compact voxsam sam3d file (float16 storage by default).

    python -m voxsam.training.export runs/sam3d_small/model.pt src/voxsam/weights/sam3d_small.pt

float16 halves the file (the `small` preset: 36 MB -> 18 MB); the engine loads it back as float32. The
export reports the largest weight change and the Dice between float32 and float16 masks on a random input
so the rounding is known, not assumed.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any


def export_weights(src: str | Path, dest: str | Path, half: bool = True, extra: dict[str, Any] | None = None) -> dict[str, Any]:
    """Write `src`'s weights to `dest` (atomically). Returns facts about the export (size, rounding)."""
    import torch

    from voxsam.models.sam3d import load_sam3d_checkpoint, save_sam3d_checkpoint

    model, report = load_sam3d_checkpoint(src)
    meta = dict(report.metadata)
    info = {"source": str(src), **{k: v for k, v in meta.items() if isinstance(v, (int, float, str))}, **(extra or {})}
    save_sam3d_checkpoint(model, model.config, dest, extra=info, dtype=torch.float16 if half else None)
    back, _ = load_sam3d_checkpoint(dest)
    ref, new = model.state_dict(), back.state_dict()
    max_change = max(float((ref[k].float() - new[k].float()).abs().max()) for k in ref)
    torch.manual_seed(0)
    size = model.config.image_size
    image = torch.randn(1, 1, size, size, size)
    point = torch.tensor([[[size / 2, size / 2, size / 2]]])
    with torch.inference_mode():
        masks = [m.upscale_logits(m.decode(m.encode(image), point, torch.ones(1, 1, dtype=torch.int64))[0]) > 0 for m in (model, back)]
    inter = float((masks[0] & masks[1]).sum())
    total = float(masks[0].sum() + masks[1].sum())
    return {"dest": str(dest), "bytes": Path(dest).stat().st_size, "max_weight_change": max_change,
            "dice_fp32_vs_stored": 1.0 if total == 0 else 2 * inter / total}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description="Export sam3d weights for shipping (float16 storage).")
    ap.add_argument("src", type=Path)
    ap.add_argument("dest", type=Path)
    ap.add_argument("--float32", action="store_true", help="keep float32 storage")
    args = ap.parse_args(argv)
    print(export_weights(args.src, args.dest, half=not args.float32))
    return 0


if __name__ == "__main__":
    sys.exit(main())
