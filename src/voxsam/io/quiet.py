"""Keep library chatter off the terminal while a file is read, so that an error line comes first.

ITK prints two-line `WARNING: In .../itkImageSeriesReader.hxx` messages, MetaIO and GDCM write to the C++
`std::cerr` directly, nibabel logs and warns about header "fixes". Readers wrap their native calls in
`quiet_native()`: ITK warnings are switched off and whatever C++ code writes to file descriptor 2 is captured
(the text is handed back, so a reader can use it to explain a failure). `quiet_python()` does the same for
Python warnings and nibabel's log.
"""
from __future__ import annotations

import contextlib
import logging
import os
import sys
import tempfile
import warnings
from collections.abc import Iterator


class Captured:
    """The text native code wrote to stderr inside a `quiet_native()` block (filled when the block ends)."""

    def __init__(self) -> None:
        self.text = ""

    def __str__(self) -> str:
        return self.text


@contextlib.contextmanager
def _capture_fd2(captured: Captured) -> Iterator[None]:
    try:
        sys.stderr.flush()
    except (AttributeError, OSError, ValueError):
        pass
    try:
        saved = os.dup(2)
    except OSError:  # no stderr at all (a daemon): nothing to protect
        yield
        return
    with tempfile.TemporaryFile() as sink:
        os.dup2(sink.fileno(), 2)
        try:
            yield
        finally:
            os.dup2(saved, 2)
            os.close(saved)
            sink.seek(0)
            captured.text = sink.read().decode("utf-8", errors="replace")


@contextlib.contextmanager
def quiet_native() -> Iterator[Captured]:
    """Silence ITK warnings and capture C-level stderr for the duration of the block."""
    import SimpleITK as sitk

    captured = Captured()
    before = sitk.ProcessObject.GetGlobalWarningDisplay()
    sitk.ProcessObject.SetGlobalWarningDisplay(False)
    try:
        with _capture_fd2(captured):
            yield captured
    finally:
        sitk.ProcessObject.SetGlobalWarningDisplay(before)


@contextlib.contextmanager
def quiet_python() -> Iterator[None]:
    """Silence Python warnings and nibabel's log (header fixes; voxsam checks the geometry itself)."""
    quiet = logging.getLogger("nibabel.global")
    level = quiet.level
    quiet.setLevel(logging.ERROR)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            yield
    finally:
        quiet.setLevel(level)
