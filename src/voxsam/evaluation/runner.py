"""The benchmark runner behind `voxsam eval`: datasets in, per-target records out, then a report.

    from voxsam.evaluation.plan import EvalConfig
    from voxsam.evaluation.runner import run_eval
    cfg = EvalConfig(engine="classic", protocol="center", clicks=[1, 3, 5])
    summary = run_eval(["../shared/data/la_mri"], "runs/la", cfg)

The run is spread over modules by concern (none imports this one):
  sources.py   DATASET arguments -> cases (MSD folders, IMAGE::LABEL[::NAMES.json] pairs, --cases, --max-cases)
  plan.py      `EvalConfig` and `plan_targets`: each foreground label of each case is a target, filtered
  records.py   run.json (settings checked on resume) and one atomic JSON record per finished target
  parallel.py  worker processes (whole cases each) and torchrun ranks (every WORLD_SIZE-th target)
  report.py    results.csv, summary.md, summary.json, dice_vs_clicks_<dataset>.png
This module builds the engine from its validated options, runs the protocol on each target and ties it together.

Bad input: unknown engine / protocol / engine option, or a protocol the engine cannot run -> ConfigError
before any work. A dataset without labels, a case whose label cannot be read, a requested label absent
from a case -> listed as skipped with the reason; a label whose grid differs from its image, or an engine
error on one target -> an error record with the reason; the run goes on with the rest. Nothing at all to
evaluate -> DatasetError naming each input and why (e.g. a label map without foreground voxels). An output
folder that cannot be created or written -> OutputPathError before any work. The summary's `outcome`
("complete", "partial", "failed") and `failed` list say what `voxsam eval` turns into its exit code.
"""
from __future__ import annotations

import logging
import time
import zlib
from collections.abc import Generator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import numpy as np

from voxsam.engines.base import Capabilities, Engine, Prediction, ProgressFn, SliceUpdate
from voxsam.errors import DatasetError, VoxsamError
from voxsam.evaluation.parallel import dist_rank_world, group_by_case, run_groups, shard, wait_for_records
from voxsam.evaluation.plan import CaseRef, EvalConfig, Plan, Skip, Target, config_as_dict, plan_targets
from voxsam.evaluation.records import check_run_settings, error_record, identity, read_record, record_path, write_json_atomic
from voxsam.evaluation.sources import parse_sources
from voxsam.io.volume import Volume
from voxsam.prompts import Change, PromptSet

log = logging.getLogger(__name__)

__all__ = [
    "build_engine",
    "SharedPrepare",
    "evaluate_target",
    "run_case_group",
    "run_eval",
    # re-exported from their own modules for older imports
    "EvalConfig",
    "CaseRef",
    "Target",
    "Skip",
    "Plan",
    "plan_targets",
    "parse_sources",
    "record_path",
    "read_record",
    "dist_rank_world",
    "config_as_dict",
]


# ---------------------------------------------------------------------- engine
def build_engine(config: EvalConfig) -> Engine:
    """Create the engine from `config.engine_values()` through the registry's options class.

    Raises: ConfigError naming an unknown engine, an unknown option (e.g. `checkpoint` for an engine that
    takes none) or a bad value.
    """
    from voxsam.engines import create_engine

    return create_engine(config.engine, **config.engine_values())


class SharedPrepare(Engine):
    """Wraps an engine so that every Session on the same volume object reuses one `prepare` result.

    Everything else (capabilities, predict, propagation) is the wrapped engine's.
    """

    def __init__(self, engine: Engine) -> None:
        self.inner = engine
        self._volume: Volume | None = None
        self._prepared: Any = None

    # the wrapped engine's name and capabilities (class attributes there, read through here)
    @property
    def name(self) -> str:  # type: ignore[override]
        return self.inner.name

    @property
    def capabilities(self) -> Capabilities:  # type: ignore[override]
        return self.inner.capabilities

    def prepare(self, volume: Volume, progress: ProgressFn | None = None) -> Any:
        if volume is not self._volume:
            self._prepared = self.inner.prepare(volume, progress)
            self._volume = volume
        return self._prepared

    def predict(
        self, prepared: Any, prompts: PromptSet, previous: Prediction | None, change: Change | None = None
    ) -> Prediction:
        return self.inner.predict(prepared, prompts, previous, change)

    def propagate(
        self, prepared: Any, prompts: PromptSet, previous: Prediction | None, change: Change | None = None
    ) -> Generator[SliceUpdate, None, Prediction]:
        return self.inner.propagate(prepared, prompts, previous, change)

    def propagation_axis(self, prepared: Any, prompts: PromptSet, change: Change | None = None) -> int:
        return self.inner.propagation_axis(prepared, prompts, change)

    def forget(self) -> None:
        """Drop the cached prepared volume (the case is done)."""
        self._volume = self._prepared = None

    def __getattr__(self, attr: str) -> Any:
        # engine-specific attributes (e.g. a device) read through; only called when normal lookup fails
        if attr == "inner":
            raise AttributeError(attr)
        return getattr(self.inner, attr)


