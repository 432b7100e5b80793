"""`voxsam engines`: every registered engine, what it takes, its options with defaults, its weights."""
from __future__ import annotations

from typing import Annotated, Optional

import typer


def register(app: typer.Typer) -> None:
    app.command("engines")(engines)


def engines(
    name: Annotated[Optional[str], typer.Argument(help="Show only this engine.")] = None,
) -> None:
    """List the engines, their prompt kinds, options (with defaults and allowed values) and weights."""
    from rich.console import Console
    from rich.table import Table

    from voxsam.engines import ENGINES, describe_options, engine_spec

    console = Console()
    for engine_name in [name] if name else sorted(ENGINES):
        spec = engine_spec(engine_name)
        console.print(f"[bold]{spec.name}[/bold] — {spec.summary}")
        if spec.capabilities is not None:
            console.print(f"  {spec.capabilities.describe()}")
        console.print(f"  weights: {spec.weights}")
        table = Table(show_header=True, header_style="bold", box=None, pad_edge=False)
        for column in ("option", "type", "default", "description"):
            table.add_column(column, overflow="fold")
        for info in describe_options(spec.options):
            choices = f" (one of: {', '.join(map(str, info.choices))})" if info.choices else ""
            table.add_row(info.name, info.type, repr(info.default), info.description + choices)
        console.print(table)
        console.print()
