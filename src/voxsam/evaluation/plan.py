"""What an evaluation run does: its settings (`EvalConfig`) and the targets it evaluates (`plan_targets`).

Targets: each foreground label of each case is one target (optionally only `labels`, only those with at
least `min_voxels` voxels, only those spanning `slice_range` slices along the slice axis — the acquisition
axis — like SAM-Med3D's 10–200 slice filter; `max_cases` per dataset, first by case id).
"""
from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np

from voxsam.errors import ConfigError, VoxsamError
from voxsam.evaluation.sources import CaseRef, Skip, parse_sources

__all__ = ["EvalConfig", "CaseRef", "Target", "Skip", "Plan", "plan_targets", "slice_axis_of", "config_as_dict"]


@dataclass
class EvalConfig:
    """Settings of one evaluation run.

    Attributes:
        engine: registered engine name ("classic", "sam3d", ...).
        protocol: registered protocol name (see `voxsam.evaluation.protocols.PROTOCOLS`).
        clicks: interaction counts at which metrics are reported, e.g. [1, 3, 5, 10]; the protocol runs
            max(clicks) interactions.
        checkpoint: the engine's `checkpoint` option when set (ConfigError for an engine without one).
        engine_options: further engine options, typed or as text (validated by the engine's options class).
        labels: only these label values (None: every foreground label present in a case).
        min_voxels: skip targets with fewer voxels.
        slice_range: (lo, hi) inclusive: keep targets spanning lo..hi slices along the slice axis.
        max_cases: at most this many cases per dataset (first by case id).
        cases: only cases whose id matches one of these glob patterns (e.g. a held-out split).
        seed: seeds the protocol's random choices (per target: seed + a stable hash of the target).
        nsd_tolerance_mm: NSD tolerance in mm.
        workers: worker processes (1: in this process).
        retry_errors: redo targets whose record says "error".
        merge_timeout_s: how long rank 0 waits for the other torchrun ranks' records.
    """

    engine: str
    protocol: str
    clicks: list[int] = field(default_factory=lambda: [1, 3, 5, 10])
    checkpoint: str | None = None
    engine_options: dict[str, Any] = field(default_factory=dict)
    labels: list[int] | None = None
    min_voxels: int = 0
    slice_range: tuple[int, int] | None = None
    max_cases: int | None = None
    cases: list[str] | None = None
    seed: int = 0
    nsd_tolerance_mm: float = 2.0
    workers: int = 1
    retry_errors: bool = False
    merge_timeout_s: float = 24 * 3600.0

    def __post_init__(self) -> None:
        clicks = sorted({int(c) for c in self.clicks})
        if not clicks or clicks[0] < 1:
            raise ConfigError(f"click counts must be integers >= 1, got {self.clicks}")
        self.clicks = clicks
        if self.workers < 1:
            raise ConfigError(f"workers must be >= 1, got {self.workers}")
        if self.min_voxels < 0:
            raise ConfigError(f"min-voxels must be >= 0, got {self.min_voxels}")
        if self.max_cases is not None and self.max_cases < 1:
            raise ConfigError(f"max-cases must be >= 1, got {self.max_cases}")
        if self.slice_range is not None:
            lo, hi = (int(v) for v in self.slice_range)
            if lo < 1 or hi < lo:
                raise ConfigError(f"slice range must be 1 <= lo <= hi, got {self.slice_range}")
            self.slice_range = (lo, hi)
        if not np.isfinite(self.nsd_tolerance_mm) or self.nsd_tolerance_mm < 0:
            raise ConfigError(f"NSD tolerance must be >= 0 mm, got {self.nsd_tolerance_mm}")

    def engine_values(self) -> dict[str, Any]:
        """The engine options as given: `engine_options` plus `checkpoint` (ConfigError when given twice)."""
        values = dict(self.engine_options)
        if self.checkpoint:
            if "checkpoint" in values:
                raise ConfigError("give the checkpoint once: --checkpoint or --engine-option checkpoint=..., not both")
            values["checkpoint"] = str(self.checkpoint)
        return values

    def validated_options(self) -> dict[str, Any]:
        """The options the user set, converted by the engine's options class, as JSON values (defaults left out).

        Raises: ConfigError for an unknown engine, an unknown option or a bad value.
        """
        from voxsam.engines import engine_spec
        from voxsam.engines.options import parse_options

        options = parse_options(engine_spec(self.engine), self.engine_values())
        dumped: dict[str, Any] = options.model_dump(mode="json", exclude_unset=True)
        return dumped

    def result_settings(self) -> dict[str, Any]:
        """The settings that decide the numbers of a target (compared on resume).

        `engine_options` holds the validated options the user set (`checkpoint` stays under its own key, as
        given), so the same input gives an equal dict before and after validation (12 == 12.0, "true" -> True).
        """
        options = self.validated_options()
        if self.checkpoint:
            options.pop("checkpoint", None)
        return {
            "engine": self.engine,
            "checkpoint": str(self.checkpoint) if self.checkpoint else None,
            "engine_options": dict(sorted(options.items())),
            "protocol": self.protocol,
            "clicks": list(self.clicks),
            "seed": int(self.seed),
            "nsd_tolerance_mm": float(self.nsd_tolerance_mm),
        }


