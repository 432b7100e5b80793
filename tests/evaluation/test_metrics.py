"""Metrics against a brute-force reference (all surface-voxel pairs) and against MONAI."""
from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import ndimage
from scipy.spatial.distance import cdist

from voxsam.evaluation import metrics as M

SPACINGS = [(1.0, 1.0, 1.0), (0.7, 1.3, 2.5), (1.5, 1.5, 8.0)]


# ---------------------------------------------------------------- brute-force reference
def brute_surface(mask: np.ndarray) -> np.ndarray:
    padded = np.pad(mask, 1, constant_values=False)
    out = np.zeros_like(mask)
    for idx in zip(*np.nonzero(mask)):
        p = tuple(i + 1 for i in idx)
        for axis in range(3):
            for step in (-1, 1):
                q = list(p)
                q[axis] += step
                if not padded[tuple(q)]:
                    out[idx] = True
    return out


def brute_distances(a, b, spacing):
    pa = np.argwhere(brute_surface(a)) * np.asarray(spacing)
    pb = np.argwhere(brute_surface(b)) * np.asarray(spacing)
    d = cdist(pa, pb)
    return d.min(axis=1), d.min(axis=0)


def brute_hd95(a, b, spacing):
    dab, dba = brute_distances(a, b, spacing)
    return max(np.percentile(dab, 95), np.percentile(dba, 95))


def brute_nsd(a, b, spacing, tol):
    dab, dba = brute_distances(a, b, spacing)
    return ((dab <= tol).sum() + (dba <= tol).sum()) / (dab.size + dba.size)


# ---------------------------------------------------------------- random shapes
def blob(rng, shape, sigma=2.0, q=0.7):
    field = ndimage.gaussian_filter(rng.standard_normal(shape), sigma)
    return field > np.quantile(field, q)


def ellipsoid(shape, centre, radii):
    g = np.indices(shape, dtype=np.float64)
    r = sum(((g[i] - centre[i]) / radii[i]) ** 2 for i in range(3))
    return r <= 1.0


def shapes(seed: int):
    rng = np.random.default_rng(seed)
    shape = (22, 19, 14)
    yield "blobs", blob(rng, shape), blob(rng, shape, sigma=1.5, q=0.75)
    c = rng.uniform(6, 12, 3)
    yield "spheres", ellipsoid(shape, c, (6, 5, 4)), ellipsoid(shape, c + rng.uniform(-2, 2, 3), (5, 6, 3.5))
    two = ellipsoid(shape, (5, 5, 5), (3, 3, 3)) | ellipsoid(shape, (16, 13, 9), (4, 3, 3))
    yield "components", two, ellipsoid(shape, (6, 6, 6), (3, 4, 3)) | ellipsoid(shape, (15, 12, 9), (3, 3, 4))
    # touching the image border: the border counts as outside, so it is surface
    yield "border", ellipsoid(shape, (0, 9, 7), (8, 6, 5)), ellipsoid(shape, (2, 10, 13), (7, 6, 5))
    yield "single voxel", np.pad(np.ones((1, 1, 1), bool), ((3, 18), (4, 14), (5, 8))), ellipsoid(shape, (4, 5, 6), (2, 2, 2))


CASES = [(seed, name, a, b) for seed in range(3) for name, a, b in shapes(seed)]


@pytest.mark.parametrize("seed,name,a,b", CASES, ids=[f"{n}-{s}" for s, n, _, _ in CASES])
@pytest.mark.parametrize("spacing", SPACINGS)
def test_against_brute_force(seed, name, a, b, spacing):
    assert a.any() and b.any()
    inter = (a & b).sum()
    assert M.dice(a, b) == pytest.approx(2 * inter / (a.sum() + b.sum()), abs=1e-6)
    assert M.iou(a, b) == pytest.approx(inter / (a | b).sum(), abs=1e-6)
    assert np.array_equal(M.surface(a), brute_surface(a))
    assert M.hd95(a, b, spacing) == pytest.approx(brute_hd95(a, b, spacing), abs=1e-3)
    for tol in (0.0, 1.0, 2.0, 5.0):
        assert M.nsd(a, b, spacing, tol) == pytest.approx(brute_nsd(a, b, spacing, tol), abs=1e-6)
    both = M.all_metrics(a, b, spacing, 2.0)
    assert both["hd95"] == pytest.approx(M.hd95(a, b, spacing), abs=1e-9)
    assert both["nsd"] == pytest.approx(M.nsd(a, b, spacing, 2.0), abs=1e-9)


