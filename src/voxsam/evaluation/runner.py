"""The benchmark runner behind `voxsam eval`: datasets in, per-target records out, then a report.

    from voxsam.evaluation.runner import EvalConfig, run_eval
    cfg = EvalConfig(engine="classic", protocol="center", clicks=[1, 3, 5])
    summary = run_eval(["../shared/data/la_mri"], "runs/la", cfg)

Inputs ("sources"): an MSD / nnU-Net dataset folder (`imagesTr/`, `labelsTr/`, `dataset.json`), or a pair
of files `IMAGE::LABEL` (optionally `IMAGE::LABEL::NAMES.json`, or `NAMES.json#key` to pick a sub-map such
as TotalSegmentator's `class_map_total_v2.json#total`). A pair's dataset is its image's folder name, its
case the image's file stem.

Targets: each foreground label of each case is one target (optionally only `labels`, only those with at
least `min_voxels` voxels, only those spanning `slice_range` slices along the slice axis — the axis of
largest spacing — like SAM-Med3D's 10–200 slice filter; `max_cases` per dataset, first by case id).

Work and outputs under `out_dir`:
  run.json          the settings that decide the numbers (engine, options, protocol, clicks, seed, NSD tolerance);
                    a rerun with other settings into the same folder is refused (ConfigError).
  records/…/*.json  one file per finished target (status ok / error, metrics per click count), written
                    atomically; a rerun skips targets that have one (resumable).
  results.csv, summary.md, summary.json, dice_vs_clicks_<dataset>.png   merged report (`report.py`).

Parallelism: `workers` processes (multiprocessing, spawn) take whole cases; under `torchrun` (WORLD_SIZE > 1)
rank r takes the targets i with i % WORLD_SIZE == r of the full plan, and rank 0 writes the report once
every planned target has a record (polling; other ranks just finish).

Bad input: unknown engine / protocol / engine option, or a protocol the engine cannot run -> ConfigError
before any work. A dataset without labels, a case whose label cannot be read, a requested label absent
from a case -> listed as skipped with the reason; a label whose grid differs from its image, or an engine
error on one target -> an error record with the reason; the run goes on with the rest. Nothing at all to
evaluate -> DatasetError.
"""
from __future__ import annotations

import json
import logging
import os
import re
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable

import numpy as np

from voxsam.errors import ConfigError, DatasetError, VoxsamError

log = logging.getLogger(__name__)

__all__ = ["EvalConfig", "CaseRef", "Target", "Skip", "Plan", "run_eval", "plan_targets", "parse_sources", "evaluate_target"]

PAIR_SEP = "::"


