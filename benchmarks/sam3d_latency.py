"""Latency of the SAM-Med3D model on CPU: literal reference vs fast encoder, int8, per-click decoding.

    .venv/bin/python benchmarks/sam3d_latency.py --config vit_b_ori --json runs/bench/sam3d_latency.json --repeats 3

Random weights (`fill_random_weights`, the golden rule; no files needed), a random 128^3 input. One run
measures:

- encoder seconds in ``attention="reference"`` mode (the released computation, literally: all heads
  on the padded 14^3 window), in the default ``fast`` mode, with ``compute_dtype="int8"`` (fast
  attention, int8 linear layers in the second half of the blocks) and with int8 linear layers in
  every block (``int8_all``, the rejected alternative); calls alternate so that all see the same
  machine load; median and min over ``--repeats`` calls after one warm-up call each; the ratios of
  the medians;
- the encoder blocks' linear layers alone (qkv, proj, MLP on the n^3 tokens) in float32 and int8;
- max abs difference of the fast and int8 embeddings from the reference / fp32 ones;
- Dice of the int8 (and int8_all) 128^3 masks vs float32 (same prompts: 6 single clicks and one
  5-click sequence with mask feedback) for the benchmark weights and the extra weight seeds
  ``--dice-weight-seeds``;
- bfloat16 autocast encoder seconds and Dice (``--no-bf16`` skips it: emulated, slow on CPUs without
  native bf16);
- one windowed block's attention, fast vs reference;
- decoder seconds per click (median and max over ``--clicks`` clicks, each with all previous clicks
  and the previous low-res logits) and the peak RSS of the default path (fast float32 encoder +
  clicks), both in a fresh subprocess so that the reference mode's ~2 GB do not count; likewise the
  int8 path's peak RSS.

The 1-minute load average at the start and end is recorded: other processes distort CPU timings.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Callable

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

from voxsam.models.sam3d import Sam3D, build_sam3d  # noqa: E402
from voxsam.models.sam3d.build import Int8Linear, fill_random_weights, int8_image_encoder  # noqa: E402
from _report import emit_json  # noqa: E402  (benchmarks/_report.py; scripts run from benchmarks/)

Prompt = tuple[torch.Tensor, torch.Tensor, bool]  # points (1, N, 3), labels (1, N), sequential


# ---------------------------------------------------------------------------- setup
def make_model(config: str, seed: int) -> Sam3D:
    """Random-weight model in eval mode (built on meta: no throw-away initialisation)."""
    with torch.device("meta"):
        model = build_sam3d(config)
    return fill_random_weights(model.to_empty(device="cpu"), seed).eval()


def make_image(model: Sam3D, seed: int) -> torch.Tensor:
    """(1, 1, S, S, S) standard-normal volume."""
    s = model.config.image_size
    return torch.randn(1, 1, s, s, s, generator=torch.Generator().manual_seed(seed + 1))


def make_prompts(size: int, seed: int = 7) -> list[Prompt]:
    """6 single positive clicks and one 5-click sequence (+ - + + -), all in the central half."""
    g = torch.Generator().manual_seed(seed)
    lo, hi = size // 4, 3 * size // 4
    out: list[Prompt] = [(torch.randint(lo, hi, (1, 1, 3), generator=g).float(),
                          torch.ones(1, 1, dtype=torch.long), False) for _ in range(6)]
    out.append((torch.randint(lo, hi, (1, 5, 3), generator=g).float(), torch.tensor([[1, 0, 1, 1, 0]]), True))
    return out


# ---------------------------------------------------------------------------- measurements
def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0  # KiB on Linux


def loadavg() -> float | None:
    try:
        return float(Path("/proc/loadavg").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return None


def timed(fn: Callable[[], torch.Tensor]) -> tuple[float, torch.Tensor]:
    t0 = time.perf_counter()
    out = fn()
    return time.perf_counter() - t0, out


def masks(model: Sam3D, emb: torch.Tensor, prompt: Prompt) -> list[torch.Tensor]:
    """Boolean S^3 masks (1, 1, S, S, S): one per click prefix (sequential, mask feedback) or one."""
    pts, lab, sequential = prompt
    if not sequential:
        return [model.upscale_logits(model.decode(emb, pts, lab)[0]) > 0]
    out, prev = [], None
    for k in range(1, pts.shape[1] + 1):
        prev, _ = model.decode(emb, pts[:, :k], lab[:, :k], mask_input=prev)
        out.append(model.upscale_logits(prev) > 0)
    return out


def dice(a: torch.Tensor, b: torch.Tensor) -> float:
    tot = int(a.sum()) + int(b.sum())
    return 1.0 if tot == 0 else 2.0 * int((a & b).sum()) / tot


def min_dice(model: Sam3D, emb_a: torch.Tensor, emb_b: torch.Tensor, prompts: list[Prompt]) -> float:
    """Smallest Dice between the masks of two embeddings over all prompts (and click prefixes)."""
    return min(dice(a, b) for p in prompts for a, b in zip(masks(model, emb_a, p), masks(model, emb_b, p)))


def click_times(model: Sam3D, emb: torch.Tensor, clicks: int, seed: int) -> list[float]:
    """Seconds per decoder call for clicks 1..clicks, each with all previous clicks and the previous
    low-res logits (click 0 is a warm-up)."""
    s, m = model.config.image_size, model.config.mask_size
    g = torch.Generator().manual_seed(seed)
    pts, labs = torch.zeros(1, 0, 3), torch.zeros(1, 0, dtype=torch.long)
    prev, times = torch.zeros(1, 1, m, m, m), []
    for k in range(clicks + 1):
        p = torch.randint(s // 4, 3 * s // 4, (1, 1, 3), generator=g).float()
        lab = torch.tensor([[1 if k == 0 else int(torch.randint(0, 2, (1,), generator=g))]])
        pts, labs = torch.cat([pts, p], 1), torch.cat([labs, lab], 1)
        dt, (prev, _) = timed(lambda: model.decode(emb, pts, labs, mask_input=prev))
        if k:
            times.append(dt)
    return times


def path_phase(args: argparse.Namespace) -> dict:
    """Fresh-process measurement of one path: encoder (``--path`` precision, fast attention) twice,
    ``--clicks`` decoder clicks with mask feedback, upsampling; peak RSS of the whole process."""
    model = make_model(args.config, args.seed)
    image = make_image(model, args.seed)
    with torch.inference_mode():
        model.encode(image, dtype=args.path)
        enc_s, emb = timed(lambda: model.encode(image, dtype=args.path))
        times = click_times(model, emb, args.clicks, args.seed + 2)
        up_s, _ = timed(lambda: model.upscale_logits(torch.zeros(1, 1, *(3 * (model.config.mask_size,)))) > 0)
    return {"path": args.path, "encoder_s": enc_s, "decoder_clicks": len(times),
            "decoder_click_median_s": statistics.median(times), "decoder_click_max_s": max(times),
            "upsample_threshold_s": up_s, "peak_rss_mb": peak_rss_mb()}


def run_path_subprocess(args: argparse.Namespace, path: str) -> dict:
    cmd = [sys.executable, __file__, "--config", args.config, "--seed", str(args.seed), "--clicks",
           str(args.clicks), "--threads", str(args.threads), "--path", path]
    out = subprocess.run(cmd, check=True, capture_output=True, text=True).stdout
    return json.loads(out.strip().splitlines()[-1])


def encoder_timings(model: Sam3D, image: torch.Tensor, repeats: int, bf16: bool) -> tuple[dict, dict]:
    """Interleaved encoder calls; returns ({name: times}, {name: last embedding})."""
    int8_all = int8_image_encoder(model.image_encoder, first_block=0)
    int8_all.attention = "fast"
    calls = {"reference": lambda: model.set_attention("reference").encode(image, dtype="float32"),
             "fast": lambda: model.set_attention("fast").encode(image, dtype="float32"),
             "int8": lambda: model.set_attention("fast").encode(image, dtype="int8"),
             "int8_all": lambda: int8_all(image)}
    embs = {name: fn() for name, fn in calls.items()}  # warm-up (and the int8 copy is built)
    times: dict[str, list[float]] = {name: [] for name in calls}
    for _ in range(repeats):
        for name, fn in calls.items():
            dt, embs[name] = timed(fn)
            times[name].append(dt)
    if bf16:  # one call: emulated bf16 is slow on CPUs without native support
        model.set_attention("fast").encode(image, dtype="bfloat16")
        dt, embs["bf16"] = timed(lambda: model.encode(image, dtype="bfloat16"))
        times["bf16"] = [dt]
    return times, embs


def block_timings(model: Sam3D, repeats: int) -> dict:
    """One windowed block's attention on random tokens: fast vs reference seconds (median)."""
    windowed = [b.attn for b in model.image_encoder.blocks if b.attn.attn_size > b.attn.grid_size]
    if not windowed:
        return {}
    att, n, c = windowed[0], model.config.grid_size, model.config.encoder_embed_dim
    x = torch.randn(1, n, n, n, c, generator=torch.Generator().manual_seed(3))
    res = {}
    for mode in ("fast", "reference"):
        att(x, mode)
        times = [timed(lambda: att(x, mode))[0] for _ in range(repeats)]
        res[f"windowed_attention_{mode}_s"] = statistics.median(times)
    res["speedup_windowed_attention"] = res["windowed_attention_reference_s"] / res["windowed_attention_fast_s"]
    return res


