"""`voxsam serve`: the REST server and the viewer page (docs/server.md)."""
from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer


def register(app: typer.Typer) -> None:
    app.command("serve")(serve)


def serve(
    host: Annotated[str, typer.Option(help="Interface to bind; anything but localhost needs --token.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="TCP port.")] = 8000,
    data_root: Annotated[Optional[list[Path]], typer.Option("--data-root", help="A folder whose files may be opened and saved by path (repeatable).")] = None,
    token: Annotated[Optional[str], typer.Option(help="Secret every request must carry (header, ?token= or cookie).", envvar="VOXSAM_TOKEN")] = None,
    max_upload_mb: Annotated[int, typer.Option(help="Largest accepted upload, MiB.")] = 1024,
    memory_mb: Annotated[int, typer.Option(help="Memory budget for volumes and sessions, MiB (least recently used evicted).")] = 8192,
    open_path: Annotated[Optional[Path], typer.Option("--open", help="A volume to open at start (the page shows it).")] = None,
) -> None:
    """Serve the viewer: open a volume in the browser, click, watch the mask grow, correct it, save it."""
    from voxsam.server.config import ServerConfig, check_bind

    check_bind(host, token)
    config = ServerConfig(
        data_roots=tuple(data_root or ()), token=token,
        max_upload_bytes=max_upload_mb * 2**20, memory_bytes=memory_mb * 2**20,
    )
    volume = None
    if open_path is not None:
        from voxsam.io import read_volume

        volume = read_volume(open_path)
    run_server(config, host, port, volume, open_path.name if open_path else None)


def run_server(config, host: str, port: int, volume=None, name: str | None = None) -> None:  # type: ignore[no-untyped-def]
    """Start uvicorn with the app; with `volume`, open it first and print the page's address for it."""
    import uvicorn

    from voxsam.server import create_app

    app = create_app(config)
    query = f"?token={config.token}" if config.token else ""
    if volume is not None:
        entry = app.state.store.add_volume(volume, name or "volume")
        query += ("&" if query else "?") + f"volume={entry.id}"
    shown = "localhost" if host in ("127.0.0.1", "::1") else host
    typer.echo(f"voxsam viewer: http://{shown}:{port}/{query}   (Ctrl-C stops it)")
    uvicorn.run(app, host=host, port=port, log_level="warning")
