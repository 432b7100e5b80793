"""`sam3d`: SAM-Med3D behind the Session API; see `engine.py` for the pipeline."""
from __future__ import annotations

from voxsam.engines.sam3d.engine import BUNDLED, Sam3DEngine
from voxsam.engines.sam3d.options import Sam3DOptions

__all__ = ["BUNDLED", "Sam3DEngine", "Sam3DOptions"]