def dense_timings(model: Sam3D, repeats: int) -> dict:
    """Seconds of all encoder-block linear layers on (n^3, in) random inputs, float32 vs `Int8Linear`
    (median of ``repeats`` passes over all layers)."""
    nt = model.config.grid_size ** 3
    layers = [m for m in model.image_encoder.blocks.modules() if isinstance(m, torch.nn.Linear)]
    g = torch.Generator().manual_seed(4)
    xs = [torch.randn(nt, m.in_features, generator=g) for m in layers]
    res = {"dense_layers": len(layers),
           "dense_gflop": sum(2 * nt * m.in_features * m.out_features for m in layers) / 1e9}
    for name, mods in (("fp32", layers), ("int8", [Int8Linear(m) for m in layers])):
        run = lambda: [m(x) for m, x in zip(mods, xs)]  # noqa: E731
        run()
        t = statistics.median(timed(run)[0] for _ in range(repeats))
        res[f"dense_{name}_s"], res[f"dense_{name}_gflop_per_s"] = t, res["dense_gflop"] / t
    return res


def dice_over_weights(model: Sam3D, image: torch.Tensor, seeds: list[int], bf16_emb: torch.Tensor | None,
                      fp32_emb: torch.Tensor) -> dict:
    """int8 (and bf16) vs float32 mask Dice; the model's weights are refilled for each extra seed."""
    prompts = make_prompts(model.config.image_size)
    res: dict = {"dice_prompts": "6 single clicks + 5-click sequence with mask feedback, 128^3 masks"}
    per_seed: dict[str, dict[str, float]] = {"int8": {}, "int8_all": {}}
    for i, seed in enumerate(seeds):
        if i:
            fill_random_weights(model, seed)  # the cached int8 copy is rebuilt (weights changed)
        e32 = fp32_emb if i == 0 else model.set_attention("fast").encode(image)
        int8_all = int8_image_encoder(model.image_encoder, first_block=0)
        for name, emb in (("int8", model.encode(image, dtype="int8")), ("int8_all", int8_all(image))):
            per_seed[name][str(seed)] = min_dice(model, e32, emb, prompts)
        if i == 0 and bf16_emb is not None:
            res["bf16_min_dice_vs_fp32"] = min_dice(model, e32, bf16_emb, prompts)
    for name, d in per_seed.items():
        res[f"{name}_min_dice_vs_fp32_per_weight_seed"] = d
        res[f"{name}_min_dice_vs_fp32"] = min(d.values())
    return res


