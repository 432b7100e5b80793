"""All geometry in one place: affines, RAS<->LPS, SimpleITK <-> (array, affine), grid checks.

Conventions: arrays are indexed (i, j, k) = (x, y, z) as nibabel gives them; affines map
(i, j, k, 1) to RAS+ millimetres. SimpleITK arrays are (k, j, i) and its physical space is LPS;
`sitk_to_array_affine` and `array_affine_to_sitk` are the only crossings.
"""
from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:  # pragma: no cover
    import SimpleITK as sitk

# Diagonal flip between LPS (DICOM/ITK) and RAS (NIfTI/nibabel) world axes.
LPS_TO_RAS = np.diag([-1.0, -1.0, 1.0, 1.0])


def apply_affine(affine: np.ndarray, points: np.ndarray) -> np.ndarray:
    """Apply a (4, 4) affine to (N, 3) points (or one (3,) point); returns float64 of the same shape."""
    pts = np.asarray(points, dtype=np.float64)
    single = pts.ndim == 1
    pts = np.atleast_2d(pts)
    out = pts @ affine[:3, :3].T + affine[:3, 3]
    return out[0] if single else out


def spacing_of(affine: np.ndarray) -> np.ndarray:
    """Voxel size (3,) in mm along i, j, k."""
    return np.linalg.norm(np.asarray(affine)[:3, :3], axis=0)


def orientation_code(affine: np.ndarray) -> str:
    """Anatomical direction of each voxel axis as a 3-letter code ("RAS", "LPS", "LIP", ...)."""
    import nibabel as nib

    return "".join(nib.orientations.aff2axcodes(affine))


def affine_from_sitk_geometry(
    origin: tuple[float, ...], spacing: tuple[float, ...], direction: tuple[float, ...]
) -> np.ndarray:
    """RAS affine from ITK's LPS origin (3,), spacing (3,) and row-major direction (9,)."""
    d = np.asarray(direction, dtype=np.float64).reshape(3, 3)
    lps = np.eye(4)
    lps[:3, :3] = d * np.asarray(spacing, dtype=np.float64)[None, :]
    lps[:3, 3] = origin
    return LPS_TO_RAS @ lps


def sitk_geometry_from_affine(affine: np.ndarray) -> tuple[tuple[float, ...], tuple[float, ...], tuple[float, ...]]:
    """Inverse of `affine_from_sitk_geometry`: (origin, spacing, direction) in ITK's LPS terms."""
    lps = LPS_TO_RAS @ np.asarray(affine, dtype=np.float64)
    spacing = np.linalg.norm(lps[:3, :3], axis=0)
    direction = lps[:3, :3] / spacing[None, :]
    return tuple(lps[:3, 3].tolist()), tuple(spacing.tolist()), tuple(direction.ravel().tolist())


def sitk_to_array_affine(image: sitk.Image) -> tuple[np.ndarray, np.ndarray]:
    """SimpleITK image -> (array (X, Y, Z) or (X, Y, Z, C), RAS affine (4, 4))."""
    import SimpleITK as sitk

    arr = sitk.GetArrayFromImage(image)  # (k, j, i) or (k, j, i, C)
    if image.GetNumberOfComponentsPerPixel() > 1:
        arr = np.transpose(arr, (2, 1, 0, 3))
    else:
        arr = np.transpose(arr, (2, 1, 0))
    affine = affine_from_sitk_geometry(image.GetOrigin(), image.GetSpacing(), image.GetDirection())
    return np.ascontiguousarray(arr), affine


def sitk_into_slab(image: sitk.Image, out: np.ndarray, k0: int) -> None:
    """Copy a SimpleITK image of n slices into `out[:, :, k0:k0 + n]` ((k, j, i) -> (X, Y, Z), components
    last), straight from its buffer: no whole-volume copy or transposition."""
    import SimpleITK as sitk

    view = sitk.GetArrayViewFromImage(image)  # (k, j, i) or (k, j, i, C) over the image's buffer
    out[:, :, k0:k0 + view.shape[0]] = np.swapaxes(view, 0, 2) if view.ndim == 3 else view.transpose(2, 1, 0, 3)