def _target_seed(seed: int, target: Target) -> int:
    return (int(seed) * 1_000_003 + zlib.crc32(f"{target.dataset}/{target.case_id}/{target.label}".encode())) % (2**32)


# ---------------------------------------------------------------------- evaluation of one target
def evaluate_target(engine: Engine, image: Volume, label_array: np.ndarray, target: Target, config: EvalConfig) -> dict[str, Any]:
    """Run the protocol on one target and score it at each click count.

    Args:
        engine: an Engine (ideally a `SharedPrepare`, so prepare is shared per volume).
        image: the case's Volume.
        label_array: (X, Y, Z) integer label map on the image grid.
    Returns: the record: identity, status "ok", n_voxels, stopped_at, prompts and one row per click count
        {click, dice, iou, nsd, hd95, seconds} (seconds = that interaction's wall time; the first includes prepare).
    """
    from voxsam.evaluation.metrics import all_metrics
    from voxsam.evaluation.protocols import get_protocol
    from voxsam.session import Session

    gt = np.asarray(label_array) == target.label
    protocol = get_protocol(config.protocol)
    session = Session(image, engine)
    n = max(config.clicks)
    start = time.perf_counter()
    result = protocol(session, gt, n, seed=_target_seed(config.seed, target), object_id=1)
    total = time.perf_counter() - start
    rows = []
    for c in config.clicks:
        m = all_metrics(result.masks[c - 1], gt, image.spacing, config.nsd_tolerance_mm)
        rows.append({"click": c, **m, "seconds": float(result.seconds[c - 1])})
    return {
        **identity(target),
        "status": "ok",
        "n_voxels": int(target.n_voxels),
        "stopped_at": result.stopped_at,
        "seconds_total": total,
        "prompts": result.prompts,
        "rows": rows,
    }


def run_case_group(
    engine: Engine, targets: list[Target], config: EvalConfig, out_dir: Path, allow_uneven: bool = False
) -> list[dict[str, Any]]:
    """Evaluate targets of one case (loaded once), writing each record file as it finishes.

    `allow_uneven` resamples DICOM images with missing or uneven slices (see `voxsam.io.read_volume`)."""
    from voxsam.io import check_same_grid, read_volume

    case = targets[0].case
    records: list[dict[str, Any]] = []
    image: Volume | None = None
    label: Volume | None = None
    failure: str | None = None
    try:
        image = read_volume(case.image_paths if len(case.image_paths) > 1 else case.image_paths[0], allow_uneven=allow_uneven)
        if image.modality is None and case.modality:
            image.modality = case.modality
        label = read_volume(case.label_path)
        check_same_grid(label, image, what="label")
    except VoxsamError as exc:
        failure = str(exc)
        log.warning("%s/%s: %s", case.dataset, case.case_id, failure)
    for target in targets:
        if failure is not None or image is None or label is None:
            rec = error_record(target, failure or "case not loaded")
        else:
            try:
                rec = evaluate_target(engine, image, label.array, target, config)
            except VoxsamError as exc:
                log.warning("%s/%s label %s: %s", target.dataset, target.case_id, target.label, exc)
                rec = error_record(target, str(exc))
            except Exception as exc:  # an engine bug must not end a long run; it is logged and reported
                log.exception("%s/%s label %s failed", target.dataset, target.case_id, target.label)
                rec = error_record(target, f"{type(exc).__name__}: {exc}")
        write_json_atomic(record_path(out_dir, target.dataset, target.case_id, target.label), rec)
        records.append(rec)
    if isinstance(engine, SharedPrepare):
        engine.forget()
    return records


@dataclass
class EvalJob:
    """The per-case work of a run (a `parallel.CaseJob`): builds its engine once per process."""

    config: EvalConfig
    out_dir: Path
    allow_uneven: bool = False

    def __post_init__(self) -> None:
        self._engine: SharedPrepare | None = None

    def __getstate__(self) -> dict[str, Any]:
        return {"config": self.config, "out_dir": self.out_dir, "allow_uneven": self.allow_uneven}  # the engine never travels

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.config, self.out_dir, self._engine = state["config"], state["out_dir"], None
        self.allow_uneven = bool(state.get("allow_uneven", False))

    def start(self) -> None:
        if self._engine is None:
            self._engine = SharedPrepare(build_engine(self.config))

    def __call__(self, targets: list[Target]) -> list[dict[str, Any]]:
        self.start()
        assert self._engine is not None
        return run_case_group(self._engine, targets, self.config, self.out_dir, self.allow_uneven)


