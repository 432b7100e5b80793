"""Latency of the viewer page (src/voxsam/server/static) in headless Chromium against a real `voxsam serve`.

The issue's targets: a 256³ volume shows within 2 s on localhost; a click's mask shows within 1 s for
classic / sam3d. For a procedural CT-like int16 volume (a bright ellipsoid "organ" in noisy soft tissue;
256³ and 128³) this measures, in the page (performance.now(), instrumented through `window.voxsam`):

- **open**: the file input's change event (upload starts) → the first niivue draw whose axial tile shows
  the image (pixels read back with gl.readPixels right after the draw; niivue's drawScene ends with
  gl.finish, so the pixels are in the drawing buffer). Split into the upload request, the image request
  (GET image.nii.gz, Resource Timing) and the rest (niivue's decode + texture upload + draws).
- **session**: "New session" → the (empty) overlay loaded and drawn (mask.nii.gz + the overlay layer).
- **clicks**, per engine (classic, sam3d; an engine whose session fails is skipped with the reason): a click
  inside the organ on the axial view → the first draw whose axial tile shows the object's colour around
  the clicked point (gl.readPixels of a patch). The first click includes the engine's `prepare`; then 5
  clicks at other points (each after undoing the previous one, so each starts from an empty mask):
  median and max. Each click is split into **server** (the prompt POST + the propagate stream up to its
  `done` event, from Resource Timing and the page's event times) and **page** (the rest: block fetches,
  writing the overlay array, niivue's overlay layer refresh, draws), with the page's parts listed;
  `render_wait_ms` is the read-back after the draw that showed it, i.e. waiting for the GPU to finish the
  frames queued so far (large with software GL). Pixels are read back only after draws that can show the
  target (the image loaded; the clicked voxel labelled in the page's overlay), so the probe does not make
  the page wait for its earlier frames.

`--static DIR` serves the page from DIR (a copy of an older static/) to compare a page change under the same
conditions.

Prints JSON: the CPU (model, flags), Chromium's version, the WebGL renderer (SwiftShader = software GL: the
page's GPU work then runs on the same CPU cores), load averages, and the figures in ms.

    .venv/bin/python benchmarks/viewer_latency.py                  # 256³ and 128³, classic and sam3d
    .venv/bin/python benchmarks/viewer_latency.py --sizes 128 --engines classic --clicks 3
    .venv/bin/python benchmarks/viewer_latency.py --static /tmp/old_static   # the page as it was
"""
from __future__ import annotations

import argparse
import gzip
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "src"))
sys.path.insert(0, str(REPO / "benchmarks"))

from _serve import running_server  # noqa: E402
from server_load import machine  # noqa: E402

CHROMIUM = "/usr/bin/chromium"
# as tests/server/test_viewer_e2e.py: no GPU here, WebGL2 through ANGLE on SwiftShader
CHROMIUM_ARGS = [
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
    "--use-gl=angle", "--use-angle=swiftshader", "--enable-unsafe-swiftshader",
]
AXIAL = 0


def organ(n: int) -> tuple[tuple[float, float, float], tuple[float, float, float]]:
    """Centre and radii (voxels) of the organ on an n³ grid: off-centre, about a third of the field."""
    return (0.55 * n, 0.48 * n, 0.5 * n), (0.17 * n, 0.14 * n, 0.12 * n)


