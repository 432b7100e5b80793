"""Plain-data summary of a volume (what `voxsam info` shows)."""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np

from voxsam.io.volume import Volume

MAX_LABELS = 1024  # more distinct values than this is an image, not a label map


def looks_like_labels(array: np.ndarray) -> bool:
    """Integer-valued voxels with few distinct non-negative values."""
    if array.dtype == bool:
        return True
    sample = array[:: max(1, array.shape[0] // 64)]
    if np.issubdtype(array.dtype, np.floating) and not np.all(sample == np.round(sample)):
        return False
    if sample.min() < 0:
        return False
    return len(np.unique(sample)) <= 64 and len(np.unique(array)) <= MAX_LABELS


def label_names_near(path: Path | None) -> dict[int, str]:
    """Names from a dataset.json (dataset folder holding `path` in labelsTr/) or a TotalSegmentator-style
    class_map*.json beside the file; empty when there is none."""
    if path is None:
        return {}
    parents = list(Path(path).resolve().parents)[:2]
    for meta in [p / "dataset.json" for p in parents] + sorted(parents[0].glob("class_map*.json")):
        if meta.is_file():
            return names_from_file(meta)
    return {}


def names_from_file(meta: Path, strict: bool = False) -> dict[int, str]:
    """Label names from dataset.json (`labels`) or a class map ({"1": "spleen"} or {"total": {...}}).

    Found beside a file (`strict=False`) a missing or unreadable map gives no names; a map the user named
    (`strict=True`) must exist and parse: InputNotFoundError / CorruptFileError naming it otherwise.
    """
    from voxsam.errors import CorruptFileError, InputNotFoundError
    from voxsam.io.datasets import parse_label_names

    path = Path(meta).expanduser()
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        if strict:
            raise InputNotFoundError(f"{path}: label-names file not found") from None
        return {}
    except IsADirectoryError:
        if strict:
            raise CorruptFileError(f"{path}: is a folder; expected a JSON file of label names") from None
        return {}
    except (OSError, ValueError) as exc:  # ValueError: bad JSON or not UTF-8
        if strict:
            raise CorruptFileError(f"{path}: not a readable JSON file of label names ({type(exc).__name__}: {str(exc).splitlines()[0][:120]})") from None
        return {}
    if not isinstance(data, dict):
        if strict:
            raise CorruptFileError(f"{path}: expected a JSON object of label names, got {type(data).__name__}")
        return {}
    if "labels" in data:
        return parse_label_names(data["labels"])
    if data and all(isinstance(v, dict) for v in data.values()):  # several maps: "total" first
        data = data.get("total", next(iter(data.values())))
    return parse_label_names(data)


def summarise(vol: Volume, as_labels: bool | None = None, names_file: Path | None = None) -> dict[str, Any]:
    """Shape, spacing (mm), orientation code, origin, intensity range and, for label maps, label counts."""
    from voxsam.transforms.geometry import describe_grid

    arr = vol.array
    grid = describe_grid(vol.shape, vol.affine)
    out: dict[str, Any] = {
        "path": str(vol.path) if vol.path else None,
        "format": vol.source_format,
        "modality": vol.modality,
        "shape": grid["shape"],
        "channels": vol.n_channels,
        "spacing_mm": grid["spacing_mm"],
        "orientation": grid["orientation"],
        "origin_mm": grid["origin_mm"],
        "dtype": str(arr.dtype),
        "range": [float(arr.min()), float(arr.max())],
    }
    is_labels = looks_like_labels(arr) if as_labels is None else as_labels
    if is_labels and vol.n_channels == 1:
        names = names_from_file(names_file, strict=True) if names_file else label_names_near(vol.path)
        values, counts = np.unique(arr, return_counts=True)
        voxel_ml = float(np.prod(vol.spacing)) / 1000.0
        out["labels"] = [
            {"value": int(v) if float(v).is_integer() else float(v), "voxels": int(c), "ml": c * voxel_ml, "name": names.get(int(v))}
            for v, c in zip(values, counts)
            if v != 0
        ]
    return out
