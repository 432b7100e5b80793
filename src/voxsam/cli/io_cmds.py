"""`voxsam info` and `voxsam convert`."""
from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer


SeriesOption = Annotated[
    Optional[str],
    typer.Option("--series", help="SeriesInstanceUID to read when a DICOM folder holds several series (the error lists them)."),
]
AllowUnevenOption = Annotated[
    bool,
    typer.Option(
        "--allow-uneven",
        help="Resample a DICOM series with missing slices or uneven slice steps onto a regular grid (linear along the "
        "slice normal) instead of refusing it.",
    ),
]
OverwriteOption = Annotated[bool, typer.Option("--overwrite", help="Replace the output file if it exists.")]


def register(app: typer.Typer) -> None:
    app.command("info")(info)
    app.command("convert")(convert)
    app.command("dataset")(dataset)


def info(
    path: Annotated[Path, typer.Argument(help="Image or label file, or a DICOM folder.")],
    labels: Annotated[Optional[bool], typer.Option("--labels/--no-labels", help="Force (or forbid) the label table; default: guess from the voxels.")] = None,
    names: Annotated[Optional[Path], typer.Option(help="dataset.json giving label names (default: the dataset.json of a labelsTr/ parent).")] = None,
    series: SeriesOption = None,
    allow_uneven: AllowUnevenOption = False,
) -> None:
    """Shape, spacing, orientation, intensity range and, for label maps, each label's voxel count and name."""
    from rich.console import Console
    from rich.table import Table

    from voxsam.io import read_volume
    from voxsam.io.summary import names_from_file, summarise

    if names is not None:
        names_from_file(names, strict=True)  # a names file the user gave must exist and parse, before any work
    vol = read_volume(path, series=series, allow_uneven=allow_uneven)
    summary = summarise(vol, as_labels=labels, names_file=names)
    console = Console()
    table = Table(show_header=False, box=None)
    for key in ("path", "format", "modality", "shape", "channels", "spacing_mm", "orientation", "origin_mm", "dtype", "range"):
        if summary.get(key) is not None:
            table.add_row(f"[bold]{key}[/]", str(summary[key]))
    console.print(table)
    if summary.get("labels"):
        lt = Table("label", "voxels", "volume (ml)", "name")
        for row in summary["labels"]:
            lt.add_row(str(row["value"]), str(row["voxels"]), f"{row['ml']:.2f}", row.get("name") or "")
        console.print(lt)


def convert(
    source: Annotated[Path, typer.Argument(help="Input image (any readable format, or a DICOM folder).")],
    target: Annotated[Path, typer.Argument(help="Output file: .nii.gz, .nii, .nrrd, .mha or .mgz.")],
    overwrite: OverwriteOption = False,
    series: SeriesOption = None,
    allow_uneven: AllowUnevenOption = False,
) -> None:
    """Convert a volume to another format on exactly the same voxel grid."""
    from voxsam.io import read_volume, write_volume
    from voxsam.io.atomic import check_output_path
    from voxsam.io.formats import detect_output_format

    detect_output_format(target)  # a bad name, an existing file or an unwritable folder: said before any reading
    check_output_path(target, [source], overwrite=overwrite)
    vol = read_volume(source, series=series, allow_uneven=allow_uneven)
    out = write_volume(vol, target, overwrite=overwrite)
    typer.echo(f"wrote {out} ({vol.describe()})")


def dataset(
    root: Annotated[Path, typer.Argument(help="Dataset folder in MSD / nnU-Net layout (imagesTr/, labelsTr/, dataset.json).")],
    check: Annotated[bool, typer.Option("--check", help="Load every case and check each label lies on its image grid.")] = False,
) -> None:
    """List a dataset's cases and label names; with --check, validate every case (exit 2 on any problem)."""
    from rich.console import Console
    from rich.table import Table

    from voxsam.errors import DatasetError, VoxsamError
    from voxsam.io.datasets import open_dataset

    ds = open_dataset(root)
    console = Console()
    console.print(f"[bold]{ds.name}[/]  modality={ds.modality or '?'}  cases={len(ds.cases)}")
    console.print("labels: " + (", ".join(f"{v}={n}" for v, n in sorted(ds.label_names.items())) or "(no names)"))
    table = Table("case", "channels", "label", *(["status"] if check else []))
    problems: list[str] = []
    for case in ds.cases:
        status = []
        if check:
            try:
                case.load_label(case.load_image())
                status = ["ok"]
            except VoxsamError as exc:
                problems.append(str(exc))
                status = [f"[red]{exc}[/]"]
        table.add_row(case.case_id, str(len(case.image_paths)), case.label_path.name if case.label_path else "-", *status)
    console.print(table)
    if problems:
        raise DatasetError(f"{root}: {len(problems)} of {len(ds.cases)} cases have problems; first: {problems[0]}")
