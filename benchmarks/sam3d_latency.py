"""Latency of the SAM-Med3D model on CPU: reference vs fast attention, bf16, per-click decoding.

    .venv/bin/python benchmarks/sam3d_latency.py --config vit_b_ori --json sam3d_latency.json --repeats 3

Random weights (same rule as the golden ``weights.py``, own generator, no files needed), a random
128^3 input. Measured in one run: encoder seconds in reference and fast mode (same weights, same
input) with their max abs difference, bf16 encoder seconds, decoder seconds per click (median over
``--clicks`` clicks, each with all previous clicks and the previous low-res logits), peak RSS. Phases
run in the order clicks -> reference/fast interleaved -> bf16; the peak RSS is recorded after the fast
path (encoder + clicks) and again after the reference phase (the literal reference attention holds
S^6-sized matrices). Encoder times are the median (and min) over ``--repeats`` calls after one
warm-up call per mode; reference and fast calls alternate so that both see the same machine load,
and the 1-minute load average before and after is recorded (other processes distort CPU timings).
"""
from __future__ import annotations

import argparse
import json
import math
import os
import platform
import resource
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

from voxsam.models.sam3d import BOX_PROMPT_KEYS, Sam3D, build_sam3d  # noqa: E402
from voxsam.models.sam3d.attention import rel_pos_table  # noqa: E402


def fill_weights(model: Sam3D, seed: int = 0) -> None:
    """In place, state-dict order: 1-D weight 1+0.1 randn, 1-D bias 0.05 randn, other 1-D 0.1 randn,
    N-D randn / sqrt(fan) - the rule of the golden weights, without allocating a second copy."""
    g = torch.Generator().manual_seed(seed)
    sd = model.state_dict()
    names = [k for k in sd if k not in BOX_PROMPT_KEYS] + [k for k in sd if k in BOX_PROMPT_KEYS]
    with torch.no_grad():
        for name in names:
            t = sd[name]
            x = torch.randn(tuple(t.shape), generator=g)
            if t.ndim == 1:
                x = 1.0 + 0.1 * x if name.endswith("weight") else (0.05 * x if name.endswith("bias") else 0.1 * x)
            else:
                x = x / math.sqrt(max(1, math.prod(t.shape[1:])))
            t.copy_(x)


def released_style_attention(attn, x: torch.Tensor) -> torch.Tensor:
    """One windowed block's attention written the way the released code is: all heads in one
    (heads, S^3, S^3) logit tensor, rel-pos terms added out of place, softmax, crop. Benchmark only."""
    b, n = x.shape[0], attn.grid_size
    s_, h, c = attn.attn_size, attn.num_heads, attn.head_dim
    pad = s_ - n
    xp = torch.nn.functional.pad(x, (0, 0, 0, pad, 0, pad, 0, pad))
    qkv = attn.qkv(xp).reshape(b, s_ ** 3, 3, h, c).permute(2, 0, 3, 1, 4).reshape(3, b * h, s_ ** 3, c)
    q, k, v = qkv[0], qkv[1], qkv[2]
    logits = (q * attn.scale) @ k.transpose(-2, -1)
    td, th, tw = (rel_pos_table(r, s_, s_, s_) for r in (attn.rel_pos_d, attn.rel_pos_h, attn.rel_pos_w))
    rq = q.reshape(b * h, s_, s_, s_, c)
    rel_d = torch.einsum("bdhwc,dkc->bdhwk", rq, td)
    rel_h = torch.einsum("bdhwc,hkc->bdhwk", rq, th)
    rel_w = torch.einsum("bdhwc,wkc->bdhwk", rq, tw)
    logits = (logits.view(b * h, s_, s_, s_, s_, s_, s_) + rel_d[:, :, :, :, None, None, :]
              + rel_h[:, :, :, None, :, None, :] + rel_w[:, :, :, None, None, :, :]).view(b * h, s_ ** 3, s_ ** 3)
    out = logits.softmax(dim=-1) @ v
    out = out.view(b, h, s_, s_, s_, c).permute(0, 2, 3, 4, 1, 5).reshape(b, s_, s_, s_, h * c)
    return attn.proj(out)[:, :n, :n, :n]


