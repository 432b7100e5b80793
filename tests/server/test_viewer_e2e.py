"""End-to-end test of the viewer page (src/voxsam/server/static) in headless Chromium, driven by playwright.

The real server (`create_app`, uvicorn on a free port in a thread) serves the page; the test uploads a small
synthetic volume, starts a `classic` session, clicks inside the object on the axial view, and checks through
the API that the mask is there and near the click, that the page's overlay equals the server's label map and
that the canvas shows overlay pixels. Then it paints a correction on one slice and applies it, undoes it,
and saves (a download). Both a RAS and an LPS (x and y flipped) affine are used: niivue shows volumes on a
RAS grid, and a click must still reach the stored voxel the API means.

`VOXSAM_SCREENSHOT=1` also writes docs/images/viewer.png (the README's picture).
Skips only where Debian's chromium (/usr/bin/chromium) or the playwright package is missing.
"""
from __future__ import annotations

import gzip
import io
import json
import os
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import nibabel as nib
import numpy as np
import pytest

from tests.server.slow_engine import slow_engine  # noqa: F401  (fixture: a slow propagating test engine)

CHROMIUM = Path("/usr/bin/chromium")
if not CHROMIUM.exists():
    pytest.skip("Debian's chromium is not installed (/usr/bin/chromium): `apt-get install chromium`", allow_module_level=True)
sync_api = pytest.importorskip("playwright.sync_api", reason="the playwright package is not installed (pip install playwright)")

# Headless Chromium without a GPU: WebGL2 (niivue needs it) runs on SwiftShader through ANGLE.
CHROMIUM_ARGS = [
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
    "--use-gl=angle", "--use-angle=swiftshader", "--enable-unsafe-swiftshader",
]
SHAPE = (48, 40, 24)
CENTER = (30, 15, 12)  # the ellipsoid's centre: off the grid's centre, so a flipped axis would miss it
RADII = (9, 7, 5)
ROOT = Path(__file__).resolve().parents[2]
AXIAL, CORONAL, RENDER = 0, 1, 4  # niivue's SLICE_TYPE values
TOKEN = "e2e-token-0123456789"


def make_volume(path: Path, affine: np.ndarray) -> Path:
    g = np.mgrid[: SHAPE[0], : SHAPE[1], : SHAPE[2]].astype(np.float64)
    inside = sum(((g[a] - CENTER[a]) / RADII[a]) ** 2 for a in range(3)) <= 1.0
    rng = np.random.default_rng(0)
    image = (rng.normal(0.0, 8.0, SHAPE) + np.where(inside, 400.0, 0.0)).astype(np.int16)
    nib.save(nib.Nifti1Image(image, affine), path)
    return path


