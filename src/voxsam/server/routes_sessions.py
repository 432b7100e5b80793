"""Endpoints for sessions: create, prompt, propagate (streamed), cancel, undo/redo, masks, save."""
from __future__ import annotations

import logging
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
from fastapi import APIRouter, Query
from fastapi.responses import FileResponse, Response, StreamingResponse
from starlette.background import BackgroundTask

from voxsam.errors import PromptError
from voxsam.server.errors import ApiError
from voxsam.server.masks import block_bytes, decode_slice_mask, nifti_bytes, parse_region, region_list
from voxsam.server.paths import under_roots
from voxsam.server.propagation import event_stream, start
from voxsam.server.schemas import NewSession, PromptIn, PropagateIn, SaveIn
from voxsam.server.store import SessionEntry, Store

log = logging.getLogger(__name__)

SOURCE_SUFFIX = {"nifti": ".nii.gz", "nrrd": ".nrrd", "mha": ".mha", "mgz": ".mgz", "dicom": ".dcm", "array": ".nii.gz"}


def session_info(entry: SessionEntry) -> dict[str, Any]:
    from voxsam.engines.base import acquisition_axis

    s = entry.session
    caps = s.engine.capabilities
    return {
        "session_id": entry.id,
        "volume_id": entry.volume_id,
        "engine": entry.engine,
        "options": entry.options,
        "prompts": sorted(k.value for k in caps.prompts),
        "propagates": bool(caps.propagates),
        "axis": int(acquisition_axis(s.volume.affine)),
        "objects": objects(entry),
        "undo_depth": s.undo_depth,
        "version": entry.version,
        "busy": entry.propagation is not None,
    }


def objects(entry: SessionEntry) -> list[dict[str, int]]:
    s = entry.session
    return [{"id": oid, "voxels": int(np.count_nonzero(s.object_mask(oid)))} for oid in s.objects]


def changed(entry: SessionEntry, **extra: Any) -> dict[str, Any]:
    """The answer to a change: new version, the block it altered, the objects."""
    entry.version += 1
    return {"version": entry.version, "region": region_list(entry.session.last_region), "objects": objects(entry), **extra}


def add_prompt(entry: SessionEntry, body: PromptIn) -> None:
    s = entry.session
    run = body.run
    if body.kind == "point":
        if body.point is None:
            raise PromptError("a point prompt needs \"point\": [i, j, k]")
        s.add_point(body.point, body.positive, object_id=body.object_id, axis=body.axis, propagate=run)
    elif body.kind == "box":
        if body.box is None:
            raise PromptError("a box prompt needs \"box\": [[i0, j0, k0], [i1, j1, k1]]")
        s.add_box(body.box[0], body.box[1], object_id=body.object_id, axis=body.axis, propagate=run)
    else:
        if body.mask is None:
            raise PromptError("a slice_mask prompt needs \"mask\": {axis, index, shape, bits}")
        m = body.mask
        expected = tuple(n for a, n in enumerate(s.volume.shape) if a != m.axis)
        mask2d = decode_slice_mask(m.bits, m.shape, (expected[0], expected[1]))
        s.set_slice_mask(m.axis, m.index, mask2d, object_id=body.object_id, propagate=run)


def build(store: Store) -> APIRouter:
    router = APIRouter(prefix="/api/sessions")

    @router.post("")
    def create(body: NewSession) -> dict[str, Any]:
        return session_info(store.new_session(body.volume_id, body.engine, body.options))

    @router.get("")
    def sessions() -> list[dict[str, Any]]:
        return [session_info(e) for e in store.sessions()]

    @router.get("/{session_id}")
    def info(session_id: str) -> dict[str, Any]:
        return session_info(store.session(session_id))

    @router.delete("/{session_id}")
    def delete(session_id: str) -> dict[str, str]:
        store.delete_session(session_id)
        return {"deleted": session_id}

    @router.post("/{session_id}/prompts")
    def prompt(session_id: str, body: PromptIn) -> dict[str, Any]:
        entry = store.session(session_id)
        entry.claim()
        add_prompt(entry, body)
        store.touched()
        return changed(entry, queued=not body.run)

    @router.post("/{session_id}/propagate")
    def propagate(session_id: str, body: PropagateIn | None = None) -> StreamingResponse:
        entry = store.session(session_id)
        events = start(entry, body.object_id if body else None, on_end=store.touched)
        return StreamingResponse(event_stream(entry, events), media_type="text/event-stream", headers={"Cache-Control": "no-store"})

    @router.post("/{session_id}/cancel")
    def cancel(session_id: str) -> dict[str, bool]:
        entry = store.session(session_id)
        run = entry.propagation
        if run is not None:
            run.cancel()
        return {"cancelled": run is not None}

    @router.post("/{session_id}/undo")
    def undo(session_id: str) -> dict[str, Any]:
        entry = store.session(session_id)
        entry.claim()
        return changed(entry, done=entry.session.undo())

    @router.post("/{session_id}/redo")
    def redo(session_id: str) -> dict[str, Any]:
        entry = store.session(session_id)
        entry.claim()
        return changed(entry, done=entry.session.redo())

    @router.delete("/{session_id}/objects/{object_id}")
    def delete_object(session_id: str, object_id: int) -> dict[str, Any]:
        entry = store.session(session_id)
        entry.claim()
        if object_id not in entry.session.objects:
            raise ApiError(404, "not_found", f"session {session_id} has no object {object_id}")
        entry.session.reset(object_id)
        return changed(entry)

    @router.get("/{session_id}/mask.nii.gz")
    def mask_nifti(session_id: str) -> Response:
        entry = store.session(session_id)
        return Response(nifti_bytes(entry.session.label_map, entry.session.volume, labels=True), media_type="application/gzip",
                        headers={"Cache-Control": "no-store"})

    @router.get("/{session_id}/mask")
    def mask_block(session_id: str, region: str | None = Query(None, description="i0,i1,j0,j1,k0,k1 (half-open)")) -> Response:
        entry = store.session(session_id)
        block = entry.session.label_block(parse_region(region, entry.session.volume.shape))
        return Response(block_bytes(block), media_type="application/octet-stream", headers={
            "Cache-Control": "no-store", "X-Voxsam-Dtype": block.dtype.name,
            "X-Voxsam-Shape": ",".join(str(n) for n in block.shape), "X-Voxsam-Version": str(entry.version)})

    @router.post("/{session_id}/save", response_model=None)
    def save(session_id: str, body: SaveIn | None = None) -> Any:
        from voxsam.io import write_mask

        body = body or SaveIn()
        entry = store.session(session_id)
        volume = entry.session.volume
        suffix = {"nifti": ".nii.gz", "dicom-seg": ".dcm"}.get(body.format) or SOURCE_SUFFIX.get(volume.source_format, ".nii.gz")
        if suffix == ".dcm" and volume.source_format != "dicom":
            raise PromptError(f"DICOM SEG needs a DICOM source; this volume came from {volume.source_format}")
        labels = entry.session.label_map
        if body.path is not None:
            target = under_roots(body.path, store.config.data_roots, must_exist=False)
            written = write_mask(labels, like=volume, path=target, overwrite=body.overwrite)
            return {"path": str(written)}
        stem = store.volume(entry.volume_id).name.split(".")[0] or "volume"
        folder = Path(tempfile.mkdtemp(prefix="voxsam-save-"))
        written = write_mask(labels, like=volume, path=folder / f"{stem}_mask{suffix}")
        import shutil

        return FileResponse(written, filename=written.name, media_type="application/octet-stream",
                            background=BackgroundTask(shutil.rmtree, folder, ignore_errors=True))

    return router
