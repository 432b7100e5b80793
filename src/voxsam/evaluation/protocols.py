"""Seeded click simulators: a ground-truth target drives prompts into any `Session`, step by step.

Every protocol has the signature

    protocol(session, target, n_interactions, seed=0, object_id=1) -> ProtocolResult

- `session`: a `voxsam.session.Session` (any engine); prompts go to `object_id`.
- `target`: (X, Y, Z) bool ground truth on the session volume's grid (non-empty).
- `n_interactions`: number of prompts (a box counts as one interaction, like a click).
- `seed`: seeds every random choice; the same seed gives the same prompts for the same masks.

After each interaction the object's mask and the seconds the session call took are recorded (the first
call includes the engine's `prepare`, which the session runs lazily). When the mask equals the target
exactly, the protocol stops and the remaining steps repeat that mask with 0 seconds and no prompt.

Protocols (registry `PROTOCOLS`):
- ``sammed3d``: click 1 uniform in the target; click k uniform in the error region FN ∪ FP of the current
  mask, positive when it falls in FN (SAM-Med3D's evaluation). All clicks are kept (the session keeps them).
- ``center``: click 1 at the target's interior maximum (maximum of the spacing-aware Euclidean distance
  transform); click k at the distance-transform maximum of the largest error component (6-connected
  components of FN and of FP, largest by voxel count), positive for FN, negative for FP.
- ``box+center``: interaction 1 is a 3D box from the target's bounding box (engines taking
  `PromptKind.BOX`); then `center` clicks when the engine takes 3D points (the CVPR 2025 interactive 3D
  challenge protocol: box + 5 clicks = 6 interactions).
- ``slice``: one 2D prompt on the slice of largest target area along the slice axis (default: the
  acquisition axis, `voxsam.engines.base.acquisition_axis`, as the slice engines choose it for a 3D click):
  a slice mask when the engine takes `SLICE_MASK` (`Session.set_slice_mask`), else a 2D box of the target's
  extent on that slice when it takes `SLICE_BOX` (`Session.add_box(..., axis=)`), else a 2D click at the 2D distance-transform maximum of the target on that
  slice when it takes `SLICE_POINT` (`Session.add_point(..., axis=)`). ``slice-mask``, ``slice-box`` and
  ``slice-point`` force one kind. Interactions after the first are `center` correction clicks (3D points,
  engines taking `POINT`); otherwise the first mask is repeated.

- ``edit-slice``: editing. The session starts from a degraded copy of the target (`degrade`: along the
  slice axis, each slice of the target is emptied with probability 0.3, else eroded or dilated by 1-3
  voxels in-plane; seeded), given with `Session.set_mask` (engines whose capabilities say `edits_masks`).
  Interaction k paints the target's slice where the current mask is worst (most wrong voxels) with
  `Session.set_slice_mask`; the engine re-propagates from it. The first prompt record carries the
  degraded mask's Dice (`start_dice`).

Unsupported combinations raise `ConfigError` before any prompt is given (`check_protocol`).
"""
from __future__ import annotations

import logging
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any, Callable

import numpy as np

from voxsam.errors import ConfigError
from voxsam.evaluation.targets import bbox, edt_mm, interior_point, largest_error_component
from voxsam.prompts import PromptKind

log = logging.getLogger(__name__)

__all__ = ["PROTOCOLS", "ProtocolResult", "get_protocol", "check_protocol", "required_prompts"]


@dataclass
class ProtocolResult:
    """What a protocol run recorded, one entry per interaction (length n_interactions).

    Attributes:
        masks: (X, Y, Z) bool object mask after each interaction.
        seconds: wall seconds of each session call (0.0 for steps after an early stop).
        prompts: description of each prompt, "kind" a `PromptKind` value, e.g. {"kind": "point", "ijk": [i, j, k],
            "positive": True}; 2D prompts add their "axis" and "index". None for steps after an early stop.
        stopped_at: 1-based interaction after which the mask equalled the target, else None.
    """

    masks: list[np.ndarray] = field(default_factory=list)
    seconds: list[float] = field(default_factory=list)
    prompts: list[dict[str, Any] | None] = field(default_factory=list)
    stopped_at: int | None = None


