"""Options of the `classic` engine (validated; `voxsam engines` prints them with their defaults)."""
from __future__ import annotations

from typing import Literal

from pydantic import Field

from voxsam.engines.options import EngineOptions


class ClassicOptions(EngineOptions):
    """How the classic engine builds its ROI, seeds and solver (see `voxsam.engines.classic.engine`)."""

    method: Literal["growcut", "random_walker"] = Field("growcut", description="solver: Fast GrowCut or Grady's random walker")
    margin_mm: float = Field(60.0, gt=0, allow_inf_nan=False, description="ROI margin around the positive clicks, mm")
    box_margin_mm: float = Field(6.0, gt=0, allow_inf_nan=False, description="ROI margin around a box, mm")
    max_roi_voxels: int = Field(128**3, ge=8**3, description="the ROI is resampled onto a coarser grid above this many voxels")
    seed_radius_mm: float = Field(2.0, ge=0, allow_inf_nan=False, description="radius of the seed ball around each click, mm")
    beta: float = Field(2.0, gt=0, allow_inf_nan=False, description="random-walker edge sharpness")
    smooth_mm: float = Field(1.0, ge=0, allow_inf_nan=False, description="Gaussian smoothing of the normalised ROI (sigma, mm); 0 disables")
    border_contrast: float = Field(3.0, allow_inf_nan=False, description="image-border ROI faces seed background only beyond this many robust SDs from the target")
    cg_tol: float = Field(1e-2, gt=0, allow_inf_nan=False, description="random walker: relative residual at which conjugate gradients stop")
    cg_max_iter: int = Field(40, ge=1, description="random walker: iteration cap of the finest level")
    growcut_lambda: float = Field(0.01, ge=0, allow_inf_nan=False, description="GrowCut spatial cost per step")
    growcut_max_voxels: int = Field(96**3, ge=8**3, description="working-grid cap of GrowCut")
    growcut_power: float = Field(1.0, gt=0, allow_inf_nan=False, description="exponent of GrowCut's intensity cost")
    prior_weight: float = Field(0.05, ge=0, allow_inf_nan=False, description="random walker: weight of the intensity prior")
    incremental: bool = Field(True, description="GrowCut: a further click inside the ROI updates the previous solve instead of solving again")
    reuse_margin_mm: float = Field(30.0, ge=0, allow_inf_nan=False, description="GrowCut: a further positive click reuses the ROI when at least this far inside its faces, mm")
    prior_width: float = Field(2.0, gt=0, allow_inf_nan=False, description="random walker: prior width in robust SDs")