def make_volume(path: Path, n: int) -> Path:
    import nibabel as nib

    rng = np.random.default_rng(n)
    centre, radii = organ(n)
    x, y, z = (np.arange(n, dtype=np.float32) for _ in range(3))
    d = (((x - centre[0]) / radii[0]) ** 2)[:, None, None] + (((y - centre[1]) / radii[1]) ** 2)[None, :, None] \
        + (((z - centre[2]) / radii[2]) ** 2)[None, None, :]
    image = rng.normal(40.0, 20.0, (n, n, n)).astype(np.float32)  # soft tissue, noisy (HU)
    image += np.where(d <= 1.0, 140.0, 0.0).astype(np.float32)  # the contrast-enhanced organ
    body = (((x - n / 2) / (0.46 * n)) ** 2)[:, None] + (((y - n / 2) / (0.4 * n)) ** 2)[None, :] > 1.0
    image[body, :] = -1000.0  # air around an elliptic body
    spacing = 256.0 / n * 0.8
    img = nib.Nifti1Image(image.astype(np.int16), np.diag([spacing, spacing, spacing * 1.25, 1.0]))
    path.write_bytes(gzip.compress(img.to_bytes(), compresslevel=1))
    return path


def click_points(n: int, count: int) -> list[tuple[int, int, int]]:
    """Click 1 at the organ's centre, then points spread inside its inner half."""
    centre, radii = organ(n)
    offsets = [(0, 0), (0.4, 0.0), (-0.4, 0.1), (0.1, 0.4), (-0.1, -0.4), (0.3, -0.3), (-0.3, 0.3), (0.2, 0.2)]
    out = []
    for m in range(count):
        du, dv = offsets[m % len(offsets)]
        out.append((round(centre[0] + du * radii[0]), round(centre[1] + dv * radii[1]),
                    round(centre[2] + (m % 3 - 1) * 0.2 * radii[2])))
    return out


# Instrumentation, installed once the page is ready: draw / layer-refresh / overlay-write times, the
# propagation's event times, and pixel probes that run right after each draw while one is armed.
INSTRUMENT = r"""
() => {
  const B = window.__bench = { draws: [], layers: [], writes: [], events: [], resizes: [], probe: null, gate: null, hitAt: null, readback: null, upAt: null, changeAt: null }
  const nv = voxsam.nv, overlay = voxsam.overlay, state = voxsam.state
  performance.setResourceTimingBufferSize(100000)
  const timed = (obj, name, into, after) => {
    const f = obj[name].bind(obj)
    obj[name] = (...a) => {
      const t0 = performance.now()
      const r = f(...a)
      const t1 = performance.now()
      B[into].push([t0, t1])
      if (after) after(t1)
      return r
    }
  }
  // the pixel probe reads back (which waits until the GPU has drawn everything queued) only after draws
  // that can show the target (gate): reading back after every draw would serialise the page's work
  timed(nv, 'drawScene', 'draws', (t1) => {
    if (!B.probe || B.hitAt !== null || !B.gate()) return
    const ok = B.probe()
    const t2 = performance.now()
    if (ok) { B.hitAt = t2; B.readback = t2 - t1 }
  })
  timed(nv, 'refreshLayers', 'layers')
  timed(nv, 'resizeListener', 'resizes')
  timed(overlay, 'writeBlock', 'writes')
  let last = state.lastEvent
  Object.defineProperty(state, 'lastEvent', {
    get: () => last,
    set: (v) => { last = v; B.events.push([v?.type, performance.now()]) },
    configurable: true
  })
  window.addEventListener('mouseup', () => { B.upAt = performance.now() }, true)
  window.addEventListener('change', () => { B.changeAt = performance.now() }, true)
  const gl = nv.gl
  // RGBA pixels of a (2h)x(2h) device-pixel patch centred at canvas CSS position (x, y)
  B.patch = (x, y, h) => {
    const dpr = nv.uiData.dpr || 1
    const px = Math.round(x * dpr) - h, py = gl.canvas.height - Math.round(y * dpr) - h
    const buf = new Uint8Array(4 * 4 * h * h)
    gl.bindFramebuffer(gl.FRAMEBUFFER, null)
    gl.readPixels(px, py, 2 * h, 2 * h, gl.RGBA, gl.UNSIGNED_BYTE, buf)
    return buf
  }
  // pixels of object 1's colour (red, blended over grey): r well above g and b
  B.red = (x, y, h) => {
    const p = B.patch(x, y, h)
    let n = 0
    for (let i = 0; i < p.length; i += 4) if (p[i] > p[i + 1] + 60 && p[i] > p[i + 2] + 60) n++
    return n
  }
  // pixels that differ from the background colour: the image is drawn there
  B.drawn = (x, y, h) => {
    const p = B.patch(x, y, h)
    const bg = nv.opts.backColor.map((c) => Math.round(c * 255))
    let n = 0
    for (let i = 0; i < p.length; i += 4) if (Math.abs(p[i] - bg[0]) + Math.abs(p[i + 1] - bg[1]) + Math.abs(p[i + 2] - bg[2]) > 40) n++
    return n
  }
  B.axialCentre = () => {
    const s = nv.screenSlices.find((t) => t.axCorSag === 0)
    if (!s) return null
    const [l, t, w, h] = s.leftTopWidthHeight
    const dpr = nv.uiData.dpr || 1
    return [(l + w / 2) / dpr, (t + h / 2) / dpr]
  }
  B.reset = () => {
    for (const k of ['draws', 'layers', 'writes', 'events', 'resizes']) B[k] = []
    B.hitAt = null; B.readback = null; B.probe = null; B.gate = null
    performance.clearResourceTimings()
  }
  B.renderer = () => {
    const ext = gl.getExtension('WEBGL_debug_renderer_info')
    return ext ? { vendor: gl.getParameter(ext.UNMASKED_VENDOR_WEBGL), renderer: gl.getParameter(ext.UNMASKED_RENDERER_WEBGL) }
      : { vendor: gl.getParameter(gl.VENDOR), renderer: gl.getParameter(gl.RENDERER) }
  }
  B.resources = () => performance.getEntriesByType('resource').map((e) => ({
    url: e.name.replace(location.origin, ''), start: e.startTime, end: e.responseEnd, ttfb: e.responseStart
  }))
}
"""


