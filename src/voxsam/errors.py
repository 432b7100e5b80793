"""The one exception family of voxsam.

Every error a user can cause (a bad file, a bad prompt, a bad checkpoint) is a `VoxsamError`
subclass with a one-line message that names the file or value and the problem, cause first. The CLI
turns any `VoxsamError` into that line on stderr and exit code 2, with no traceback (docs/reliability.md
lists the exit codes).
"""
from __future__ import annotations


class VoxsamError(Exception):
    """Base class of every error voxsam raises on purpose."""


class UnsupportedFormatError(VoxsamError):
    """The file extension or content is not a format voxsam reads or writes."""


class CorruptFileError(VoxsamError):
    """The file exists but cannot be decoded (truncated, empty, garbled header)."""


class InvalidImageError(VoxsamError):
    """The image decodes but is not a usable 3D volume (2D, 5D, NaN/inf voxels, ...)."""


class InvalidGeometryError(VoxsamError):
    """Spacing or orientation is unusable (zero or negative spacing, singular affine)."""


class SliceSpacingError(InvalidGeometryError):
    """The slices of a DICOM series are not evenly spaced: a missing slice, uneven steps, two slices at one
    position, or slices shifted within their plane. `allow_uneven=True` resamples gaps and uneven steps."""


class MixedSeriesError(InvalidImageError):
    """The slices of one DICOM series cannot be stacked: mixed orientation, size or pixel spacing."""


class GeometryMismatchError(VoxsamError):
    """Two volumes that must share a voxel grid (image and label) do not."""


class NoDicomError(VoxsamError):
    """A folder was given as a DICOM series but holds no readable DICOM image series."""


class SeveralSeriesError(VoxsamError):
    """A DICOM folder holds several image series and none was chosen (`--series UID`, API `series=`)."""


class DatasetError(VoxsamError):
    """A dataset folder (MSD / nnU-Net layout) is missing parts or is inconsistent."""


class PromptError(VoxsamError):
    """A prompt is invalid: outside the volume, NaN coordinates, a bad label."""


class EmptyMaskError(VoxsamError):
    """An engine found nothing at the prompts (an empty mask): `segment` exits 2 instead of writing it."""


class CheckpointError(VoxsamError):
    """A checkpoint cannot be loaded: truncated, another architecture, missing keys."""


class ConfigError(VoxsamError):
    """A configuration value or name is invalid (unknown engine, preset, protocol, ...)."""


class OutputPathError(VoxsamError):
    """An output path is unusable: it is an input, or its folder does not exist."""


class InputNotFoundError(VoxsamError):
    """An input file or folder does not exist."""


class DiskFullError(OutputPathError):
    """Writing an output ran out of disk space (or quota); nothing was left under the output name."""


class ResourceLimitError(VoxsamError):
    """An input beyond a set limit: an upload too large, an archive that expands too much, a volume larger
    than the server's memory budget."""
