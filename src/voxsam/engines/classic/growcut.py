"""Fast GrowCut (Zhu et al. 2014) as one multi-source Dijkstra on the 6-neighbour grid graph.

Every voxel takes the label of the seed it reaches with the cheapest path; a step costs
(|ΔI|/σ)^power + lambda·step/min spacing, σ the RMS of ΔI over the grid's edges (`grid.edge_rms`).
"""
from __future__ import annotations

import numpy as np

from voxsam.engines.classic.grid import edge_rms


def growcut(norm: np.ndarray, seeds: np.ndarray, spacing: np.ndarray, lam: float, power: float) -> np.ndarray:
    """Fast GrowCut on one grid.

    Args:
        norm: (X, Y, Z) normalised intensities.
        seeds: int8, same shape: 0 free, 1 foreground, 2 background.
        spacing: (3,) voxel size, mm.
        lam: spatial cost per step (`growcut_lambda`), relative to a unit intensity difference.
        power: exponent of the intensity cost (`growcut_power`).
    Returns: float32 field, 1 where the cheapest seed is foreground, else 0 (unreachable voxels: 0).
    """
    from scipy.sparse import csr_matrix
    from scipy.sparse.csgraph import dijkstra

    shape = norm.shape
    n = norm.size
    flat = norm.ravel()
    sigma = edge_rms(norm)
    idx = np.arange(n, dtype=np.int64).reshape(shape)
    nbr = np.empty((n, 6), dtype=np.int64)
    cost = np.empty((n, 6), dtype=np.float64)
    smin = float(spacing.min())
    col = 0
    for axis in range(3):
        step_cost = lam * float(spacing[axis]) / smin
        for shift in (1, -1):
            valid = np.ones(shape, dtype=bool)
            edge = [slice(None)] * 3
            edge[axis] = slice(-1, None) if shift == 1 else slice(0, 1)
            valid[tuple(edge)] = False
            other = np.where(valid, np.roll(idx, -shift, axis=axis), idx).ravel()
            nbr[:, col] = other
            cost[:, col] = np.power(np.abs(flat[other] - flat) / sigma, power) + step_cost + 1e-9
            col += 1
    graph = csr_matrix((cost.ravel(), nbr.ravel(), np.arange(0, 6 * n + 1, 6)), shape=(n, n))
    src = np.flatnonzero(seeds.ravel() > 0)
    _, _, sources = dijkstra(graph, directed=True, indices=src, min_only=True, return_predecessors=True)
    lab = np.where(sources >= 0, seeds.ravel()[np.maximum(sources, 0)], 2)  # unreachable: background
    return (lab == 1).astype(np.float32).reshape(shape)
