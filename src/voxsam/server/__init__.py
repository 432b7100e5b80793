"""The REST server and web viewer: `voxsam serve` (docs/server.md).

    from voxsam.server import ServerConfig, create_app
    app = create_app(ServerConfig(data_roots=[Path("data")]))   # an ASGI app (FastAPI)

Layout: `config` (limits and roots), `store` (volumes, sessions, shared engines, memory budget with LRU
eviction), `uploads` (size-limited uploads, zip checks), `paths` (server paths under the roots), `masks`
(label-map blocks and NIfTI bytes for the page), `auth` (token check), `errors` (JSON errors), `routes_*`
(the endpoints), `app` (assembly), `static/` (the niivue page).
"""
from __future__ import annotations

from voxsam.server.config import ServerConfig

__all__ = ["ServerConfig", "create_app"]


def create_app(config: ServerConfig | None = None):  # type: ignore[no-untyped-def]
    """The FastAPI application (imports FastAPI only when called)."""
    from voxsam.server.app import build_app

    return build_app(config or ServerConfig())
