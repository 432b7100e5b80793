"""Validation pieces shared by the training configs: probabilities and (lo, hi) ranges."""
from __future__ import annotations

import math
from typing import Annotated

from pydantic import Field

Probability = Annotated[float, Field(ge=0.0, le=1.0)]


def check_range(
    value: tuple[float, float], *, above: float | None = None, at_least: float | None = None
) -> tuple[float, float]:
    """A (lo, hi) pair must be finite with lo <= hi, and lo > `above` / lo >= `at_least` when given."""
    lo, hi = value
    if not (math.isfinite(lo) and math.isfinite(hi)):
        raise ValueError(f"range {value} must be finite")
    if lo > hi:
        raise ValueError(f"range {value} has lo > hi")
    if above is not None and lo <= above:
        raise ValueError(f"range {value} must be > {above:g}")
    if at_least is not None and lo < at_least:
        raise ValueError(f"range {value} must be >= {at_least:g}")
    return value
