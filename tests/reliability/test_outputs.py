"""Outputs: unwritable folders, a full disk and formats that cannot hold a voxel type are VoxsamErrors said
before any work where they can be; existing outputs need --overwrite; files follow the umask; temporary files
never survive an error, and a dead process's leftovers are cleaned by the next write into the folder."""
from __future__ import annotations

import errno
import os
import stat
import subprocess
import tempfile
from pathlib import Path

import numpy as np
import pytest
import yaml

import voxsam.io as vio
from voxsam.cli.main import main
from voxsam.errors import DiskFullError, OutputPathError
from voxsam.io import Volume, read_volume, write_mask, write_volume
from voxsam.io.atomic import clean_stale_temps, save_torch_atomic, temp_owner

from . import _files as F


def _exit(args: list[str], capfd: pytest.CaptureFixture[str]) -> tuple[int, str]:
    with pytest.raises(SystemExit) as info:
        main(args)
    return int(info.value.code or 0), capfd.readouterr().err


def _litter(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.rglob("*") if ".voxsam-tmp-" in p.name or p.name.endswith(".tmp"))


@pytest.fixture()
def locked(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Path:
    """A folder where creating a file fails with EACCES (as for a user without write permission; the tests
    run as root, which mode bits do not stop)."""
    folder = tmp_path / "locked"
    folder.mkdir()
    real = tempfile.mkstemp

    def mkstemp(*args, **kwargs):  # type: ignore[no-untyped-def]
        d = Path(kwargs.get("dir") or "")
        if d == folder or folder in d.parents:
            raise PermissionError(errno.EACCES, "Permission denied", str(d))
        return real(*args, **kwargs)

    monkeypatch.setattr(tempfile, "mkstemp", mkstemp)
    return folder


def _tiny_image(tmp_path: Path) -> Path:
    arr = np.zeros((16, 16, 12), np.float32)
    arr[4:12, 4:12, 3:9] = 100.0
    return write_volume(Volume(arr, np.eye(4)), tmp_path / "img.nii.gz")


def test_convert_into_unwritable_folder(tmp_path: Path, locked: Path, capfd: pytest.CaptureFixture[str]) -> None:
    src = _tiny_image(tmp_path)
    code, err = _exit(["convert", str(src), str(locked / "out.nrrd")], capfd)
    assert code == 2 and err.startswith(f"error: {locked / 'out.nrrd'}: cannot write in") and "Permission denied" in err
    assert err.count("\n") == 1 and not list(locked.iterdir())


def test_segment_into_unwritable_folder_fails_before_work(tmp_path: Path, locked: Path, capfd, monkeypatch) -> None:
    import voxsam.cli.engine_args as engine_args

    def no_engine(*a, **k):  # type: ignore[no-untyped-def]
        raise AssertionError("the engine must not be built for an output that cannot be written")

    monkeypatch.setattr(engine_args, "build_engine", no_engine)
    src = _tiny_image(tmp_path)
    code, err = _exit(["segment", str(src), "--point", "8,8,6", "--out", str(locked / "m.nii.gz")], capfd)
    assert code == 2 and "cannot write in" in err and err.count("\n") == 1


def test_eval_out_in_unwritable_folder(tmp_path: Path, locked: Path, capfd: pytest.CaptureFixture[str]) -> None:
    src = _tiny_image(tmp_path)
    pair = f"{src}::{src}"
    code, err = _exit(["eval", pair, "-e", "classic", "-p", "center", "--out", str(locked / "run")], capfd)
    assert code == 2 and "cannot write in" in err and err.count("\n") == 1 and not (locked / "run").exists()


def test_eval_out_naming_a_file(tmp_path: Path, capfd: pytest.CaptureFixture[str]) -> None:
    src = _tiny_image(tmp_path)
    code, err = _exit(["eval", f"{src}::{src}", "-e", "classic", "-p", "center", "--out", str(src)], capfd)
    assert code == 2 and err == f"error: {src}: exists and is a file; --out takes a folder (created if missing)\n"


def test_train_out_dir_unwritable(tmp_path: Path, locked: Path, capfd: pytest.CaptureFixture[str]) -> None:
    src = _tiny_image(tmp_path)
    cfg = {"data": {"sources": [{"name": "x", "pairs": [[str(src), str(src)]]}]}, "run": {"out_dir": str(locked / "run")}}
    (tmp_path / "c.yaml").write_text(yaml.safe_dump(cfg))
    code, err = _exit(["train", str(tmp_path / "c.yaml")], capfd)
    assert code == 2 and "run.out_dir" in err and "cannot write in" in err and err.count("\n") == 1


def test_really_unwritable_folder(tmp_path: Path, capfd: pytest.CaptureFixture[str]) -> None:
    """/sys refuses new files even to root on Linux; elsewhere a folder without write permission (non-root)."""
    folder = Path("/sys")
    if os.geteuid() != 0:
        folder = tmp_path / "ro"
        folder.mkdir()
        folder.chmod(0o555)
    try:
        fd, probe = tempfile.mkstemp(dir=folder)
    except OSError:
        pass
    else:  # pragma: no cover - an unusual system
        os.close(fd)
        os.unlink(probe)
        pytest.skip(f"{folder} is writable here")
    code, err = _exit(["convert", str(_tiny_image(tmp_path)), str(folder / "voxsam_out.nii.gz")], capfd)
    assert code == 2 and err.startswith("error: ") and "cannot write in" in err and err.count("\n") == 1


def test_full_disk_is_said_and_leaves_nothing(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capfd) -> None:
    def fill_then_fail(array, like, tmp, fmt, names):  # type: ignore[no-untyped-def]
        Path(tmp).write_bytes(b"partial" * 100)
        raise OSError(errno.ENOSPC, "No space left on device")

    src = _tiny_image(tmp_path)
    vol = read_volume(src)
    monkeypatch.setattr(vio, "_write_array", fill_then_fail)
    with pytest.raises(DiskFullError, match=r"out\.nrrd: the disk is full"):
        write_volume(vol, tmp_path / "out.nrrd")
    with pytest.raises(DiskFullError):
        write_mask(np.ones(vol.shape, np.uint8), vol, tmp_path / "mask.mha")
    code, err = _exit(["convert", str(src), str(tmp_path / "c.nii.gz")], capfd)
    assert code == 2 and "the disk is full" in err and err.count("\n") == 1
    assert _litter(tmp_path) == [] and not (tmp_path / "out.nrrd").exists() and not (tmp_path / "c.nii.gz").exists()


def test_full_disk_on_a_checkpoint(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import torch

    def full(obj, f):  # type: ignore[no-untyped-def]
        f.write(b"x" * 10)
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(torch, "save", full)
    with pytest.raises(DiskFullError, match="last.pt: the disk is full"):
        save_torch_atomic({"a": 1}, tmp_path / "last.pt")
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("command", ["convert", "segment"])
def test_existing_output_needs_overwrite(tmp_path: Path, command: str, capfd, monkeypatch) -> None:
    from tests.session.fakes import CubeEngine
    import voxsam.cli.engine_args as engine_args

    monkeypatch.setattr(engine_args, "build_engine", lambda *a, **k: CubeEngine())
    src = _tiny_image(tmp_path)
    out = tmp_path / "out.nii.gz"
    out.write_bytes(b"keep me")
    args = ["convert", str(src), str(out)] if command == "convert" else ["segment", str(src), "--point", "8,8,6", "--out", str(out)]
    code, err = _exit(args, capfd)
    assert code == 2 and "exists; pass --overwrite" in err and out.read_bytes() == b"keep me"
    main([*args, "--overwrite"])
    assert read_volume(out).shape == (16, 16, 12)


@pytest.mark.parametrize("umask", [0o022, 0o077, 0o002])
def test_outputs_follow_the_umask(tmp_path: Path, umask: int) -> None:
    old = os.umask(umask)
    try:
        a = write_volume(Volume(np.zeros((4, 4, 4), np.int16), np.eye(4)), tmp_path / "a.nrrd")
        b = save_torch_atomic({"x": 1}, tmp_path / "b.pt")
    finally:
        os.umask(old)
    for p in (a, b):
        assert stat.S_IMODE(p.stat().st_mode) == 0o666 & ~umask, oct(p.stat().st_mode)


def _dead_pid() -> int:
    p = subprocess.Popen(["true"])
    p.wait()
    return p.pid


def test_stale_temp_files_are_cleaned_by_the_next_write(tmp_path: Path) -> None:
    dead = tmp_path / f".old.nii.gz.voxsam-tmp-{_dead_pid()}-abc123.nii.gz"
    live = tmp_path / f".busy.nii.gz.voxsam-tmp-{os.getppid()}-def456.nii.gz"  # a live process (our parent)
    other = tmp_path / ".notes.tmp"  # not ours: never touched
    for p in (dead, live, other):
        p.write_bytes(b"half")
    assert temp_owner(dead) is not None and temp_owner(other) is None
    write_volume(Volume(np.zeros((4, 4, 4), np.int16), np.eye(4)), tmp_path / "new.nii.gz")
    assert not dead.exists() and live.exists() and other.exists()
    assert clean_stale_temps(tmp_path) == []


@pytest.mark.parametrize(
    ("dtype", "fmt", "ok"),
    [("int64", ".mgz", True), ("uint64", ".mgz", True), ("int64", ".nii.gz", True), ("uint32", ".mgz", True),
     ("bool", ".nrrd", True), ("float16", ".mha", True), ("complex64", ".nii.gz", False), ("complex128", ".mgz", False)],
)
def test_voxel_types_per_format(tmp_path: Path, dtype: str, fmt: str, ok: bool) -> None:
    arr = (np.arange(4 * 5 * 6).reshape(4, 5, 6) % 7).astype(dtype)
    out = tmp_path / f"x{fmt}"
    if ok:
        back = read_volume(write_volume(Volume(arr, np.eye(4)), out)).array
        np.testing.assert_array_equal(back.astype(np.float64), arr.astype(np.float64))
    else:
        with pytest.raises(vio.UnsupportedFormatError, match="complex"):
            write_volume(Volume(arr, np.eye(4)), out)
        assert not out.exists() and _litter(tmp_path) == []


def test_mgz_refuses_integers_beyond_32_bits(tmp_path: Path, capfd: pytest.CaptureFixture[str]) -> None:
    arr = np.zeros((4, 4, 4), np.int64)
    arr[0, 0, 0] = 2**40
    src = write_volume(Volume(arr, np.eye(4)), tmp_path / "big.nrrd")
    code, err = _exit(["convert", str(src), str(tmp_path / "big.mgz")], capfd)
    assert code == 2 and "MGZ stores integers up to 32 bits" in err and "big.mgz" in err
    assert not (tmp_path / "big.mgz").exists() and _litter(tmp_path) == []


def test_mask_label_types_fit_mgz(tmp_path: Path) -> None:
    vol = read_volume(F.good(tmp_path / "img.nii.gz"))
    labels = np.zeros(vol.shape, np.int64)
    labels[1:3, 1:3, 1:3] = 70000  # uint32 labels: MGZ has no uint32, int32 holds them
    back = read_volume(write_mask(labels, vol, tmp_path / "m.mgz")).array
    assert back.max() == 70000 and np.count_nonzero(back) == 8
