"""Small synthetic volumes shared by the classic engine's tests."""
from __future__ import annotations

import numpy as np

from voxsam.io.volume import Volume


def ball(shape, centre, radius, spacing=(1.0, 1.0, 1.0)) -> np.ndarray:
    g = np.indices(shape, dtype=np.float64)
    return sum(((g[i] - centre[i]) * spacing[i]) ** 2 for i in range(3)) <= radius**2


def volume(img, spacing=(1.0, 1.0, 1.0)) -> Volume:
    return Volume(np.asarray(img, np.float32), np.diag([*spacing, 1.0]))


def two_blobs() -> tuple[Volume, np.ndarray, np.ndarray]:
    """Two bright spheres (intensity 100 and 60) in noise, 48x44x30 at 1x1x1.5 mm."""
    shape, sp = (48, 44, 30), (1.0, 1.0, 1.5)
    a = ball(shape, (15, 22, 15), 8.0, sp)
    b = ball(shape, (35, 22, 15), 6.0, sp)
    rng = np.random.default_rng(0)
    return volume(100.0 * a + 60.0 * b + rng.normal(0, 6, shape), sp), a, b