def test_metrics_on_a_large_grid_crop_correctly():
    """Masks in a corner of a big grid give the same numbers as on a tight grid (the crop is exact)."""
    small_a = ellipsoid((20, 20, 12), (9, 10, 5), (6, 7, 4))
    small_b = ellipsoid((20, 20, 12), (10, 9, 6), (7, 5, 4))
    big_a = np.zeros((120, 90, 60), bool)
    big_b = np.zeros_like(big_a)
    big_a[50:70, 30:50, 40:52] = small_a
    big_b[50:70, 30:50, 40:52] = small_b
    sp = (0.8, 0.8, 3.0)
    assert M.hd95(big_a, big_b, sp) == pytest.approx(brute_hd95(small_a, small_b, sp), abs=1e-3)
    assert M.nsd(big_a, big_b, sp) == pytest.approx(brute_nsd(small_a, small_b, sp, 2.0), abs=1e-6)


def test_identical_masks():
    a = ellipsoid((16, 16, 16), (8, 8, 8), (5, 4, 3))
    assert M.dice(a, a) == 1.0 and M.iou(a, a) == 1.0
    assert M.nsd(a, a, (1, 1, 1)) == 1.0 and M.hd95(a, a, (1, 1, 1)) == 0.0


def test_empty_mask_rules():
    z = np.zeros((8, 8, 8), bool)
    a = z.copy()
    a[2:5, 2:5, 2:5] = True
    assert (M.dice(z, z), M.iou(z, z), M.nsd(z, z, (1, 1, 1)), M.hd95(z, z, (1, 1, 1))) == (1.0, 1.0, 1.0, 0.0)
    for p, g in ((a, z), (z, a)):
        assert M.dice(p, g) == 0.0 and M.iou(p, g) == 0.0 and M.nsd(p, g, (1, 1, 1)) == 0.0
        assert math.isinf(M.hd95(p, g, (1, 1, 1)))
    assert M.all_metrics(z, z) == {"dice": 1.0, "iou": 1.0, "nsd": 1.0, "hd95": 0.0}
    out = M.all_metrics(a, z)
    assert out["dice"] == 0.0 and out["nsd"] == 0.0 and math.isinf(out["hd95"])


def test_bad_inputs():
    a = np.ones((4, 4, 4), bool)
    with pytest.raises(ValueError):
        M.dice(a, np.ones((4, 4, 5), bool))
    with pytest.raises(ValueError):
        M.hd95(a, a, (1.0, 0.0, 1.0))
    with pytest.raises(ValueError):
        M.nsd(a, a, (1, 1, 1), tolerance_mm=-1)


@pytest.mark.filterwarnings("ignore::FutureWarning")
@pytest.mark.parametrize("seed", [0, 1])
@pytest.mark.parametrize("spacing", [(1.0, 1.0, 1.0), (0.7, 1.3, 2.5)])
def test_against_monai(seed, spacing):
    torch = pytest.importorskip("torch")
    from monai.metrics import compute_hausdorff_distance, compute_surface_dice

    for name, a, b in shapes(seed):
        ta = torch.from_numpy(a[None, None].astype(np.float32))
        tb = torch.from_numpy(b[None, None].astype(np.float32))
        ref_hd = float(
            compute_hausdorff_distance(ta, tb, include_background=True, percentile=95, spacing=list(spacing))[0, 0]
        )
        assert M.hd95(a, b, spacing) == pytest.approx(ref_hd, abs=1e-3), name
        ref_nsd = float(compute_surface_dice(ta, tb, [2.0], include_background=True, spacing=list(spacing))[0, 0])
        assert M.nsd(a, b, spacing, 2.0) == pytest.approx(ref_nsd, abs=1e-6), name
