"""Files of an evaluation run: one JSON record per finished target, and `run.json` with the run's settings.

  run.json          the settings that decide the numbers (engine, options, protocol, clicks, seed, NSD tolerance);
                    a rerun with other settings into the same folder is refused (ConfigError).
  records/…/*.json  one file per finished target (status ok / error, metrics per click count), written
                    atomically; a rerun skips targets that have one (resumable).
"""
from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

from voxsam.errors import ConfigError
from voxsam.evaluation.plan import EvalConfig, Target

__all__ = [
    "record_path",
    "write_json_atomic",
    "read_record",
    "identity",
    "error_record",
    "missing_record",
    "check_run_settings",
]


def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "_", str(text)).strip("._") or "_"


def record_path(out_dir: Path, dataset: str, case_id: str, label: int) -> Path:
    """Where the record of target (dataset, case, label) lives under `out_dir`."""
    return Path(out_dir) / "records" / _slug(dataset) / _slug(case_id) / f"label_{int(label)}.json"


def write_json_atomic(path: Path, data: Any) -> None:
    """Write `data` as JSON to `path` through a temporary file and a rename (readers never see half a file).

    Raises OutputPathError (DiskFullError for a full disk) naming the file when it cannot be written."""
    from voxsam.errors import OutputPathError
    from voxsam.io.atomic import atomic_path

    try:
        path.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise OutputPathError(f"{path.parent}: cannot create the folder ({exc.strerror})") from None
    with atomic_path(path) as tmp:
        tmp.write_text(json.dumps(data, indent=1, allow_nan=True))


def read_record(path: Path) -> dict[str, Any] | None:
    """A record file's content, or None when it is missing or unreadable (a crashed write)."""
    try:
        data = json.loads(Path(path).read_text())
    except (FileNotFoundError, json.JSONDecodeError, UnicodeDecodeError, OSError):
        return None
    return data if isinstance(data, dict) else None


def identity(target: Target) -> dict[str, Any]:
    """The fields naming a target in its record."""
    return {"dataset": target.dataset, "case": target.case_id, "label": int(target.label), "label_name": target.label_name}


def error_record(target: Target, reason: str) -> dict[str, Any]:
    return {**identity(target), "status": "error", "reason": reason, "n_voxels": int(target.n_voxels), "rows": []}


def missing_record(target: Target) -> dict[str, Any]:
    return {**identity(target), "status": "missing", "reason": "no record (a rank did not finish)", "rows": []}


def check_run_settings(out_dir: Path, config: EvalConfig, rank: int) -> None:
    """Refuse (ConfigError) an `out_dir` holding a run with other result settings; rank 0 writes run.json."""
    path = out_dir / "run.json"
    settings = config.result_settings()
    existing = read_record(path)
    if existing is not None:
        if existing.get("settings") != settings:
            old = existing.get("settings") or {}
            diff = {k: (old.get(k), v) for k, v in settings.items() if old.get(k) != v}
            raise ConfigError(
                f"{out_dir} holds a run with other settings ({', '.join(f'{k}: {a!r} -> {b!r}' for k, (a, b) in diff.items())}); "
                "use another --out folder"
            )
        return
    if rank == 0:
        write_json_atomic(path, {"settings": settings})
