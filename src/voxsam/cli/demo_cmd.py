"""`voxsam demo`: one click on a real MRI shipped by a PyPI package, mask + PNG out."""
from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from voxsam.cli.engine_args import EngineOption


def register(app: typer.Typer) -> None:
    app.command("demo")(demo)


def demo(
    out: Annotated[Path, typer.Option(help="Folder for mask.nii.gz and overlay.png.")] = Path("demo_output"),
    engine: Annotated[str, typer.Option(help="Engine name (`voxsam engines` lists them); default classic.")] = "classic",
    engine_option: EngineOption = None,
    serve: Annotated[bool, typer.Option("--serve", help="Then open the demo volume in the viewer (voxsam serve on localhost).")] = False,
    port: Annotated[int, typer.Option(help="Port of the viewer with --serve.")] = 8000,
) -> None:
    """Segment the left lateral ventricle of the MNI152 template (bundled in nilearn) from one click."""
    from voxsam.cli.engine_args import engine_values
    from voxsam.demo import run_demo

    r = run_demo(out, engine=engine, engine_options=engine_values(engine_option))
    typer.echo(f"image:  {r.image_name}")
    typer.echo(f"click:  world {tuple(round(v, 1) for v in r.click_world_mm)} mm (RAS), positive")
    typer.echo(f"engine: {r.engine}")
    typer.echo(f"mask:   {r.mask_path}  ({r.voxels} voxels, {r.volume_ml:.1f} ml)")
    typer.echo(f"png:    {r.png_path}")
    typer.echo(f"time:   {r.seconds:.2f} s (engine prepare + one click)")
    if serve:
        from voxsam.cli.serve_cmd import run_server
        from voxsam.demo import demo_volume
        from voxsam.server.config import ServerConfig

        volume, _, name = demo_volume()
        typer.echo(f"click the {'left lateral ventricle' if 'MNI' in name else 'bright sphere'} to try it")
        run_server(ServerConfig(), "127.0.0.1", port, volume, "demo.nii.gz")
