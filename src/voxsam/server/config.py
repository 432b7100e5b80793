"""`ServerConfig`: where the server may read and write, and how much it may hold."""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from voxsam.errors import ConfigError

LOCAL_HOSTS = ("127.0.0.1", "localhost", "::1")


@dataclass(frozen=True)
class ServerConfig:
    """Limits and permissions of one server.

    Attributes:
        data_roots: folders whose files may be opened and saved by path; empty = uploads and downloads only.
        token: when set, every request must carry it (header, `?token=` or the cookie it sets).
        max_upload_bytes: largest accepted upload.
        memory_bytes: budget for volumes + sessions held; the least recently used are evicted beyond it.
        history_bytes: undo/redo budget of each session.
        max_sessions: live sessions at most (the least recently used is evicted beyond it).
    """

    data_roots: tuple[Path, ...] = field(default_factory=tuple)
    token: str | None = None
    max_upload_bytes: int = 1024 * 2**20
    memory_bytes: int = 8192 * 2**20
    history_bytes: int = 64 * 2**20
    max_sessions: int = 64

    def __post_init__(self) -> None:
        roots = []
        for root in self.data_roots:
            p = Path(root).expanduser()
            if not p.is_dir():
                raise ConfigError(f"--data-root {root}: not a folder")
            roots.append(p.resolve())
        object.__setattr__(self, "data_roots", tuple(roots))
        if self.token is not None and len(self.token) < 8:
            raise ConfigError("--token must be at least 8 characters")
        for name in ("max_upload_bytes", "memory_bytes", "history_bytes", "max_sessions"):
            if getattr(self, name) <= 0:
                raise ConfigError(f"{name} must be positive, got {getattr(self, name)}")


def check_bind(host: str, token: str | None) -> None:
    """Refuse to serve another interface than localhost without a token."""
    if host not in LOCAL_HOSTS and not token:
        raise ConfigError(f"binding to {host} exposes the server to the network: give --token (or bind to 127.0.0.1)")
