"""A real `voxsam serve` process for the server benchmarks: started on a free port, waited for, stopped."""
from __future__ import annotations

import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@contextmanager
def running_server(python_args: list[str] | None = None, timeout_s: float = 60.0) -> Iterator[tuple[str, subprocess.Popen[bytes]]]:
    """Yield (base address, process) of `python [python_args] serve --port P` (default `-m voxsam.cli.main`) once
    /api/health answers; SystemExit with its stderr when it does not start; terminated on exit."""
    import httpx

    port = free_port()
    args = python_args or ["-m", "voxsam.cli.main"]
    server = subprocess.Popen([sys.executable, *args, "serve", "--port", str(port)],
                              stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, cwd=REPO)
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.time() + timeout_s
        while True:
            try:
                httpx.get(f"{base}/api/health", timeout=1)
                break
            except httpx.HTTPError:
                if time.time() > deadline or server.poll() is not None:
                    raise SystemExit(f"server did not start: {server.stderr.read().decode() if server.stderr else ''}")
                time.sleep(0.2)
        yield base, server
    finally:
        server.terminate()
        server.wait(10)
