"""Server paths: a path from a client is used only when its real location lies under a data root."""
from __future__ import annotations

from pathlib import Path

from voxsam.server.errors import ApiError


def under_roots(path: str, roots: tuple[Path, ...], *, must_exist: bool = True) -> Path:
    """The resolved path (symbolic links followed) when it lies under one of `roots`.

    A relative path is taken relative to the first root. Raises ApiError 403 when paths are off or the path
    escapes every root, 404 when `must_exist` and nothing is there.
    """
    if not roots:
        raise ApiError(403, "forbidden", "opening files by path is off: start the server with --data-root DIR")
    if not isinstance(path, str) or not path.strip() or "\x00" in path:
        raise ApiError(400, "bad_path", "give a non-empty path")
    raw = Path(path).expanduser()
    candidate = raw if raw.is_absolute() else roots[0] / raw
    # a new file (save) may not exist yet: resolve its folder, then add the name
    target = candidate.resolve() if must_exist or candidate.exists() else candidate.parent.resolve() / candidate.name
    if not any(target == root or root in target.parents for root in roots):
        raise ApiError(403, "forbidden", f"{path}: outside the server's data roots")
    if must_exist and not target.exists():
        raise ApiError(404, "not_found", f"{path}: no such file or folder")
    return target
