"""The small interface every engine implements.

An engine knows one model family's input rules (spacing, crop, normalisation, slice order). It gets a
`Volume` once (`prepare`, cached by the session) and then voxel-space prompts (`predict`), and returns
a mask on the volume's own grid. It never reads or writes files.
"""
from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np

from voxsam.io.volume import Volume
from voxsam.prompts import PromptSet


@dataclass
class Prediction:
    """An engine's answer for one object.

    Attributes:
        mask: (X, Y, Z) bool on the volume grid.
        state: engine-private memory passed back to the next `predict` of the same object
            (e.g. low-res logits and the crop they belong to). Treated as immutable.
    """

    mask: np.ndarray
    state: Any = None


class Engine(ABC):
    """Promptable segmentation of one volume. Subclasses register in `voxsam.engines.ENGINES`."""

    name: ClassVar[str]
    #: which prompt kinds this engine understands: subset of {"point", "box", "slice_mask"}
    supports: ClassVar[frozenset[str]] = frozenset({"point"})

    @abstractmethod
    def prepare(self, volume: Volume) -> Any:
        """Per-volume work done once (resampling, normalisation, encoding caches)."""

    @abstractmethod
    def predict(self, prepared: Any, prompts: PromptSet, previous: Prediction | None) -> Prediction:
        """Segment one object from all its prompts so far.

        Args:
            prepared: what `prepare` returned for this volume.
            prompts: every prompt of the object, voxel space, in order.
            previous: the last prediction of this object (None at the first prompt).
        """
