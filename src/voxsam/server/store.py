"""What a server holds: volumes, sessions and the engines they share, within one memory budget.

Engines are built once per (engine, options) and shared by every session: they keep per-volume work in
the session's prepared state, not in themselves. Volumes and sessions are evicted least recently used
first when the budget (or the session count) would be exceeded; asking for an evicted one answers 410.
"""
from __future__ import annotations

import itertools
import json
import logging
import secrets
import shutil
import threading
import time
from collections import OrderedDict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from voxsam.engines.base import Engine
from voxsam.errors import ResourceLimitError
from voxsam.io.volume import Volume
from voxsam.server.config import ServerConfig
from voxsam.server.errors import ApiError, not_found
from voxsam.session import Session

log = logging.getLogger(__name__)

EVICTED_REMEMBERED = 1024  # ids of evicted items kept to say "evicted" rather than "unknown"


@dataclass
class VolumeEntry:
    """An opened volume; `folder` is the private copy of an upload (removed with the entry)."""

    id: str
    name: str
    volume: Volume
    folder: Path | None = None
    nifti: bytes | None = None  # the image as .nii.gz for the page, made on first request

    @property
    def nbytes(self) -> int:
        return int(self.volume.array.nbytes) + (len(self.nifti) if self.nifti else 0)

    def close(self) -> None:
        if self.folder is not None:
            shutil.rmtree(self.folder, ignore_errors=True)


@dataclass
class SessionEntry:
    """A live session and what the server tracks about it."""

    id: str
    volume_id: str
    engine: str
    options: dict[str, Any]
    session: Session
    version: int = 0
    propagation: Any = None  # the running `Propagation`, if any
    guard: threading.Lock = field(default_factory=threading.Lock)

    @property
    def nbytes(self) -> int:
        """Estimate: object masks + undo history + the engine's prepared copy of the volume (4 bytes per voxel;
        classic keeps no copy but caches its last solves for further clicks within that bound)."""
        voxels = 1
        for n in self.session.volume.shape:
            voxels *= n
        prepared = 4 * voxels if self.session.is_prepared else 0
        return voxels * len(self.session.objects) + self.session.history_bytes + prepared

    def claim(self) -> None:
        """Refuse a change while a propagation streams (409)."""
        if self.propagation is not None:
            raise ApiError(409, "busy", f"session {self.id}: a propagation is running; cancel it or wait for it to end")


