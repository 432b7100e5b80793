"""Fast GrowCut (Zhu et al. 2014) as one multi-source Dijkstra on the 6-neighbour grid graph, and its exact
update when seeds are added.

Every voxel takes the label of the seed it reaches with the cheapest path; a step costs
(|ΔI|/σ)^power + lambda·step/min spacing, σ the RMS of ΔI over the grid's edges (`grid.edge_rms`).

Adding seeds (a further click) only lowers distances: the new shortest-path distance of a voxel is the
smaller of its old one and its distance from the new seeds, so `add_seeds` relaxes outwards from the new
seed voxels only, and stops wherever the tentative distance is not below the stored one (label-correcting,
vectorised over the active frontier: each pass relaxes the 6 edges of all frontier voxels at once). The
result equals a fresh solve with all seeds, distances bit for bit, labels except at exact ties between
labels (a voxel reached at the very same cost from a foreground and a background seed keeps its label).
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from voxsam.engines.classic.grid import edge_rms


@dataclass
class GrowcutSolution:
    """A solved grid, kept to add seeds later.

    Attributes:
        shape: (X, Y, Z) of the working grid; n = X·Y·Z voxels, flat C order.
        padded: (n + 2·guard,) float64 cost of the cheapest path from any seed (0 on seeds) at
            [guard, guard + n); −inf in the guards on both ends, so a neighbour index off the grid reads
            a distance nothing can improve.
        labels: (n + 2·guard,) int8 label of that seed, same layout: 1 foreground, 2 background.
        costs: (6, n) float32 cost of the edge leaving each voxel towards +x, -x, +y, -y, +z, -z
            (inf where that neighbour is outside the grid).
        offsets: (6,) int64 flat index offsets of those neighbours; guard = Y·Z, the largest.
        field: (X, Y, Z) float32: 1 where the cheapest seed is foreground, else 0 (kept up to date).
    """

    shape: tuple[int, int, int]
    padded: np.ndarray
    labels: np.ndarray
    costs: np.ndarray
    offsets: np.ndarray
    field: np.ndarray

    @property
    def guard(self) -> int:
        return int(self.shape[1] * self.shape[2])

    @property
    def dist(self) -> np.ndarray:
        """(n,) view of the distances."""
        return self.padded[self.guard: self.guard + int(np.prod(self.shape))]

    @property
    def nbytes(self) -> int:
        return int(self.padded.nbytes + self.labels.nbytes + self.costs.nbytes + self.field.nbytes)


def _edges(norm: np.ndarray, spacing: np.ndarray, lam: float, power: float) -> tuple[np.ndarray, np.ndarray, list[tuple[slice, ...]]]:
    """(costs (6, n) float32, neighbour index (n, 6) int64 (itself off the grid), for each direction the
    face of the (X, Y, Z) grid whose edge leaves it)."""
    shape = norm.shape
    n = norm.size
    flat = norm.ravel()
    sigma = edge_rms(norm)
    idx = np.arange(n, dtype=np.int64).reshape(shape)
    nbr = np.empty((n, 6), dtype=np.int64)
    costs = np.empty((6, n), dtype=np.float32)
    faces = []
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
            costs[col] = np.power(np.abs(flat[other] - flat) / sigma, power) + step_cost + 1e-9
            faces.append(tuple(edge))
            col += 1
    return costs, nbr, faces


def growcut_solve(norm: np.ndarray, seeds: np.ndarray, spacing: np.ndarray, lam: float, power: float) -> GrowcutSolution:
    """Fast GrowCut on one grid, keeping what `add_seeds` needs.

    Args:
        norm: (X, Y, Z) normalised intensities.
        seeds: int8, same shape: 0 free, 1 foreground, 2 background.
        spacing: (3,) voxel size, mm.
        lam: spatial cost per step (`growcut_lambda`), relative to a unit intensity difference.
        power: exponent of the intensity cost (`growcut_power`).
    Unreachable voxels (none on a grid with a seed) are background at distance inf.
    """
    from scipy.sparse import csr_matrix
    from scipy.sparse.csgraph import dijkstra

    n = norm.size
    costs, nbr, faces = _edges(norm, spacing, lam, power)
    data = np.empty((n, 6), dtype=np.float64)  # node-major, as the graph's rows
    data[...] = costs.T
    graph = csr_matrix((data.reshape(-1), nbr.reshape(-1), np.arange(0, 6 * n + 1, 6)), shape=(n, n))
    del data, nbr
    src = np.flatnonzero(seeds.ravel() > 0)
    dist, _, sources = dijkstra(graph, directed=True, indices=src, min_only=True, return_predecessors=True)
    labels = np.where(sources >= 0, seeds.ravel()[np.maximum(sources, 0)], 2).astype(np.int8)
    for col, face in enumerate(faces):  # edges leaving the grid (self-loops in the graph) cost inf here
        costs[col].reshape(norm.shape)[face] = np.inf
    s = norm.shape
    guard = int(s[1] * s[2])
    padded = np.full(n + 2 * guard, -np.inf)
    padded[guard: guard + n] = dist
    lab_padded = np.zeros(n + 2 * guard, dtype=np.int8)
    lab_padded[guard: guard + n] = labels
    offsets = np.array([guard, -guard, s[2], -s[2], 1, -1], dtype=np.int64)
    field = (labels == 1).astype(np.float32).reshape(s)
    return GrowcutSolution((int(s[0]), int(s[1]), int(s[2])), padded, lab_padded, costs, offsets, field)


def growcut(norm: np.ndarray, seeds: np.ndarray, spacing: np.ndarray, lam: float, power: float) -> np.ndarray:
    """Fast GrowCut on one grid (arguments as `growcut_solve`).

    Returns: float32 field, 1 where the cheapest seed is foreground, else 0 (unreachable voxels: 0).
    """
    return growcut_solve(norm, seeds, spacing, lam, power).field


def add_seeds(sol: GrowcutSolution, index: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """Add seeds to a solved grid, in place (exact; see the module docstring).

    Each pass relaxes the 6 edges of every frontier voxel at once: the distances with `np.minimum.at`
    (several frontier voxels may improve one neighbour), the label from the winner; the voxels improved
    form the next frontier.

    Args:
        sol: the solution to update (its distances and labels change).
        index: (K,) int64 flat indices of the new seed voxels (free ones in the solved seed map).
        labels: (K,) int8 their labels (1 or 2).
    Returns: (M,) int64 sorted flat indices of the voxels whose label changed (`field` is updated there).
    """
    dist, lab, costs, g = sol.padded, sol.labels, sol.costs, sol.guard
    steps = sol.offsets[:, None]
    stamp = np.empty(dist.size, dtype=np.int64)  # dedup without sorting: the last write of an index wins
    before = lab.copy()
    front = np.unique(index) + g
    dist[front] = 0.0
    lab[index + g] = labels
    while front.size:
        k = front.size
        cand = (dist[front] + costs[:, front - g]).ravel()  # (6·K,): float32 costs widen exactly, as in the full solve
        nb = (front + steps).ravel()
        sel = np.flatnonzero(cand < dist[nb])  # the guards hold -inf; an edge off the grid costs inf
        to, value = nb[sel], cand[sel]
        np.minimum.at(dist, to, value)
        won = value == dist[to]
        sel, to = sel[won], to[won]
        lab[to] = lab[front[sel % k]]
        order = np.arange(to.size)
        stamp[to] = order
        front = to[stamp[to] == order]
    changed = np.flatnonzero(lab[g: dist.size - g] != before[g: dist.size - g])
    sol.field.reshape(-1)[changed] = lab[changed + g] == 1
    return changed
