"""The Session API: one volume, one engine, objects refined by prompts (see `session.py`)."""
from __future__ import annotations

from voxsam.session.session import DEFAULT_HISTORY_BYTES, Propagation, Session

__all__ = ["DEFAULT_HISTORY_BYTES", "Propagation", "Session"]