def peak_rss_mb() -> float:
    kb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # KiB on Linux
    return kb / 1024.0


def timed(fn, repeats: int) -> tuple[list[float], object]:
    times, out = [], None
    for _ in range(repeats):
        t0 = time.perf_counter()
        out = fn()
        times.append(time.perf_counter() - t0)
    return times, out


def loadavg() -> float | None:
    try:
        return float(Path("/proc/loadavg").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return None


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--config", default="vit_b_ori", help="preset: tiny, small, vit_b_ori")
    ap.add_argument("--json", type=Path, default=None, help="write the JSON result here")
    ap.add_argument("--repeats", type=int, default=3,
                    help="timed encoder calls per mode (reference and fast interleaved); median and min")
    ap.add_argument("--clicks", type=int, default=10)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--bf16-repeats", type=int, default=1,
                    help="timed bf16 encoder calls (slow on CPUs without native bf16)")
    ap.add_argument("--no-bf16", action="store_true")
    ap.add_argument("--no-block", action="store_true",
                    help="skip the single windowed-block comparison (released-style needs ~1.5 GB)")
    args = ap.parse_args(argv)

    torch.set_num_threads(args.threads)
    g = torch.Generator().manual_seed(args.seed + 1)
    with torch.device("meta"):
        model = build_sam3d(args.config)
    model = model.to_empty(device="cpu")
    fill_weights(model, args.seed)
    model.eval()
    cfg = model.config
    s = cfg.image_size
    image = torch.randn(1, 1, s, s, s, generator=g)
    res: dict = {
        "config": args.config, "threads": torch.get_num_threads(), "torch": torch.__version__,
        "cpu": platform.processor() or platform.machine(), "repeats": args.repeats,
        "params": sum(p.numel() for p in model.parameters()),
        "omp_wait_policy": os.environ.get("OMP_WAIT_POLICY"),
        "loadavg_1min_start": loadavg(),
    }
    with torch.inference_mode():
        # ---- fast encoder (warm-up) and clicks with mask feedback
        model.attention = "fast"
        emb_fast = model.encode(image)
        m = cfg.mask_size
        pts = torch.full((1, 0, 3), 0.0)
        labs = torch.zeros(1, 0, dtype=torch.long)
        prev = torch.zeros(1, 1, m, m, m)
        times = []
        for k in range(args.clicks + 1):  # click 0 is a warm-up
            p = torch.randint(s // 4, 3 * s // 4, (1, 1, 3), generator=g).float()
            lab = torch.tensor([[1 if k == 0 else int(torch.randint(0, 2, (1,), generator=g))]])
            pts, labs = torch.cat([pts, p], 1), torch.cat([labs, lab], 1)
            t0 = time.perf_counter()
            prev, _ = model.decode(emb_fast, pts, labs, mask_input=prev)
            dt = time.perf_counter() - t0
            if k:
                times.append(dt)
        res["decoder_clicks"] = len(times)
        res["decoder_click_median_s"] = statistics.median(times)
        res["decoder_click_max_s"] = max(times)
        t0 = time.perf_counter()
        up = model.upscale_logits(prev)
        _ = torch.sigmoid(up) > 0.5
        res["upsample_threshold_s"] = time.perf_counter() - t0
        ts, emb_fast = timed(lambda: model.encode(image), 1)
        res["peak_rss_mb_fast_path"] = peak_rss_mb()

        # ---- reference and fast encoder, interleaved so that both see the same machine load
        model.attention = "reference"
        model.encode(image)  # warm-up
        t_fast, t_ref = list(ts), []
        for r in range(args.repeats):
            model.attention = "reference"
            tr, emb_ref = timed(lambda: model.encode(image), 1)
            model.attention = "fast"
            tf, emb_fast = timed(lambda: model.encode(image), 1)
            t_ref += tr
            t_fast += tf
        res["encoder_fast_s"], res["encoder_fast_min_s"] = statistics.median(t_fast), min(t_fast)
        res["encoder_reference_s"], res["encoder_reference_min_s"] = statistics.median(t_ref), min(t_ref)
        res["encoder_fast_times_s"] = [round(t, 4) for t in t_fast]
        res["encoder_reference_times_s"] = [round(t, 4) for t in t_ref]
        res["fast_vs_reference_max_abs_diff"] = float((emb_ref - emb_fast).abs().max())
        res["embedding_abs_max"] = float(emb_ref.abs().max())
        res["peak_rss_mb_after_reference"] = peak_rss_mb()

        # ---- one windowed block's attention: fast / reference (per head) / released-style (all heads)
        windowed = [blk for blk in model.image_encoder.blocks if blk.attn.attn_size > blk.attn.grid_size]
        if windowed and not args.no_block:
            att = windowed[0].attn
            xb = torch.randn(1, cfg.grid_size, cfg.grid_size, cfg.grid_size, cfg.encoder_embed_dim, generator=g)
            blk_t: dict[str, list[float]] = {"fast": [], "reference": [], "released_style": []}
            fns = {"fast": lambda: att(xb, "fast"), "reference": lambda: att(xb, "reference"),
                   "released_style": lambda: released_style_attention(att, xb)}
            outs = {k: f() for k, f in fns.items()}  # warm-up
            for _ in range(args.repeats):
                for k, f in fns.items():
                    blk_t[k] += timed(f, 1)[0]
            for k, v in blk_t.items():
                res[f"windowed_attention_{k}_s"] = statistics.median(v)
                res[f"windowed_attention_{k}_min_s"] = min(v)
            res["windowed_attention_released_style_vs_fast_max_abs_diff"] = float(
                (outs["released_style"] - outs["fast"]).abs().max())
            res["peak_rss_mb_after_block"] = peak_rss_mb()

        # ---- bf16 encoder
        if not args.no_bf16:
            model.encode(image, dtype="bfloat16")  # warm-up
            ts, emb_bf = timed(lambda: model.encode(image, dtype="bfloat16"), args.bf16_repeats)
            res["encoder_bf16_s"], res["encoder_bf16_min_s"] = statistics.median(ts), min(ts)
            res["bf16_vs_fp32_max_abs_diff"] = float((emb_bf - emb_fast).abs().max())
            lo32, _ = model.decode(emb_fast, pts[:, :1], labs[:, :1])
            lo16, _ = model.decode(emb_bf, pts[:, :1], labs[:, :1])
            a, b = lo32 > 0, lo16 > 0
            inter, tot = (a & b).sum().item(), a.sum().item() + b.sum().item()
            res["bf16_first_click_lowres_dice"] = 1.0 if tot == 0 else 2 * inter / tot
    res["speedup_fast_vs_reference"] = res["encoder_reference_s"] / res["encoder_fast_s"]
    res["speedup_fast_vs_reference_min"] = res["encoder_reference_min_s"] / res["encoder_fast_min_s"]
    if "windowed_attention_fast_s" in res:
        for k in ("reference", "released_style"):
            res[f"speedup_windowed_attention_fast_vs_{k}"] = (
                res[f"windowed_attention_{k}_s"] / res["windowed_attention_fast_s"])
    if "encoder_bf16_s" in res:
        res["speedup_bf16_vs_reference"] = res["encoder_reference_s"] / res["encoder_bf16_s"]
    res["peak_rss_mb"] = peak_rss_mb()
    res["loadavg_1min_end"] = loadavg()
    text = json.dumps(res, indent=2)
    print(text)
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(text + "\n")
    return res


if __name__ == "__main__":
    main()