# ---------------------------------------------------------------------- requirements
_REQUIRES: dict[str, tuple[PromptKind, ...]] = {
    "sammed3d": (PromptKind.POINT,),
    "center": (PromptKind.POINT,),
    "box+center": (PromptKind.BOX,),
    "slice": (),  # any one of _SLICE_ORDER, checked in check_protocol
    "slice-mask": (PromptKind.SLICE_MASK,),
    "slice-box": (PromptKind.SLICE_BOX,),
    "slice-point": (PromptKind.SLICE_POINT,),
    "edit-slice": (PromptKind.SLICE_MASK,),
}

#: the first prompt of `slice`, by preference
_SLICE_ORDER = (PromptKind.SLICE_MASK, PromptKind.SLICE_BOX, PromptKind.SLICE_POINT)


def _kinds(supports: Iterable[PromptKind | str]) -> set[PromptKind | str]:
    """Normalise an engine's prompt kinds: known names become `PromptKind`, unknown ones stay text."""
    known = {k.value for k in PromptKind}
    return {PromptKind(k) if not isinstance(k, PromptKind) and k in known else k for k in supports}


def _names(kinds: Iterable[PromptKind | str]) -> str:
    return ", ".join(sorted(k.value if isinstance(k, PromptKind) else str(k) for k in kinds)) or "nothing"


def required_prompts(name: str) -> tuple[PromptKind, ...]:
    """Prompt kinds the protocol `name` needs from the engine (`slice` needs any one of three)."""
    get_protocol(name)
    return _REQUIRES[name]


def check_protocol(name: str, supports: Iterable[PromptKind | str]) -> None:
    """Raise ConfigError when `name` is unknown or the engine (its `supports`, a set of `PromptKind`) cannot
    take its prompts. Messages name kinds by their value ("slice_box")."""
    get_protocol(name)
    kinds = _kinds(supports)
    if name == "slice":
        if not any(k in kinds for k in _SLICE_ORDER):
            raise ConfigError(
                f"protocol 'slice' needs an engine taking {_names(_SLICE_ORDER)} prompts; the engine takes only {_names(kinds)}"
            )
        return
    missing = [k for k in _REQUIRES[name] if k not in kinds]
    if missing:
        raise ConfigError(f"protocol {name!r} needs {_names(missing)} prompts; the engine takes only {_names(kinds)}")


def get_protocol(name: str) -> Callable[..., ProtocolResult]:
    """The protocol function registered as `name`; ConfigError for an unknown name."""
    try:
        return PROTOCOLS[name]
    except KeyError:
        raise ConfigError(f"unknown protocol {name!r}; available: {', '.join(sorted(PROTOCOLS))}") from None


# ---------------------------------------------------------------------- shared machinery
class _Recorder:
    def __init__(self, session: Any, target: np.ndarray, n: int, object_id: int) -> None:
        if n < 1:
            raise ConfigError(f"the number of interactions must be >= 1, got {n}")
        t = np.asarray(target).astype(bool, copy=False)
        if t.shape != tuple(session.volume.shape):
            raise ConfigError(f"target shape {t.shape} differs from the volume grid {tuple(session.volume.shape)}")
        if not t.any():
            raise ConfigError("the target is empty: nothing to click on")
        self.session = session
        self.target = t
        self.n = n
        self.object_id = object_id
        self.result = ProtocolResult()
        self.mask = np.zeros(t.shape, dtype=bool)

    @property
    def done(self) -> bool:
        return len(self.result.masks) >= self.n or self.result.stopped_at is not None

    def run(self, call: Callable[[], np.ndarray], prompt: dict[str, Any]) -> None:
        start = time.perf_counter()
        mask = call()
        seconds = time.perf_counter() - start
        self.mask = np.asarray(mask).astype(bool)
        self.result.masks.append(self.mask)
        self.result.seconds.append(seconds)
        self.result.prompts.append(prompt)
        log.debug("interaction %d %s: %.3f s", len(self.result.masks), prompt, seconds)
        if np.array_equal(self.mask, self.target):
            self.result.stopped_at = len(self.result.masks)

    def point(self, ijk: np.ndarray, positive: bool) -> None:
        xyz = tuple(float(v) for v in ijk)
        self.run(
            lambda: self.session.add_point(xyz, positive=positive, object_id=self.object_id),
            {"kind": "point", "ijk": [int(v) for v in ijk], "positive": bool(positive)},
        )

    def finish(self) -> ProtocolResult:
        res = self.result
        while len(res.masks) < self.n:
            res.masks.append(self.mask)
            res.seconds.append(0.0)
            res.prompts.append(None)
        return res


