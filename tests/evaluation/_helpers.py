"""Helpers of the evaluation tests: tiny volumes, a scripted engine, NIfTI writing."""
from __future__ import annotations

from pathlib import Path

import numpy as np

from voxsam.engines.base import Capabilities, Engine, Prediction
from voxsam.io.volume import Volume
from voxsam.prompts import PromptKind

SHARED_DATA = Path(__file__).resolve().parents[2] / ".." / "shared" / "data"


def ball(shape, centre, radius, spacing=(1.0, 1.0, 1.0)):
    g = np.indices(shape, dtype=np.float64)
    d2 = sum(((g[i] - centre[i]) * spacing[i]) ** 2 for i in range(3))
    return d2 <= radius**2


def make_volume(array, spacing=(1.0, 1.0, 1.0)):
    affine = np.diag([*spacing, 1.0])
    return Volume(np.asarray(array), affine)


ALL_KINDS = frozenset(PromptKind)


class BallEngine(Engine):
    """A scripted 3D engine: the union of balls (radius `r` voxels) around positive clicks (3D or 2D) minus
    balls around negative ones; the last box gives its own voxels (a 2D box: its slice's rectangle); a slice
    mask gives that slice. Records every call."""

    name = "balls"

    def __init__(self, supports=ALL_KINDS, r=2.0, oracle=None):
        self.capabilities = Capabilities(frozenset(PromptKind(k) if k in {p.value for p in PromptKind} else k for k in supports))
        self.r = r
        self.oracle = oracle  # when set, returned as soon as any prompt is given
        self.calls = []
        self.changes = []

    def prepare(self, volume, progress=None):
        return volume.shape

    def predict(self, prepared, prompts, previous, change=None):
        self.calls.append(prompts)
        self.changes.append(change)
        shape = prepared
        if self.oracle is not None:
            return Prediction(self.oracle.copy())
        m = np.zeros(shape, bool)
        if prompts.box is not None:
            lo = np.floor(np.asarray(prompts.box.lo)).astype(int)
            hi = np.floor(np.asarray(prompts.box.hi)).astype(int)
            m[lo[0] : hi[0] + 1, lo[1] : hi[1] + 1, lo[2] : hi[2] + 1] = True
        for s in prompts.slice_masks:
            sl = [slice(None)] * 3
            sl[s.axis] = s.index
            m[tuple(sl)] |= s.mask
        for p in prompts.points:
            b = ball(shape, p.ijk, self.r)
            if p.positive:
                m |= b
            else:
                m &= ~b
        return Prediction(m)


def write_nifti(path: Path, array: np.ndarray, spacing=(1.0, 1.0, 1.0), offset=(0.0, 0.0, 0.0)) -> None:
    import nibabel as nib

    affine = np.diag([*spacing, 1.0])
    affine[:3, 3] = offset
    path.parent.mkdir(parents=True, exist_ok=True)
    nib.save(nib.Nifti1Image(np.asarray(array), affine), str(path))
