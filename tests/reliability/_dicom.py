"""Tiny synthetic DICOM CT series written with pydicom (uncompressed, 16-bit), for hostile-input tests."""
from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np

STUDY_UID = "1.2.826.0.1.3680043.8.498.1"
CT_IMAGE_STORAGE = "1.2.840.10008.5.1.4.1.1.2"


def write_slice(
    path: Path,
    pixels: np.ndarray,
    position: Sequence[float],
    orientation: Sequence[float] = (1.0, 0.0, 0.0, 0.0, 1.0, 0.0),
    spacing: Sequence[float] = (0.8, 0.8),
    series_uid: str = "1.2.826.0.1.3680043.8.498.10",
    description: str = "synthetic CT",
    instance: int = 1,
) -> Path:
    """One CT slice: `pixels` is (rows, columns) int16 (stored, rescale slope 1, intercept -1024)."""
    from pydicom.dataset import Dataset, FileMetaDataset
    from pydicom.uid import ExplicitVRLittleEndian, generate_uid

    sop_uid = generate_uid()
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = CT_IMAGE_STORAGE
    meta.MediaStorageSOPInstanceUID = sop_uid
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = Dataset()
    ds.file_meta = meta
    ds.SOPClassUID = CT_IMAGE_STORAGE
    ds.SOPInstanceUID = sop_uid
    ds.StudyInstanceUID = STUDY_UID
    ds.SeriesInstanceUID = series_uid
    ds.SeriesDescription = description
    ds.Modality = "CT"
    ds.PatientName = "Test^Hostile"
    ds.PatientID = "hostile"
    ds.InstanceNumber = instance
    ds.ImagePositionPatient = [float(v) for v in position]
    ds.ImageOrientationPatient = [float(v) for v in orientation]
    ds.PixelSpacing = [float(v) for v in spacing]
    ds.SliceThickness = 1.0
    arr = np.ascontiguousarray(pixels, dtype=np.int16)
    ds.Rows, ds.Columns = arr.shape
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = "MONOCHROME2"
    ds.BitsAllocated = 16
    ds.BitsStored = 16
    ds.HighBit = 15
    ds.PixelRepresentation = 1
    ds.RescaleIntercept = -1024
    ds.RescaleSlope = 1
    ds.PixelData = arr.tobytes()
    ds.save_as(str(path), enforce_file_format=True)
    return path


def write_series(
    folder: Path,
    positions_z: Sequence[float],
    shape: tuple[int, int] = (12, 10),
    series_uid: str = "1.2.826.0.1.3680043.8.498.10",
    description: str = "synthetic CT",
    orientation: Sequence[float] = (1.0, 0.0, 0.0, 0.0, 1.0, 0.0),
    prefix: str = "slice",
) -> list[Path]:
    """A series with one slice at each z (mm, along the normal of `orientation`); slice value = 10 * z."""
    folder.mkdir(parents=True, exist_ok=True)
    row, col = np.asarray(orientation[:3], float), np.asarray(orientation[3:], float)
    normal = np.cross(row, col)
    paths = []
    for n, z in enumerate(positions_z):
        pixels = np.full(shape, int(round(10 * z)) + 1024, dtype=np.int16)
        pixels[0, 0] = 0  # not constant: a little structure
        position = np.array([-5.0, -4.0, 0.0]) + normal * float(z)
        paths.append(write_slice(folder / f"{prefix}_{n:03d}.dcm", pixels, position, orientation,
                                 series_uid=series_uid, description=description, instance=n + 1))
    return paths