def config_as_dict(config: EvalConfig) -> dict[str, Any]:
    """Every field of `config`, JSON-ready (the summary's "config")."""
    d = asdict(config)
    d["slice_range"] = list(config.slice_range) if config.slice_range else None
    return d


@dataclass
class Target:
    """One (case, label) to evaluate."""

    dataset: str
    case_id: str
    label: int
    label_name: str
    n_voxels: int
    case: CaseRef

    @property
    def key(self) -> tuple[str, str, int]:
        return (self.dataset, self.case_id, self.label)


@dataclass
class Plan:
    targets: list[Target]
    skipped: list[Skip]
    datasets: dict[str, dict[str, Any]]  # key -> {"title": ..., "source": ..., "label_names": {...}}


def slice_axis_of(affine: np.ndarray) -> int:
    """The slice axis of a grid (its acquisition axis, `voxsam.engines.base.acquisition_axis`)."""
    from voxsam.engines.base import acquisition_axis

    return acquisition_axis(affine)


def plan_targets(specs: list[str], config: EvalConfig) -> Plan:
    """Enumerate the targets of the inputs (loads every label map once; images are not read here)."""
    from voxsam.io import read_volume

    cases, skipped, info = parse_sources(specs, config.max_cases, config.cases)
    targets: list[Target] = []
    for case in cases:
        try:
            label_vol = read_volume(case.label_path)
        except VoxsamError as exc:
            skipped.append(Skip(case.dataset, case.case_id, None, f"label unreadable: {exc}"))
            continue
        arr = np.asarray(label_vol.array)
        if arr.ndim != 3:
            skipped.append(Skip(case.dataset, case.case_id, None, f"label map must be 3D, has shape {arr.shape}"))
            continue
        if not np.issubdtype(arr.dtype, np.integer):
            if not np.all(np.isfinite(arr)) or np.any(arr != np.round(arr)):
                skipped.append(Skip(case.dataset, case.case_id, None, "label map holds non-integer values"))
                continue
            arr = arr.astype(np.int64)
        values, counts = np.unique(arr, return_counts=True)
        present = {int(v): int(n) for v, n in zip(values, counts) if v != 0}
        wanted = sorted(present) if config.labels is None else list(config.labels)
        axis = slice_axis_of(label_vol.affine)
        for lab in wanted:
            name = case.label_names.get(lab, f"label_{lab}")
            if lab not in present:
                skipped.append(Skip(case.dataset, case.case_id, lab, f"label {lab} ({name}) absent from the case"))
                continue
            n = present[lab]
            if n < config.min_voxels:
                skipped.append(Skip(case.dataset, case.case_id, lab, f"{n} voxels < min-voxels {config.min_voxels}", "filtered"))
                continue
            if config.slice_range is not None:
                other = tuple(a for a in range(3) if a != axis)
                hit = np.flatnonzero((arr == lab).any(axis=other))
                extent = int(hit[-1] - hit[0] + 1)
                lo, hi = config.slice_range
                if not lo <= extent <= hi:
                    skipped.append(
                        Skip(case.dataset, case.case_id, lab, f"spans {extent} slices along axis {axis}, outside {lo}-{hi}", "filtered")
                    )
                    continue
            targets.append(Target(case.dataset, case.case_id, lab, name, n, case))
    return Plan(targets, skipped, info)
