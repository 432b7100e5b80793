"""MSD / nnU-Net style dataset folders: `imagesTr/`, `labelsTr/`, `dataset.json`.

Both layouts are read:
  - MSD: one image file per case (`imagesTr/spleen_1.nii.gz`, possibly 4D with channels);
  - nnU-Net: one file per channel (`imagesTr/case_0000.nii.gz`, `case_0001.nii.gz`, ...).
The label of case `c` is `labelsTr/c<ext>`. Label names come from `dataset.json` `labels` in either
spelling (MSD `{"1": "liver"}` or nnU-Net v2 `{"liver": 1}`).
"""
from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from voxsam.errors import DatasetError
from voxsam.io.formats import EXTENSIONS, format_from_name
from voxsam.io.volume import Volume

_CHANNEL = re.compile(r"^(?P<case>.+)_(?P<channel>\d{4})$")


def split_name(path: Path) -> tuple[str, str]:
    """("case_0000", ".nii.gz") for "case_0000.nii.gz"."""
    name = path.name
    for ext in sorted(EXTENSIONS, key=len, reverse=True):
        if name.lower().endswith(ext):
            return name[: -len(ext)], name[-len(ext):]
    return path.stem, path.suffix


@dataclass
class Case:
    """One case: its channel files (in channel order) and its label file (None when unlabelled)."""

    case_id: str
    image_paths: list[Path]
    label_path: Path | None
    dataset: Dataset | None = field(default=None, repr=False)

    def load_image(self) -> Volume:
        """The image as one Volume ((X, Y, Z) or (X, Y, Z, C)), modality from dataset.json when known."""
        from voxsam.io import read_volume

        vol = read_volume(self.image_paths if len(self.image_paths) > 1 else self.image_paths[0])
        if self.dataset is not None and vol.modality is None:
            vol.modality = self.dataset.modality
        return vol

    def load_label(self, image: Volume | None = None) -> Volume:
        """The label map; checked against the image grid (GeometryMismatchError when they differ)."""
        from voxsam.io import check_same_grid, read_volume

        if self.label_path is None:
            raise DatasetError(f"case {self.case_id}: has no label file in labelsTr")
        label = read_volume(self.label_path)
        check_same_grid(label, image if image is not None else self.load_image(), what="label")
        return label


@dataclass
class Dataset:
    """A dataset folder. `cases` are sorted by id; `label_names` maps label value -> name (no background)."""

    root: Path
    name: str
    cases: list[Case]
    label_names: dict[int, str]
    modality: str | None
    info: dict[str, Any]

    def case(self, case_id: str) -> Case:
        for c in self.cases:
            if c.case_id == case_id:
                return c
        raise DatasetError(f"{self.root}: no case {case_id!r}")


def normalise_modality(value: Any) -> str | None:
    """"CT" or "MR" (or None) from dataset.json's `modality` / `channel_names` in any spelling."""
    values = list(value.values()) if isinstance(value, dict) else [value]
    text = " ".join(str(v) for v in values if v is not None).upper()
    if not text:
        return None
    if re.search(r"\bCT\b", text):
        return "CT"
    if re.search(r"MR|T1|T2|FLAIR|ADC|DWI|LGE|CINE", text):
        return "MR"
    return None


def parse_label_names(labels: Any) -> dict[int, str]:
    """Label value -> name from either MSD or nnU-Net v2 spelling; non-numeric entries are ignored."""
    out: dict[int, str] = {}
    if not isinstance(labels, dict):
        return out
    for key, val in labels.items():
        if str(key).lstrip("-").isdigit():
            value, name = int(key), str(val)
        elif isinstance(val, int) or (isinstance(val, str) and val.isdigit()):
            value, name = int(val), str(key)
        else:
            continue  # e.g. a free-text "note", or nnU-Net region lists
        if value != 0:
            out[value] = name
    return out


def open_dataset(root: str | Path) -> Dataset:
    """Open an MSD / nnU-Net dataset folder.

    Raises: DatasetError when the folder, `imagesTr/` or its images are missing, or a channel is missing.
    """
    root = Path(root).expanduser()
    if not root.is_dir():
        raise DatasetError(f"{root}: not a dataset folder")
    info: dict[str, Any] = {}
    meta_file = root / "dataset.json"
    if meta_file.is_file():
        try:
            info = json.loads(meta_file.read_text())
        except (json.JSONDecodeError, UnicodeDecodeError) as exc:
            raise DatasetError(f"{meta_file}: invalid JSON ({exc})") from None
    images_dir = root / "imagesTr"
    if not images_dir.is_dir():
        raise DatasetError(f"{root}: no imagesTr/ folder (expected an MSD / nnU-Net dataset layout)")
    labels_dir = root / "labelsTr"
    files = sorted(p for p in images_dir.iterdir() if p.is_file() and not p.name.startswith(".") and format_from_name(p))
    if not files:
        raise DatasetError(f"{images_dir}: holds no image files")

    groups: dict[str, dict[int, Path]] = {}
    ext_of: dict[str, str] = {}
    for p in files:
        stem, ext = split_name(p)
        m = _CHANNEL.match(stem)
        # nnU-Net channel suffix, unless a file of that exact stem has its own label (MSD name ending in digits)
        if m and not (labels_dir / f"{stem}{ext}").exists():
            groups.setdefault(m["case"], {})[int(m["channel"])] = p
            ext_of[m["case"]] = ext
        else:
            groups.setdefault(stem, {})[0] = p
            ext_of[stem] = ext
    cases: list[Case] = []
    for case_id in sorted(groups):
        channels = groups[case_id]
        missing = sorted(set(range(max(channels) + 1)) - set(channels))
        if missing:
            raise DatasetError(f"{images_dir}: case {case_id} lacks channel file(s) {['%04d' % m for m in missing]}")
        label = labels_dir / f"{case_id}{ext_of[case_id]}"
        cases.append(Case(case_id, [channels[i] for i in sorted(channels)], label if label.is_file() else None))
    modality = normalise_modality(info.get("modality", info.get("channel_names")))
    ds = Dataset(
        root=root,
        name=str(info.get("name") or root.name),
        cases=cases,
        label_names=parse_label_names(info.get("labels", {})),
        modality=modality,
        info=info,
    )
    for c in cases:
        c.dataset = ds
    return ds
