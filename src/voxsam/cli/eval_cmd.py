"""`voxsam eval`: simulated-click benchmarks of an engine on labelled datasets, with tables and plots."""
from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

from voxsam.cli.io_cmds import AllowUnevenOption


def register(app: typer.Typer) -> None:
    """Add the eval command to the app."""
    app.command("eval")(eval_command)


def _int_list(text: str, what: str) -> list[int]:
    from voxsam.errors import ConfigError

    try:
        values = [int(v) for v in text.replace(" ", "").split(",") if v]
    except ValueError:
        raise ConfigError(f"{what} must be comma-separated integers, got {text!r}") from None
    if not values:
        raise ConfigError(f"{what} is empty")
    return values


def _options(items: list[str]) -> dict[str, str]:
    """--engine-option KEY=VALUE items -> {key: text}; the engine's options class converts the text
    ("0.5", "true", "none", a path)."""
    from voxsam.engines import parse_key_values

    return parse_key_values(items)


def eval_command(
    datasets: Annotated[
        list[str],
        typer.Argument(
            help="Dataset folders (MSD / nnU-Net layout: imagesTr/, labelsTr/, dataset.json) or file pairs "
            "IMAGE::LABEL, or IMAGE::LABEL::NAMES.json (NAMES.json#key picks a sub-map of label names).",
            show_default=False,
        ),
    ],
    engine: Annotated[str, typer.Option("--engine", "-e", help="Engine name (classic, sam3d, ...).")],
    protocol: Annotated[
        str, typer.Option("--protocol", "-p", help="Click protocol: sammed3d, center, box+center, slice, slice-mask, slice-box, slice-point.")
    ],
    out: Annotated[Path, typer.Option("--out", "-o", help="Output folder (created; rerun into it to resume).")],
    checkpoint: Annotated[
        Optional[Path], typer.Option(help="The engine's checkpoint option (same as --engine-option checkpoint=PATH).")
    ] = None,
    clicks: Annotated[str, typer.Option(help="Interaction counts to report, comma-separated.")] = "1,3,5,10",
    labels: Annotated[Optional[str], typer.Option(help="Only these label values, comma-separated.")] = None,
    min_voxels: Annotated[int, typer.Option(help="Skip targets with fewer voxels.")] = 0,
    slice_range: Annotated[
        Optional[str], typer.Option(help="LO,HI: keep targets spanning LO..HI slices along the slice axis (largest spacing), e.g. 10,200.")
    ] = None,
    max_cases: Annotated[Optional[int], typer.Option(help="At most this many cases per dataset (first by id).")] = None,
    cases: Annotated[Optional[str], typer.Option(help="Only case ids matching these glob patterns, comma-separated (e.g. a held-out split).")] = None,
    workers: Annotated[int, typer.Option(help="Worker processes (each takes whole cases).")] = 1,
    seed: Annotated[int, typer.Option(help="Seed of the protocol's random choices.")] = 0,
    nsd_tolerance: Annotated[float, typer.Option(help="NSD tolerance in mm.")] = 2.0,
    engine_option: Annotated[
        Optional[list[str]], typer.Option("--engine-option", help="KEY=VALUE engine option (validated; `voxsam engines` lists them), repeatable.")
    ] = None,
    retry_errors: Annotated[bool, typer.Option(help="Redo targets that ended in an error last time.")] = False,
    allow_uneven: AllowUnevenOption = False,
    verbose: Annotated[bool, typer.Option("--verbose", "-v", help="Log progress details (and each failure as it happens).")] = False,
) -> None:
    """Benchmark an engine with simulated clicks: Dice / IoU / NSD / HD95 per target and click count.

    Writes results.csv (per target x click), summary.md, summary.json and dice_vs_clicks_<dataset>.png into
    --out. Finished targets are skipped on a rerun. Under torchrun each rank takes its share of targets
    and rank 0 writes the report.

    Exit code: 0 when every planned target was evaluated; 1 when some failed (listed on stderr and in
    summary.md); 2 when none could be evaluated or the input is unusable (one `error:` line).
    """
    import logging

    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

    from voxsam.errors import ConfigError, OutputPathError
    from voxsam.evaluation.parallel import dist_rank_world
    from voxsam.evaluation.plan import EvalConfig
    from voxsam.evaluation.runner import run_eval

    logging.basicConfig(level=logging.INFO if verbose else logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    if out.exists() and not out.is_dir():
        raise OutputPathError(f"{out}: exists and is a file; --out takes a folder (created if missing)")
    _check_out_writable(out)
    rng = None
    if slice_range is not None:
        rng = _int_list(slice_range, "--slice-range")
        if len(rng) != 2:
            raise ConfigError(f"--slice-range takes LO,HI, got {slice_range!r}")
    config = EvalConfig(
        engine=engine,
        protocol=protocol,
        clicks=_int_list(clicks, "--clicks"),
        checkpoint=str(checkpoint) if checkpoint else None,
        engine_options=_options(engine_option or []),
        labels=_int_list(labels, "--labels") if labels else None,
        min_voxels=min_voxels,
        slice_range=(rng[0], rng[1]) if rng else None,
        max_cases=max_cases,
        cases=[c.strip() for c in cases.split(",") if c.strip()] if cases else None,
        seed=seed,
        nsd_tolerance_mm=nsd_tolerance,
        workers=workers,
        retry_errors=retry_errors,
    )
    console = Console(stderr=True)
    rank, world = dist_rank_world()
    eval_log = logging.getLogger("voxsam.evaluation")
    level = eval_log.level
    if not verbose:  # failures are listed at the end, with their reasons: no warning (or traceback) before them
        eval_log.setLevel(logging.CRITICAL)
    try:
        with Progress(
            TextColumn("[bold]eval[/]" + (f" rank {rank}/{world}" if world > 1 else "")),
            BarColumn(),
            MofNCompleteColumn(),
            TimeElapsedColumn(),
            TimeRemainingColumn(),
            console=console,
            transient=True,
            disable=not console.is_terminal,  # no bar in logs and pipes: stderr keeps only what matters
        ) as bar:
            task = bar.add_task("targets", total=None)

            def on_plan(total: int, done: int) -> None:
                bar.update(task, total=total, completed=done)

            summary = run_eval(
                datasets, out, config, progress=lambda n: bar.advance(task, n), on_plan=on_plan, allow_uneven=allow_uneven
            )
    finally:
        eval_log.setLevel(level)
    if summary is None:
        console.print(f"rank {rank} done; rank 0 writes the report into {out}")
        return
    _finish(console, summary, out)


def _finish(console: object, summary: dict, out: Path) -> None:
    """Print the results and turn the outcome into the exit code: 0 complete, 1 some failed, 2 none evaluated."""
    import sys

    from voxsam.errors import DatasetError

    failed = summary.get("failed") or []
    if summary.get("outcome") == "failed":
        first = failed[0] if failed else {"dataset": "?", "case": "?", "label": "?", "reason": "no record"}
        raise DatasetError(
            f"no target could be evaluated: {summary['counts']['planned']} planned, all failed "
            f"(first: {first['dataset']}/{first['case']} label {first['label']}: {first['reason']}); report in {out / 'summary.md'}"
        )
    _print_overall(console, summary)
    if summary["skipped"]:
        console.print(f"[yellow]{len(summary['skipped'])} input(s) skipped: see {out / 'summary.md'}[/]")  # type: ignore[attr-defined]
    console.print(  # type: ignore[attr-defined]
        f"wrote {out / 'results.csv'}, {out / 'summary.md'}, {out / 'summary.json'}, {len(summary['plots'])} plot(s)"
    )
    if failed:
        n_targets = sum(len(str(f["label"]).split(",")) for f in failed)
        print(f"error: {n_targets} target(s) could not be evaluated ({summary['counts']['ok']} evaluated); "
              f"exit code 1; see {out / 'summary.md'}:", file=sys.stderr)
        for f in failed:
            print(f"  {f['dataset']}/{f['case']} label {f['label']}: {' '.join(str(f['reason']).split())}", file=sys.stderr)
        raise typer.Exit(1)


def _check_out_writable(out: Path) -> None:
    """OutputPathError unless --out (or, when it does not exist yet, its nearest existing parent) is writable."""
    from voxsam.errors import OutputPathError
    from voxsam.io.atomic import check_writable_folder

    probe = out.expanduser().absolute()
    while not probe.exists():
        if probe.parent == probe:
            break
        probe = probe.parent
    if probe.exists() and not probe.is_dir():
        raise OutputPathError(f"{out}: cannot create the folder: {probe} is a file")
    check_writable_folder(probe)


def _print_overall(console: object, summary: dict) -> None:
    from rich.table import Table

    clicks = summary["settings"]["clicks"]
    table = Table("dataset", "n", *[f"Dice@{c}" for c in clicks], title="Dice (mean ± std)")
    for ds in sorted({g["dataset"] for g in summary["groups"]}, key=lambda d: (d == "overall", d)):
        cells, n = [], 0
        for c in clicks:
            g = next((g for g in summary["groups"] if g["dataset"] == ds and g["label"] == "all" and g["click"] == c), None)
            if g is None or g["dice"]["mean"] is None:
                cells.append("–")
            else:
                n = g["n"]
                cells.append(f"{g['dice']['mean']:.3f} ± {g['dice']['std']:.3f}")
        table.add_row(ds, str(n), *cells)
    console.print(table)  # type: ignore[attr-defined]
