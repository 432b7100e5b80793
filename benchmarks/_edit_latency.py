"""Decoder and edit-step latency for `slice2d_latency.py`: exact vs fast decoder, in the same run.

- `decoder_bench`: ms per `Sam2D.decode` (box; box + mask; box + click) with the exact modules
  (`exact_decoder()`) and the fast path (`voxsam.models.sam2d.fast_decoder`, the default with autograd
  off), and, where bf16 is native, an all-bfloat16 copy of the decoder on the fast path (not used by the
  engines: measured to show why); plus one `SliceModel.segment` step on a cached embedding of a 512 x 512
  slice (prompt tensors, decode, logits back to the slice). Variants alternate round by round.
- `edit_bench`: a `Session` per engine (slice2d, memory3d) on a short procedural tube, propagated once
  and edited once (every embedding it needs cached), then two edits repeated: `set_mask` (the first result with one slice
  cleared) + a positive click on that slice (a click alone: its box sizes are tried) + `propagate()`, and `set_mask`
  (that slice leaking 8 voxels out) + a negative click in the leak (one decode on it); ms per re-predicted slice,
  exact vs fast decoder alternating, no encoder call allowed during the edits.
- `decoder_agreement`: Dice of the bf16 decoder copy's masks vs the float32 decoder's on real slices.
"""
from __future__ import annotations

import copy
import statistics
import time
from contextlib import nullcontext
from typing import Any, Callable

import numpy as np
import torch
from scipy import ndimage


def _timed(fn: Callable[[], Any]) -> float:
    t = time.perf_counter()
    fn()
    return time.perf_counter() - t


def _alternate(runs: dict[str, Callable[[], Any]], repeats: int) -> dict[str, list[float]]:
    """ms per call of each run, calls alternating round by round after one warm-up call each."""
    for fn in runs.values():
        fn()
    times: dict[str, list[float]] = {name: [] for name in runs}
    for _ in range(repeats):
        for name, fn in runs.items():
            times[name].append(_timed(fn) * 1000)
    return times


def _summary(ts: list[float], ref: list[float] | None = None) -> dict[str, Any]:
    out: dict[str, Any] = {"ms": round(statistics.median(ts), 1), "min_ms": round(min(ts), 1)}
    if ref is not None:
        out["speedup_vs_exact"] = round(statistics.median(ref) / statistics.median(ts), 2)
    return out


def decoder_bench(model: Any, tube_volume: Callable[..., Any], threads: list[int], repeats: int,
                  bf16: bool) -> dict[str, Any]:
    """Decode ms per variant and prompt, and a SliceModel.segment step on a cached 512 x 512 slice."""
    from voxsam.engines.slice2d.slices import SliceModel, bbox_rc, prepare_volume
    from voxsam.models.sam2d.fast_decoder import exact_decoder

    vol = tube_volume(shape=(512, 512, 8), length=6)
    prepared = prepare_volume(vol, 64)
    sm = SliceModel(model, "float32")
    emb = sm.embedding(prepared, 2, 4)[0]  # cached from here on
    box = torch.tensor([[90.0, 100.0, 150.0, 170.0]])
    mask = torch.zeros(1, 1, 256, 256)
    mask[..., 100:170, 90:150] = 1.0
    click = {"points": torch.tensor([[[120.0, 128.0]]]), "labels": torch.tensor([[1]])}
    display = prepared.view(2).take(vol.array > 100, 4)
    box_rc = bbox_rc(display)
    prompts: dict[str, dict[str, Any]] = {"box": {"boxes": box}, "box+mask": {"boxes": box, "mask_input": mask},
                                          "box+click": {"boxes": box, **click}}
    decoders: dict[str, tuple[Any, Any, Callable[[], Any]]] = {
        "exact float32": (model, emb, exact_decoder), "fast float32": (model, emb, nullcontext)}
    if bf16:
        decoders["fast bfloat16 copy (not used)"] = (copy.deepcopy(model).to(torch.bfloat16), emb.bfloat16(), nullcontext)

    def call(m: Any, e: Any, ctx: Callable[[], Any], kw: dict[str, Any]) -> Callable[[], Any]:
        def run() -> Any:
            with ctx():
                return m.decode(e, **kw)
        return run

    def step(ctx: Callable[[], Any], **kw: Any) -> Callable[[], Any]:
        def run() -> Any:
            with ctx():
                return sm.segment(prepared, 2, 4, box_rc=box_rc, **kw)
        return run

    out: dict[str, Any] = {}
    old = torch.get_num_threads()
    with torch.inference_mode():
        for nt in threads:
            torch.set_num_threads(nt)
            runs = {f"decode {p} | {d}": call(m, e, ctx, kw) for p, kw in prompts.items() for d, (m, e, ctx) in decoders.items()}
            for d, ctx in (("exact float32", exact_decoder), ("fast float32", nullcontext)):
                runs[f"segment step 512x512, box | {d}"] = step(ctx, box_expand_px=4.0)
                runs[f"segment step 512x512, box+mask | {d}"] = step(ctx, mask=display)
            times = _alternate(runs, repeats)
            for name, ts in times.items():
                ref = times[name.split(" | ")[0] + " | exact float32"]
                out[f"threads={nt} {name}"] = _summary(ts, ref)
    torch.set_num_threads(old)
    assert prepared.encoder_calls == 1
    return out


