"""Many sessions at once on shared engines, busy sessions, cancellation, the memory budget's evictions."""
from __future__ import annotations

import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from tests.server.conftest import CENTER, new_session, upload
from tests.server.slow_engine import slow_engine  # noqa: F401  (fixture)


def test_sixteen_sessions_click_at_once_on_one_shared_engine(make_client, ct_file: Path) -> None:
    c = make_client()
    vid = upload(c, ct_file)["volume_id"]
    sids = [new_session(c, vid) for _ in range(16)]

    def click(sid: str) -> tuple[int, int]:
        r = c.post(f"/api/sessions/{sid}/prompts", json={"kind": "point", "point": list(CENTER)})
        return r.status_code, r.json()["objects"][0]["voxels"] if r.status_code == 200 else -1

    with ThreadPoolExecutor(8) as pool:
        results = list(pool.map(click, sids))
    assert all(code == 200 for code, _ in results)
    assert len({voxels for _, voxels in results}) == 1  # same volume, same click, same answer
    store = c.app.state.store
    engines = {id(store.session(sid).session.engine) for sid in sids}
    assert len(engines) == 1  # one engine instance shared by all sessions


def test_busy_session_answers_409_and_cancel_keeps_the_decided_slices(make_client, ct_file: Path, slow_engine: str) -> None:
    c = make_client()
    sid = new_session(c, upload(c, ct_file)["volume_id"], slow_engine, pause_s=0.2, span=9)
    c.post(f"/api/sessions/{sid}/prompts", json={"kind": "point", "point": list(CENTER), "axis": 2, "run": False})
    lines: list[str] = []

    def stream() -> None:
        with c.stream("POST", f"/api/sessions/{sid}/propagate", json={}) as r:
            lines.extend(r.iter_lines())

    t = threading.Thread(target=stream)
    t.start()
    deadline = time.time() + 10
    while not c.get(f"/api/sessions/{sid}").json()["busy"] and time.time() < deadline:
        time.sleep(0.02)
    r = c.post(f"/api/sessions/{sid}/prompts", json={"kind": "point", "point": list(CENTER), "axis": 2})
    assert r.status_code == 409 and "propagation" in r.json()["message"]
    assert c.post(f"/api/sessions/{sid}/undo").status_code == 409
    time.sleep(0.5)
    assert c.post(f"/api/sessions/{sid}/cancel").json() == {"cancelled": True}
    t.join(10)
    done = [line for line in lines if line.startswith("data:")][-1]
    assert '"cancelled": true' in done
    info = c.get(f"/api/sessions/{sid}").json()
    assert not info["busy"] and 0 < info["objects"][0]["voxels"]
    slices_kept = sum(1 for line in lines if line == "event: slice")
    assert 1 <= slices_kept < 19
    assert c.post(f"/api/sessions/{sid}/cancel").json() == {"cancelled": False}


def test_memory_budget_evicts_the_least_recently_used_session(make_client, ct_file: Path) -> None:
    voxels = 40 * 36 * 20  # image 2 bytes per voxel; a clicked session ~5 (mask + prepared copy)
    c = make_client(memory_bytes=2 * voxels + 5 * voxels + 3 * voxels, history_bytes=2**20)
    vid = upload(c, ct_file)["volume_id"]
    first = new_session(c, vid)
    c.post(f"/api/sessions/{first}/prompts", json={"kind": "point", "point": list(CENTER)})
    second = new_session(c, vid)
    c.post(f"/api/sessions/{second}/prompts", json={"kind": "point", "point": list(CENTER)})
    r = c.get(f"/api/sessions/{first}")
    assert r.status_code == 410 and "evicted" in r.json()["message"] and "memory budget" in r.json()["message"]
    assert c.get(f"/api/sessions/{second}").status_code == 200


def test_session_count_limit_evicts_the_oldest(make_client, ct_file: Path) -> None:
    c = make_client(max_sessions=2)
    vid = upload(c, ct_file)["volume_id"]
    a, b, d = (new_session(c, vid) for _ in range(3))
    assert c.get(f"/api/sessions/{a}").status_code == 410
    assert [s["session_id"] for s in c.get("/api/sessions").json()] == [b, d]
    assert c.delete(f"/api/sessions/{b}").json() == {"deleted": b}
    assert c.get(f"/api/sessions/{b}").status_code == 404  # deleted, not evicted
