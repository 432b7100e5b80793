"""Opening volumes: uploads (size limit, formats, zipped DICOM, zip bombs), server paths under the roots."""
from __future__ import annotations

import io
import zipfile
from pathlib import Path

import nibabel as nib
import numpy as np

from tests.reliability._dicom import write_series
from tests.server.conftest import SHAPE, make_image, upload


def test_health_and_every_registered_engine_with_its_options(make_client) -> None:
    from voxsam.engines import ENGINES

    c = make_client()
    assert c.get("/api/health").json()["engines"] == list(ENGINES)
    listed = {e["name"]: e for e in c.get("/api/engines").json()}
    assert set(listed) == set(ENGINES)
    classic = listed["classic"]
    assert "point" in classic["prompts"] and classic["propagates"] is False
    method = next(o for o in classic["options"] if o["name"] == "method")
    assert method["default"] == "growcut" and "random_walker" in method["choices"]
    assert listed["slice2d"]["propagates"] is True


def test_upload_keeps_the_grid_and_serves_the_image_as_nifti(make_client, ct_file: Path) -> None:
    c = make_client()
    info = upload(c, ct_file)
    assert info["shape"] == list(SHAPE) and info["source_format"] == "nifti"
    r = c.get(f"/api/volumes/{info['volume_id']}/image.nii.gz")
    assert r.status_code == 200
    img = nib.Nifti1Image.from_bytes(__import__("gzip").decompress(r.content))
    np.testing.assert_array_equal(np.asarray(img.dataobj), make_image())  # same voxel order: no reorientation
    np.testing.assert_allclose(img.affine, nib.load(ct_file).affine, atol=1e-5)
    assert [v["volume_id"] for v in c.get("/api/volumes").json()] == [info["volume_id"]]
    assert c.delete(f"/api/volumes/{info['volume_id']}").json() == {"deleted": info["volume_id"]}
    assert c.get(f"/api/volumes/{info['volume_id']}").status_code == 404


def test_bad_uploads_are_4xx_with_a_message(make_client, ct_file: Path) -> None:
    c = make_client(max_upload_bytes=4096)
    r = c.post("/api/volumes", params={"filename": "notes.txt"}, content=b"hello")
    assert r.status_code == 400 and "notes.txt" in r.json()["message"]
    r = c.post("/api/volumes", params={"filename": "ct.nii.gz"}, content=b"")
    assert r.status_code == 400 and "empty" in r.json()["message"]
    r = c.post("/api/volumes", params={"filename": "ct.nii.gz"}, content=b"\x1f\x8b garbage" * 10)
    assert r.status_code == 400 and r.json()["error"] == "CorruptFileError"
    r = c.post("/api/volumes", params={"filename": "ct.nii.gz"}, content=ct_file.read_bytes())
    assert r.status_code == 413 and "limit" in r.json()["message"]
    assert c.post("/api/volumes", content=b"x").status_code == 422  # no filename
    assert c.get("/api/volumes").json() == []


def test_oversize_upload_without_a_length_header_stops_while_streaming(make_client) -> None:
    c = make_client(max_upload_bytes=10_000)

    def chunks():
        for _ in range(100):
            yield b"\0" * 1000

    r = c.post("/api/volumes", params={"filename": "big.nii"}, content=chunks())
    assert r.status_code == 413
    assert c.get("/api/volumes").json() == []


def _zip(members: dict[str, bytes]) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as zf:
        for name, data in members.items():
            zf.writestr(name, data)
    return buf.getvalue()


def test_zipped_dicom_series_opens_and_saves(make_client, tmp_path: Path) -> None:
    write_series(tmp_path / "series", [0, 2, 4, 6, 8])
    members = {f"study/series/{p.name}": p.read_bytes() for p in sorted((tmp_path / "series").iterdir())}
    c = make_client()
    r = c.post("/api/volumes", params={"filename": "series.zip"}, content=_zip(members))
    assert r.status_code == 200, r.text
    info = r.json()
    assert info["source_format"] == "dicom" and info["shape"] == [10, 12, 5]
    sid = c.post("/api/sessions", json={"volume_id": info["volume_id"], "engine": "classic"}).json()["session_id"]
    assert c.post(f"/api/sessions/{sid}/prompts", json={"kind": "point", "point": [5, 6, 2]}).status_code == 200
    saved = c.post(f"/api/sessions/{sid}/save", json={"format": "nifti"})
    assert saved.status_code == 200 and saved.headers["content-disposition"].endswith('.nii.gz"')
    # this synthetic series has no Frame of Reference UID, which a SEG must reference: a 400 that says so
    seg = c.post(f"/api/sessions/{sid}/save", json={"format": "dicom-seg"})
    assert seg.status_code == 400 and "Frame Of Reference" in seg.json()["message"]


def test_zip_escapes_and_bombs_are_refused_before_extraction(make_client) -> None:
    c = make_client(max_upload_bytes=2**20)
    for name in ("../evil.dcm", "/abs/evil.dcm", "a/../../evil.dcm"):
        r = c.post("/api/volumes", params={"filename": "s.zip"}, content=_zip({name: b"x" * 10}))
        assert r.status_code == 400 and "outside" in r.json()["message"], name
    bomb = _zip({"zeros.dcm": b"\0" * (8 * 2**20)})  # 8 MiB of zeros squeezed into ~8 KiB
    assert len(bomb) < 2**20
    r = c.post("/api/volumes", params={"filename": "bomb.zip"}, content=bomb)
    assert r.status_code == 413 and ("zip bomb" in r.json()["message"] or "expands" in r.json()["message"])
    r = c.post("/api/volumes", params={"filename": "s.zip"}, content=b"PK\x03\x04 not really")
    assert r.status_code == 400 and "zip" in r.json()["message"]


def test_server_paths_only_under_the_roots(make_client, ct_file: Path, tmp_path: Path) -> None:
    root = ct_file.parent
    outside = tmp_path / "secret.nii.gz"
    outside.write_bytes(ct_file.read_bytes())
    (root / "link.nii.gz").symlink_to(outside)
    c = make_client(data_roots=(root,))
    assert c.post("/api/volumes/open", json={"path": "ct.nii.gz"}).status_code == 200
    assert c.post("/api/volumes/open", json={"path": str(ct_file)}).status_code == 200
    for escape in ("../secret.nii.gz", str(outside), "link.nii.gz"):
        r = c.post("/api/volumes/open", json={"path": escape})
        assert r.status_code == 403 and "outside" in r.json()["message"], escape
    assert c.post("/api/volumes/open", json={"path": "missing.nii.gz"}).status_code == 404
    assert c.post("/api/volumes/open", json={"path": ""}).status_code == 400
    off = make_client()
    r = off.post("/api/volumes/open", json={"path": "ct.nii.gz"})
    assert r.status_code == 403 and "--data-root" in r.json()["message"]
