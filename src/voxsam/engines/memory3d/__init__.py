"""`memory3d` engine: SAM2-3dMed's memory propagation over slices (see engine.py)."""
from voxsam.engines.memory3d.engine import Memory3DEngine
from voxsam.engines.memory3d.options import Memory3DOptions

__all__ = ["Memory3DEngine", "Memory3DOptions"]
