"""`classic` converts only its ROI: the masks equal those computed from a float32 copy of the whole volume."""
from __future__ import annotations

import numpy as np
import pytest

from tests.engines.classic.helpers import two_blobs
from voxsam.engines.base import Prediction
from voxsam.engines.classic import ClassicEngine
from voxsam.engines.classic.engine import ClassicPrepared
from voxsam.io.volume import Volume
from voxsam.prompts import Point, PromptSet

CLICKS = [((15, 22, 15), True), ((20, 22, 15), True), ((35, 22, 15), False), ((9, 20, 14), True)]


def _run(engine: ClassicEngine, prepared: ClassicPrepared) -> list[Prediction]:
    prompts, previous, out = PromptSet(), None, []
    for ijk, positive in CLICKS:
        prompts, _ = prompts.with_prompt(Point(tuple(float(v) for v in ijk), positive))  # type: ignore[arg-type]
        previous = engine.predict(prepared, prompts, previous)
        out.append(previous)
    return out


@pytest.mark.parametrize("method", ["growcut", "random_walker"])
@pytest.mark.parametrize("layout", ["int16-fortran", "float32-nan", "float64"])
def test_roi_conversion_equals_the_whole_volume_copy(method: str, layout: str) -> None:
    vol, _, _ = two_blobs()
    array = vol.array
    if layout == "int16-fortran":  # as nibabel returns a CT
        array = np.asfortranarray(np.rint(array * 10).astype(np.int16))
    elif layout == "float32-nan":
        array = array.copy()
        array[20:23, 20:23, 14] = np.nan
        array[5, 5, 5] = np.inf
    else:
        array = array.astype(np.float64)
    volume = Volume(array, vol.affine)
    engine = ClassicEngine(method=method, margin_mm=12.0)
    lazy = engine.prepare(volume)
    assert lazy.source is volume.channel(0) or np.shares_memory(lazy.source, volume.array)  # nothing copied
    whole = np.nan_to_num(np.ascontiguousarray(array, dtype=np.float32), nan=0.0, posinf=0.0, neginf=0.0)
    eager = ClassicPrepared(source=whole, spacing=lazy.spacing, modality=None)
    for a, b in zip(_run(engine, lazy), _run(engine, eager)):
        np.testing.assert_array_equal(a.mask, b.mask)
        assert a.region == b.region
    np.testing.assert_array_equal(lazy.image, whole)
