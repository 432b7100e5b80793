"""Config sections of the memory3d training family (`family: memory3d`): model, data (windows), window
sampling and loss weights."""
from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from voxsam.training.config import ModelSectionBase, SourceSection, TrainConfig


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class Memory3DModelSection(ModelSectionBase):
    preset: Literal["litemedsam_mem"] = "litemedsam_mem"
    decoder: Literal["bundled", "litemedsam"] = Field(
        default="bundled", description="Prompt encoder + mask decoder to start from: slice2d's fine-tuned ones "
        "(src/voxsam/weights/slice2d_decoder.pt; an encoder tail in that file is left out) or LiteMedSAM's as released.")
    srpp: bool = Field(default=True, description="Slice relative position prediction head and loss.")
    bd: bool = Field(default=True, description="Boundary detection head and loss.")
    freeze_decoder: bool = Field(default=False, description="Train only the memory (memory encoder, memory "
                                 "attention, heads): the prompt encoder and mask decoder stay as they start, so an "
                                 "untrained memory decodes exactly as the decoder it starts from.")
    overrides: dict[str, Any] = Field(default_factory=dict, description="Memory3DConfig fields (e.g. memory_pool).")
    pretrained: bool = Field(default=True, description="Encode with the released LiteMedSAM encoder (false: "
                             "a random one, tests only).")
    encoder_tail: str | None = Field(default=None, description="A slice2d decoder file holding the encoder's last "
                                     "stage + neck (trained with slice2d's model.train_last_stage), or 'bundled' for "
                                     "src/voxsam/weights/slice2d_decoder.pt: slices are encoded through that tail "
                                     "(frozen; its own embedding cache), and the memory3d file keeps it for the engine. "
                                     "None: the tail of the model.init file if it has one, else the released encoder.")


class Memory3DDataSection(_Strict):
    sources: list[SourceSection] = Field(min_length=1)
    cache_dir: Path = Path("cache/slice2d")
    max_embeddings: int = Field(default=1400, ge=2, description="Cached slice embeddings at most (2 MB each).")
    run_slices: int = Field(default=12, ge=2, description="Consecutive slices per cached run.")
    runs_per_target: int = Field(default=1, ge=1)
    overhang: int = Field(default=3, ge=0, description="A run may start this many slices beyond the object.")
    min_pixels: int = Field(default=20, ge=1)
    ct_window: tuple[float, float] | None = Field(default=None, description="HU mapped to [0, 1] before encoding "
                                                  "CT slices (default the engines' default; their ct_window must match).")
    step_mm: float | None = Field(default=None, gt=0, le=50, description="Runs take every n-th slice, n = "
                                  "floor(step_mm / slice spacing) (at least 1): the stride the engines walk at "
                                  "(their step_mm, 2.5 by default: every 4th slice of 0.625 mm MRI). None: "
                                  "consecutive slices.")
    plan_seed: int = 0


class Memory3DWindowSection(_Strict):
    lengths: list[int] = Field(default_factory=lambda: [3, 6, 12], min_length=1, description="Window lengths "
                               "(slices), drawn uniformly per sample; a run shorter than the draw is used whole.")
    p_box: float = Field(default=0.6, ge=0, description="The prompted slice gets a jittered box ...")
    p_points: float = Field(default=0.2, ge=0, description="... or clicks ...")
    p_box_points: float = Field(default=0.2, ge=0, description="... or both.")
    box_jitter_px: tuple[float, float] = (-5.0, 20.0)
    box_jitter_ref_px: float = 64.0
    box_expand_px: float = Field(default=4.0, ge=0, description="A propagated slice's box prompt grows by this "
                                 "(the engine's box_expand_px).")
    carry_box: bool = Field(default=True, description="Propagated slices also get the previous prediction's box "
                            "(as the engine's propagation_prompt=box); false: memory alone.")
    srpp_weight: float = Field(default=0.01, ge=0)
    bd_weight: float = Field(default=0.1, ge=0)
    iou_loss_weight: float = Field(default=1.0, ge=0)


class Memory3DTrainConfig(TrainConfig):
    family: Literal["memory3d"] = "memory3d"
    model: Memory3DModelSection = Field(default_factory=Memory3DModelSection)
    data: Memory3DDataSection
    window: Memory3DWindowSection = Field(default_factory=Memory3DWindowSection)
