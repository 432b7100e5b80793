"""Inputs of an evaluation run ("sources"): dataset folders and image/label file pairs -> cases.

A source is an MSD / nnU-Net dataset folder (`imagesTr/`, `labelsTr/`, `dataset.json`), or a pair of files
`IMAGE::LABEL` (optionally `IMAGE::LABEL::NAMES.json`, or `NAMES.json#key` to pick a sub-map such as
TotalSegmentator's `class_map_total_v2.json#total`). A pair's dataset is its image's folder name, its case
the image's file stem. `--cases` glob patterns select case ids before `--max-cases` applies.
"""
from __future__ import annotations

import fnmatch
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from voxsam.errors import ConfigError, DatasetError

__all__ = ["PAIR_SEP", "CaseRef", "Skip", "load_label_names", "parse_sources", "case_wanted"]

PAIR_SEP = "::"


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
class Skip:
    """Something not evaluated, and why (label None: the whole case; case None: the whole source)."""

    dataset: str
    case_id: str | None
    label: int | None
    reason: str
    kind: str = "skipped"  # "skipped" (bad input) or "filtered" (by min-voxels / slice-range)


def load_label_names(spec: str) -> dict[int, str]:
    """Label names from `NAMES.json` or `NAMES.json#key` ({"1": "name", ...}, or a `labels` map inside)."""
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


def case_wanted(case_id: str, patterns: list[str] | None) -> bool:
    """True when no patterns are given or `case_id` matches one of the glob patterns."""
    return not patterns or any(fnmatch.fnmatchcase(case_id, p) for p in patterns)


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
            names = load_label_names(parts[2]) if len(parts) == 3 else {}
            key = image.resolve().parent.name or "data"
            case_id = split_name(image)[0]
            if not case_wanted(case_id, case_patterns):
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
        labelled = [c for c in ds.cases if c.label_path is not None and case_wanted(c.case_id, case_patterns)]
        if not labelled:
            why = "no case matches --cases" if case_patterns else "no labels (labelsTr/ missing or holds no case's label)"
            skipped.append(Skip(key, None, None, f"{root}: {why}"))
            continue
        for entry in ds.cases:
            if entry.label_path is None:
                skipped.append(Skip(key, entry.case_id, None, "no label file in labelsTr/"))
        if max_cases is not None:
            labelled = labelled[:max_cases]
        for entry in labelled:
            assert entry.label_path is not None  # filtered above
            cases.append(
                CaseRef(key, entry.case_id, list(entry.image_paths), Path(entry.label_path), dict(ds.label_names), ds.modality)
            )
    seen: set[tuple[str, str]] = set()
    for case in cases:
        if (case.dataset, case.case_id) in seen:
            raise ConfigError(f"case {case.case_id!r} of {case.dataset!r} is given twice")
        seen.add((case.dataset, case.case_id))
    return cases, skipped, info
