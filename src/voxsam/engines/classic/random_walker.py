"""Grady's random walker with his intensity prior: matrix-free Jacobi-PCG on the grid, coarse to fine.

The foreground probability solves (L + γI)_UU x_U = γ p_U − L_US x_S (seeds S fixed, free voxels U), L the
Laplacian of the 6-neighbour edge weights exp(−beta·(ΔI/σ)²) + 1e-6 and p the intensity prior; each 2×
coarser level's solution, interpolated, starts the next finer one. float32 throughout.
"""
from __future__ import annotations

import numpy as np

from voxsam.engines.classic.grid import edge_rms, resize


def intensity_prior(norm: np.ndarray, median: float, sd: float, width: float) -> np.ndarray:
    """Gaussian likeness to the clicked target: exp(-½((I - median)/(width·sd))²), float32."""
    return np.exp(-0.5 * np.square((norm - np.float32(median)) / np.float32(width * sd)))


def rw_weights(img: np.ndarray, beta: float, sigma: float) -> list[np.ndarray]:
    """Edge weights per axis: array with shape[axis]-1 along `axis`, exp(-beta (Δ/σ)²) + 1e-6, float32."""
    out = []
    scale = np.float32(beta / sigma**2)
    for axis in range(3):
        d = np.diff(img, axis=axis)
        np.square(d, out=d)
        d *= -scale
        np.exp(d, out=d)
        d += np.float32(1e-6)
        out.append(d)
    return out


def _cut(axis: int, lower: bool) -> tuple[slice, slice, slice]:
    s = [slice(None)] * 3
    s[axis] = slice(0, -1) if lower else slice(1, None)
    return tuple(s)  # type: ignore[return-value]


def rw_solve(
    img: np.ndarray,
    seeds: np.ndarray,
    beta: float,
    sigma: float,
    x0: np.ndarray | None,
    tol: float,
    max_iter: int,
    prior: np.ndarray | None = None,
    gamma: float = 0.0,
) -> np.ndarray:
    """Random-walker foreground probability on one grid: PCG (Jacobi) on the free voxels, matrix-free.

    Solves (L + gamma I)_UU x_U = gamma prior_U - L_US x_S: the Laplacian of the edge weights plus, when
    gamma > 0, Grady's intensity prior (every voxel tied to the foreground with weight gamma*prior and to
    the background with weight gamma*(1-prior)).
    """
    weights = rw_weights(img, beta, sigma)
    deg = np.zeros(img.shape, dtype=np.float32)
    for axis, w in enumerate(weights):
        deg[_cut(axis, True)] += w
        deg[_cut(axis, False)] += w
    if gamma > 0 and prior is not None:
        deg += np.float32(gamma)
    free = seeds == 0
    fixed = ~free
    x = (seeds == 1).astype(np.float32)
    if x0 is not None:
        x[free] = np.clip(x0[free], 0.0, 1.0)
    if not free.any():
        return x
    buf = np.empty(img.shape, dtype=np.float32)
    tmp = np.empty(img.shape, dtype=np.float32)

    def laplacian(v: np.ndarray) -> np.ndarray:
        np.multiply(deg, v, out=buf)
        for axis, w in enumerate(weights):
            lo, hi = _cut(axis, True), _cut(axis, False)
            t = tmp[lo]
            np.multiply(w, v[hi], out=t)
            buf[lo] -= t
            np.multiply(w, v[lo], out=t)
            buf[hi] -= t
        buf[fixed] = 0.0
        return buf

    rhs = np.zeros(img.shape, dtype=np.float32)
    if gamma > 0 and prior is not None:
        rhs[free] = np.float32(gamma) * prior[free]
    # residual of the start, and the norm of the right-hand side (gamma prior - L_US x_S) it is measured by
    xs = (seeds == 1).astype(np.float32)
    b_norm = float(np.linalg.norm(rhs - laplacian(xs))) + 1e-12
    r = rhs - laplacian(x)
    inv_deg = np.zeros(img.shape, dtype=np.float32)
    np.divide(1.0, deg, out=inv_deg, where=free)
    z = inv_deg * r
    p = z.copy()
    rz = float(np.vdot(r, z))
    for _ in range(max_iter):
        if float(np.linalg.norm(r)) / b_norm < tol or rz <= 0:
            break
        ap = laplacian(p)
        pap = float(np.vdot(p, ap))
        if pap <= 0:
            break
        alpha = rz / pap
        x += np.float32(alpha) * p
        r -= np.float32(alpha) * ap
        np.multiply(inv_deg, r, out=z)
        rz_new = float(np.vdot(r, z))
        p *= np.float32(rz_new / rz)
        p += z
        rz = rz_new
    return x


