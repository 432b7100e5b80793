"""A propagation runs in its own thread and reports through a queue; the HTTP answer streams the queue as
server-sent events. Cancelling (the endpoint, or the client closing the connection) stops it after the
current slice; the slices decided so far stay."""
from __future__ import annotations

import json
import logging
import queue
import threading
from collections.abc import AsyncIterator, Callable
from typing import Any

import numpy as np

from voxsam.errors import VoxsamError
from voxsam.server.errors import body
from voxsam.server.masks import region_list
from voxsam.server.store import SessionEntry

log = logging.getLogger(__name__)

Event = tuple[str, dict[str, Any]]
POLL_S = 0.5  # how often a waiting stream checks whether its client left


def start(entry: SessionEntry, object_id: int | None, on_end: Callable[[], None] | None = None) -> queue.Queue[Event]:
    """Start propagating `object_id`'s queued prompts (409 when one already runs in this session)."""
    with entry.guard:
        entry.claim()
        run = entry.session.propagate(object_id)
        entry.propagation = run
    events: queue.Queue[Event] = queue.Queue()
    thread = threading.Thread(target=_work, args=(entry, run, events, on_end), name=f"propagate-{entry.id}", daemon=True)
    thread.start()
    return events


def _work(entry: SessionEntry, run: Any, events: queue.Queue[Event], on_end: Callable[[], None] | None) -> None:
    slices = 0
    failed: Event | None = None
    events.put(("start", {"axis": int(run.axis), "object_id": int(run.object_id)}))
    try:
        with run:
            for k, mask2d in run:
                slices += 1
                events.put(("slice", {"index": int(k), "voxels": int(np.count_nonzero(mask2d))}))
    except VoxsamError as exc:
        failed = ("error", body(type(exc).__name__, str(exc)))
    except Exception as exc:  # a bug: say so, keep serving
        log.exception("propagation of session %s failed", entry.id)
        failed = ("error", body("internal", f"{type(exc).__name__}: {exc}"))
    finally:
        entry.version += 1
        cancelled = run.cancelled
        entry.propagation = None
        if on_end is not None:
            on_end()
    events.put(failed or ("done", {
        "version": entry.version, "region": region_list(entry.session.last_region) if slices or not cancelled else None,
        "slices": slices, "cancelled": cancelled, "object_id": int(run.object_id),
    }))


def sse(event: Event) -> str:
    kind, data = event
    return f"event: {kind}\ndata: {json.dumps(data)}\n\n"


async def event_stream(entry: SessionEntry, events: queue.Queue[Event]) -> AsyncIterator[str]:
    """Yield the events as text until done or error; a client that leaves cancels the propagation."""
    from anyio import to_thread

    finished = False
    try:
        while not finished:
            event = await to_thread.run_sync(_next, events)
            if event is None:
                continue
            finished = event[0] in ("done", "error")
            yield sse(event)
    finally:
        if not finished and entry.propagation is not None:
            entry.propagation.cancel()


def _next(events: queue.Queue[Event]) -> Event | None:
    try:
        return events.get(timeout=POLL_S)
    except queue.Empty:
        return None

