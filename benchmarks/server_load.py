"""Load on the REST server: N concurrent clients x 50 requests each, against a real `voxsam serve` process.

Each client uploads its own volume (a procedural 96x96x64 CT with three bright blobs), creates a session,
then 16 times: queues a click inside a blob (POST prompts, run=false), streams the propagation (POST
propagate, read to the end) and fetches the block that changed (GET mask?region=) = 2 + 16 x 3 = 50 requests.

Prints JSON: the CPU (model, flags), latency p50/p95/max per request kind and overall (ms), errors (must be
0), the server process's peak RSS (VmHWM, MB), wall seconds and requests per second.

    python benchmarks/server_load.py                      # 16 clients, engine classic
    python benchmarks/server_load.py --clients 4 --engine sam3d
"""
from __future__ import annotations

import argparse
import gzip
import io
import json
import os
import platform
import threading
import time
from collections import defaultdict
from pathlib import Path
from typing import Any

import numpy as np

from _serve import running_server  # benchmarks/_serve.py (scripts run from benchmarks/)

REPO = Path(__file__).resolve().parents[1]
SHAPE = (96, 96, 64)
BLOBS = ((30, 30, 20, 9), (64, 40, 36, 12), (48, 70, 44, 8))  # centre (i, j, k) and radius, voxels


def volume_bytes(seed: int) -> bytes:
    import nibabel as nib

    rng = np.random.default_rng(seed)
    grid = np.indices(SHAPE).astype(np.float32)
    image = rng.normal(40, 15, SHAPE).astype(np.float32)  # soft tissue with noise
    for (ci, cj, ck, r) in BLOBS:
        inside = (grid[0] - ci) ** 2 + (grid[1] - cj) ** 2 + ((grid[2] - ck) * 1.6) ** 2 <= r**2
        image[inside] += 180
    buf = io.BytesIO()
    img = nib.Nifti1Image(image.astype(np.int16), np.diag([0.9, 0.9, 1.5, 1.0]))
    buf.write(gzip.compress(img.to_bytes(), compresslevel=1))
    return buf.getvalue()


def machine() -> dict[str, Any]:
    from voxsam.models.sam2d.cpu import cpu_flags

    model = platform.processor() or "?"
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            model = next((line.split(":", 1)[1].strip() for line in f if line.startswith("model name")), model)
    except OSError:
        pass
    flags = cpu_flags()
    return {"cpu": model, "cpu_count": os.cpu_count(),
            "flags": {f: f in flags for f in ("avx2", "avx512f", "avx512_bf16", "amx_bf16")},
            "load_1min_before": os.getloadavg()[0]}


def peak_rss_mb(pid: int) -> float:
    with open(f"/proc/{pid}/status", encoding="utf-8") as f:
        for line in f:
            if line.startswith("VmHWM"):
                return round(int(line.split()[1]) / 1024, 1)
    return float("nan")


def client(base: str, index: int, engine: str, rounds: int, times: dict[str, list[float]], errors: list[str], lock: threading.Lock) -> None:
    import httpx

    rng = np.random.default_rng(index)
    with httpx.Client(base_url=base, timeout=120) as http:
        def call(kind: str, method: str, url: str, **kwargs: Any) -> Any:
            start = time.perf_counter()
            try:
                if kind == "propagate":
                    with http.stream(method, url, **kwargs) as r:
                        body = "".join(r.iter_text())
                        ok = r.status_code == 200 and "event: done" in body
                        answer: Any = body
                else:
                    r = http.request(method, url, **kwargs)
                    ok = r.status_code == 200
                    answer = r.json() if ok and r.headers.get("content-type", "").startswith("application/json") else r
            except httpx.HTTPError as exc:
                ok, answer = False, exc
            with lock:
                times[kind].append(time.perf_counter() - start)
                if not ok:
                    errors.append(f"client {index} {kind}: {getattr(answer, 'status_code', answer)}")
            return answer if ok else None

        info = call("open", "POST", "/api/volumes", params={"filename": f"c{index}.nii.gz"}, content=volume_bytes(index))
        if info is None:
            return
        session = call("session", "POST", "/api/sessions", json={"volume_id": info["volume_id"], "engine": engine})
        if session is None:
            return
        sid = session["session_id"]
        for r in range(rounds):
            ci, cj, ck, radius = BLOBS[r % len(BLOBS)]
            jitter = rng.integers(-radius // 3, radius // 3 + 1, size=3)
            point = [int(ci + jitter[0]), int(cj + jitter[1]), int(ck + jitter[2] // 2)]
            call("click", "POST", f"/api/sessions/{sid}/prompts",
                 json={"kind": "point", "point": point, "object_id": 1 + r % 3, "run": False})
            events = call("propagate", "POST", f"/api/sessions/{sid}/propagate", json={})
            region = None
            if events:
                done = events.rsplit("event: done\ndata: ", 1)[-1].split("\n", 1)[0]
                region = json.loads(done).get("region")
            params = {"region": ",".join(map(str, region))} if region else {}
            call("mask", "GET", f"/api/sessions/{sid}/mask", params=params)


def summary(values: list[float]) -> dict[str, float]:
    ms = np.array(values) * 1000
    return {"n": len(values), "p50_ms": round(float(np.percentile(ms, 50)), 1),
            "p95_ms": round(float(np.percentile(ms, 95)), 1), "max_ms": round(float(ms.max()), 1)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--clients", type=int, default=16)
    parser.add_argument("--rounds", type=int, default=16, help="click + propagate + mask rounds per client")
    parser.add_argument("--engine", default="classic")
    args = parser.parse_args()
    with running_server() as (base, server):
        report: dict[str, Any] = {"benchmark": "server_load", "machine": machine(), "engine": args.engine,
                                  "clients": args.clients, "requests_per_client": 2 + 3 * args.rounds, "volume": list(SHAPE)}
        times: dict[str, list[float]] = defaultdict(list)
        errors: list[str] = []
        lock = threading.Lock()
        start = time.perf_counter()
        threads = [threading.Thread(target=client, args=(base, i, args.engine, args.rounds, times, errors, lock)) for i in range(args.clients)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        wall = time.perf_counter() - start
        everything = [v for values in times.values() for v in values]
        report.update({
            "latency": {kind: summary(values) for kind, values in sorted(times.items())},
            "overall": summary(everything),
            "errors": len(errors), "error_examples": errors[:5],
            "server_peak_rss_mb": peak_rss_mb(server.pid),
            "wall_s": round(wall, 1), "requests_per_s": round(len(everything) / wall, 1),
            "load_1min_after": os.getloadavg()[0],
        })
        print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
