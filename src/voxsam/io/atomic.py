"""Atomic output: write to a temporary file beside the target, then rename over it."""
from __future__ import annotations

import contextlib
import os
import tempfile
from collections.abc import Iterator, Sequence
from pathlib import Path

from voxsam.errors import OutputPathError


def output_suffix(path: Path) -> str:
    """The full extension of a path, e.g. ".nii.gz" (keeps writers that pick a format by suffix happy)."""
    name = path.name.lower()
    for double in (".nii.gz", ".tar.gz"):
        if name.endswith(double):
            return path.name[-len(double):]
    return path.suffix


def check_output_path(path: Path, inputs: Sequence[Path | str] = ()) -> Path:
    """Refuse an output that is one of the inputs or whose folder does not exist; return it resolved."""
    out = Path(path).expanduser().resolve()
    for p in inputs:
        if p is not None and Path(p).expanduser().resolve() == out:
            raise OutputPathError(f"{path}: refusing to overwrite an input file")
    if not out.parent.is_dir():
        raise OutputPathError(f"{path}: the output folder {out.parent} does not exist")
    if out.is_dir():
        raise OutputPathError(f"{path}: is a folder, expected a file name")
    return out


@contextlib.contextmanager
def atomic_path(path: Path) -> Iterator[Path]:
    """Yield a temporary path with the same suffix in the same folder; rename it to `path` on success.

    On any exception the temporary file is removed and `path` is left untouched.
    """
    path = Path(path)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=f".tmp{output_suffix(path)}", dir=path.parent)
    os.close(fd)
    tmp_path = Path(tmp)
    try:
        yield tmp_path
        os.replace(tmp_path, path)
    finally:
        if tmp_path.exists():
            tmp_path.unlink()
