"""How the targets of a run are spread: whole cases per worker process, targets per torchrun rank.

- `workers` processes (multiprocessing, spawn) take whole cases (a case's volume is read and prepared once);
  each worker runs `job.start()` once, then `job(group)` for each case group it is given.
- Under `torchrun` (WORLD_SIZE > 1) rank r takes the targets i with i % WORLD_SIZE == r of the full plan, and
  rank 0 waits until every planned target has a record before writing the report (`wait_for_records`).

This module knows nothing of engines: the caller hands it a picklable `CaseJob`.
"""
from __future__ import annotations

import logging
import os
import time
from pathlib import Path
from typing import Any, Callable, Protocol

from voxsam.errors import ConfigError
from voxsam.evaluation.plan import Plan, Target
from voxsam.evaluation.records import missing_record, read_record, record_path

log = logging.getLogger(__name__)

__all__ = ["CaseJob", "dist_rank_world", "shard", "group_by_case", "run_groups", "wait_for_records"]

_THREAD_VARS = ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS")


class CaseJob(Protocol):
    """Work on the targets of one case; picklable (it travels to spawned workers)."""

    def start(self) -> None:
        """Per-process set-up (e.g. build the engine), run once before the first call."""

    def __call__(self, targets: list[Target]) -> list[dict[str, Any]]:
        """Evaluate the targets (all of one case) and return their records."""


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


def shard(targets: list[Target], rank: int, world: int) -> list[Target]:
    """The targets rank `rank` of `world` takes: every world-th one, starting at rank."""
    return [t for i, t in enumerate(targets) if i % world == rank]


def group_by_case(targets: list[Target]) -> list[list[Target]]:
    """Targets grouped by (dataset, case), in order of first appearance."""
    groups: dict[tuple[str, str], list[Target]] = {}
    for t in targets:
        groups.setdefault((t.dataset, t.case_id), []).append(t)
    return list(groups.values())


_JOB: list[CaseJob] = []


def _worker_init(job: CaseJob) -> None:
    logging.basicConfig(level=logging.WARNING)
    job.start()
    _JOB[:] = [job]


def _worker_run(targets: list[Target]) -> list[dict[str, Any]]:
    return _JOB[0](targets)


def run_groups(
    groups: list[list[Target]], job: CaseJob, workers: int, progress: Callable[[int], None] | None = None
) -> None:
    """Run `job` on every case group: in this process when `workers` <= 1 or there is one group, else in a
    pool of spawned processes (BLAS threads split between them). `progress(n)` after each finished group."""
    if not groups:
        return
    if workers <= 1 or len(groups) <= 1:
        job.start()
        for group in groups:
            records = job(group)
            if progress:
                for _ in records:
                    progress(1)
        return
    import multiprocessing as mp

    threads = str(max(1, (os.cpu_count() or 1) // workers))
    saved = {k: os.environ.get(k) for k in _THREAD_VARS}
    os.environ.update({k: threads for k in saved})
    try:
        ctx = mp.get_context("spawn")
        with ctx.Pool(min(workers, len(groups)), initializer=_worker_init, initargs=(job,)) as pool:
            for records in pool.imap_unordered(_worker_run, groups):
                if progress:
                    progress(len(records))
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


def wait_for_records(out: Path, plan: Plan, timeout_s: float) -> list[dict[str, Any]]:
    """Every planned target's record, waiting up to `timeout_s` for missing ones (other ranks); a target still
    without a record then gets a "missing" one."""
    deadline = time.monotonic() + timeout_s
    last_log = 0.0
    while True:
        missing = [t for t in plan.targets if not record_path(out, t.dataset, t.case_id, t.label).exists()]
        if not missing or time.monotonic() >= deadline:
            records: list[dict[str, Any]] = []
            for t in plan.targets:
                rec = read_record(record_path(out, t.dataset, t.case_id, t.label))
                records.append(rec if rec is not None else missing_record(t))
            return records
        if time.monotonic() - last_log > 60:
            log.info("rank 0 waits for %d targets of other ranks", len(missing))
            last_log = time.monotonic()
        time.sleep(2.0)
