"""Hypothesis settings of the hostile-input suite: small, deterministic, and nothing written into the repo."""
from __future__ import annotations

import tempfile
from pathlib import Path

from hypothesis import settings
from hypothesis.configuration import set_hypothesis_home_dir

set_hypothesis_home_dir(str(Path(tempfile.gettempdir()) / "voxsam-hypothesis"))  # not ./.hypothesis
settings.register_profile("voxsam-reliability", database=None, deadline=None, derandomize=True)
settings.load_profile("voxsam-reliability")
