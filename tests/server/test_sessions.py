"""Sessions through the API: prompts, streamed propagation, undo/redo, mask blocks, saving, bad requests."""
from __future__ import annotations

import gzip
from pathlib import Path

import nibabel as nib
import numpy as np

from tests.server.conftest import CENTER, SHAPE, events, new_session, upload
from tests.server.slow_engine import slow_engine  # noqa: F401  (fixture)
from voxsam.server.masks import encode_slice_mask


def _block(c, sid: str, region: list[int] | None = None) -> np.ndarray:
    params = {"region": ",".join(map(str, region))} if region else {}
    r = c.get(f"/api/sessions/{sid}/mask", params=params)
    assert r.status_code == 200
    shape = tuple(int(n) for n in r.headers["x-voxsam-shape"].split(","))
    return np.frombuffer(gzip.decompress(r.content), dtype=r.headers["x-voxsam-dtype"]).reshape(shape, order="F")


def test_click_gives_a_mask_and_the_block_that_changed(make_client, ct_file: Path) -> None:
    c = make_client()
    sid = new_session(c, upload(c, ct_file)["volume_id"])
    r = c.post(f"/api/sessions/{sid}/prompts", json={"kind": "point", "point": list(CENTER)})
    assert r.status_code == 200, r.text
    answer = r.json()
    assert answer["version"] == 1 and answer["objects"][0]["id"] == 1
    full = _block(c, sid)
    assert full.shape == SHAPE and full[CENTER] == 1
    assert 0.6 < full.sum() / (16 * 16 * 10) < 1.4  # the bright block, roughly
    i0, i1, j0, j1, k0, k1 = answer["region"]
    outside = full.copy()
    outside[i0:i1, j0:j1, k0:k1] = 0
    assert not outside.any()  # nothing changed outside the reported region
    np.testing.assert_array_equal(_block(c, sid, answer["region"]), full[i0:i1, j0:j1, k0:k1])
    saved = nib.Nifti1Image.from_bytes(gzip.decompress(c.get(f"/api/sessions/{sid}/mask.nii.gz").content))
    np.testing.assert_array_equal(np.asarray(saved.dataobj), full)
    np.testing.assert_allclose(saved.affine, nib.load(ct_file).affine, atol=1e-5)


def test_undo_redo_and_objects(make_client, ct_file: Path) -> None:
    c = make_client()
    sid = new_session(c, upload(c, ct_file)["volume_id"])
    c.post(f"/api/sessions/{sid}/prompts", json={"kind": "point", "point": list(CENTER)})
    c.post(f"/api/sessions/{sid}/prompts", json={"kind": "point", "point": [2, 2, 2], "object_id": 2})
    assert [o["id"] for o in c.get(f"/api/sessions/{sid}").json()["objects"]] == [1, 2]
    undo = c.post(f"/api/sessions/{sid}/undo").json()
    assert undo["done"] and [o["id"] for o in undo["objects"]] == [1] and undo["region"] is not None
    redo = c.post(f"/api/sessions/{sid}/redo").json()
    assert redo["done"] and [o["id"] for o in redo["objects"]] == [1, 2]
    assert c.post(f"/api/sessions/{sid}/redo").json()["done"] is False
    assert c.delete(f"/api/sessions/{sid}/objects/2").json()["objects"][0]["id"] == 1
    assert c.delete(f"/api/sessions/{sid}/objects/7").status_code == 404
    assert set(np.unique(_block(c, sid))) == {0, 1}


def test_propagation_streams_slices_and_one_undo_takes_it_back(make_client, ct_file: Path, slow_engine: str) -> None:
    c = make_client()
    sid = new_session(c, upload(c, ct_file)["volume_id"], slow_engine, pause_s=0.0, span=3)
    r = c.post(f"/api/sessions/{sid}/prompts", json={"kind": "point", "point": list(CENTER), "axis": 2, "run": False})
    assert r.json()["queued"] is True and r.json()["region"] is None
    got = events(c, sid)
    assert got[0] == ("start", {"axis": 2, "object_id": 1})
    assert [d["index"] for e, d in got if e == "slice"] == [10, 9, 11, 8, 12, 7, 13]
    done = got[-1]
    assert done[0] == "done" and done[1]["slices"] == 7 and not done[1]["cancelled"]
    assert done[1]["region"][4:] == [7, 14]
    mask = _block(c, sid)
    assert mask[:, :, 7:14].any(axis=(0, 1)).all() and not mask[:, :, :7].any()
    assert events(c, sid)[-1][1]["slices"] == 0  # nothing queued: nothing to do
    c.post(f"/api/sessions/{sid}/undo")
    assert not _block(c, sid).any()