def rnd(x: float | None) -> float | None:
    return None if x is None else round(float(x), 1)


def stats(values: list[float]) -> dict[str, float | None]:
    return {"median": rnd(statistics.median(values)) if values else None, "max": rnd(max(values)) if values else None}


def sum_before(spans: list[list[float]], start: float, end: float) -> float:
    return sum(min(t1, end) - t0 for t0, t1 in spans if t0 >= start and t0 < end)


def wait(page: Any, condition: str, timeout_s: float = 180) -> None:
    page.wait_for_function(condition, timeout=timeout_s * 1000)


def measure_open(page: Any, volume: Path) -> dict[str, Any]:
    page.evaluate("__bench.reset(); __bench.gate = () => voxsam.nv.volumes.length === 1 && __bench.axialCentre() !== null; "
                  "__bench.probe = () => { const c = __bench.axialCentre(); return __bench.drawn(c[0] + 20, c[1] + 20, 8) > 100 }; null")
    page.set_input_files("#file", str(volume))
    wait(page, "__bench.hitAt !== null && voxsam.state.inverse !== null")
    b = page.evaluate("({t0: __bench.changeAt, hit: __bench.hitAt, readback: __bench.readback, draws: __bench.draws, "
                      "layers: __bench.layers, resizes: __bench.resizes, res: __bench.resources()})")
    t0, hit = b["t0"], b["hit"]
    upload = next(r for r in b["res"] if r["url"].startswith("/api/volumes?"))
    image = next(r for r in b["res"] if r["url"].endswith("/image.nii.gz"))
    return {
        "shown_ms": rnd(hit - t0),
        "upload_request_ms": rnd(upload["end"] - upload["start"]),
        "image_request_ms": rnd(image["end"] - image["start"]),
        "after_image_request_ms": rnd(hit - image["end"]),
        "layer_refresh_ms": rnd(sum_before(b["layers"], t0, hit)),
        "draws_ms": rnd(sum_before(b["draws"], t0, hit)), "draws": sum(1 for d in b["draws"] if d[0] < hit),
        "render_wait_ms": rnd(b["readback"]), "resizes": len(b["resizes"]),
    }