# ---------------------------------------------------------------------- configuration
@dataclass
class EvalConfig:
    """Settings of one evaluation run.

    Attributes:
        engine: registered engine name ("classic", "sam3d", ...).
        protocol: registered protocol name (see `voxsam.evaluation.protocols.PROTOCOLS`).
        clicks: interaction counts at which metrics are reported, e.g. [1, 3, 5, 10]; the protocol runs
            max(clicks) interactions.
        checkpoint: passed to the engine factory as `checkpoint=` when set.
        engine_options: further keyword arguments for the engine factory.
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

    def result_settings(self) -> dict[str, Any]:
        """The settings that decide the numbers of a target (compared on resume)."""
        return {
            "engine": self.engine,
            "checkpoint": str(self.checkpoint) if self.checkpoint else None,
            "engine_options": dict(sorted(self.engine_options.items())),
            "protocol": self.protocol,
            "clicks": list(self.clicks),
            "seed": int(self.seed),
            "nsd_tolerance_mm": float(self.nsd_tolerance_mm),
        }


@dataclass
class CaseRef:
    """One case of one source: where its files are and what its labels are called."""

    dataset: str
    case_id: str
    image_paths: list[Path]
    label_path: Path
    label_names: dict[int, str]
    modality: str | None = None


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
class Skip:
    """Something not evaluated, and why (label None: the whole case; case None: the whole source)."""

    dataset: str
    case_id: str | None
    label: int | None
    reason: str
    kind: str = "skipped"  # "skipped" (bad input) or "filtered" (by min-voxels / slice-range)


@dataclass
class Plan:
    targets: list[Target]
    skipped: list[Skip]
    datasets: dict[str, dict[str, Any]]  # key -> {"title": ..., "source": ..., "label_names": {...}}


# ---------------------------------------------------------------------- sources
def _load_names(spec: str) -> dict[int, str]:
    from voxsam.io.datasets import parse_label_names

    path_text, _, key = spec.partition("#")
    path = Path(path_text).expanduser()
    try:
        data = json.loads(path.read_text())
    except FileNotFoundError:
        raise DatasetError(f"{path}: label-names file not found") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise DatasetError(f"{path}: invalid JSON ({exc})") from None
    if key:
        if not isinstance(data, dict) or key not in data:
            raise DatasetError(f"{path}: has no key {key!r}")
        data = data[key]
    elif isinstance(data, dict) and isinstance(data.get("labels"), dict):
        data = data["labels"]
    names = parse_label_names(data)
    if not names:
        raise DatasetError(f"{spec}: holds no label names (expected {{\"1\": \"name\", ...}})")
    return names


def parse_sources(
    specs: list[str], max_cases: int | None = None, case_patterns: list[str] | None = None
) -> tuple[list[CaseRef], list[Skip], dict[str, dict[str, Any]]]:
    """Resolve DATASET arguments into cases (with labels), skipped entries and per-dataset info.

    `case_patterns` (glob) keeps only matching case ids; it applies before `max_cases`.

    Raises DatasetError for a path that does not exist or a folder that is not a dataset (nothing to skip to).
    """
    from voxsam.io.datasets import open_dataset, split_name

    cases: list[CaseRef] = []
    skipped: list[Skip] = []
    info: dict[str, dict[str, Any]] = {}
    per_dataset: dict[str, int] = {}
    for spec in specs:
        if PAIR_SEP in spec:
            parts = spec.split(PAIR_SEP)
            if len(parts) not in (2, 3) or not parts[0] or not parts[1]:
                raise DatasetError(f"{spec!r}: a file pair is IMAGE::LABEL or IMAGE::LABEL::NAMES.json[#key]")
            image, label = Path(parts[0]).expanduser(), Path(parts[1]).expanduser()
            for p, what in ((image, "image"), (label, "label")):
                if not p.exists():
                    raise DatasetError(f"{p}: {what} file not found")
            names = _load_names(parts[2]) if len(parts) == 3 else {}
            key = image.resolve().parent.name or "data"
            case_id = split_name(image)[0]
            if not _wanted(case_id, case_patterns):
                continue
            info.setdefault(key, {"title": key, "sources": [], "label_names": {}})
            info[key]["sources"].append(spec)
            info[key]["label_names"].update(names)
            if max_cases is not None and per_dataset.get(key, 0) >= max_cases:
                continue
            per_dataset[key] = per_dataset.get(key, 0) + 1
            cases.append(CaseRef(key, case_id, [image], label, names))
            continue
        root = Path(spec).expanduser()
        if root.is_file():
            raise DatasetError(f"{spec}: a single file is not a dataset; give IMAGE::LABEL for a pair of files")
        if not root.exists():
            raise DatasetError(f"{spec}: no such dataset folder")
        try:
            ds = open_dataset(root)
        except DatasetError as exc:
            raise DatasetError(f"{exc} (for a folder of loose files give each case as IMAGE::LABEL)") from None
        key = root.resolve().name
        if key in info:
            raise ConfigError(f"two inputs are both called {key!r}; give each dataset once")
        info[key] = {"title": ds.name, "sources": [str(root)], "label_names": dict(ds.label_names), "modality": ds.modality}
        labelled = [c for c in ds.cases if c.label_path is not None and _wanted(c.case_id, case_patterns)]
        if not labelled:
            why = "no case matches --cases" if case_patterns else "no labels (labelsTr/ missing or holds no case's label)"
            skipped.append(Skip(key, None, None, f"{root}: {why}"))
            continue
        for c in ds.cases:
            if c.label_path is None:
                skipped.append(Skip(key, c.case_id, None, "no label file in labelsTr/"))
        if max_cases is not None:
            labelled = labelled[:max_cases]
        for c in labelled:
            cases.append(CaseRef(key, c.case_id, list(c.image_paths), Path(c.label_path), dict(ds.label_names), ds.modality))
    seen: set[tuple[str, str]] = set()
    for c in cases:
        if (c.dataset, c.case_id) in seen:
            raise ConfigError(f"case {c.case_id!r} of {c.dataset!r} is given twice")
        seen.add((c.dataset, c.case_id))
    return cases, skipped, info


def _wanted(case_id: str, patterns: list[str] | None) -> bool:
    import fnmatch

    return not patterns or any(fnmatch.fnmatchcase(case_id, p) for p in patterns)


# ---------------------------------------------------------------------- planning
def slice_axis_of(spacing: tuple[float, ...]) -> int:
    """The slice axis of a grid: the axis of largest spacing (the last one on ties)."""
    from voxsam.evaluation.protocols import slice_axis

    return slice_axis(spacing)


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
        axis = slice_axis_of(label_vol.spacing)
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


# ---------------------------------------------------------------------- engine
def build_engine(config: EvalConfig) -> Any:
    """Create the engine (ConfigError for an unknown name, option or an unsupported checkpoint)."""
    from voxsam.engines import create_engine

    kwargs = dict(config.engine_options)
    if config.checkpoint:
        kwargs["checkpoint"] = config.checkpoint
    try:
        return create_engine(config.engine, **kwargs)
    except TypeError as exc:
        text = str(exc)
        if "checkpoint" in text and config.checkpoint:
            raise ConfigError(f"engine {config.engine!r} takes no --checkpoint") from None
        if "unexpected keyword" in text or "got an unexpected" in text:
            raise ConfigError(f"engine {config.engine!r}: unknown option ({text})") from None
        raise


class _SharedPrepare:
    """Wraps an engine so that every Session on the same volume object reuses one `prepare` result."""

    def __init__(self, engine: Any) -> None:
        self.inner = engine
        self.name = engine.name
        self.supports = engine.supports
        self._volume: Any = None
        self._prepared: Any = None

    def prepare(self, volume: Any) -> Any:
        if volume is not self._volume:
            self._prepared = self.inner.prepare(volume)
            self._volume = volume
        return self._prepared

    def predict(self, prepared: Any, prompts: Any, previous: Any) -> Any:
        return self.inner.predict(prepared, prompts, previous)

    def forget(self) -> None:
        self._volume = self._prepared = None


# ---------------------------------------------------------------------- records
def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "_", str(text)).strip("._") or "_"


def record_path(out_dir: Path, dataset: str, case_id: str, label: int) -> Path:
    return Path(out_dir) / "records" / _slug(dataset) / _slug(case_id) / f"label_{int(label)}.json"


def _write_json_atomic(path: Path, data: Any) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(json.dumps(data, indent=1, allow_nan=True))
    os.replace(tmp, path)


def read_record(path: Path) -> dict[str, Any] | None:
    """A record file's content, or None when it is missing or unreadable (a crashed write)."""
    try:
        return json.loads(Path(path).read_text())
    except (FileNotFoundError, json.JSONDecodeError, UnicodeDecodeError, OSError):
        return None