AFFINES = {
    "ras": np.diag([0.9, 0.9, 2.0, 1.0]),
    # LPS-style: i runs right-to-left and j anterior-to-posterior, as DICOM stores them
    "lps": np.array([[-0.9, 0, 0, 20.0], [0, -0.9, 0, 15.0], [0, 0, 2.0, -10.0], [0, 0, 0, 1]]),
}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture(scope="module")
def server() -> Iterator[str]:
    import uvicorn

    from voxsam.server import ServerConfig, create_app

    port = free_port()
    config = uvicorn.Config(create_app(ServerConfig()), host="127.0.0.1", port=port, log_level="warning")
    srv = uvicorn.Server(config)
    thread = threading.Thread(target=srv.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 20
    while not srv.started:
        assert time.monotonic() < deadline, "the server did not start"
        time.sleep(0.05)
    yield f"http://127.0.0.1:{port}"
    srv.should_exit = True
    thread.join(10)


@pytest.fixture(scope="module")
def browser(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    with sync_api.sync_playwright() as pw:
        context = pw.chromium.launch_persistent_context(
            str(tmp_path_factory.mktemp("chromium-profile")), executable_path=str(CHROMIUM), args=CHROMIUM_ARGS,
            headless=True, viewport={"width": 1280, "height": 800}, accept_downloads=True,
        )
        yield context
        context.close()


def get(base: str, path: str) -> bytes:
    from urllib.request import urlopen

    with urlopen(base + path, timeout=30) as r:
        return bytes(r.read())


def server_labels(base: str, sid: str) -> np.ndarray:
    img = nib.Nifti1Image.from_bytes(gzip.decompress(get(base, f"/api/sessions/{sid}/mask.nii.gz")))
    return np.asarray(img.dataobj)


def wait(page: Any, condition: str, timeout_ms: int = 20000) -> None:
    page.wait_for_function(condition, timeout=timeout_ms)


def click_voxel(page: Any, voxel: tuple[int, int, int], axcorsag: int, shift: bool = False) -> None:
    """Click stored voxel `voxel` in the tile of view `axcorsag` (niivue finds it on the canvas)."""
    page.evaluate("v => voxsam.goTo(v)", list(voxel))
    pos = page.evaluate("([v, t]) => voxsam.canvasPosition(v, t)", [list(voxel), axcorsag])
    assert pos is not None, f"voxel {voxel} is not on view {axcorsag}"
    box = page.locator("#gl").bounding_box()
    if shift:
        page.keyboard.down("Shift")
    page.mouse.click(box["x"] + pos[0], box["y"] + pos[1])
    if shift:
        page.keyboard.up("Shift")


def overlay_pixels(page: Any) -> int:
    """Canvas pixels where the object's colour (red) shows over the grey image."""
    from PIL import Image

    rgb = np.asarray(Image.open(io.BytesIO(page.locator("#gl").screenshot())).convert("RGB")).astype(int)
    r, g, b = rgb[..., 0], rgb[..., 1], rgb[..., 2]
    return int(np.count_nonzero((r > g + 60) & (r > b + 60)))


def propagations(page: Any) -> int:
    return int(page.evaluate("voxsam.state.propagations"))


def wait_idle_after(page: Any, count: int) -> None:
    wait(page, f"voxsam.state.propagations > {count} && !voxsam.busy")


def open_page(browser: Any, base: str, volume: Path, engine: str = "classic",
              options: dict[str, str] | None = None) -> tuple[Any, list[dict[str, Any]], list[str]]:
    page = browser.new_page()
    prompts: list[dict[str, Any]] = []
    problems: list[str] = []
    page.on("request", lambda r: prompts.append(json.loads(r.post_data or "{}")) if r.url.endswith("/prompts") else None)
    page.on("console", lambda m: problems.append(m.text) if m.type == "error" else None)
    page.on("pageerror", lambda e: problems.append(str(e)))
    page.on("response", lambda r: problems.append(f"{r.status} {r.url}") if r.status >= 400 else None)
    page.goto(base + "/")
    wait(page, "window.voxsam && voxsam.ready")
    assert engine in page.eval_on_selector_all("#engine option", "os => os.map(o => o.value)")
    page.set_input_files("#file", str(volume))
    wait(page, "voxsam.state.inverse !== null && voxsam.nv.volumes.length === 1")
    page.select_option("#engine", engine)
    if options:
        page.click("#options-box summary")  # the options form is folded away by default
    for name, value in (options or {}).items():
        page.fill(f"#opt-{name}", value)
    page.click("#new-session")
    wait(page, "voxsam.sessionId !== null && voxsam.overlay.volume !== null")
    return page, prompts, problems


@pytest.mark.parametrize("orientation", ["ras", "lps"])
def test_viewer_click_paint_undo_save(server: str, browser: Any, tmp_path: Path, orientation: str) -> None:
    affine = AFFINES[orientation]
    page, prompts, problems = open_page(browser, server, make_volume(tmp_path / f"{orientation}.nii.gz", affine))
    sid = page.evaluate("voxsam.sessionId")

    # a click inside the object on the axial view: a 2D point on stored axis 2 at the clicked voxel
    done = propagations(page)
    click_voxel(page, CENTER, AXIAL)
    wait_idle_after(page, done)
    sent = prompts[-1]
    assert sent["kind"] == "point" and sent["positive"] is True and sent["run"] is False
    assert sent["axis"] == 2  # the axial view is normal to world z, which is stored axis 2 in both affines
    assert np.abs(np.subtract(sent["point"], CENTER)).max() <= 1, (sent, CENTER)

    labels = server_labels(server, sid)
    assert labels[CENTER] == 1
    ijk = np.argwhere(labels == 1)
    assert 200 < len(ijk) < 4000, len(ijk)
    assert np.abs(ijk.mean(axis=0) - CENTER).max() < 2.5, ijk.mean(axis=0)
    # the page's overlay is the server's label map, voxel for voxel (same stored order)
    assert page_labels_equal(page, labels)
    # a packed slice mask from the page decodes on the server's grid, on every axis
    from voxsam.server.masks import decode_slice_mask

    for axis in range(3):
        sm = page.evaluate("([a, k]) => voxsam.sliceMask(a, k)", [axis, CENTER[axis]])
        expected = np.take(labels == 1, CENTER[axis], axis=axis)
        assert np.array_equal(decode_slice_mask(sm["bits"], sm["shape"], expected.shape), expected), axis
    assert overlay_pixels(page) > 100
    if orientation == "ras":
        check_objects_and_3d_click(page, server, sid, labels, prompts)
    if orientation == "lps":
        check_paint_undo_save(page, server, sid, labels, prompts, affine, tmp_path)
    assert not problems, problems
    page.close()


def page_labels_equal(page: Any, labels: np.ndarray) -> bool:
    shown = np.array(page.evaluate("Array.from(voxsam.overlay.img)"), dtype=np.uint8).reshape(SHAPE, order="F")
    return bool(np.array_equal(shown, labels))


def check_objects_and_3d_click(page: Any, base: str, sid: str, one: np.ndarray, prompts: list[dict[str, Any]]) -> None:
    # a second object ("n"), clicked on the coronal view: a 2D point on stored axis 1
    page.keyboard.press("n")
    assert page.evaluate("voxsam.state.objectId") == 2
    done = propagations(page)
    click_voxel(page, CENTER, CORONAL)
    wait_idle_after(page, done)
    sent = prompts[-1]
    assert sent["object_id"] == 2 and sent["axis"] == 1
    assert np.abs(np.subtract(sent["point"], CENTER)).max() <= 1, (sent, CENTER)
    two = server_labels(base, sid)
    assert np.count_nonzero(two == 2) > 200
    assert page_labels_equal(page, two)
    assert page.locator("#objects li").count() == 2

    # delete it from the object list: the label map is object 1's again, on the server and in the page
    updates = page.evaluate("voxsam.maskUpdates")
    page.click("#objects li[data-object-id='2'] .delete")
    wait(page, f"voxsam.state.objects.size === 1 && voxsam.maskUpdates > {updates}")
    assert np.array_equal(server_labels(base, sid), one)
    assert page_labels_equal(page, one)
    assert page.evaluate("voxsam.state.objectId") == 1

    # a click on the 3D render (no drag) becomes a 3D point where niivue's depth picker lands
    render = next(s["leftTopWidthHeight"] for s in page.evaluate("voxsam.nv.screenSlices") if s["axCorSag"] == RENDER)
    dpr = page.evaluate("voxsam.nv.uiData.dpr")
    box = page.locator("#gl").bounding_box()
    done = propagations(page)
    page.mouse.click(box["x"] + (render[0] + render[2] / 2) / dpr, box["y"] + (render[1] + render[3] / 2) / dpr)
    wait_idle_after(page, done)
    sent = prompts[-1]
    assert sent["kind"] == "point" and sent["axis"] is None
    assert all(0 <= v < n for v, n in zip(sent["point"], SHAPE)), sent


def check_paint_undo_save(page: Any, base: str, sid: str, before: np.ndarray, prompts: list[dict[str, Any]],
                          affine: np.ndarray, tmp_path: Path) -> None:
    # paint a stroke outside the object on the clicked axial slice, then apply it
    k = CENTER[2]
    a, b = (CENTER[0] - 16, CENTER[1] - 2, k), (CENTER[0] - 16, CENTER[1] + 4, k)
    assert before[a] == 0 and before[b] == 0
    page.keyboard.press("p")
    page.evaluate("v => voxsam.goTo(v)", list(CENTER))
    box = page.locator("#gl").bounding_box()
    pa, pb = (page.evaluate("([v, t]) => voxsam.canvasPosition(v, t)", [list(v), AXIAL]) for v in (a, b))
    page.mouse.move(box["x"] + pa[0], box["y"] + pa[1])
    page.mouse.down()
    page.mouse.move(box["x"] + pb[0], box["y"] + pb[1], steps=5)
    page.mouse.up()
    painted = page.evaluate("voxsam.state.edits.size")
    assert painted == 1
    assert page.evaluate(f"voxsam.overlay.img[{a[0] + SHAPE[0] * (a[1] + SHAPE[1] * a[2])}]") == 1
    if os.environ.get("VOXSAM_SCREENSHOT") == "1":
        out = ROOT / "docs" / "images" / "viewer.png"
        out.parent.mkdir(parents=True, exist_ok=True)
        page.screenshot(path=str(out))
    done = propagations(page)
    sent_before = len(prompts)
    page.keyboard.press("a")
    wait_idle_after(page, done)
    correction = prompts[sent_before:]
    # classic takes no slice masks: the page sends the painted change as a positive click on that slice
    assert correction and all(p["kind"] == "point" and p["axis"] == 2 and p["point"][2] == k for p in correction)
    after = server_labels(base, sid)
    corrected = tuple(int(v) for v in correction[0]["point"])
    assert after[corrected] == 1 and before[corrected] == 0
    assert page.evaluate("voxsam.state.edits.size") == 0

    # undo takes the correction back, on the server and in the page
    updates = page.evaluate("voxsam.maskUpdates")
    page.keyboard.press("Escape")  # idle: nothing to cancel, and nothing breaks
    page.keyboard.press("z")
    wait(page, f"voxsam.maskUpdates > {updates}")
    undone = server_labels(base, sid)
    assert np.array_equal(undone, before)
    wait(page, f"voxsam.overlay.img[{corrected[0] + SHAPE[0] * (corrected[1] + SHAPE[1] * corrected[2])}] === 0")

    # save: a NIfTI download on the source grid, equal to the server's mask
    with page.expect_download() as info:
        page.click("#save")
    saved = tmp_path / info.value.suggested_filename
    info.value.save_as(saved)
    assert saved.name.endswith(".nii.gz")
    img = nib.load(saved)
    assert np.array_equal(np.asarray(img.dataobj) > 0, before > 0)
    assert np.allclose(img.affine, affine, atol=1e-4)


def paint_stroke(page: Any, a: tuple[int, int, int], b: tuple[int, int, int], view: int) -> None:
    """Drag from stored voxel a to b on view `view` (the paint tool must be on)."""
    page.evaluate("v => voxsam.goTo(v)", list(a))
    box = page.locator("#gl").bounding_box()
    pa, pb = (page.evaluate("([v, t]) => voxsam.canvasPosition(v, t)", [list(v), view]) for v in (a, b))
    page.mouse.move(box["x"] + pa[0], box["y"] + pa[1])
    page.mouse.down()
    page.mouse.move(box["x"] + pb[0], box["y"] + pb[1], steps=5)
    page.mouse.up()


def test_viewer_slice_mask_progress_and_cancel(server: str, browser: Any, tmp_path: Path, slow_engine: str) -> None:
    """An engine that takes slice masks and propagates slowly: the painted slice goes out as a slice_mask
    (bits and orientation checked against the server's grid) and propagates; a propagation shows its
    progress and Esc cancels it, keeping the slices decided so far."""
    volume = make_volume(tmp_path / "lps.nii.gz", AFFINES["lps"])
    span = 4
    page, prompts, problems = open_page(browser, server, volume, slow_engine, {"pause_s": "0.15", "span": str(span)})
    assert page.evaluate("voxsam.state.session.options") == {"pause_s": 0.15, "span": span}
    sid = page.evaluate("voxsam.sessionId")
    k = CENTER[2]

    page.keyboard.press("p")
    paint_stroke(page, (CENTER[0] - 3, CENTER[1] - 2, k), (CENTER[0] + 3, CENTER[1] + 2, k), AXIAL)
    painted = np.array(page.evaluate(f"Array.from(voxsam.overlay.readSlice(2, {k}))")).reshape(SHAPE[:2]) == 1
    assert 20 < painted.sum() < 200, painted.sum()
    done = propagations(page)
    page.click("#apply")
    wait_idle_after(page, done)
    sent = prompts[-1]
    assert sent["kind"] == "slice_mask" and sent["mask"]["axis"] == 2 and sent["mask"]["index"] == k
    labels = server_labels(server, sid)
    for z in range(k - span, k + span + 1):  # the engine copies the painted slice onto its neighbours
        assert np.array_equal(labels[:, :, z] == 1, painted), z
    assert not labels[:, :, k + span + 1].any()
    assert page_labels_equal(page, labels)

    # a click propagates slice by slice: the progress line counts them, Esc cancels
    page.keyboard.press("b")
    page.keyboard.press("n")
    click_voxel(page, (CENTER[0], CENTER[1], 4), AXIAL)
    wait(page, "voxsam.busy && voxsam.lastEvent && voxsam.lastEvent.type === 'slice'")
    assert "slices decided" in page.inner_text("#progress-text")
    page.keyboard.press("Escape")
    wait(page, "!voxsam.busy")
    last = page.evaluate("voxsam.lastEvent")
    assert last["type"] == "done" and last["data"]["cancelled"] is True
    kept = server_labels(server, sid)
    decided = [z for z in range(SHAPE[2]) if (kept[:, :, z] == 2).any()]
    assert 1 <= len(decided) < 2 * span + 1, decided
    assert page_labels_equal(page, kept)
    assert not problems, problems
    page.close()


def test_viewer_with_token(browser: Any, tmp_path: Path) -> None:
    """With a token, ?token= in the page URL is enough: the page sends it on every API call and niivue's
    image request (the server's cookie carries it for the page's own files). The volume is opened by its
    server path (under a data root) this time."""
    import uvicorn

    from voxsam.server import ServerConfig, create_app

    port = free_port()
    volume = make_volume(tmp_path / "t.nii.gz", AFFINES["ras"])
    app = create_app(ServerConfig(token=TOKEN, data_roots=(tmp_path,)))
    srv = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=srv.run, daemon=True)
    thread.start()
    try:
        while not srv.started:
            time.sleep(0.05)
        page = browser.new_page()
        failed: list[str] = []
        bearer: dict[str, str | None] = {}
        page.on("response", lambda r: failed.append(f"{r.status} {r.url}") if r.status >= 400 else None)
        page.on("request", lambda r: bearer.update({r.url: r.headers.get("authorization")}) if "/api/" in r.url else None)
        page.goto(f"http://127.0.0.1:{port}/?token={TOKEN}")
        wait(page, "window.voxsam && voxsam.ready")
        page.fill("#path", str(volume))
        page.press("#path", "Enter")
        wait(page, "voxsam.state.inverse !== null && voxsam.nv.volumes.length === 1")
        page.click("#new-session")
        wait(page, "voxsam.sessionId !== null && voxsam.overlay.volume !== null")
        assert not failed, failed
        assert any(url.endswith("/image.nii.gz") for url in bearer), bearer
        assert set(bearer.values()) == {f"Bearer {TOKEN}"}, bearer
        page.close()
    finally:
        srv.should_exit = True
        thread.join(10)
