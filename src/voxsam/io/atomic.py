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


def save_torch_atomic(obj: object, path: Path) -> Path:
    """`torch.save` to a temporary file beside `path`, fsync, then rename: a kill never leaves half a file.

    Raises OutputPathError when the folder cannot be written.
    """
    import torch

    path = Path(path)
    try:
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    except OSError as e:
        raise OutputPathError(f"{path}: cannot write in {path.parent}: {e.strerror}") from None
    try:
        with os.fdopen(fd, "wb") as f:
            torch.save(obj, f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    return path