def _spacing(session: Any) -> tuple[float, ...]:
    return tuple(float(s) for s in session.volume.spacing)


def _center_clicks(rec: _Recorder) -> None:
    spacing = _spacing(rec.session)
    while not rec.done:
        found = largest_error_component(rec.mask, rec.target)
        if found is None:  # pragma: no cover - equality already stops the recorder
            break
        comp, positive = found
        rec.point(interior_point(comp, spacing), positive)


# ---------------------------------------------------------------------- protocols
def sammed3d(session: Any, target: np.ndarray, n_interactions: int, seed: int = 0, object_id: int = 1) -> ProtocolResult:
    """SAM-Med3D clicks: 1st uniform in the target, then uniform in FN ∪ FP (positive in FN). See module doc."""
    check_protocol("sammed3d", session.engine.supports)
    rec = _Recorder(session, target, n_interactions, object_id)
    rng = np.random.default_rng(seed)
    while not rec.done:
        region = rec.target if not rec.result.masks else (rec.target ^ rec.mask)
        flat = np.flatnonzero(region)
        if flat.size == 0:  # pragma: no cover - equality already stops the recorder
            break
        ijk = np.array(np.unravel_index(int(flat[rng.integers(flat.size)]), region.shape))
        rec.point(ijk, bool(rec.target[tuple(ijk)]))
    return rec.finish()


def center(session: Any, target: np.ndarray, n_interactions: int, seed: int = 0, object_id: int = 1) -> ProtocolResult:
    """Clicks at distance-transform centres: the target's, then the largest error component's. See module doc."""
    check_protocol("center", session.engine.supports)
    rec = _Recorder(session, target, n_interactions, object_id)
    rec.point(interior_point(rec.target, _spacing(session)), True)
    _center_clicks(rec)
    return rec.finish()


def box_center(session: Any, target: np.ndarray, n_interactions: int, seed: int = 0, object_id: int = 1) -> ProtocolResult:
    """A 3D box from the target's bounding box, then `center` clicks (CVPR 2025 challenge). See module doc."""
    check_protocol("box+center", session.engine.supports)
    rec = _Recorder(session, target, n_interactions, object_id)
    box = bbox(rec.target)
    lo = tuple(float(s.start) for s in box)
    hi = tuple(float(s.stop - 1) for s in box)
    rec.run(
        lambda: session.add_box(lo, hi, object_id=object_id),
        {"kind": "box", "lo": [int(v) for v in lo], "hi": [int(v) for v in hi]},
    )
    if not rec.done and PromptKind.POINT in _kinds(session.engine.supports):
        _center_clicks(rec)
    return rec.finish()


def slice_axis(session: Any) -> int:
    """The default slice axis: the volume's acquisition axis, by the rule the slice engines use
    (`voxsam.engines.base.acquisition_axis`), so a 2D prompt lands on the axis a 3D click would propagate over."""
    from voxsam.engines.base import acquisition_axis

    return acquisition_axis(session.volume.affine)


