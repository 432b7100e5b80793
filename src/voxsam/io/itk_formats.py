"""NRRD (.nrrd, .nhdr) and MetaImage (.mha, .mhd) through SimpleITK."""
from __future__ import annotations

import re
from pathlib import Path

import numpy as np

from voxsam.errors import CorruptFileError, InvalidGeometryError, InvalidImageError
from voxsam.io.quiet import quiet_native
from voxsam.io.validate import check_affine, check_declared_size, check_finite, squeeze_to_volume
from voxsam.io.volume import Volume
from voxsam.transforms.geometry import array_affine_to_sitk, sitk_to_array_affine


def read_itk(path: Path, fmt: str) -> Volume:
    """Read an NRRD or MetaImage file; multi-component pixels become channels (X, Y, Z, C)."""
    import SimpleITK as sitk

    with quiet_native() as said:  # ITK warnings and MetaIO/NrrdIO chatter must not precede our error line
        try:
            _check_data_file(path)
            reader = sitk.ImageFileReader()
            reader.SetFileName(str(path))
            reader.ReadImageInformation()
            dim = reader.GetDimension()
            spacing = reader.GetSpacing()
            if dim == 2:
                raise InvalidImageError(f"{path}: is a 2D image; voxsam needs a 3D volume")
            if dim != 3:
                raise InvalidImageError(f"{path}: has {dim} dimensions; voxsam reads 3D {fmt.upper()} volumes")
            pixel = sitk.GetPixelIDValueAsString(reader.GetPixelID())
            if "complex" in pixel.lower():
                raise InvalidImageError(f"{path}: holds complex voxels ({pixel}); voxsam needs real-valued intensities")
            check_affine(np.eye(4), path, spacing=spacing)
            components = max(int(reader.GetNumberOfComponents()), 1)
            voxel_bytes = components * _bytes_per_component(pixel)
            check_declared_size(list(reader.GetSize()), voxel_bytes, path)
            _check_inline_data_size(path, int(np.prod(reader.GetSize(), dtype=np.int64)) * voxel_bytes, fmt)
            image = reader.Execute()
        except (InvalidImageError, InvalidGeometryError, CorruptFileError):
            raise
        except RuntimeError as exc:
            failure: RuntimeError | None = exc
        else:
            failure = None
    if failure is not None:
        text = " ".join(str(failure).split()).lower()
        if "determinant is 0" in text or "bad direction" in text:
            raise InvalidGeometryError(
                f"{path}: the voxel-to-world matrix is singular: its axis directions are linearly dependent "
                "(the header's direction matrix has determinant 0); the geometry is unusable"
            ) from None
        raise CorruptFileError(f"{path}: {_read_failure(path, fmt, failure, said.text)}") from None
    array, affine = sitk_to_array_affine(image)
    array = squeeze_to_volume(array, path)
    check_affine(affine, path)
    check_finite(array, path)
    meta = {"itk_metadata": {k: reader.GetMetaData(k) for k in reader.GetMetaDataKeys()}}
    return Volume(array=array, affine=affine, source_format=fmt, path=path, meta=meta)


def _bytes_per_component(pixel: str) -> int:
    """Bytes of one component of an ITK pixel type named like "16-bit signed integer" (8 when unknown)."""
    bits = re.search(r"(\d+)-bit", pixel)
    return int(bits.group(1)) // 8 if bits else 8


def _header_fields(path: Path) -> dict[str, str]:
    """The "key = value" (MetaImage) or "key: value" (NRRD) lines of a detached header, keys lower-case."""
    fields: dict[str, str] = {}
    try:
        with open(path, "rb") as fh:
            head = fh.read(64 * 1024).decode("latin-1")
    except OSError:
        return fields
    for line in head.splitlines():
        if not line.strip():
            break  # NRRD: the header ends at the first blank line
        key, sep, value = line.partition("=" if path.suffix.lower() == ".mhd" else ":")
        if sep:
            fields[key.strip().lower()] = value.strip().lstrip("=").strip()
    return fields


