"""`voxsam segment`: prompts on the command line, a mask file in the source geometry out."""
from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer


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
    box: Annotated[Optional[str], typer.Option(help="x0,y0,z0,x1,y1,z1: two opposite corners of a 3D box.")] = None,
    world: Annotated[bool, typer.Option("--world", help="Coordinates are RAS mm instead of voxel indices.")] = False,
    engine: Annotated[str, typer.Option(help="Engine: sam3d or classic.")] = "sam3d",
    checkpoint: Annotated[Optional[Path], typer.Option(help="Model weights (sam3d: released or voxsam checkpoint).")] = None,
    trust_checkpoint: Annotated[bool, typer.Option("--trust-checkpoint", help="Allow pickled checkpoints (the released SAM-Med3D files). Only for files you trust.")] = False,
    precision: Annotated[Optional[str], typer.Option(help="sam3d encoder arithmetic: float32, int8 (CPU, faster) or bfloat16; default float32.")] = None,
) -> None:
    """Segment one object from clicks and/or a box; write the mask in the source image's geometry."""
    import time

    from rich.console import Console

    from voxsam.errors import PromptError
    from voxsam.io import read_volume, write_mask
    from voxsam.io.atomic import check_output_path
    from voxsam.session import Session

    if not point and not box:
        raise PromptError("give at least one --point or a --box")
    console = Console(stderr=True)
    space = "world" if world else "voxel"
    options = {}
    if engine == "sam3d":
        options = {"checkpoint": checkpoint, "trust_checkpoint": trust_checkpoint, "precision": precision}
    elif checkpoint is not None or precision is not None:
        raise PromptError(f"engine {engine!r} takes no --checkpoint or --precision")
    clicks = []
    for text in point or []:
        v = _numbers(text, (3, 4), "--point")
        if len(v) == 4 and v[3] not in (0.0, 1.0):
            raise PromptError(f"--point {text!r}: the label must be 1 (positive) or 0 (negative), got {v[3]:g}")
        clicks.append((tuple(v[:3]), bool(v[3]) if len(v) == 4 else True))
    corners = _numbers(box, (6,), "--box") if box else None

    start = time.perf_counter()
    with console.status("reading image"):
        vol = read_volume(image)
    check_output_path(out, [vol.path] if vol.path else [])
    with console.status(f"loading engine {engine}"):
        session = Session(vol, engine, **options)
    with console.status("segmenting (the first prompt encodes the image)"):
        if corners:
            session.add_box(tuple(corners[:3]), tuple(corners[3:]), space=space)
        for xyz, positive in clicks:
            session.add_point(xyz, positive=positive, space=space)
    path = write_mask(session.mask, vol, out)
    voxels = int(session.mask.sum())
    console.print(f"wrote {path}: {voxels} voxels in {time.perf_counter() - start:.1f} s")
