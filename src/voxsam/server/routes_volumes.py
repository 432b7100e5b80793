"""Endpoints for volumes: upload, open by path, list, fetch as NIfTI, delete; and the engine list."""
from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

from fastapi import APIRouter, Query, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import Response

from voxsam.server.paths import under_roots
from voxsam.server.schemas import OpenPath
from voxsam.server.store import Store, VolumeEntry
from voxsam.server.uploads import receive, unpack


def volume_info(entry: VolumeEntry) -> dict[str, Any]:
    v = entry.volume
    return {
        "volume_id": entry.id,
        "name": entry.name,
        "shape": list(v.shape),
        "spacing": [round(s, 6) for s in v.spacing],
        "affine": v.affine.round(6).tolist(),
        "modality": v.modality,
        "source_format": v.source_format,
        "nbytes": int(v.array.nbytes),
    }


def engine_list() -> list[dict[str, Any]]:
    from voxsam.engines import ENGINES, engine_spec
    from voxsam.engines.options import describe_options

    out = []
    for name in ENGINES:
        spec = engine_spec(name)
        caps = spec.capabilities
        out.append({
            "name": name,
            "summary": spec.summary,
            "weights": spec.weights,
            "prompts": sorted(k.value for k in caps.prompts) if caps is not None else [],
            "propagates": bool(caps.propagates) if caps is not None else False,
            "options": [
                {"name": o.name, "type": o.type, "default": _jsonable(o.default), "description": o.description,
                 "choices": [_jsonable(c) for c in o.choices]}
                for o in describe_options(spec.options)
            ],
        })
    return out


def _jsonable(value: Any) -> Any:
    return value if value is None or isinstance(value, (bool, int, float, str)) else str(value)


def _read(path: Path) -> Any:
    from voxsam.io import read_volume

    return read_volume(path)


def build(store: Store) -> APIRouter:
    router = APIRouter(prefix="/api")

    @router.get("/health")
    def health() -> dict[str, Any]:
        from voxsam import __version__
        from voxsam.engines import ENGINES

        return {"version": __version__, "engines": list(ENGINES)}

    @router.get("/engines")
    def engines() -> list[dict[str, Any]]:
        return engine_list()

    @router.post("/volumes")
    async def upload(request: Request, filename: str = Query(..., description="the file's name; its suffix tells the format")) -> dict[str, Any]:
        declared = request.headers.get("content-length")
        if declared and declared.isdigit() and int(declared) > store.config.max_upload_bytes:
            from voxsam.errors import ResourceLimitError

            raise ResourceLimitError(f"upload {filename}: larger than the limit of {store.config.max_upload_bytes / 2**20:.0f} MiB")
        folder, path = await receive(request.stream(), filename, store.config.max_upload_bytes)
        try:
            target = await run_in_threadpool(unpack, path, store.config.max_upload_bytes) if path.suffix.lower() == ".zip" else path
            volume = await run_in_threadpool(_read, target)
        except BaseException:
            shutil.rmtree(folder, ignore_errors=True)
            raise
        # keep the private copy only where the volume still needs its files (DICOM SEG refers to them)
        keep = volume.source_format == "dicom"
        if not keep:
            shutil.rmtree(folder, ignore_errors=True)
        entry = store.add_volume(volume, path.name, folder if keep else None)
        return volume_info(entry)

    @router.post("/volumes/open")
    def open_path(body: OpenPath) -> dict[str, Any]:
        path = under_roots(body.path, store.config.data_roots)
        entry = store.add_volume(_read(path), path.name)
        return volume_info(entry)

    @router.get("/volumes")
    def volumes() -> list[dict[str, Any]]:
        return [volume_info(v) for v in store.volumes()]

    @router.get("/volumes/{volume_id}")
    def volume(volume_id: str) -> dict[str, Any]:
        return volume_info(store.volume(volume_id))

    @router.get("/volumes/{volume_id}/image.nii.gz")
    def image(volume_id: str) -> Response:
        from voxsam.server.masks import nifti_bytes

        entry = store.volume(volume_id)
        if entry.nifti is None:
            entry.nifti = nifti_bytes(entry.volume.channel(0), entry.volume)
            store.touched()
        return Response(entry.nifti, media_type="application/gzip", headers={"Cache-Control": "private, max-age=3600"})

    @router.delete("/volumes/{volume_id}")
    def delete(volume_id: str) -> dict[str, str]:
        store.delete_volume(volume_id)
        return {"deleted": volume_id}

    return router
