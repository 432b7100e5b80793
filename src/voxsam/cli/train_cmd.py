"""`voxsam train`: train a model family (default sam3d) from a YAML config, resumable, single process or under
torchrun. The library reports progress through a callback; this module draws it (rich on a terminal)."""
from __future__ import annotations

import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, Mapping, Optional

import typer

if TYPE_CHECKING:  # pragma: no cover
    from rich.console import Console
    from rich.progress import Progress, TaskID

    from voxsam.training.progress import TrainingProgress

_NOT_METRICS = {"step", "loss", "grad_norm", "lr", "seconds", "samples_per_s", "elapsed_s", "world"}


def register(app: typer.Typer) -> None:
    app.command("train")(train_command)


def family_metrics(m: Mapping[str, float], digits: int = 2) -> list[str]:
    """The family's own metrics of a step (["dice_first 0.41", "dice_last 0.73"] for sam3d)."""
    return [f"{k} {v:.{digits}f}" for k, v in m.items() if k not in _NOT_METRICS]


class ProgressView:
    """Draws `TrainingProgress` events: a rich bar with loss, metrics and ETA on a terminal, a plain line per 10
    steps otherwise; cache, start and end messages as lines."""

    def __init__(self, console: Console, out_dir: Path) -> None:
        self.console, self.out_dir = console, out_dir
        self.bar: Progress | None = None
        self.task: TaskID | None = None
        self.start = 0
        self.started = time.monotonic()

    def __call__(self, event: TrainingProgress) -> None:
        c = self.console
        if event.kind == "cache":
            c.print(f"[dim]cache {event.step}/{event.total}: {event.message}[/dim]")
        elif event.kind == "start":
            c.print(event.message)
            for p in event.problems:
                c.print(f"[yellow]skipped[/yellow] {p}")
            self.start = event.step
            if c.is_terminal:
                from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

                self.bar = Progress(TextColumn("train"), BarColumn(), MofNCompleteColumn(),
                                    TextColumn("{task.fields[stats]}"), TimeRemainingColumn(), console=c)
                self.task = self.bar.add_task("train", total=event.total, completed=event.step, stats="")
                self.bar.start()
        elif event.kind == "step":
            m = event.metrics
            stats = "  ".join([f"loss {m['loss']:.3f}", *family_metrics(m), f"{m['samples_per_s']:.2f} samples/s"])
            if self.bar is not None and self.task is not None:
                self.bar.update(self.task, completed=event.step, stats=stats)
            elif event.step % 10 == 0 or event.step == self.start + 1:
                c.print(f"step {event.step}: {stats}")
                sys.stdout.flush()
        elif event.kind == "end":
            self.close()
            c.print(f"stopped at step {event.step}/{event.total} ({event.message}); checkpoint {self.out_dir / 'last.pt'}")

    def close(self) -> None:
        if self.bar is not None:
            self.bar.stop()
            self.bar = None


def train_command(
    config: Annotated[Path, typer.Argument(help="Training config (YAML); see configs/sam3d_small.yaml.")],
    overrides: Annotated[Optional[list[str]], typer.Argument(help="key.path=value overrides, e.g. optim.lr=1e-4 run.steps=500.", show_default=False)] = None,
    resume: Annotated[bool, typer.Option("--resume", help="Continue the run in run.out_dir from its last.pt.")] = False,
    init: Annotated[Optional[Path], typer.Option("--init", help="Start from these weights (released SAM-Med3D or voxsam checkpoint).")] = None,
    trust_checkpoint: Annotated[bool, typer.Option("--trust-checkpoint", help="Allow a pickled --init file (the released SAM-Med3D files). Only for files you trust.")] = False,
) -> None:
    """Train a model family (`family:` in the config, default sam3d: SAM-Med3D's simulated-interaction recipe).
    SIGTERM/Ctrl-C checkpoint and stop cleanly."""
    import logging

    from rich.console import Console

    from voxsam.training.load import load_config
    from voxsam.training.trainer import train

    extra = list(overrides or [])
    if init is not None:
        extra.append(f"model.init={init.expanduser().resolve()}")
    if trust_checkpoint:
        extra.append("model.trust_init=true")
    cfg = load_config(config, extra, check_paths=True)  # data paths must exist: a missing folder is named here
    _check_writable(Path(cfg.run.out_dir), "run.out_dir")
    cache_dir = getattr(getattr(cfg, "data", None), "cache_dir", None)
    if cache_dir is not None:
        _check_writable(Path(cache_dir), "data.cache_dir")
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    view = ProgressView(Console(stderr=True), Path(cfg.run.out_dir))
    try:
        summary: dict[str, Any] = train(cfg, resume=resume, on_progress=view)
    finally:
        view.close()
    m = summary["metrics"]
    if m:
        results = ", ".join([f"loss {m['loss']:.4f}", *family_metrics(m, 3)])
        typer.echo(f"step {summary['step']}: {results}; weights {Path(summary['out_dir']) / 'model.pt'}")


def _check_writable(folder: Path, what: str) -> None:
    """OutputPathError unless `folder` (or, when it does not exist yet, its nearest existing parent) can be written."""
    from voxsam.errors import OutputPathError
    from voxsam.io.atomic import check_writable_folder

    probe = folder.expanduser().absolute()
    while not probe.exists() and probe.parent != probe:
        probe = probe.parent
    if not probe.is_dir():
        raise OutputPathError(f"{folder}: {what} cannot be created: {probe} is a file")
    check_writable_folder(probe, for_path=f"{what} {folder}")
