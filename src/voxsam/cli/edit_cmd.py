"""`voxsam edit`: correct any 3D mask by fixing one slice; the correction re-propagates to its neighbours."""
from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

from voxsam.cli.engine_args import EngineOption
from voxsam.cli.io_cmds import AllowUnevenOption, SeriesOption


def register(app: typer.Typer) -> None:
    app.command("edit")(edit)


def _slice_arg(text: str) -> tuple[int, int]:
    from voxsam.errors import PromptError

    axis, sep, index = text.partition(":")
    try:
        if not sep:
            raise ValueError
        return int(axis), int(index)
    except ValueError:
        raise PromptError(f"--slice {text!r}: expected AXIS:INDEX, e.g. 2:40") from None


def _on_slice(values: list[float], axis: int, index: int) -> tuple[float, float, float]:
    """Voxel (i, j, k) of in-plane coordinates (u, v) (the two other axes, in order) on slice `index`."""
    full = list(values)
    full.insert(axis, float(index))
    return (full[0], full[1], full[2])


def edit(
    mask: Annotated[Path, typer.Argument(help="The 3D mask to correct (any engine's output, or a file from another tool).")],
    image: Annotated[Path, typer.Option("--image", help="Its image (file or DICOM folder); the mask must share its grid.")],
    slice_: Annotated[str, typer.Option("--slice", help="AXIS:INDEX of the slice you correct, e.g. 2:40.")],
    out: Annotated[Path, typer.Option("--out", help="Corrected mask file (same format rules as segment).")],
    point: Annotated[Optional[list[str]], typer.Option("--point", help="u,v[,label] on the slice: voxel indices along the two other axes, in order; label 1 adds (default), 0 removes. Repeatable.")] = None,
    box: Annotated[Optional[str], typer.Option(help="u0,v0,u1,v1: a box on the slice around the object.")] = None,
    label: Annotated[Optional[int], typer.Option(help="Which label of a multi-label mask to correct (default: the only one).")] = None,
    engine: Annotated[str, typer.Option(help="An engine that edits masks (`voxsam engines`).")] = "slice2d",
    engine_option: EngineOption = None,
    overwrite: Annotated[bool, typer.Option("--overwrite", help="Replace --out if it exists.")] = False,
    series: SeriesOption = None,
    allow_uneven: AllowUnevenOption = False,
) -> None:
    """Correct one slice of a 3D mask with clicks or a box; the engine re-propagates the change outward and
    stops where the new slices agree with the old mask. Other labels are kept as they are."""
    import time

    import numpy as np
    from rich.console import Console

    from voxsam.cli.engine_args import build_engine, engine_values
    from voxsam.cli.segment_cmd import _numbers
    from voxsam.errors import GeometryMismatchError, PromptError
    from voxsam.io import read_volume, write_mask
    from voxsam.io.atomic import check_output_path
    from voxsam.session import Session
    from voxsam.transforms.geometry import same_grid

    axis, index = _slice_arg(slice_)
    if not point and not box:
        raise PromptError("give at least one --point or a --box on the slice")
    check_output_path(out, [image, mask], overwrite=overwrite)  # exists, unwritable folder: said before any work
    console = Console(stderr=True)
    built = build_engine(engine, engine_values(engine_option))
    if not built.capabilities.edits_masks:
        raise PromptError(f"engine {engine!r} does not edit existing masks; use slice2d")
    start = time.perf_counter()
    vol = read_volume(image, series=series, allow_uneven=allow_uneven)
    labels_vol = read_volume(mask)
    if not same_grid(labels_vol.shape, labels_vol.affine, vol.shape, vol.affine):
        raise GeometryMismatchError(f"{mask} is not on the grid of {image}")
    check_output_path(out, [p for p in (vol.path, labels_vol.path) if p], overwrite=overwrite)
    values = np.asarray(labels_vol.channel(0))
    present = [int(v) for v in np.unique(values) if v != 0]
    if label is None:
        if len(present) > 1:
            raise PromptError(f"{mask} holds labels {present}; choose one with --label")
        label = present[0] if present else 1
    session = Session(vol, built)
    session.set_mask(values == label)
    session.prepare()
    for text in point or []:
        v = _numbers(text, (2, 3), "--point")
        if len(v) == 3 and v[2] not in (0.0, 1.0):
            raise PromptError(f"--point {text!r}: the label must be 1 (add) or 0 (remove), got {v[2]:g}")
        positive = bool(v[2]) if len(v) == 3 else True
        session.add_point(_on_slice(v[:2], axis, index), positive=positive, axis=axis, propagate=False)
    if box:
        b = _numbers(box, (4,), "--box")
        session.add_box(_on_slice(b[:2], axis, index), _on_slice(b[2:], axis, index), axis=axis, propagate=False)
    run = session.propagate()
    changed = [k for k, _ in run]
    result = values.copy()
    result[values == label] = 0
    result[session.mask > 0] = label
    path = write_mask(result, vol, out, overwrite=overwrite)
    console.print(f"wrote {path}: slices {min(changed)}..{max(changed)} of axis {axis} revisited ({len(changed)}) in {time.perf_counter() - start:.1f} s")