def measure_click(page: Any, voxel: tuple[int, int, int], shape: tuple[int, int, int]) -> dict[str, Any]:
    page.evaluate("v => voxsam.goTo(v)", list(voxel))
    pos = page.evaluate("([v, t]) => voxsam.canvasPosition(v, t)", [list(voxel), AXIAL])
    flat = voxel[0] + shape[0] * (voxel[1] + shape[1] * voxel[2])
    page.evaluate("([x, y, n]) => { __bench.reset(); __bench.gate = () => voxsam.overlay.img[n] === 1; "
                  "__bench.probe = () => __bench.red(x, y, 12) >= 60 }", [pos[0], pos[1], flat])
    done = page.evaluate("voxsam.state.propagations")
    box = page.locator("#gl").bounding_box()
    page.mouse.click(box["x"] + pos[0], box["y"] + pos[1])
    wait(page, f"__bench.hitAt !== null && voxsam.state.propagations > {done} && !voxsam.busy && voxsam.overlay.frame === 0")
    b = page.evaluate("({t0: __bench.upAt, hit: __bench.hitAt, readback: __bench.readback, draws: __bench.draws, layers: __bench.layers, "
                      "writes: __bench.writes, events: __bench.events, resizes: __bench.resizes, res: __bench.resources()})")
    t0, hit = b["t0"], b["hit"]
    prompt = next(r for r in b["res"] if r["url"].endswith("/prompts"))
    stream = next(r for r in b["res"] if r["url"].endswith("/propagate"))
    done_at = next(t for kind, t in b["events"] if kind == "done")
    blocks = [r for r in b["res"] if "/mask?" in r["url"] and r["start"] < hit]
    server = (prompt["end"] - prompt["start"]) + (min(done_at, hit) - stream["start"])
    total = hit - t0
    voxels = page.evaluate(f"voxsam.overlay.img[{flat}]")
    return {
        "shown_ms": rnd(total), "server_ms": rnd(server), "page_ms": rnd(total - server),
        "block_fetch_ms": rnd(sum(min(r["end"], hit) - r["start"] for r in blocks)), "block_fetches": len(blocks),
        "overlay_write_ms": rnd(sum_before(b["writes"], t0, hit)),
        "layer_refresh_ms": rnd(sum_before(b["layers"], t0, hit)), "layer_refreshes": sum(1 for x in b["layers"] if x[0] < hit),
        "draws_ms": rnd(sum_before(b["draws"], t0, hit)), "draws": sum(1 for x in b["draws"] if x[0] < hit),
        "render_wait_ms": rnd(b["readback"]), "resizes": sum(1 for x in b["resizes"] if x[0] < hit),
        "slice_events": sum(1 for kind, _ in b["events"] if kind == "slice"),
        "settled_ms": rnd(max(x[1] for x in b["draws"]) - t0),  # last draw after the propagation's end
        "clicked_voxel_label": voxels,
    }


def undo(page: Any, voxel: tuple[int, int, int], shape: tuple[int, int, int]) -> None:
    updates = page.evaluate("voxsam.maskUpdates")
    page.keyboard.press("z")
    flat = voxel[0] + shape[0] * (voxel[1] + shape[1] * voxel[2])
    wait(page, f"voxsam.maskUpdates > {updates} && voxsam.overlay.img[{flat}] === 0 && voxsam.overlay.frame === 0 && !voxsam.busy")


