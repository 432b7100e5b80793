"""Which reader/writer handles a path: decided from the name (and, for DICOM, the content)."""
from __future__ import annotations

from pathlib import Path

from voxsam.errors import InputNotFoundError, UnsupportedFormatError

# extension -> format name; one reader and one writer module per format
EXTENSIONS: dict[str, str] = {
    ".nii": "nifti",
    ".nii.gz": "nifti",
    ".nrrd": "nrrd",
    ".nhdr": "nrrd",
    ".mha": "mha",
    ".mhd": "mha",
    ".mgz": "mgz",
    ".mgh": "mgz",
    ".dcm": "dicom",
}
WRITABLE = ("nifti", "nrrd", "mha", "mgz", "dicom")


def format_from_name(path: Path) -> str | None:
    """The format a file name announces, or None."""
    name = path.name.lower()
    for ext in sorted(EXTENSIONS, key=len, reverse=True):
        if name.endswith(ext):
            return EXTENSIONS[ext]
    return None


def is_dicom_file(path: Path) -> bool:
    """True when the file has the DICOM preamble ("DICM" at byte 128)."""
    try:
        with open(path, "rb") as fh:
            fh.seek(128)
            return fh.read(4) == b"DICM"
    except OSError:
        return False


def detect_input_format(path: Path) -> str:
    """Format of an existing input path: a folder is a DICOM series; files go by name, then content."""
    if not path.exists():
        raise InputNotFoundError(f"{path}: no such file or folder")
    if path.is_dir():
        return "dicom"
    fmt = format_from_name(path)
    if fmt is not None:
        return fmt
    if is_dicom_file(path):
        return "dicom"
    raise UnsupportedFormatError(
        f"{path}: unknown file type; voxsam reads .nii/.nii.gz, .nrrd/.nhdr, .mha/.mhd, .mgz/.mgh and DICOM"
    )


def detect_output_format(path: Path) -> str:
    """Format to write, from the output file name."""
    fmt = format_from_name(path)
    if fmt is None:
        raise UnsupportedFormatError(
            f"{path}: unknown output type; use .nii.gz, .nii, .nrrd, .mha, .mgz, or .dcm (DICOM SEG)"
        )
    return fmt