def array_affine_to_sitk(array: np.ndarray, affine: np.ndarray) -> sitk.Image:
    """(X, Y, Z) array + RAS affine -> SimpleITK image with the same grid."""
    import SimpleITK as sitk

    image = sitk.GetImageFromArray(np.ascontiguousarray(np.transpose(array, (2, 1, 0))))
    origin, spacing, direction = sitk_geometry_from_affine(affine)
    image.SetOrigin(origin)
    image.SetSpacing(spacing)
    image.SetDirection(direction)
    return image


def same_grid(
    shape_a: tuple[int, ...], affine_a: np.ndarray, shape_b: tuple[int, ...], affine_b: np.ndarray, tol_mm: float = 1e-3
) -> bool:
    """True when two grids have the same shape and their corner voxels lie within `tol_mm`."""
    if tuple(shape_a[:3]) != tuple(shape_b[:3]):
        return False
    return bool(np.abs(corner_points(shape_a, affine_a) - corner_points(shape_b, affine_b)).max() <= tol_mm)


def corner_points(shape: tuple[int, ...], affine: np.ndarray) -> np.ndarray:
    """World (RAS mm) coordinates (8, 3) of the centres of the eight corner voxels of a grid."""
    x, y, z = (int(s) - 1 for s in shape[:3])
    ijk = np.array([[i, j, k] for i in (0, x) for j in (0, y) for k in (0, z)], dtype=np.float64)
    return apply_affine(affine, ijk)


def resample_to_grid(
    array: np.ndarray,
    affine: np.ndarray,
    target_shape: tuple[int, int, int],
    target_affine: np.ndarray,
    order: int = 0,
    cval: float = 0.0,
) -> np.ndarray:
    """Resample an (X, Y, Z) array onto another grid in physical space.

    Args:
        array: source voxels (X, Y, Z).
        affine: source RAS affine (4, 4).
        target_shape: (X', Y', Z') of the output grid.
        target_affine: RAS affine of the output grid.
        order: 0 nearest (labels), 1 linear (images).
        cval: value outside the source.
    Returns: (X', Y', Z') array of the source's dtype for order 0, float32 otherwise.
    """
    from scipy import ndimage

    # target voxel -> source voxel
    m = np.linalg.inv(affine) @ target_affine
    shape = tuple(int(s) for s in target_shape)
    # scipy's "constant" mode returns cval for a point outside [0, n-1] by any amount, so a grid plane
    # lying exactly on the first or last voxel centre (as crops anchored at the volume's corner do) would
    # come out 0 or not depending on the last bit of rounding. Interpolate with edge extension instead
    # and apply the border ourselves with a tolerance of 1e-3 voxel.
    source = array if order == 0 else array.astype(np.float32, copy=False)
    out = ndimage.affine_transform(source, m[:3, :3], offset=m[:3, 3], output_shape=shape, order=order,
                                   mode="nearest", prefilter=False)
    out[~_inside_source(m, shape, array.shape[:3], tol=1e-3)] = cval
    return out


def _inside_source(m: np.ndarray, target_shape: tuple[int, ...], source_shape: tuple[int, ...], tol: float) -> np.ndarray:
    """(X', Y', Z') bool: target voxels whose source coordinate lies in [-tol, n - 1 + tol] on every axis."""
    idx = [np.arange(n, dtype=np.float64).reshape([-1 if i == a else 1 for i in range(3)]) for a, n in enumerate(target_shape)]
    inside = np.ones(target_shape, dtype=bool)
    for axis in range(3):
        coord = m[axis, 0] * idx[0] + m[axis, 1] * idx[1] + m[axis, 2] * idx[2] + m[axis, 3]
        inside &= (coord >= -tol) & (coord <= source_shape[axis] - 1 + tol)
    return inside


def describe_grid(shape: tuple[int, ...], affine: np.ndarray) -> dict[str, Any]:
    """Plain-data summary of a grid for messages and reports."""
    return {
        "shape": [int(s) for s in shape[:3]],
        "spacing_mm": [round(float(s), 6) for s in spacing_of(affine)],
        "orientation": orientation_code(affine),
        "origin_mm": [round(float(v), 4) for v in np.asarray(affine)[:3, 3]],
    }
