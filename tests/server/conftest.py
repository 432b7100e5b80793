"""Fixtures of the server tests: a small CT-like volume on disk and a client of a fresh app."""
from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import nibabel as nib
import numpy as np
import pytest

from tests.conftest import oblique_affine

SHAPE = (40, 36, 20)
CENTER = (20, 18, 10)  # voxel inside the bright block


def make_image() -> np.ndarray:
    """A bright block (500) in a dark field (0), with a little noise so region growing has texture."""
    rng = np.random.default_rng(0)
    a = rng.normal(0, 5, SHAPE).astype(np.int16)
    a[12:28, 10:26, 5:15] += 500
    return a


@pytest.fixture
def ct_file(tmp_path: Path) -> Path:
    root = tmp_path / "data"
    root.mkdir()
    path = root / "ct.nii.gz"
    nib.save(nib.Nifti1Image(make_image(), oblique_affine()), path)
    return path


@pytest.fixture
def make_client() -> Iterator[Callable[..., Any]]:
    from fastapi.testclient import TestClient

    from voxsam.server import ServerConfig, create_app

    clients: list[Any] = []

    def make(**config: Any) -> Any:
        client = TestClient(create_app(ServerConfig(**config)))
        clients.append(client)
        return client

    yield make
    for c in clients:
        c.close()


def upload(client: Any, path: Path, name: str | None = None) -> dict[str, Any]:
    r = client.post("/api/volumes", params={"filename": name or path.name}, content=path.read_bytes())
    assert r.status_code == 200, r.text
    return dict(r.json())


def new_session(client: Any, volume_id: str, engine: str = "classic", **options: Any) -> str:
    r = client.post("/api/sessions", json={"volume_id": volume_id, "engine": engine, "options": options})
    assert r.status_code == 200, r.text
    return str(r.json()["session_id"])


def events(client: Any, session_id: str, **body: Any) -> list[tuple[str, dict[str, Any]]]:
    """The server-sent events of one propagation, parsed."""
    import json

    with client.stream("POST", f"/api/sessions/{session_id}/propagate", json=body) as r:
        assert r.status_code == 200
        text = "".join(r.iter_text())
    out = []
    for chunk in text.strip().split("\n\n"):
        lines = dict(line.split(": ", 1) for line in chunk.splitlines())
        out.append((lines["event"], json.loads(lines["data"])))
    return out
