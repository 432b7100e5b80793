"""Assembly of the FastAPI application: routes, JSON errors, the token gate and the static page."""
from __future__ import annotations

from pathlib import Path
from typing import Any

from voxsam.server.config import ServerConfig

STATIC = Path(__file__).parent / "static"


def build_app(config: ServerConfig) -> Any:
    from fastapi import FastAPI
    from fastapi.staticfiles import StaticFiles

    from voxsam import __version__
    from voxsam.server import errors, routes_sessions, routes_volumes
    from voxsam.server.auth import TokenGate
    from voxsam.server.store import Store

    store = Store(config)
    app = FastAPI(title="voxsam", version=__version__, summary="Promptable 3D segmentation of CT and MRI (docs/server.md)")
    app.state.store = store
    errors.install(app)
    app.include_router(routes_volumes.build(store))
    app.include_router(routes_sessions.build(store))
    if STATIC.is_dir():
        app.mount("/", StaticFiles(directory=STATIC, html=True), name="static")
    if config.token:
        app.add_middleware(TokenGate, token=config.token)
    return app
