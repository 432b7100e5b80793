"""Signals: Ctrl-C exits 130 and SIGTERM 143, both saying "interrupted" and removing the temporary file; a
SIGKILL mid-write leaves no final file, and the next write into the folder removes its temporary file."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from voxsam.cli.main import main
from voxsam.io import Volume, read_volume, write_volume

REPO = Path(__file__).resolve().parents[2]

# A child that converts a volume and blocks after the temporary file is complete but before the rename,
# touching `flag` so the parent knows the write is in progress. It answers Ctrl-C as a terminal's foreground
# process does even when the tests run in the background (a non-interactive shell starts background jobs with
# SIGINT ignored, and Python then keeps it ignored).
CHILD = """
import signal, sys, time
signal.signal(signal.SIGINT, signal.default_int_handler)
import voxsam.io as io
flag = sys.argv[1]
real = io._write_array
def slow(*args, **kwargs):
    real(*args, **kwargs)
    open(flag, "w").close()
    time.sleep(60)
io._write_array = slow
from voxsam.cli.main import main
main(sys.argv[2:])
"""


def _temps(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir() if ".voxsam-tmp-" in p.name)


def _start_write(tmp_path: Path, flag: Path, out: Path) -> subprocess.Popen[str]:
    src = tmp_path / "src.nii.gz"
    if not src.exists():
        rng = np.random.default_rng(0)
        write_volume(Volume(rng.normal(size=(64, 64, 48)).astype(np.float32), np.eye(4)), src)
    env = dict(os.environ, PYTHONPATH=str(REPO / "src"))
    proc = subprocess.Popen([sys.executable, "-c", CHILD, str(flag), "convert", str(src), str(out)],
                            stderr=subprocess.PIPE, stdout=subprocess.PIPE, text=True, env=env)
    deadline = time.monotonic() + 60
    while not flag.exists():
        if proc.poll() is not None or time.monotonic() > deadline:
            proc.kill()
            raise AssertionError(f"the child never started writing: {proc.communicate()}")
        time.sleep(0.02)
    return proc


@pytest.mark.parametrize(("sig", "code", "said"), [(signal.SIGINT, 130, "interrupted\n"), (signal.SIGTERM, 143, "interrupted (SIGTERM)\n")])
def test_signal_mid_write_removes_the_temp_file(tmp_path: Path, sig: int, code: int, said: str) -> None:
    out_dir = tmp_path / "out"
    out_dir.mkdir()
    proc = _start_write(tmp_path, tmp_path / "flag", out_dir / "vol.nii.gz")
    assert len(_temps(out_dir)) == 1  # the complete temporary file, not yet renamed
    proc.send_signal(sig)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == code and err == said, err
    assert list(out_dir.iterdir()) == []  # neither the output nor its temporary file


def test_sigkill_mid_write_then_next_write_cleans(tmp_path: Path) -> None:
    out_dir = tmp_path / "out"
    out_dir.mkdir()
    proc = _start_write(tmp_path, tmp_path / "flag", out_dir / "vol.nii.gz")
    proc.kill()
    proc.communicate(timeout=60)
    assert not (out_dir / "vol.nii.gz").exists()
    (stale,) = _temps(out_dir)
    assert stale.name.startswith(".vol.nii.gz.voxsam-tmp-") and f"-{proc.pid}-" in stale.name
    write_volume(read_volume(tmp_path / "src.nii.gz"), out_dir / "other.nrrd")  # any write into the folder
    assert _temps(out_dir) == [] and sorted(p.name for p in out_dir.iterdir()) == ["other.nrrd"]


def test_ctrl_c_in_process_exits_130(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys) -> None:
    """typer turns KeyboardInterrupt into a *returned* 130 when standalone mode is off; main must not drop it."""
    import voxsam.io as vio

    def interrupted(*args, **kwargs):  # type: ignore[no-untyped-def]
        raise KeyboardInterrupt

    monkeypatch.setattr(vio, "read_volume", interrupted)
    with pytest.raises(SystemExit) as info:
        main(["info", str(tmp_path / "x.nii.gz")])
    assert info.value.code == 130 and capsys.readouterr().err == "interrupted\n"


def test_sigterm_handler_is_restored_after_main(tmp_path: Path, capsys) -> None:
    before = signal.getsignal(signal.SIGTERM)
    with pytest.raises(SystemExit):
        main(["info", str(tmp_path / "missing.nii.gz")])
    assert signal.getsignal(signal.SIGTERM) == before
    assert capsys.readouterr().err.startswith("error: ")