def test_slice_mask_prompt_round_trips_bits(make_client, ct_file: Path, slow_engine: str) -> None:
    c = make_client()
    sid = new_session(c, upload(c, ct_file)["volume_id"], slow_engine, pause_s=0.0, span=0)
    painted = np.zeros((SHAPE[0], SHAPE[2]), dtype=bool)  # a slice of axis 1: (X, Z)
    painted[5:9, 3:17] = True
    painted[30, 1] = True
    body = {"kind": "slice_mask", "mask": {"axis": 1, "index": 4, "shape": list(painted.shape), "bits": encode_slice_mask(painted)}}
    assert c.post(f"/api/sessions/{sid}/prompts", json=body).status_code == 200
    np.testing.assert_array_equal(_block(c, sid)[:, 4, :].astype(bool), painted)
    bad = {**body, "mask": {**body["mask"], "shape": [3, 3]}}
    r = c.post(f"/api/sessions/{sid}/prompts", json=bad)
    assert r.status_code == 400 and "slice shape" in r.json()["message"]
    bad = {**body, "mask": {**body["mask"], "bits": "@@not base64@@"}}
    assert c.post(f"/api/sessions/{sid}/prompts", json=bad).status_code == 400
    bad = {**body, "mask": {**body["mask"], "bits": encode_slice_mask(painted[:-1])}}
    assert "bytes" in c.post(f"/api/sessions/{sid}/prompts", json=bad).json()["message"]


def test_save_downloads_or_writes_under_a_root(make_client, ct_file: Path) -> None:
    root = ct_file.parent
    c = make_client(data_roots=(root,))
    sid = new_session(c, upload(c, ct_file)["volume_id"])
    c.post(f"/api/sessions/{sid}/prompts", json={"kind": "point", "point": list(CENTER)})
    r = c.post(f"/api/sessions/{sid}/save", json={"format": "nifti"})
    assert r.status_code == 200 and r.headers["content-disposition"] == 'attachment; filename="ct_mask.nii.gz"'
    r = c.post(f"/api/sessions/{sid}/save", json={"path": "out/mask.nii.gz"})
    assert r.status_code == 400 and "out" in r.json()["message"]  # its folder does not exist
    r = c.post(f"/api/sessions/{sid}/save", json={"path": "mask.nii.gz"})
    assert r.status_code == 200 and Path(r.json()["path"]) == root.resolve() / "mask.nii.gz"
    written = nib.load(root / "mask.nii.gz")
    np.testing.assert_array_equal(np.asarray(written.dataobj), _block(c, sid))
    assert c.post(f"/api/sessions/{sid}/save", json={"path": "mask.nii.gz"}).status_code == 400  # exists
    assert c.post(f"/api/sessions/{sid}/save", json={"path": "mask.nii.gz", "overwrite": True}).status_code == 200
    assert c.post(f"/api/sessions/{sid}/save", json={"path": "../escape.nii.gz"}).status_code == 403
    r = c.post(f"/api/sessions/{sid}/save", json={"format": "dicom-seg"})
    assert r.status_code == 400 and "DICOM" in r.json()["message"]


def test_malformed_requests_are_4xx_never_500(make_client, ct_file: Path) -> None:
    c = make_client()
    vid = upload(c, ct_file)["volume_id"]
    r = c.post("/api/sessions", json={"volume_id": vid, "engine": "nope"})
    assert r.status_code == 400 and "available" in r.json()["message"]
    r = c.post("/api/sessions", json={"volume_id": vid, "engine": "classic", "options": {"method": "magic"}})
    assert r.status_code == 400 and "method" in r.json()["message"]
    assert c.post("/api/sessions", json={"volume_id": "v0", "engine": "classic"}).status_code == 404
    sid = new_session(c, vid)
    bodies = [
        {"kind": "point"},  # no point
        {"kind": "point", "point": [1, 2]},
        {"kind": "point", "point": [1e9, 2, 3]},
        {"kind": "point", "point": ["nan", 2, 3]},
        {"kind": "point", "point": [1, 2, 3], "axis": 5},
        {"kind": "point", "point": [1, 2, 3], "object_id": 0},
        {"kind": "box", "box": [[1, 2, 3]]},
        {"kind": "box", "box": [[1, 2, 3], [4, 5, 6]], "axis": 2},  # a 2D box across slices
        {"kind": "box"},
        {"kind": "slice_mask"},
        {"kind": "slice_mask", "mask": {"axis": 2, "index": 99, "shape": [40, 36], "bits": ""}},
        {"kind": "lasso"},
        {"kind": "point", "point": [1, 2, 3], "extra": 1},
    ]
    for body in bodies:
        r = c.post(f"/api/sessions/{sid}/prompts", json=body)
        assert r.status_code in (400, 422), (body, r.status_code, r.text)
        assert set(r.json()) == {"error", "message"} and "\n" not in r.json()["message"]
    assert c.post(f"/api/sessions/{sid}/prompts", content=b"{not json", headers={"content-type": "application/json"}).status_code == 422
    assert c.get(f"/api/sessions/{sid}/mask", params={"region": "1,2,3"}).status_code == 400
    assert c.get(f"/api/sessions/{sid}/mask", params={"region": "50,60,0,1,0,1"}).status_code == 400
    assert c.get("/api/sessions/s0").status_code == 404
    assert c.get("/api/nothing").status_code == 404
