"""A registered test engine that propagates slowly (the session fakes' disc engine, with a pause per slice),
so tests can catch a propagation in flight."""
from __future__ import annotations

import time
from collections.abc import Generator, Iterator
from typing import Any

import numpy as np
import pytest

from tests.session.fakes import DiscPropagator
from voxsam.engines import ENGINES
from voxsam.engines.base import Prediction
from voxsam.engines.options import EngineOptions, EngineSpec
from voxsam.prompts import Change, PromptSet


class SlowOptions(EngineOptions):
    pause_s: float = 0.05
    span: int = 6


class SlowDisc(DiscPropagator):
    name = "slowdisc"

    def __init__(self, options: SlowOptions) -> None:
        super().__init__(r=3.0, span=options.span)
        self.pause_s = options.pause_s

    def propagate(
        self, prepared: Any, prompts: PromptSet, previous: Prediction | None, change: Change | None = None
    ) -> Generator[tuple[int, np.ndarray], None, Prediction]:
        steps = super().propagate(prepared, prompts, previous, change)
        try:
            while True:
                time.sleep(self.pause_s)
                yield next(steps)
        except StopIteration as done:
            return done.value  # type: ignore[no-any-return]


def _spec() -> EngineSpec:
    return EngineSpec("slowdisc", "test: a disc per slice, slowly", SlowOptions, SlowDisc, capabilities=SlowDisc.capabilities)


@pytest.fixture
def slow_engine() -> Iterator[str]:
    ENGINES["slowdisc"] = _spec
    try:
        yield "slowdisc"
    finally:
        ENGINES.pop("slowdisc", None)
