"""DICOM SEG out and in (highdicom): frame k of a SEG refers to the file of slice k of its source series."""
from __future__ import annotations

import logging
import warnings
from pathlib import Path

import numpy as np

from voxsam.errors import CorruptFileError, UnsupportedFormatError, VoxsamError
from voxsam.io.dicom_scan import SEG_SOP_CLASS_UID
from voxsam.io.volume import Volume

log = logging.getLogger(__name__)


# patient and study attributes a SEG copies from its source (DICOM type 2)
TYPE2_PATIENT_STUDY = (
    "PatientName", "PatientID", "PatientBirthDate", "PatientSex", "StudyDate", "StudyTime",
    "ReferringPhysicianName", "AccessionNumber", "StudyID",
)


def _load_sources(like: Volume) -> list:
    import pydicom

    files = like.meta.get("dicom_files")
    if like.meta.get("resampled"):
        raise UnsupportedFormatError(
            "DICOM SEG output needs the slices of the source files, and this series was resampled onto a regular grid "
            "(--allow-uneven); write .nii.gz, .nrrd or .mha instead"
        )
    if like.source_format != "dicom" or not files:
        raise UnsupportedFormatError(
            "DICOM SEG output needs a DICOM series as the source image; write .nii.gz, .nrrd or .mha instead"
        )
    sources = [pydicom.dcmread(f) for f in files]
    for ds in sources:  # in-memory copies only: tidy values highdicom rejects
        if "SpecificCharacterSet" in ds and not str(ds.SpecificCharacterSet or "").strip():
            del ds.SpecificCharacterSet
        for keyword in TYPE2_PATIENT_STUDY:  # type 2 = must be present, may be empty; some exporters drop them
            if keyword not in ds:
                setattr(ds, keyword, "")
    return sources


def write_dicom_seg(
    labels: np.ndarray, like: Volume, path: Path, label_names: dict[int, str] | None = None
) -> None:
    """Write an (X, Y, Z) label map on a DICOM series' grid as a binary DICOM SEG, one segment per label.

    Frame k of segment s is `labels[:, :, k] == s` transposed to (rows, columns), referencing the
    source file of slice k. Segment numbers are the label values, so reading back gives the same map.
    """
    import highdicom as hd
    from pydicom.sr.codedict import codes

    sources = _load_sources(like)
    values = [int(v) for v in np.unique(labels) if v != 0]
    if not values:
        raise VoxsamError(f"{path}: the mask is empty; DICOM SEG cannot store an empty segmentation")
    if values != list(range(1, len(values) + 1)):
        raise VoxsamError(
            f"{path}: DICOM SEG needs labels 1..N without gaps, got {values[:8]}; relabel before writing"
        )
    # (X, Y, Z) -> (frames=Z, rows=Y, columns=X, segments)
    stack = np.stack([np.transpose(labels == v, (2, 1, 0)) for v in values], axis=-1).astype(np.uint8)
    algorithm = hd.AlgorithmIdentificationSequence(
        name="voxsam", version=_version(), family=codes.cid7162.ArtificialIntelligence
    )
    names = label_names or {}
    descriptions = [
        hd.seg.SegmentDescription(
            segment_number=v,
            segment_label=names.get(v, f"segment {v}")[:64],
            segmented_property_category=codes.cid7150.Tissue,
            segmented_property_type=codes.SCT.Tissue,
            algorithm_type=hd.seg.SegmentAlgorithmTypeValues.SEMIAUTOMATIC,
            algorithm_identification=algorithm,
        )
        for v in values
    ]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # highdicom nags about the source's patient-name style
        try:
            seg = _build_seg(hd, sources, stack, descriptions)
        except (ValueError, AttributeError) as exc:  # the source lacks what a SEG must reference
            raise UnsupportedFormatError(
                f"{path}: the source series cannot carry a DICOM SEG ({' '.join(str(exc).split())}); write .nii.gz, .nrrd or .mha instead"
            ) from None
    seg.save_as(str(path))


def _build_seg(hd, sources: list, stack: np.ndarray, descriptions: list):  # type: ignore[no-untyped-def]
    return hd.seg.Segmentation(
        source_images=sources,
        pixel_array=stack,
        segmentation_type=hd.seg.SegmentationTypeValues.BINARY,
        segment_descriptions=descriptions,
        series_instance_uid=hd.UID(),
        series_number=900,
        sop_instance_uid=hd.UID(),
        instance_number=1,
        manufacturer="voxsam",
        manufacturer_model_name="voxsam",
        software_versions=_version(),
        device_serial_number="0",
        omit_empty_frames=False,
    )


def read_dicom_seg(path: Path, like: Volume) -> np.ndarray:
    """Read a DICOM SEG back as an (X, Y, Z) uint8/uint16 label map on the grid of its source series."""
    import highdicom as hd

    try:
        seg = hd.seg.segread(str(path))
    except Exception as exc:
        raise CorruptFileError(f"{path}: not a readable DICOM SEG ({type(exc).__name__})") from None
    import pydicom

    uids = [str(pydicom.dcmread(f, stop_before_pixels=True).SOPInstanceUID) for f in like.meta["dicom_files"]]
    pixels = seg.get_pixels_by_source_instance(
        source_sop_instance_uids=uids, combine_segments=True, relabel=False, assert_missing_frames_are_empty=True
    )  # (slices, rows, columns)
    return np.ascontiguousarray(np.transpose(pixels, (2, 1, 0)))


def _version() -> str:
    from voxsam._version import __version__

    return __version__
