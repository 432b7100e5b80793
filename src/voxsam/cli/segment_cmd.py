"""`voxsam segment`: prompts on the command line, a mask file in the source geometry out."""
from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

from voxsam.cli.engine_args import EngineOption
from voxsam.cli.io_cmds import AllowUnevenOption, SeriesOption

#: The engine that ranks best at one click on the held-out validation split, by a margin its paired 95% interval
#: settles (slice2d 0.617 vs classic 0.511, +0.065..+0.147, and vs memory3d 0.577, +0.017..+0.065; README, "Default
#: engine"; docs/benchmarks.md).
SEGMENT_ENGINE = "slice2d"


def register(app: typer.Typer) -> None:
    app.command("segment")(segment)


def _numbers(text: str, count: tuple[int, ...], what: str) -> list[float]:
    from voxsam.errors import PromptError

    try:
        values = [float(v) for v in text.split(",")]
    except ValueError:
        raise PromptError(f"{what} {text!r}: expected comma-separated numbers") from None
    if len(values) not in count:
        raise PromptError(f"{what} {text!r}: expected {' or '.join(map(str, count))} numbers, got {len(values)}")
    return values


def segment(
    image: Annotated[Path, typer.Argument(help="Image file or DICOM folder.")],
    out: Annotated[Path, typer.Option("--out", help="Mask file (.nii.gz, .nrrd, .mha, .mgz, or .dcm for DICOM SEG).")],
    point: Annotated[Optional[list[str]], typer.Option("--point", help="x,y,z[,label]: label 1 positive (default), 0 negative. Repeat for more clicks.")] = None,
    box: Annotated[Optional[list[str]], typer.Option(help="x0,y0,z0,x1,y1,z1: two opposite corners of a box. Repeatable.")] = None,
    axis: Annotated[Optional[int], typer.Option(help="Make the points and boxes 2D prompts on the slice of this array axis (0, 1 or 2) that holds them.")] = None,
    world: Annotated[bool, typer.Option("--world", help="Coordinates are RAS mm instead of voxel indices.")] = False,
    engine: Annotated[str, typer.Option(help="Engine name (`voxsam engines` lists them); default slice2d, the best at one click on the validation split (a few seconds per click on 2 cores); classic answers in 0.02 s (README, 'Default engine').")] = SEGMENT_ENGINE,
    engine_option: EngineOption = None,
    checkpoint: Annotated[Optional[Path], typer.Option(help="Shortcut for --engine-option checkpoint=PATH.")] = None,
    trust_checkpoint: Annotated[bool, typer.Option("--trust-checkpoint", help="Shortcut for --engine-option trust_checkpoint=true (pickled checkpoints, e.g. the released SAM-Med3D files; only files you trust).")] = False,
    precision: Annotated[Optional[str], typer.Option(help="Shortcut for --engine-option precision=P (sam3d: float32, int8, bfloat16).")] = None,
    overwrite: Annotated[bool, typer.Option("--overwrite", help="Replace --out if it exists.")] = False,
    series: SeriesOption = None,
    allow_uneven: AllowUnevenOption = False,
) -> None:
    """Segment one object from clicks and/or boxes; write the mask in the source image's geometry.

    Exits 2 without writing when the engine finds nothing at the prompts (an empty mask), saying why it may be."""
    import time

    from rich.console import Console

    from voxsam.cli.engine_args import build_engine, engine_values
    from voxsam.errors import EmptyMaskError, PromptError
    from voxsam.io import read_volume, write_mask
    from voxsam.io.atomic import check_output_path
    from voxsam.io.formats import detect_output_format
    from voxsam.session import Session

    if not point and not box:
        raise PromptError("give at least one --point or a --box")
    detect_output_format(out)
    check_output_path(out, [image], overwrite=overwrite)  # exists, unwritable folder: said before any work
    console = Console(stderr=True)
    space = "world" if world else "voxel"
    values = engine_values(engine_option, checkpoint=checkpoint, trust_checkpoint=trust_checkpoint, precision=precision)
    clicks = []
    for text in point or []:
        v = _numbers(text, (3, 4), "--point")
        if len(v) == 4 and v[3] not in (0.0, 1.0):
            raise PromptError(f"--point {text!r}: the label must be 1 (positive) or 0 (negative), got {v[3]:g}")
        clicks.append((tuple(v[:3]), bool(v[3]) if len(v) == 4 else True))
    boxes = [_numbers(text, (6,), "--box") for text in box or []]

    start = time.perf_counter()
    with console.status(f"loading engine {engine}"):
        built = build_engine(engine, values)
    with console.status("reading image"):
        vol = read_volume(image, series=series, allow_uneven=allow_uneven)
    check_output_path(out, [vol.path] if vol.path else [], overwrite=overwrite)
    session = Session(vol, built)
    with console.status("preparing the image"):
        session.prepare()
    with console.status("segmenting"):
        for corners in boxes:
            session.add_box(tuple(corners[:3]), tuple(corners[3:]), space=space, axis=axis)  # type: ignore[arg-type]
        for xyz, positive in clicks:
            session.add_point(xyz, positive=positive, space=space, axis=axis)  # type: ignore[arg-type]
    mask = session.mask
    if not mask.any():
        raise EmptyMaskError(f"engine {engine!r} found nothing at the prompts (empty mask; {out} not written): {why_empty(vol)}")
    path = write_mask(mask, vol, out, overwrite=overwrite)
    console.print(f"wrote {path}: {int(mask.sum())} voxels in {time.perf_counter() - start:.1f} s")


def why_empty(vol: object) -> str:
    """Likely reasons an engine returns an empty mask on this volume, most specific first."""
    import numpy as np

    from voxsam.io.volume import Volume

    assert isinstance(vol, Volume)
    reasons = []
    thin = [(a, n) for a, n in enumerate(vol.shape) if n < 8]
    for axis, n in thin:
        reasons.append(f"the volume is only {n} slices thick along axis {axis}")
    spacing = vol.spacing
    if max(spacing) / max(min(spacing), 1e-9) > 20:
        reasons.append(f"its voxels are very anisotropic (spacing {tuple(round(s, 4) for s in spacing)} mm)")
    if max(spacing) > 10 or min(spacing) < 0.05:
        reasons.append(f"its voxel spacing {tuple(round(s, 4) for s in spacing)} mm is unusual for CT/MRI")
    channel = np.asarray(vol.channel(0))
    if channel.size and float(channel.min()) == float(channel.max()):
        reasons.append(f"the image is constant (every voxel {float(channel.min()):g})")
    if not reasons:
        reasons.append("the prompts may lie on background or on a structure too small for this engine; try another click, a box or --engine classic")
    return "; ".join(reasons)