class Store:
    """Thread-safe registry of volumes, sessions and shared engines."""

    def __init__(self, config: ServerConfig) -> None:
        self.config = config
        self._lock = threading.RLock()
        self._volumes: OrderedDict[str, VolumeEntry] = OrderedDict()  # least recently used first
        self._sessions: OrderedDict[str, SessionEntry] = OrderedDict()
        self._engines: dict[tuple[str, str], Engine] = {}
        self._engine_lock = threading.Lock()
        self._evicted: OrderedDict[str, str] = OrderedDict()
        self._counter = itertools.count(1)

    # ------------------------------------------------------------------ ids
    def _new_id(self, prefix: str) -> str:
        return f"{prefix}{next(self._counter)}-{secrets.token_hex(3)}"

    # ------------------------------------------------------------------ volumes
    def add_volume(self, volume: Volume, name: str, folder: Path | None = None) -> VolumeEntry:
        entry = VolumeEntry(self._new_id("v"), name, volume, folder)
        if entry.nbytes > self.config.memory_bytes:
            entry.close()
            raise ResourceLimitError(
                f"{name}: {entry.nbytes / 2**20:.0f} MiB is more than the server's memory budget ({self.config.memory_bytes / 2**20:.0f} MiB)"
            )
        with self._lock:
            self._make_room(entry.nbytes)
            self._volumes[entry.id] = entry
        log.info("opened volume %s (%s, %s)", entry.id, name, volume.shape)
        return entry

    def volume(self, volume_id: str) -> VolumeEntry:
        with self._lock:
            entry = self._volumes.get(volume_id)
            if entry is None:
                raise self._missing("volume", volume_id)
            self._volumes.move_to_end(volume_id)
            return entry

    def volumes(self) -> list[VolumeEntry]:
        with self._lock:
            return list(self._volumes.values())

    def delete_volume(self, volume_id: str) -> None:
        with self._lock:
            entry = self.volume(volume_id)
            for sid in [s.id for s in self._sessions.values() if s.volume_id == volume_id]:
                self._drop_session(sid, None)
            del self._volumes[volume_id]
        entry.close()

    # ------------------------------------------------------------------ engines
    def engine(self, name: str, values: dict[str, Any]) -> tuple[Engine, dict[str, Any]]:
        """The shared engine for (name, options) and the options as validated (defaults filled in)."""
        from voxsam.engines import engine_spec
        from voxsam.engines.options import parse_options

        spec = engine_spec(name)
        options = parse_options(spec, values)
        dumped = options.model_dump(mode="json")
        key = (name, json.dumps(dumped, sort_keys=True))
        with self._engine_lock:  # built once even when two sessions ask at the same moment
            engine = self._engines.get(key)
            if engine is None:
                engine = spec.factory(options)
                self._engines[key] = engine
        return engine, dumped

    # ------------------------------------------------------------------ sessions
    def new_session(self, volume_id: str, engine_name: str, values: dict[str, Any]) -> SessionEntry:
        volume = self.volume(volume_id)
        engine, options = self.engine(engine_name, values)
        session = Session(volume.volume, engine, history_bytes=self.config.history_bytes)
        entry = SessionEntry(self._new_id("s"), volume_id, engine_name, options, session)
        with self._lock:
            while len(self._sessions) >= self.config.max_sessions:
                if not self._evict_one_session(f"more than {self.config.max_sessions} sessions were open"):
                    raise ApiError(409, "busy", f"{len(self._sessions)} sessions are busy; try again when one ends")
            self._make_room(0)
            self._sessions[entry.id] = entry
        return entry

    def session(self, session_id: str) -> SessionEntry:
        with self._lock:
            entry = self._sessions.get(session_id)
            if entry is None:
                raise self._missing("session", session_id)
            self._sessions.move_to_end(session_id)
            self._volumes.move_to_end(entry.volume_id)
            return entry

    def sessions(self) -> list[SessionEntry]:
        with self._lock:
            return list(self._sessions.values())

    def delete_session(self, session_id: str) -> None:
        with self._lock:
            entry = self.session(session_id)
            if entry.propagation is not None:
                entry.propagation.cancel()
            self._drop_session(session_id, None)

    def touched(self) -> None:
        """A session grew (masks, history, preparation): evict others if the budget is now exceeded."""
        with self._lock:
            self._make_room(0)

    # ------------------------------------------------------------------ budget
    @property
    def nbytes(self) -> int:
        with self._lock:
            return sum(v.nbytes for v in self._volumes.values()) + sum(s.nbytes for s in self._sessions.values())

    def _make_room(self, extra: int) -> None:
        """Evict least recently used sessions, then volumes without sessions, until `extra` more bytes fit."""
        budget = self.config.memory_bytes
        while self.nbytes + extra > budget:
            if self._evict_one_session(f"the server's memory budget ({budget / 2**20:.0f} MiB) was reached"):
                continue
            idle = [vid for vid in self._volumes if not any(s.volume_id == vid for s in self._sessions.values())]
            if not idle:
                return  # everything left is in use: let it be (the budget is a target, not a wall)
            entry = self._volumes.pop(idle[0])
            self._remember(entry.id, "the server's memory budget was reached")
            entry.close()
            log.info("evicted volume %s", entry.id)

    def _evict_one_session(self, why: str) -> bool:
        for sid, entry in self._sessions.items():
            if entry.propagation is None:  # never pull a session out from under a running propagation
                self._drop_session(sid, why)
                return True
        return False

    def _drop_session(self, session_id: str, why: str | None) -> None:
        self._sessions.pop(session_id, None)
        if why is not None:
            self._remember(session_id, why)
            log.info("evicted session %s: %s", session_id, why)

    def _remember(self, key: str, why: str) -> None:
        self._evicted[key] = f"{why} at {time.strftime('%H:%M:%S')}"
        while len(self._evicted) > EVICTED_REMEMBERED:
            self._evicted.popitem(last=False)

    def _missing(self, what: str, key: str) -> ApiError:
        why = self._evicted.get(key)
        if why is not None:
            return ApiError(410, "evicted", f"{what} {key} was evicted ({why}); open it again")
        return not_found(what, key)