def coarsen_seeds(seeds: np.ndarray, shape: tuple[int, ...]) -> np.ndarray:
    """Map seed voxels onto a coarser grid (corner-aligned); voxels claimed by both labels become free."""
    n = np.asarray(seeds.shape, dtype=np.float64)
    m = np.asarray(shape, dtype=np.float64)
    scale = np.where(n > 1, (m - 1) / np.maximum(n - 1, 1), 1.0)
    out = np.zeros(shape, dtype=np.int8)
    both = np.zeros(shape, dtype=bool)
    for label in (1, 2):
        pts = np.argwhere(seeds == label)
        c = np.rint(pts * scale).astype(int)
        c = np.clip(c, 0, np.asarray(shape) - 1)
        hit = np.zeros(shape, dtype=bool)
        hit[tuple(c.T)] = True
        both |= hit & (out > 0)
        out[hit] = label
    out[both] = 0
    return out


def random_walker(
    img: np.ndarray,
    seeds: np.ndarray,
    beta: float,
    tol: float,
    max_iter: int,
    prior: np.ndarray | None = None,
    gamma: float = 0.0,
) -> np.ndarray:
    """Cascadic coarse-to-fine random walker; returns the foreground probability (float32, img.shape).

    Args:
        img: (X, Y, Z) normalised intensities; seeds: int8 (0 free, 1 foreground, 2 background).
        beta: edge sharpness; tol: relative residual of the finest level (coarser levels: tol/2);
        max_iter: iteration cap of the finest level (level l gets max_iter·3^l, the coarsest at least 300);
        prior, gamma: the intensity prior and its weight (gamma 0 or prior None: no prior).
    """
    sigma = edge_rms(img)
    # pyramid: halve the axes longer than 24 voxels until the grid is small (<= 40³)
    pyramid: list[tuple[np.ndarray, np.ndarray, np.ndarray | None]] = [(img, seeds, prior)]
    while pyramid[-1][0].size > 40**3 and len(pyramid) < 5:
        cur_img, cur_seeds, cur_prior = pyramid[-1]
        shape = tuple(max(2, (s + 1) // 2) if s > 24 else s for s in cur_img.shape)
        if shape == cur_img.shape:
            break
        coarse_seeds = coarsen_seeds(cur_seeds, shape)
        if not ((coarse_seeds == 1).any() and (coarse_seeds == 2).any()):
            break
        coarse_prior = None if cur_prior is None else resize(cur_prior, shape)
        pyramid.append((resize(cur_img, shape), coarse_seeds, coarse_prior))
    x: np.ndarray | None = None
    for level in range(len(pyramid) - 1, -1, -1):
        lvl_img, lvl_seeds, lvl_prior = pyramid[level]
        x0 = None if x is None else resize(x, lvl_img.shape)
        iters = max_iter * (3**level) if level < len(pyramid) - 1 else max(max_iter * 3**level, 300)
        x = rw_solve(lvl_img, lvl_seeds, beta, sigma, x0, tol if level == 0 else tol / 2, iters, lvl_prior, gamma)
    assert x is not None
    return x