def _target_seed(seed: int, target: Target) -> int:
    import zlib

    return (int(seed) * 1_000_003 + zlib.crc32(f"{target.dataset}/{target.case_id}/{target.label}".encode())) % (2**32)


# ---------------------------------------------------------------------- evaluation of one target
def evaluate_target(engine: Any, image: Any, label_array: np.ndarray, target: Target, config: EvalConfig) -> dict[str, Any]:
    """Run the protocol on one target and score it at each click count.

    Args:
        engine: an Engine (ideally wrapped so prepare is shared per volume).
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
        **_identity(target),
        "status": "ok",
        "n_voxels": int(target.n_voxels),
        "stopped_at": result.stopped_at,
        "seconds_total": total,
        "prompts": result.prompts,
        "rows": rows,
    }


def _identity(target: Target) -> dict[str, Any]:
    return {"dataset": target.dataset, "case": target.case_id, "label": int(target.label), "label_name": target.label_name}


def _error_record(target: Target, reason: str) -> dict[str, Any]:
    return {**_identity(target), "status": "error", "reason": reason, "n_voxels": int(target.n_voxels), "rows": []}


def run_case_group(engine: Any, targets: list[Target], config: EvalConfig, out_dir: Path) -> list[dict[str, Any]]:
    """Evaluate targets of one case (loaded once), writing each record file as it finishes."""
    from voxsam.io import check_same_grid, read_volume

    case = targets[0].case
    records: list[dict[str, Any]] = []
    image = label = None
    failure: str | None = None
    try:
        image = read_volume(case.image_paths if len(case.image_paths) > 1 else case.image_paths[0])
        if image.modality is None and case.modality:
            image.modality = case.modality
        label = read_volume(case.label_path)
        check_same_grid(label, image, what="label")
    except VoxsamError as exc:
        failure = str(exc)
        log.warning("%s/%s: %s", case.dataset, case.case_id, failure)
    for target in targets:
        if failure is not None:
            rec = _error_record(target, failure)
        else:
            try:
                rec = evaluate_target(engine, image, label.array, target, config)  # type: ignore[union-attr]
            except VoxsamError as exc:
                log.warning("%s/%s label %s: %s", target.dataset, target.case_id, target.label, exc)
                rec = _error_record(target, str(exc))
            except Exception as exc:  # an engine bug must not end a long run; it is logged and reported
                log.exception("%s/%s label %s failed", target.dataset, target.case_id, target.label)
                rec = _error_record(target, f"{type(exc).__name__}: {exc}")
        _write_json_atomic(record_path(out_dir, target.dataset, target.case_id, target.label), rec)
        records.append(rec)
    if isinstance(engine, _SharedPrepare):
        engine.forget()
    return records


# ---------------------------------------------------------------------- worker processes
_WORKER: dict[str, Any] = {}


def _worker_init(config: EvalConfig, out_dir: str) -> None:
    logging.basicConfig(level=logging.WARNING)
    _WORKER["config"] = config
    _WORKER["out_dir"] = Path(out_dir)
    _WORKER["engine"] = _SharedPrepare(build_engine(config))


def _worker_run(targets: list[Target]) -> list[dict[str, Any]]:
    return run_case_group(_WORKER["engine"], targets, _WORKER["config"], _WORKER["out_dir"])


def _group_by_case(targets: list[Target]) -> list[list[Target]]:
    groups: dict[tuple[str, str], list[Target]] = {}
    for t in targets:
        groups.setdefault((t.dataset, t.case_id), []).append(t)
    return list(groups.values())


def _run_pending(
    pending: list[Target], config: EvalConfig, out_dir: Path, progress: Callable[[int], None] | None
) -> None:
    groups = _group_by_case(pending)
    if config.workers <= 1 or len(groups) <= 1:
        engine = _SharedPrepare(build_engine(config))
        for group in groups:
            for _ in run_case_group(engine, group, config, out_dir):
                if progress:
                    progress(1)
        return
    import multiprocessing as mp

    threads = str(max(1, (os.cpu_count() or 1) // config.workers))
    saved = {k: os.environ.get(k) for k in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS")}
    os.environ.update({k: threads for k in saved})
    try:
        ctx = mp.get_context("spawn")
        with ctx.Pool(min(config.workers, len(groups)), initializer=_worker_init, initargs=(config, str(out_dir))) as pool:
            for records in pool.imap_unordered(_worker_run, groups):
                if progress:
                    progress(len(records))
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


# ---------------------------------------------------------------------- the run
def dist_rank_world() -> tuple[int, int]:
    """(rank, world size) from torchrun's RANK / WORLD_SIZE environment (0, 1 when absent)."""
    try:
        world = int(os.environ.get("WORLD_SIZE", "1"))
        rank = int(os.environ.get("RANK", "0"))
    except ValueError:
        raise ConfigError("RANK / WORLD_SIZE must be integers") from None
    if world < 1 or not 0 <= rank < world:
        raise ConfigError(f"bad torchrun environment: RANK={rank} WORLD_SIZE={world}")
    return rank, world


