"""Atomic output: write to a temporary file beside the target, then rename over it.

Temporary files are named `.<name>.voxsam-tmp-<pid>-<random><suffix>` (the output's own suffix last, so
writers that choose a format by name still do). They are removed on any exception, Ctrl-C and SIGTERM
included (the CLI turns SIGTERM into an exception). A temporary file left by a process that was killed
outright (SIGKILL, power loss) is recognised by that name and removed by the next atomic write into the same
folder once its process id is no longer alive. Outputs get the mode a plain `open()` would give them (0666
less the umask), not the 0600 of `tempfile.mkstemp`.
"""
from __future__ import annotations

import contextlib
import errno
import os
import re
import tempfile
from collections.abc import Iterator, Sequence
from pathlib import Path

from voxsam.errors import DiskFullError, OutputPathError

TEMP_MARK = ".voxsam-tmp-"
_TEMP_NAME = re.compile(r"^\.(?P<name>.+)\.voxsam-tmp-(?P<pid>\d+)-[A-Za-z0-9_]+")
_DISK_FULL = {errno.ENOSPC, getattr(errno, "EDQUOT", errno.ENOSPC), errno.EFBIG}
_NOT_ALLOWED = {errno.EACCES, errno.EPERM, errno.EROFS}


def output_suffix(path: Path) -> str:
    """The full extension of a path, e.g. ".nii.gz" (keeps writers that pick a format by suffix happy)."""
    name = path.name.lower()
    for double in (".nii.gz", ".tar.gz"):
        if name.endswith(double):
            return path.name[-len(double):]
    return path.suffix


def temp_owner(path: Path) -> int | None:
    """The process id in a voxsam temporary file's name, or None when the name is not one."""
    m = _TEMP_NAME.match(Path(path).name)
    return int(m.group("pid")) if m else None


def _alive(pid: int) -> bool:
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's live process
        return True
    except OSError:
        return True
    return True


def clean_stale_temps(folder: Path) -> list[Path]:
    """Remove voxsam temporary files in `folder` whose writing process is gone; return what was removed."""
    removed: list[Path] = []
    try:
        entries = list(os.scandir(folder))
    except OSError:
        return removed
    for entry in entries:
        if TEMP_MARK not in entry.name:
            continue
        pid = temp_owner(Path(entry.name))
        if pid is None or _alive(pid):
            continue
        try:
            if entry.is_file(follow_symlinks=False):
                os.unlink(entry.path)
                removed.append(Path(entry.path))
        except OSError:
            pass  # another process cleaned it, or we may not: leave it
    return removed


def current_umask() -> int:
    """The process umask, read without changing it where the system says it (Linux), else set and restored."""
    try:
        with open("/proc/self/status") as fh:
            for line in fh:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except (OSError, ValueError):
        pass
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def output_error(exc: OSError, path: Path | str) -> OutputPathError:
    """A one-line VoxsamError for an OSError met while writing `path`: disk full, not allowed, or other."""
    where = Path(path)
    if exc.errno in _DISK_FULL:
        return DiskFullError(f"{where}: the disk is full (no space left on device in {where.parent}); nothing was written")
    if exc.errno in _NOT_ALLOWED:
        return OutputPathError(f"{where}: cannot write in {where.parent} ({exc.strerror or 'permission denied'})")
    return OutputPathError(f"{where}: cannot write ({exc.strerror or exc})")


def _mkstemp(path: Path, suffix: str) -> tuple[int, Path]:
    try:
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}{TEMP_MARK}{os.getpid()}-", suffix=suffix, dir=path.parent)
    except OSError as exc:
        raise output_error(exc, path) from None
    return fd, Path(tmp)


def check_writable_folder(folder: Path, for_path: str | Path | None = None) -> None:
    """Refuse (OutputPathError, DiskFullError) a folder this process cannot create files in, by trying to (root
    ignores mode bits, so `os.access` alone would say yes on a read-only mount). Messages name `for_path`
    (the output) when given, else the folder."""
    folder = Path(folder)
    try:
        fd, tmp = tempfile.mkstemp(prefix=f".probe{TEMP_MARK}{os.getpid()}-", dir=folder)
    except OSError as exc:
        name = for_path if for_path is not None else folder
        if exc.errno in _DISK_FULL:
            raise DiskFullError(f"{name}: the disk is full (no space left on device in {folder})") from None
        where = f"cannot write in {folder}" if for_path is not None else "cannot write in this folder"
        raise OutputPathError(f"{name}: {where} ({exc.strerror or 'permission denied'})") from None
    os.close(fd)
    with contextlib.suppress(OSError):
        os.unlink(tmp)


def check_output_path(path: Path, inputs: Sequence[Path | str] = (), overwrite: bool = True) -> Path:
    """Refuse an output that is one of the inputs, exists when `overwrite` is False, is a folder, or whose
    folder does not exist or cannot be written; return it resolved."""
    out = Path(path).expanduser().resolve()
    for p in inputs:
        if p is not None and Path(p).expanduser().resolve() == out:
            raise OutputPathError(f"{path}: refusing to overwrite an input file")
    if not out.parent.is_dir():
        raise OutputPathError(f"{path}: the output folder {out.parent} does not exist")
    if out.is_dir():
        raise OutputPathError(f"{path}: is a folder, expected a file name")
    if out.exists() and not overwrite:
        raise OutputPathError(f"{path}: exists; pass --overwrite to replace it")
    check_writable_folder(out.parent, for_path=path)
    return out


@contextlib.contextmanager
def atomic_path(path: Path) -> Iterator[Path]:
    """Yield a temporary path with the same suffix in the same folder; rename it to `path` on success.

    On any exception (KeyboardInterrupt included) the temporary file is removed and `path` is left untouched.
    Stale temporary files of dead processes in the folder are removed first. An OSError while writing becomes
    DiskFullError or OutputPathError naming `path`.
    """
    path = Path(path)
    clean_stale_temps(path.parent)
    fd, tmp_path = _mkstemp(path, output_suffix(path))
    os.close(fd)
    try:
        try:
            yield tmp_path
            os.chmod(tmp_path, 0o666 & ~current_umask())
            os.replace(tmp_path, path)
        except OSError as exc:
            raise output_error(exc, path) from None
    finally:
        with contextlib.suppress(OSError):
            if tmp_path.exists():
                tmp_path.unlink()


def save_torch_atomic(obj: object, path: Path) -> Path:
    """`torch.save` to a temporary file beside `path`, fsync, then rename: a kill never leaves half a file.

    Raises OutputPathError (DiskFullError when the disk is full) when the folder cannot be written.
    """
    import torch

    path = Path(path)
    clean_stale_temps(path.parent)
    fd, tmp = _mkstemp(path, ".tmp")
    try:
        try:
            with os.fdopen(fd, "wb") as f:
                torch.save(obj, f)
                f.flush()
                os.fsync(f.fileno())
            os.chmod(tmp, 0o666 & ~current_umask())
            os.replace(tmp, path)
        except OSError as exc:
            raise output_error(exc, path) from None
    finally:
        with contextlib.suppress(OSError):
            if os.path.exists(tmp):
                os.unlink(tmp)
    return path