# ---------------------------------------------------------------------------- main
def parse_args(argv: list[str] | None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--config", default="vit_b_ori", help="preset: tiny, small, vit_b_ori")
    ap.add_argument("--json", type=Path, default=None, help="write the JSON result here")
    ap.add_argument("--repeats", type=int, default=3, help="timed encoder calls per mode, interleaved")
    ap.add_argument("--clicks", type=int, default=24, help="timed decoder clicks (>= 20)")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--seed", type=int, default=0, help="weights seed (the image uses seed + 1)")
    ap.add_argument("--dice-weight-seeds", type=int, nargs="*", default=[1, 2, 3],
                    help="extra weight seeds for the int8 Dice (besides --seed)")
    ap.add_argument("--no-bf16", action="store_true", help="skip the bfloat16 autocast encoder")
    ap.add_argument("--path", choices=["float32", "int8"], default=None,
                    help=argparse.SUPPRESS)  # internal: the fresh-process phase
    return ap.parse_args(argv)


def main(argv: list[str] | None = None) -> dict:
    args = parse_args(argv)
    torch.set_num_threads(args.threads)
    if args.path:
        res = path_phase(args)
        print(json.dumps(res))
        return res
    res: dict = {"config": args.config, "threads": args.threads, "torch": torch.__version__,
                 "cpu": platform.processor() or platform.machine(), "repeats": args.repeats,
                 "omp_wait_policy": os.environ.get("OMP_WAIT_POLICY"), "loadavg_1min_start": loadavg()}
    try:
        res["cpu_native_bf16"] = bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
    except Exception:  # noqa: BLE001 - private API, informative only
        res["cpu_native_bf16"] = None
    res["default_path"] = run_path_subprocess(args, "float32")
    res["int8_path"] = run_path_subprocess(args, "int8")

    model = make_model(args.config, args.seed)
    image = make_image(model, args.seed)
    res["params"] = sum(p.numel() for p in model.parameters())
    with torch.inference_mode():
        times, embs = encoder_timings(model, image, args.repeats, not args.no_bf16)
        for name, ts in times.items():
            res[f"encoder_{name}_s"], res[f"encoder_{name}_min_s"] = statistics.median(ts), min(ts)
            res[f"encoder_{name}_times_s"] = [round(t, 4) for t in ts]
        ref = res["encoder_reference_s"]
        for name in times:
            if name != "reference":
                res[f"speedup_{name}_vs_reference"] = ref / res[f"encoder_{name}_s"]
        res["speedup_int8_vs_fast"] = res["encoder_fast_s"] / res["encoder_int8_s"]
        res["fast_vs_reference_max_abs_diff"] = float((embs["fast"] - embs["reference"]).abs().max())
        res["int8_vs_fp32_max_abs_diff"] = float((embs["int8"] - embs["fast"]).abs().max())
        res["embedding_abs_max"] = float(embs["reference"].abs().max())
        res.update(block_timings(model, args.repeats))
        res.update(dense_timings(model, max(args.repeats, 5)))
        res["peak_rss_mb_this_process_with_reference"] = peak_rss_mb()
        res["loadavg_1min_after_timings"] = loadavg()
        res.update(dice_over_weights(model, image, [args.seed, *args.dice_weight_seeds],
                                     embs.get("bf16"), embs["fast"]))
    res["decoder_click_median_s"] = res["default_path"]["decoder_click_median_s"]
    res["peak_rss_mb_default_path"] = res["default_path"]["peak_rss_mb"]
    res["loadavg_1min_end"] = loadavg()
    emit_json(res, args.json)
    return res


if __name__ == "__main__":
    main()