def _check_run_settings(out_dir: Path, config: EvalConfig, rank: int) -> None:
    path = out_dir / "run.json"
    settings = config.result_settings()
    existing = read_record(path)
    if existing is not None:
        if existing.get("settings") != settings:
            diff = {k: (existing.get("settings", {}).get(k), v) for k, v in settings.items() if existing.get("settings", {}).get(k) != v}
            raise ConfigError(
                f"{out_dir} holds a run with other settings ({', '.join(f'{k}: {a!r} -> {b!r}' for k, (a, b) in diff.items())}); "
                "use another --out folder"
            )
        return
    if rank == 0:
        _write_json_atomic(path, {"settings": settings})


def run_eval(
    specs: list[str],
    out_dir: str | Path,
    config: EvalConfig,
    progress: Callable[[int], None] | None = None,
    on_plan: Callable[[int, int], None] | None = None,
) -> dict[str, Any] | None:
    """Evaluate every target of `specs` with `config`, resumably, and write the report into `out_dir`.

    Args:
        specs: dataset folders and/or IMAGE::LABEL pairs.
        out_dir: output folder (created).
        progress: called with the number of targets just finished.
        on_plan: called once with (targets of this process's shard, of them already finished).
    Returns: the summary dict (also in summary.json), or None on a torchrun rank other than 0.
    Raises: ConfigError for unknown names before any work; DatasetError when nothing can be evaluated.
    """
    from voxsam.evaluation.protocols import check_protocol
    from voxsam.evaluation.report import write_report

    rank, world = dist_rank_world()
    # fail fast: names, options and protocol support, before reading any data
    engine = build_engine(config)
    check_protocol(config.protocol, engine.supports)
    del engine
    out = Path(out_dir).expanduser()
    out.mkdir(parents=True, exist_ok=True)
    _check_run_settings(out, config, rank)

    plan = plan_targets(specs, config)
    if not plan.targets:
        reasons = "; ".join(f"{s.dataset}/{s.case_id or '*'}: {s.reason}" for s in plan.skipped[:5])
        raise DatasetError("nothing to evaluate" + (f" ({reasons})" if reasons else ""))
    mine = [t for i, t in enumerate(plan.targets) if i % world == rank]
    pending = []
    for t in mine:
        rec = read_record(record_path(out, t.dataset, t.case_id, t.label))
        if rec is None or (config.retry_errors and rec.get("status") == "error"):
            pending.append(t)
    log.info("rank %d/%d: %d targets, %d already done", rank, world, len(mine), len(mine) - len(pending))
    if on_plan:
        on_plan(len(mine), len(mine) - len(pending))
    _run_pending(pending, config, out, progress)

    if rank != 0:
        log.info("rank %d done; rank 0 writes the report", rank)
        return None
    records = _wait_for_records(out, plan, config.merge_timeout_s if world > 1 else 0.0)
    return write_report(out, plan, records, config)


def _wait_for_records(out: Path, plan: Plan, timeout_s: float) -> list[dict[str, Any]]:
    deadline = time.monotonic() + timeout_s
    last_log = 0.0
    while True:
        missing = [t for t in plan.targets if not record_path(out, t.dataset, t.case_id, t.label).exists()]
        if not missing or time.monotonic() >= deadline:
            records: list[dict[str, Any]] = []
            for t in plan.targets:
                rec = read_record(record_path(out, t.dataset, t.case_id, t.label))
                if rec is None:
                    rec = {**_identity(t), "status": "missing", "reason": "no record (a rank did not finish)", "rows": []}
                records.append(rec)
            return records
        if time.monotonic() - last_log > 60:
            log.info("rank 0 waits for %d targets of other ranks", len(missing))
            last_log = time.monotonic()
        time.sleep(2.0)


def config_as_dict(config: EvalConfig) -> dict[str, Any]:
    d = asdict(config)
    d["slice_range"] = list(config.slice_range) if config.slice_range else None
    return d