def run_engine(page: Any, engine: str, n: int, clicks: int) -> dict[str, Any]:
    shape = (n, n, n)
    page.select_option("#engine", engine)
    errors = page.evaluate("voxsam.state.errors.length")
    page.evaluate("__bench.reset()")
    t0 = time.perf_counter()
    page.click("#new-session")
    wait(page, f"(voxsam.sessionId !== null && voxsam.state.session.engine === '{engine}' && voxsam.overlay.volume !== null"
               f" && voxsam.overlay.frame === 0) || voxsam.state.errors.length > {errors}")
    opened = time.perf_counter() - t0
    failed = page.evaluate(f"voxsam.state.errors.slice({errors})")
    if failed:
        return {"skipped": f"new session failed: {'; '.join(failed)}"}
    out: dict[str, Any] = {"session_open_ms": rnd(1000 * opened)}
    points = click_points(n, clicks + 1)
    runs = []
    for m, v in enumerate(points):
        r = measure_click(page, v, shape)
        r["voxel"] = list(v)
        runs.append(r)
        if r["clicked_voxel_label"] != 1:
            out.setdefault("warnings", []).append(f"click {m} at {v}: the clicked voxel is not in the mask")
        undo(page, v, shape)
    out["first_click"] = runs[0]
    rest = runs[1:]
    keys = ["shown_ms", "server_ms", "page_ms", "block_fetch_ms", "overlay_write_ms", "layer_refresh_ms", "draws_ms",
            "render_wait_ms", "settled_ms"]
    out["next_clicks"] = {k: stats([r[k] for r in rest]) for k in keys}
    out["next_clicks"]["n"] = len(rest)
    out["next_clicks"]["counts_median"] = {k: statistics.median(r[k] for r in rest) for k in ("block_fetches", "layer_refreshes", "draws", "resizes", "slice_events")}
    out["clicks"] = rest
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", type=int, nargs="+", default=[256, 128])
    parser.add_argument("--engines", nargs="+", default=["classic", "sam3d"])
    parser.add_argument("--clicks", type=int, default=5, help="clicks after the first one, per engine")
    parser.add_argument("--static", type=Path, default=None,
                        help="serve the page from this folder instead (a copy of an older static/, to compare a page change)")
    args = parser.parse_args()
    from playwright.sync_api import sync_playwright

    report: dict[str, Any] = {"benchmark": "viewer_latency", "machine": machine()}
    version = subprocess.run([CHROMIUM, "--version"], capture_output=True, text=True).stdout.strip()
    report["chromium"] = version
    serve = ["-m", "voxsam.cli.main"]
    if args.static is not None:
        report["static"] = str(args.static)
        serve = ["-c", "import sys, pathlib, voxsam.server.app as a; a.STATIC = pathlib.Path(sys.argv.pop(1)); "
                       "from voxsam.cli.main import main; sys.exit(main())", str(args.static.resolve())]
    with running_server(serve) as (base, _server):
        with tempfile.TemporaryDirectory() as tmp, sync_playwright() as pw:
            context = pw.chromium.launch_persistent_context(
                str(Path(tmp) / "profile"), executable_path=CHROMIUM, args=CHROMIUM_ARGS, headless=True,
                viewport={"width": 1280, "height": 800})
            results = {}
            for n in args.sizes:
                volume = make_volume(Path(tmp) / f"ct{n}.nii.gz", n)
                page = context.new_page()
                problems: list[str] = []
                page.on("pageerror", lambda e: problems.append(str(e)))
                page.goto(base + "/")
                wait(page, "window.voxsam && voxsam.ready")
                page.evaluate(INSTRUMENT)
                report.setdefault("webgl", page.evaluate("__bench.renderer()"))
                entry: dict[str, Any] = {"shape": [n, n, n], "file_mb": round(volume.stat().st_size / 2**20, 1),
                                         "open": measure_open(page, volume)}
                for engine in args.engines:
                    try:
                        entry[engine] = run_engine(page, engine, n, args.clicks)
                    except Exception as exc:  # report and go on with the next engine
                        entry[engine] = {"skipped": f"{type(exc).__name__}: {str(exc).splitlines()[0]}"}
                if problems:
                    entry["page_errors"] = problems[:5]
                results[f"{n}^3"] = entry
                page.close()
            context.close()
        report["results"] = results
        report["load_1min_after"] = os.getloadavg()[0]
        print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
