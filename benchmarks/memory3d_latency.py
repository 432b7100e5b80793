"""Latency of the memory3d model (SAM2-3dMed on LiteMedSAM embeddings) on CPU, per propagated slice.

    .venv/bin/python benchmarks/memory3d_latency.py --json runs/bench/memory3d_latency.json
    .venv/bin/python benchmarks/memory3d_latency.py --repeats 5 --pools 2      # quicker

Measures, on a cached embedding (the frozen LiteMedSAM encoder is not timed: its embeddings come from
the slice2d encoder or its cache; see benchmarks/slice2d_latency.py for the encoder), with a bank of
``--bank`` memories (default 7: 1 conditioning + 6 recent, the preset's full bank):

- ``condition_ms``: `Memory3D.condition` (memory attention over the bank);
- ``decode_ms``: `Memory3D.decode` without a prompt (a propagated slice);
- ``condition_decode_ms``: both, the model's cost of one propagated slice besides `memorize`;
- ``memorize_ms``: `Memory3D.memorize` (the memory encoder), paid once per decided slice;
- ``boundary_ms``: the BD head (training only; inference does not need it);

for the preset (``memory_pool`` 2: 1024 key tokens per memory) and each other ``--pools`` value, at 1 and
2 intra-op threads (``--threads``), float32, batch 1: median over ``--repeats`` rounds after one warm-up,
all variants alternating within a round so that they see the same load. The 1-minute load average is
recorded before and after (other processes distort CPU timings: compare ratios within one run).
"""
from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path
from typing import Any, Callable

import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "src"))
sys.path.insert(0, str(REPO / "benchmarks"))

from slice2d_latency import load, machine, peak_rss_mb  # noqa: E402

from voxsam.models.memory3d import Memory3DConfig, build_memory3d  # noqa: E402
from _report import emit_json  # noqa: E402  (benchmarks/_report.py; scripts run from benchmarks/)


def build(pool: int) -> Any:
    torch.manual_seed(0)
    model = build_memory3d(Memory3DConfig.preset("litemedsam_mem").replace(memory_pool=pool)).eval()
    try:  # the released decoder when installed (timings do not depend on the weights)
        from voxsam.models.sam2d import load_litemedsam

        sam = load_litemedsam()
        model.prompt_encoder.load_state_dict(sam.prompt_encoder.state_dict())
        model.mask_decoder.load_state_dict(sam.mask_decoder.state_dict())
    except Exception:  # noqa: BLE001 - random decoder weights time the same
        pass
    with torch.no_grad():
        model.memory_attention.out_proj.weight.normal_(0.0, 0.02)
    return model


def timed(fn: Callable[[], Any]) -> float:
    t = time.perf_counter()
    fn()
    return (time.perf_counter() - t) * 1000.0


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--threads", type=int, nargs="+", default=[1, 2])
    ap.add_argument("--pools", type=int, nargs="+", default=[2, 4], help="memory_pool values (2: the preset)")
    ap.add_argument("--bank", type=int, default=7, help="memories in the bank (1 conditioning + recent)")
    ap.add_argument("--repeats", type=int, default=10)
    ap.add_argument("--json", type=Path, default=None, help="also write the result here")
    args = ap.parse_args()

    out: dict[str, Any] = {"machine": machine(), "load_before": load(), "bank": args.bank, "batch": 1,
                           "dtype": "float32", "encoder": "not timed (cached embeddings)"}
    models = {pool: build(pool) for pool in args.pools}
    first = models[args.pools[0]]
    out["parameters"] = sum(p.numel() for p in first.parameters())
    out["parameters_by_module"] = {n: sum(p.numel() for p in c.parameters()) for n, c in first.named_children()}
    g = torch.Generator().manual_seed(0)
    emb = torch.randn(1, 256, 64, 64, generator=g) * 0.3
    logits = torch.randn(1, 1, 256, 256, generator=g) * 4
    times: dict[tuple[int, int, str], list[float]] = {}
    old = torch.get_num_threads()
    with torch.inference_mode():
        banks = {pool: [m.memorize(emb, logits, i, conditioning=i == 0) for i in range(args.bank)]
                 for pool, m in models.items()}
        for r in range(args.repeats + 1):
            for nt in args.threads:
                torch.set_num_threads(nt)
                for pool, m in models.items():
                    box: dict[str, Any] = {}
                    row = {
                        "condition_ms": timed(lambda: box.__setitem__("c", m.condition(emb, banks[pool], args.bank))),
                        "decode_ms": timed(lambda: m.decode(box["c"])),
                        "memorize_ms": timed(lambda: m.memorize(emb, logits, args.bank)),
                        "boundary_ms": timed(lambda: m.boundary(box["c"])),
                    }
                    row["condition_decode_ms"] = row["condition_ms"] + row["decode_ms"]
                    if r:  # round 0: warm-up
                        for k, v in row.items():
                            times.setdefault((nt, pool, k), []).append(v)
    torch.set_num_threads(old)
    results: dict[str, Any] = {}
    for (nt, pool, k), v in times.items():
        name = f"memory_pool_{pool}" + (" (preset)" if pool == 2 else "")
        results.setdefault(name, {}).setdefault(f"{nt}_threads", {})[k] = round(statistics.median(v), 1)
    for pool in args.pools:
        name = f"memory_pool_{pool}" + (" (preset)" if pool == 2 else "")
        results[name]["key_tokens"] = args.bank * (64 // pool) ** 2
    out["results"] = results
    out["load_after"] = load()
    out["peak_rss_mb"] = peak_rss_mb()
    emit_json(out, args.json)


if __name__ == "__main__":
    main()
