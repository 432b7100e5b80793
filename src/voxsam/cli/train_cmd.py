"""`voxsam train`: train sam3d from a YAML config, resumable, single process or under torchrun."""
from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer


def register(app: typer.Typer) -> None:
    app.command("train")(train_command)


def train_command(
    config: Annotated[Path, typer.Argument(help="Training config (YAML); see configs/sam3d_small.yaml.")],
    overrides: Annotated[Optional[list[str]], typer.Argument(help="key.path=value overrides, e.g. optim.lr=1e-4 run.steps=500.", show_default=False)] = None,
    resume: Annotated[bool, typer.Option("--resume", help="Continue the run in run.out_dir from its last.pt.")] = False,
    init: Annotated[Optional[Path], typer.Option("--init", help="Start from these weights (released SAM-Med3D or voxsam checkpoint).")] = None,
    trust_checkpoint: Annotated[bool, typer.Option("--trust-checkpoint", help="Allow a pickled --init file (the released SAM-Med3D files). Only for files you trust.")] = False,
) -> None:
    """Train sam3d with SAM-Med3D's simulated-interaction recipe. SIGTERM/Ctrl-C checkpoint and stop cleanly."""
    import logging

    from rich.console import Console

    from voxsam.training.config import load_config
    from voxsam.training.trainer import train

    extra = list(overrides or [])
    if init is not None:
        extra.append(f"model.init={init.expanduser().resolve()}")
    if trust_checkpoint:
        extra.append("model.trust_init=true")
    cfg = load_config(config, extra)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    console = Console(stderr=True)
    summary = train(cfg, resume=resume, console=console)
    m = summary["metrics"]
    if m:
        typer.echo(f"step {summary['step']}: loss {m['loss']:.4f}, Dice first/last round {m['dice_first']:.3f}/{m['dice_last']:.3f}; "
                   f"weights {Path(summary['out_dir']) / 'model.pt'}")
