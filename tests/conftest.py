"""Shared fixtures: the ../shared data beside the repository (tests skip cleanly without it)."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

REPO = Path(__file__).resolve().parents[1]
SHARED = REPO.parent / "shared"
SHARED_DATA = SHARED / "data"


@pytest.fixture(scope="session")
def shared_data() -> Path:
    if not SHARED_DATA.is_dir():
        pytest.skip("../shared/data is absent")
    return SHARED_DATA


def oblique_affine(spacing=(0.8, 1.1, 2.5), angle_deg: float = 17.0, origin=(-40.0, 12.5, 7.25)) -> np.ndarray:
    """A rotated, flipped, anisotropic RAS affine: catches axis-order and sign mistakes."""
    a = np.deg2rad(angle_deg)
    rot = np.array([[np.cos(a), -np.sin(a), 0], [np.sin(a), np.cos(a), 0], [0, 0, 1]])
    flip = np.diag([-1.0, 1.0, 1.0])
    aff = np.eye(4)
    aff[:3, :3] = rot @ flip @ np.diag(spacing)
    aff[:3, 3] = origin
    return aff
