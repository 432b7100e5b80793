"""Config sections of the slice2d training family (`family: slice2d`): model, data, prompts, interaction."""
from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

from voxsam.training.config import ModelSectionBase, SourceSection, TrainConfig


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class Slice2DModelSection(ModelSectionBase):
    preset: Literal["litemedsam"] = "litemedsam"
    pretrained: bool = Field(default=True, description="Start from (and encode with) the released LiteMedSAM weights.")
    overrides: dict[str, Any] = Field(default_factory=dict, description="Sam2DConfig fields (random models only: tests).")
    train_last_stage: bool = Field(default=False, description="Train the image encoder's last stage and neck too "
                                   "(their input is cached instead of the embedding: 320 x 64 x 64 float16 per slice).")


class Slice2DDataSection(_Strict):
    sources: list[SourceSection] = Field(min_length=1)
    cache_dir: Path = Path("cache/slice2d")
    max_embeddings: int = Field(default=1500, ge=1, description="Cached slice embeddings at most (2 MB each).")
    slices_per_target: int = Field(default=8, ge=1, description="Slices per target along the acquisition axis.")
    other_axes_slices: int = Field(default=4, ge=0, description="Slices per target along each other axis.")
    other_axes_max_ratio: float = Field(default=2.0, ge=1, description="Other axes too when max/min spacing <= this.")
    other_axes_delay: int = Field(default=2, ge=0, description="Other axes' slices are chosen after this many "
                                  "of the acquisition axis's (when the budget is short).")
    min_pixels: int = Field(default=20, ge=1, description="A slice is a target slice when the label has this many pixels.")
    beyond_ends: bool = Field(default=False, description="Also cache the slice just past each end of a target along "
                              "the acquisition axis (the label absent, its neighbour holds it): samples drawn there "
                              "(prompts.p_beyond) teach an empty mask where a walk should stop.")
    ct_window: tuple[float, float] | None = Field(default=None, description="HU mapped to [0, 1] before encoding "
                                                  "CT slices (default the engines' default; their ct_window must match).")
    plan_seed: int = 0

    @field_validator("sources")
    @classmethod
    def _images(cls, v: list[SourceSection]) -> list[SourceSection]:
        for s in v:
            if s.label_maps:
                raise ValueError(f"source {s.name!r}: slice2d trains on images, label_maps sources have none")
        return v


class Slice2DPromptSection(_Strict):
    p_points: float = Field(default=0.15, ge=0)
    p_box: float = Field(default=0.2, ge=0)
    p_mask: float = Field(default=0.25, ge=0)
    p_box_mask: float = Field(default=0.25, ge=0)
    p_points_mask: float = Field(default=0.15, ge=0)
    p_click_box: float = Field(default=0.0, ge=0, description="One click and a square box of a random size around it "
                               "(the engine's answer to a click alone); the target stays the whole object.")
    click_box_mm: tuple[float, float] = Field(default=(15.0, 160.0), description="Side of click_box boxes: "
                                              "log-uniform in this range (mm).")
    positives: tuple[int, int] = (1, 3)
    negatives: tuple[int, int] = (0, 2)
    interior: float = Field(default=0.5, ge=0, le=1, description="Clicks where the contour distance >= this x its max.")
    box_jitter_px: tuple[float, float] = (-5.0, 20.0)
    box_jitter_ref_px: float = Field(default=64.0, gt=0, description="Jitter x min(1, max(0.25, side / this)).")
    neighbour_prob: float = Field(default=0.5, ge=0, le=1, description="A mask prompt from slice k+-1 instead of k.")
    p_beyond: float = Field(default=0.0, ge=0, le=1, description="A sample is a slice past the target's end "
                            "(data.beyond_ends) this often: the box and / or mask of the last slice holding the "
                            "label as the prompt (what propagation feeds there), an empty target.")
    rotate_deg: float = Field(default=10.0, ge=0)
    scale: tuple[float, float] = (0.9, 1.1)
    translate_px: float = Field(default=5.0, ge=0)
    morph_px: int = Field(default=3, ge=0)


class Slice2DInteractionSection(_Strict):
    correction_prob: float = Field(default=0.5, ge=0, le=1)
    correction_rounds: int = Field(default=2, ge=0)
    correction_box_prob: float = Field(default=0.5, ge=0, le=1, description="A box-less sample's corrections "
                                       "also get the previous prediction's box (the engine's edit prompt).")
    iou_loss_weight: float = Field(default=1.0, ge=0)


class Slice2DTrainConfig(TrainConfig):
    family: Literal["slice2d"] = "slice2d"
    model: Slice2DModelSection = Field(default_factory=Slice2DModelSection)
    data: Slice2DDataSection
    prompts: Slice2DPromptSection = Field(default_factory=Slice2DPromptSection)
    interaction: Slice2DInteractionSection = Field(default_factory=Slice2DInteractionSection)


# ---------------------------------------------------------------------- the model
