"""voxsam: promptable 3D segmentation of CT and MRI.

Heavy modules (torch, SimpleITK, MONAI) load lazily, so importing voxsam is cheap.
"""
from __future__ import annotations

from typing import TYPE_CHECKING, Any

from voxsam.errors import VoxsamError

from voxsam._version import __version__
__all__ = ["VoxsamError", "Session", "__version__"]

if TYPE_CHECKING:  # pragma: no cover
    from voxsam.session import Session


def __getattr__(name: str) -> Any:
    if name == "Session":
        from voxsam.session import Session

        return Session
    raise AttributeError(f"module 'voxsam' has no attribute {name!r}")