# ---------------------------------------------------------------------- the run
def run_eval(
    specs: list[str],
    out_dir: str | Path,
    config: EvalConfig,
    progress: Callable[[int], None] | None = None,
    on_plan: Callable[[int, int], None] | None = None,
    allow_uneven: bool = False,
) -> dict[str, Any] | None:
    """Evaluate every target of `specs` with `config`, resumably, and write the report into `out_dir`.

    Args:
        specs: dataset folders and/or IMAGE::LABEL pairs.
        out_dir: output folder (created).
        progress: called with the number of targets just finished.
        on_plan: called once with (targets of this process's shard, of them already finished).
        allow_uneven: resample DICOM images with missing or uneven slices instead of failing their targets.
    Returns: the summary dict (also in summary.json), or None on a torchrun rank other than 0. Its `outcome`
        is "complete" (every planned target evaluated), "partial" (some failed: `failed` lists them) or
        "failed" (none could be evaluated).
    Raises: ConfigError for unknown names before any work; OutputPathError for an output folder that cannot
        be created or written; DatasetError when nothing can be evaluated.
    """
    from voxsam.evaluation.protocols import check_protocol
    from voxsam.evaluation.report import write_report

    rank, world = dist_rank_world()
    # fail fast: names, options and protocol support, before reading any data
    engine = build_engine(config)
    check_protocol(config.protocol, engine.supports)
    del engine
    out = prepare_out_dir(out_dir)
    check_run_settings(out, config, rank)

    plan = plan_targets(specs, config)
    if not plan.targets:
        raise DatasetError(_nothing_to_evaluate(specs, config, plan))
    mine = shard(plan.targets, rank, world)
    pending = []
    for t in mine:
        rec = read_record(record_path(out, t.dataset, t.case_id, t.label))
        if rec is None or (config.retry_errors and rec.get("status") == "error"):
            pending.append(t)
    log.info("rank %d/%d: %d targets, %d already done", rank, world, len(mine), len(mine) - len(pending))
    if on_plan:
        on_plan(len(mine), len(mine) - len(pending))
    run_groups(group_by_case(pending), EvalJob(config, out, allow_uneven), config.workers, progress)

    if rank != 0:
        log.info("rank %d done; rank 0 writes the report", rank)
        return None
    records = wait_for_records(out, plan, config.merge_timeout_s if world > 1 else 0.0)
    return write_report(out, plan, records, config)


def prepare_out_dir(out_dir: str | Path) -> Path:
    """Create the output folder (and parents) and check this process can write in it; OutputPathError naming
    it otherwise (an existing file of that name, no permission, a read-only disk)."""
    from voxsam.errors import OutputPathError
    from voxsam.io.atomic import check_writable_folder

    out = Path(out_dir).expanduser()
    if out.exists() and not out.is_dir():
        raise OutputPathError(f"{out}: exists and is a file; --out takes a folder (created if missing)")
    try:
        out.mkdir(parents=True, exist_ok=True)
    except FileExistsError:
        raise OutputPathError(f"{out}: a part of this path is a file; --out takes a folder") from None
    except OSError as exc:
        raise OutputPathError(f"{out}: cannot create the output folder ({exc.strerror})") from None
    check_writable_folder(out)
    return out


def _nothing_to_evaluate(specs: list[str], config: EvalConfig, plan: Plan) -> str:
    """Why a plan has no target, input by input: the skip reasons, and label maps without foreground voxels."""
    reasons = [f"{s.dataset}/{s.case_id or '*'}: {s.reason}" for s in plan.skipped]
    covered = {(s.dataset, s.case_id) for s in plan.skipped}
    cases, _, _ = parse_sources(specs, config.max_cases, config.cases)
    for case in cases:
        if (case.dataset, case.case_id) not in covered:
            reasons.append(f"{case.label_path}: the label map holds no foreground voxels (every voxel is 0)")
    if not reasons:
        return "nothing to evaluate: the inputs hold no labelled case"
    more = f" (+{len(reasons) - 5} more)" if len(reasons) > 5 else ""
    return "nothing to evaluate: " + "; ".join(reasons[:5]) + more
