"""DICOM: image series in (through SimpleITK + pydicom), DICOM SEG out and in (through highdicom).

A series is stacked in the slice order GDCM sorts it (by image position along the slice normal); that
order is kept in `Volume.meta["dicom_files"]` so a SEG frame k refers to exactly the file of slice k.
"""
from __future__ import annotations

import logging
import warnings
from pathlib import Path

import numpy as np

from voxsam.errors import CorruptFileError, NoDicomError, UnsupportedFormatError, VoxsamError
from voxsam.io.validate import check_affine, check_finite, squeeze_to_volume
from voxsam.io.volume import Volume
from voxsam.transforms.geometry import sitk_to_array_affine

log = logging.getLogger(__name__)

SEG_SOP_CLASS_UID = "1.2.840.10008.5.1.4.1.1.66.4"


def read_dicom(path: Path, series_uid: str | None = None) -> Volume:
    """Read a DICOM image series from a folder, or from one file of the series (its folder is searched).

    Args:
        path: a folder holding the series, or one of its files.
        series_uid: pick this SeriesInstanceUID when the folder holds several (default: the largest).
    Returns: Volume with array (columns, rows, slices) in Hounsfield units for CT (rescale applied).
    """
    import pydicom
    import SimpleITK as sitk

    folder = path if path.is_dir() else path.parent
    if path.is_file():
        try:
            ds = pydicom.dcmread(str(path), stop_before_pixels=True)
        except Exception as exc:
            raise CorruptFileError(f"{path}: not a readable DICOM file ({type(exc).__name__})") from None
        if str(getattr(ds, "SOPClassUID", "")) == SEG_SOP_CLASS_UID:
            raise UnsupportedFormatError(f"{path}: is a DICOM SEG; read it with voxsam.io.read_dicom_seg(path, like=image)")
        series_uid = series_uid or str(getattr(ds, "SeriesInstanceUID", "")) or None

    reader = sitk.ImageSeriesReader()
    series_ids = list(reader.GetGDCMSeriesIDs(str(folder)))
    if not series_ids:
        raise NoDicomError(f"{folder}: no DICOM image series found in this folder")
    if series_uid is not None:
        if series_uid not in series_ids:
            raise NoDicomError(f"{folder}: series {series_uid} not found (found {len(series_ids)} other series)")
        chosen = series_uid
    else:
        sizes = {sid: len(reader.GetGDCMSeriesFileNames(str(folder), sid)) for sid in series_ids}
        chosen = max(sizes, key=sizes.get)  # type: ignore[arg-type]
        if len(series_ids) > 1:
            log.warning("%s holds %d series; reading the largest (%s, %d files)", folder, len(series_ids), chosen, sizes[chosen])
    files = list(reader.GetGDCMSeriesFileNames(str(folder), chosen))
    try:
        first = pydicom.dcmread(files[0], stop_before_pixels=True)
    except Exception as exc:
        raise CorruptFileError(f"{files[0]}: not a readable DICOM file ({type(exc).__name__})") from None
    if str(getattr(first, "SOPClassUID", "")) == SEG_SOP_CLASS_UID:
        raise NoDicomError(f"{folder}: holds a DICOM SEG but no image series")
    reader.SetFileNames(files)
    try:
        image = reader.Execute()
    except RuntimeError as exc:
        raise CorruptFileError(f"{folder}: cannot read the DICOM series ({' '.join(str(exc).split())[-160:]})") from None
    array, affine = sitk_to_array_affine(image)
    array = squeeze_to_volume(array, folder)
    check_affine(affine, folder, spacing=image.GetSpacing())
    check_finite(array, folder)
    modality = str(getattr(first, "Modality", "")) or None
    meta = {
        "dicom_files": [str(Path(f).resolve()) for f in files],
        "series_uid": chosen,
        "study_uid": str(getattr(first, "StudyInstanceUID", "")),
    }
    return Volume(array=array, affine=affine, source_format="dicom", path=path, meta=meta, modality=modality)


def _load_sources(like: Volume) -> list:
    import pydicom

    files = like.meta.get("dicom_files")
    if like.source_format != "dicom" or not files:
        raise UnsupportedFormatError(
            "DICOM SEG output needs a DICOM series as the source image; write .nii.gz, .nrrd or .mha instead"
        )
    sources = [pydicom.dcmread(f) for f in files]
    for ds in sources:  # in-memory copies only: tidy values highdicom rejects
        if "SpecificCharacterSet" in ds and not str(ds.SpecificCharacterSet or "").strip():
            del ds.SpecificCharacterSet
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
        seg = _build_seg(hd, sources, stack, descriptions)
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
