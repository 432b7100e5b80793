"""`classic`: training-free seeded 3D segmentation (GrowCut, random walker); see `engine.py` for the method."""
from __future__ import annotations

from voxsam.engines.classic.engine import ClassicEngine
from voxsam.engines.classic.options import ClassicOptions

__all__ = ["ClassicEngine", "ClassicOptions"]
