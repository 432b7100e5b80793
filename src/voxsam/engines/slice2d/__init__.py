"""`slice2d`: RadSAM-style propagation of a 2D promptable model (LiteMedSAM) over slices; see `engine.py`."""
from __future__ import annotations

from voxsam.engines.slice2d.engine import Slice2DEngine
from voxsam.engines.slice2d.options import Slice2DOptions

__all__ = ["Slice2DEngine", "Slice2DOptions"]