def _check_inline_data_size(path: Path, expected: int, fmt: str) -> None:
    """An uncompressed MetaImage (.mha) or raw NRRD whose voxels follow its header must hold them all: said
    before ITK allocates the whole volume only to find the file short."""
    if path.suffix.lower() not in (".mha", ".nrrd"):
        return
    try:
        with open(path, "rb") as fh:
            head = fh.read(64 * 1024)
        size = path.stat().st_size
    except OSError:
        return
    if path.suffix.lower() == ".mha":
        marker = re.search(rb"ElementDataFile\s*=\s*LOCAL[ \t]*\r?\n", head)
        if marker is None or re.search(rb"CompressedData\s*=\s*True", head[: marker.start()], re.IGNORECASE):
            return
        start = marker.end()
    else:
        end = head.find(b"\n\n")
        if end < 0:
            return
        fields = head[:end].decode("latin-1").lower()
        if not re.search(r"^encoding:\s*raw\s*$", fields, re.MULTILINE) or re.search(r"^data ?file:", fields, re.MULTILINE):
            return
        start = end + 2
    have = size - start
    if have < expected:
        raise CorruptFileError(
            f"{path}: the {fmt.upper()} file is truncated or corrupt: its pixel data holds {max(have, 0)} of the "
            f"{expected} bytes its header declares"
        )


def _check_data_file(path: Path) -> None:
    """A detached header (.mhd, .nhdr) must name a data file that exists."""
    suffix = path.suffix.lower()
    if suffix not in (".mhd", ".nhdr"):
        return
    fields = _header_fields(path)
    name = fields.get("elementdatafile") if suffix == ".mhd" else fields.get("data file") or fields.get("datafile")
    if not name or name.upper() == "LOCAL" or name.upper().startswith("LIST") or "%" in name or " " in name:
        return  # data in the header file, or a list / pattern we leave to ITK
    data = (path.parent / name) if not Path(name).is_absolute() else Path(name)
    if not data.is_file():
        raise CorruptFileError(f"{path}: its data file {data} does not exist (the header names it)")


def _read_failure(path: Path, fmt: str, exc: BaseException, said: str) -> str:
    """Why ITK could not read the file, cause first (ITK's own reason can be misleading: a truncated MetaImage
    is reported as "No such file or directory")."""
    said_flat = " ".join(said.split())
    sizes = re.search(r"ideal\s*=\s*(\d+)\s*:\s*actual\s*=\s*(\d+)", said_flat)
    if sizes:
        return (f"the {fmt.upper()} file is truncated or corrupt: its pixel data holds {sizes.group(2)} of the "
                f"{sizes.group(1)} bytes its header declares")
    reason = _itk_reason(exc)
    full = " ".join(str(exc).split())
    got = re.search(r"fread got only (\d+) (\d+)-sized things, not (\d+)", full)
    if got:
        have, size, want = (int(g) for g in got.groups())
        return (f"the {fmt.upper()} file is truncated or corrupt: its pixel data holds {have * size} of the "
                f"{want * size} bytes its header declares")
    low = (full + " " + said_flat).lower()
    if path.is_file() and ("no such file" in low or "not read completely" in low or "unexpected end" in low
                           or "premature" in low or "truncat" in low or "read failed" in low or "gzread" in low
                           or "_nrrdencoding" in low):
        return f"the {fmt.upper()} file is truncated or corrupt (its pixel data could not be read)"
    if "allocate" in low or "bad_alloc" in low:
        return f"the {fmt.upper()} header declares more data than fits in memory; the file is corrupt"
    return f"cannot read {fmt.upper()} ({reason})"


def write_itk(array: np.ndarray, like: Volume, path: Path) -> None:
    """Write an (X, Y, Z) array on `like`'s grid as NRRD or MetaImage (compressed)."""
    import SimpleITK as sitk

    image = array_affine_to_sitk(array, like.affine)
    with quiet_native() as said:
        try:
            sitk.WriteImage(image, str(path), useCompression=True)
        except RuntimeError as exc:
            failure: RuntimeError | None = exc
        else:
            failure = None
    if failure is not None:
        _raise_write_failure(path, failure, said.text)


def _raise_write_failure(path: Path, exc: RuntimeError, said: str) -> None:
    """ITK write errors as OSError (errno from the message), so the atomic writer says them plainly."""
    import errno

    text = (_itk_reason(exc) + " " + " ".join(said.split())).strip()
    low = text.lower()
    if "no space" in low or "disk full" in low or "quota" in low:
        raise OSError(errno.ENOSPC, "No space left on device", str(path))
    if "permission denied" in low:
        raise OSError(errno.EACCES, "Permission denied", str(path))
    raise OSError(errno.EIO, f"cannot write ({text[:160]})", str(path))


def _itk_reason(exc: BaseException) -> str:
    """ITK errors are multi-line with C++ file names; keep the informative tail of the first message."""
    text = " ".join(str(exc).split())
    for marker in ("ERROR:", "Description:"):
        if marker in text:
            text = text.split(marker, 1)[1]
    return text.strip()[:200] or "unreadable"