def edit_bench(engine: str, tube_volume: Callable[..., Any], repeats: int, threads: int = 1,
               length: int = 12) -> dict[str, Any]:
    """ms per re-predicted slice of one edit (set_mask with a slice lost + a click), exact vs fast decoder,
    with `threads` intra-op threads (restored after)."""
    old = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        return _edit_bench(engine, tube_volume, repeats, length) | {"threads": threads}
    finally:
        torch.set_num_threads(old)


def _edit_bench(engine: str, tube_volume: Callable[..., Any], repeats: int, length: int) -> dict[str, Any]:
    from voxsam.models.sam2d.fast_decoder import exact_decoder
    from voxsam.session import Session

    vol = tube_volume(shape=(256, 256, length + 8), length=length)
    truth = vol.array > 150
    s = Session(vol, engine, precision="float32")
    s.prepare()
    z = np.flatnonzero(truth.any(axis=(0, 1)))
    mid = int(z[z.size // 2])
    ii, jj = np.nonzero(truth[:, :, mid])
    s.add_box((ii.min(), jj.min(), mid), (ii.max(), jj.max(), mid), axis=2, propagate=False)
    t = time.perf_counter()
    first = len(list(s.propagate()))
    first_s = time.perf_counter() - t
    prepared = s._prepared
    mask = s.mask.astype(bool)
    k_edit = mid + 2
    ci, cj = np.nonzero(truth[:, :, k_edit])
    lost = mask.copy()
    lost[:, :, k_edit] = False  # the slice lost: a positive click there (a click alone tries its box sizes)
    leaking = mask.copy()
    grown = ndimage.binary_dilation(truth[:, :, k_edit], iterations=8)
    leaking[:, :, k_edit] |= grown  # the slice leaks 8 voxels out: a negative click in the leak (one decode)
    li, lj = np.argwhere(grown & ~ndimage.binary_dilation(truth[:, :, k_edit], iterations=4))[0]
    scenarios = {"lost slice, positive click": (lost, (float(ci.mean()), float(cj.mean()), k_edit), True),
                 "leaking slice, negative click": (leaking, (float(li), float(lj), k_edit), False)}
    variants = {"exact float32": exact_decoder, "fast float32": nullcontext}
    slices: dict[str, int] = {}

    def edit(scenario: str, variant: str) -> float:
        start, point, positive = scenarios[scenario]
        s.set_mask(start)
        s.add_point(point, positive=positive, axis=2, propagate=False)
        with variants[variant]():
            t = time.perf_counter()
            n = len(list(s.propagate()))
            dt = time.perf_counter() - t
        slices[f"{scenario} | {variant}"] = n
        return dt * 1000 / max(n, 1)

    runs = [(sc, v) for sc in scenarios for v in variants]
    for sc, v in runs:  # warm-up; may encode slices the first propagation did not reach
        edit(sc, v)
    calls = prepared.encoder_calls
    per_slice: dict[tuple[str, str], list[float]] = {run: [] for run in runs}
    for _ in range(repeats):
        for run in runs:
            per_slice[run].append(edit(*run))
    assert prepared.encoder_calls == calls, "a timed edit encoded a slice"
    out: dict[str, Any] = {"engine": engine, "first_propagation_slices": first, "first_propagation_s": round(first_s, 1),
                           "edit_slices_repredicted": slices, "encoder_calls_during_edits": prepared.encoder_calls - calls}
    for (sc, v), ts in per_slice.items():
        name = v if sc.startswith("lost") else f"{v}, {sc}"  # the first scenario keeps its earlier key
        out[f"edit ms per re-predicted slice | {name}"] = _summary(ts, per_slice[(sc, "exact float32")])
    return out


def decoder_agreement(model: Any, slices: list[tuple[str, Any, Any, Any]]) -> dict[str, Any]:
    """Low-res mask Dice of the all-bfloat16 decoder copy vs the float32 decoder, fast path both.

    Args:
        slices: (name, embedding (1, 256, 64, 64) float32, box (1, 4), (h, w) resized region) per slice.
    """
    from voxsam.engines.slice2d.slices import dice2d

    low = copy.deepcopy(model).to(torch.bfloat16)
    rows = []
    with torch.inference_mode():
        for name, emb, box, (h, w) in slices:
            ref, iou_ref = model.decode(emb, boxes=box)
            got, iou = low.decode(emb.bfloat16(), boxes=box)
            rows.append({"slice": name, "dice_vs_float32": round(dice2d((got[0, 0, :h, :w] > 0).numpy(), (ref[0, 0, :h, :w] > 0).numpy()), 4),
                         "iou_pred_diff": round(abs(float(iou[0, 0]) - float(iou_ref[0, 0])), 4)})
    d = [r["dice_vs_float32"] for r in rows]
    return {"slices": len(d), "dice_mean": round(float(np.mean(d)), 4) if d else None, "dice_min": min(d, default=None),
            "slices_below_0.99": sum(v < 0.99 for v in d), "rows": rows}
