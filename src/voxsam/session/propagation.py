"""`Propagation`: the handle `Session.propagate()` returns - iterate it, cancel it, or use it as a context."""
from __future__ import annotations

import threading
from collections.abc import Generator, Iterator

import numpy as np


class Propagation(Iterator[tuple[int, np.ndarray]]):
    """A running propagation: iterate for `(slice_index, mask2d)` along `axis`; `cancel()` (from any thread)
    stops it before the next slice, keeping the slices decided so far. Usable as a context manager."""

    def __init__(self, steps: Generator[tuple[int, np.ndarray], None, None], axis: int, object_id: int, cancelled: threading.Event) -> None:
        self._steps = steps
        self.axis = axis
        self.object_id = object_id
        self._cancelled = cancelled
        self.slices_done = 0

    def __next__(self) -> tuple[int, np.ndarray]:
        item = next(self._steps)
        self.slices_done += 1
        return item

    def cancel(self) -> None:
        self._cancelled.set()

    @property
    def cancelled(self) -> bool:
        """True once `cancel()` was called."""
        return self._cancelled.is_set()

    def run(self) -> None:
        """Run to the end (or to a cancel) without looking at the slices."""
        for _ in self:
            pass

    def close(self) -> None:
        self._steps.close()

    def __enter__(self) -> Propagation:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
