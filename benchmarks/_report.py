"""One way for the benchmark scripts to hand out their JSON: printed, and written (atomically) when asked."""
from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any


def emit_json(report: Any, path: Path | None, indent: int = 2) -> str:
    """Print `report` as JSON and, when `path` is given, write it there (temp file + rename). Returns the text."""
    text = json.dumps(report, indent=indent)
    print(text)
    if path:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
        tmp.write_text(text + "\n")
        os.replace(tmp, path)
    return text
