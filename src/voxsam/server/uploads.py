"""Uploaded volumes: streamed to a private temporary folder under a size limit; zipped DICOM series checked
for path escapes and zip bombs before anything is extracted."""
from __future__ import annotations

import shutil
import stat
import tempfile
import zipfile
from collections.abc import AsyncIterator
from pathlib import Path, PurePosixPath

from voxsam.errors import ResourceLimitError, UnsupportedFormatError
from voxsam.io.formats import format_from_name

MAX_ZIP_MEMBERS = 20_000
MAX_ZIP_RATIO = 200  # uncompressed / compressed, per member
ZIP_EXPANSION = 4  # the members together may hold at most this many times the upload limit
# single files a client can send alone (a detached .nhdr/.mhd header would need its data file)
UPLOAD_SUFFIXES = (".nii", ".nii.gz", ".nrrd", ".mha", ".mgz", ".mgh", ".dcm", ".zip")


def check_upload_name(filename: str) -> str:
    """The base name of an upload, refused (UnsupportedFormatError) unless its suffix is readable alone."""
    name = PurePosixPath(filename.replace("\\", "/")).name.strip()
    if not name or not name.lower().endswith(UPLOAD_SUFFIXES):
        raise UnsupportedFormatError(
            f"upload {filename!r}: send one of {', '.join(UPLOAD_SUFFIXES)} (a DICOM series as a .zip)"
        )
    return name


async def receive(chunks: AsyncIterator[bytes], filename: str, limit: int) -> tuple[Path, Path]:
    """Write the upload's bytes to a new temporary folder; returns (folder, file). Beyond `limit` bytes the
    transfer stops and the folder is removed (ResourceLimitError)."""
    name = check_upload_name(filename)
    folder = Path(tempfile.mkdtemp(prefix="voxsam-upload-"))
    target = folder / name
    size = 0
    try:
        with open(target, "wb") as fh:
            async for chunk in chunks:
                size += len(chunk)
                if size > limit:
                    raise ResourceLimitError(f"upload {name}: larger than the limit of {limit / 2**20:.0f} MiB")
                fh.write(chunk)
        if size == 0:
            raise UnsupportedFormatError(f"upload {name}: empty")
    except BaseException:
        shutil.rmtree(folder, ignore_errors=True)
        raise
    return folder, target


def unpack(archive: Path, limit: int) -> Path:
    """Extract a zipped DICOM series (or one zipped volume file) next to the archive after checking it;
    returns what to read: the one volume file, or the folder holding the most files."""
    try:
        zf = zipfile.ZipFile(archive)
    except (zipfile.BadZipFile, OSError) as exc:
        raise UnsupportedFormatError(f"upload {archive.name}: not a readable zip archive ({exc})") from None
    with zf:
        members = [m for m in zf.infolist() if not m.is_dir()]
        _check_members(archive.name, members, limit)
        root = archive.parent / "unpacked"
        root.mkdir()
        for member in members:
            dest = root.joinpath(*PurePosixPath(member.filename).parts)
            dest.parent.mkdir(parents=True, exist_ok=True)
            with zf.open(member) as src, open(dest, "wb") as out:
                _copy_bounded(src, out, member.file_size, archive.name)
    archive.unlink()
    files = [p for p in root.rglob("*") if p.is_file()]
    volumes = [p for p in files if format_from_name(p) not in (None, "dicom")]
    if len(volumes) == 1 and len(files) == 1:
        return volumes[0]
    folders: dict[Path, int] = {}
    for p in files:
        folders[p.parent] = folders.get(p.parent, 0) + 1
    return max(folders, key=lambda f: (folders[f], -len(f.parts)))


def _check_members(name: str, members: list[zipfile.ZipInfo], limit: int) -> None:
    if not members:
        raise UnsupportedFormatError(f"upload {name}: the archive is empty")
    if len(members) > MAX_ZIP_MEMBERS:
        raise ResourceLimitError(f"upload {name}: {len(members)} files in the archive (at most {MAX_ZIP_MEMBERS})")
    total = 0
    for m in members:
        path = PurePosixPath(m.filename.replace("\\", "/"))
        if path.is_absolute() or ".." in path.parts or (path.parts and ":" in path.parts[0]):
            raise UnsupportedFormatError(f"upload {name}: member {m.filename!r} would be written outside the archive's folder")
        if stat.S_ISLNK(m.external_attr >> 16):
            raise UnsupportedFormatError(f"upload {name}: member {m.filename!r} is a symbolic link")
        if m.file_size > MAX_ZIP_RATIO * max(m.compress_size, 1) and m.file_size > 2**20:
            raise ResourceLimitError(f"upload {name}: member {m.filename!r} expands {m.file_size / max(m.compress_size, 1):.0f}x (a zip bomb?)")
        total += m.file_size
    if total > ZIP_EXPANSION * limit:
        raise ResourceLimitError(f"upload {name}: the archive expands to {total / 2**20:.0f} MiB (at most {ZIP_EXPANSION * limit / 2**20:.0f})")


def _copy_bounded(src, out, declared: int, name: str) -> None:  # type: ignore[no-untyped-def]
    """Copy one member, refusing one that holds more than its header declares (a forged size)."""
    written = 0
    while chunk := src.read(2**20):
        written += len(chunk)
        if written > declared:
            raise ResourceLimitError(f"upload {name}: a member holds more than its declared size")
        out.write(chunk)