def _slice_protocol(kind: str) -> Callable[..., ProtocolResult]:
    def run(
        session: Any, target: np.ndarray, n_interactions: int, seed: int = 0, object_id: int = 1, axis: int | None = None
    ) -> ProtocolResult:
        name = "slice" if kind == "auto" else f"slice-{kind}"
        supports = _kinds(session.engine.supports)
        check_protocol(name, supports)
        if kind == "auto":
            chosen = next(k for k in _SLICE_ORDER if k in supports)
        else:
            chosen = {"mask": PromptKind.SLICE_MASK, "box": PromptKind.SLICE_BOX, "point": PromptKind.SLICE_POINT}[kind]
        rec = _Recorder(session, target, n_interactions, object_id)
        spacing = _spacing(session)
        ax = slice_axis(session) if axis is None else int(axis)
        other = tuple(a for a in range(3) if a != ax)
        areas = rec.target.sum(axis=other)
        index = int(np.argmax(areas))
        plane: list[Any] = [slice(None)] * 3
        plane[ax] = index
        mask2d = rec.target[tuple(plane)]
        where = {"axis": ax, "index": index}
        if chosen is PromptKind.SLICE_MASK:
            rec.run(
                lambda: session.set_slice_mask(ax, index, mask2d, object_id=object_id),
                {"kind": chosen.value, **where, "area": int(mask2d.sum())},
            )
        elif chosen is PromptKind.SLICE_BOX:
            b2 = bbox(mask2d)
            lo, hi = [0.0] * 3, [0.0] * 3
            for a2, a in enumerate(other):
                lo[a], hi[a] = float(b2[a2].start), float(b2[a2].stop - 1)
            lo[ax] = hi[ax] = float(index)
            rec.run(
                lambda: session.add_box(tuple(lo), tuple(hi), object_id=object_id, axis=ax),
                {"kind": chosen.value, "lo": [int(v) for v in lo], "hi": [int(v) for v in hi], **where},
            )
        else:
            p2 = interior_point(mask2d, tuple(spacing[a] for a in other))
            ijk = np.zeros(3, dtype=int)
            ijk[ax] = index
            ijk[list(other)] = p2
            xyz = tuple(float(v) for v in ijk)
            rec.run(
                lambda: session.add_point(xyz, positive=True, object_id=object_id, axis=ax),
                {"kind": chosen.value, "ijk": [int(v) for v in ijk], "positive": True, **where},
            )
        if not rec.done and PromptKind.POINT in supports:
            _center_clicks(rec)
        return rec.finish()

    run.__name__ = f"slice_{kind}"
    run.__doc__ = f"One 2D {kind} prompt on the slice of largest target area, then center corrections. See module doc."
    return run


def degrade(target: np.ndarray, axis: int, rng: np.random.Generator) -> np.ndarray:
    """A damaged copy of a (X, Y, Z) bool target: along `axis`, each slice emptied (p = 0.3) or eroded /
    dilated in-plane by 1-3 voxels (a cross-shaped 2D element)."""
    from scipy import ndimage

    out = np.zeros_like(target, dtype=bool)
    element = ndimage.generate_binary_structure(2, 1)
    for k in np.flatnonzero(target.any(axis=tuple(a for a in range(3) if a != axis))):
        plane = np.take(target, int(k), axis=axis)
        if rng.random() < 0.3:
            continue
        steps = int(rng.integers(1, 4))
        op = ndimage.binary_erosion if rng.random() < 0.5 else ndimage.binary_dilation
        index: list[Any] = [slice(None)] * 3
        index[axis] = int(k)
        out[tuple(index)] = op(plane, element, iterations=steps)
    return out


def edit_slice(
    session: Any, target: np.ndarray, n_interactions: int, seed: int = 0, object_id: int = 1, axis: int | None = None
) -> ProtocolResult:
    """Start from a degraded target; each interaction paints the worst slice. See module doc."""
    check_protocol("edit-slice", session.engine.supports)
    if not getattr(session.engine.capabilities, "edits_masks", False):
        raise ConfigError(f"protocol 'edit-slice' needs an engine that edits existing masks; {session.engine.name!r} does not")
    rec = _Recorder(session, target, n_interactions, object_id)
    ax = slice_axis(session) if axis is None else int(axis)
    start = degrade(rec.target, ax, np.random.default_rng(seed))
    session.set_mask(start, object_id=object_id)
    rec.mask = start
    total = int(start.sum()) + int(rec.target.sum())
    start_dice = 2.0 * int((start & rec.target).sum()) / total if total else 1.0
    other = tuple(a for a in range(3) if a != ax)
    while not rec.done:
        wrong = (rec.mask ^ rec.target).sum(axis=other)
        k = int(np.argmax(wrong))
        if wrong[k] == 0:  # pragma: no cover - equality already stops the recorder
            break
        plane = np.take(rec.target, k, axis=ax)
        prompt: dict[str, Any] = {"kind": "slice_mask", "axis": ax, "index": k, "area": int(plane.sum())}
        if not rec.result.masks:
            prompt["start_dice"] = round(start_dice, 4)
        rec.run(lambda: session.set_slice_mask(ax, k, plane, object_id=object_id), prompt)
    return rec.finish()


#: name -> protocol function (see the module docstring for what each does)
PROTOCOLS: dict[str, Callable[..., ProtocolResult]] = {
    "sammed3d": sammed3d,
    "center": center,
    "box+center": box_center,
    "slice": _slice_protocol("auto"),
    "slice-mask": _slice_protocol("mask"),
    "slice-box": _slice_protocol("box"),
    "slice-point": _slice_protocol("point"),
    "edit-slice": edit_slice,
}
