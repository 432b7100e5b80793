"""Options of the `memory3d` engine: slice2d's (prompts, stopping rules, cache) plus the memory model's."""
from __future__ import annotations

from pathlib import Path
from typing import Literal, Optional

from pydantic import Field

from voxsam.engines.slice2d.options import Slice2DOptions


class Memory3DOptions(Slice2DOptions):
    """slice2d's options, and which memory model conditions each propagated slice."""

    memory_weights: Optional[Path] = Field(None, description="memory3d weights (voxsam train, family memory3d); default the bundled src/voxsam/weights/memory3d.pt")
    stop_iou: float = Field(0.0, ge=0, le=1, allow_inf_nan=False, description="the object has ended when the predicted IoU of a slice falls below this (off by default: trained on propagated slices, the IoU head is a poor end-of-object signal; the stability and intensity rules decide, docs/benchmarks.md)")
    min_stability: float = Field(0.7, ge=0, le=1, allow_inf_nan=False, description="the object has ended when a slice's mask stability (pixels with logit > 1 over pixels with logit > -1) falls below this; 0 disables")
    intensity_agreement: float = Field(0.75, ge=0, le=1, allow_inf_nan=False, description="the object has ended when fewer of a slice's mask pixels lie in the prompted slice's object intensity band; 0 disables")
    click_grow_iou: float = Field(0.0, ge=0, le=1, allow_inf_nan=False, description="clicks alone: as slice2d's, off by default (memory3d's decoder, trained on MRI and CT boxes, ranks its candidates well; growing lost a left-atrium case)")
    prompt_decoder: Literal["memory", "slice2d"] = Field("memory", description="which decoder answers the prompts of a slice with no memory yet (a click or box starting an object): memory3d's own, or slice2d's fine-tuned one, on memory3d's embeddings (the released encoder's, or through the memory file's encoder tail; slice2d's file's own tail is left out); then the memory takes over from the next slice")
    step_max_mm: Optional[float] = Field(10.0, gt=0, le=100, allow_inf_nan=False, description="as slice2d's: let the walk's stride grow (doubling along a steady shape, up to as many slices as fit in this many mm; failed jumps bisected); memories stay at slice index / base stride, so a jump of twice the base stride is an offset of 2 in the bank (measured neutral on the held-out sets, 11 fewer encodings of 32 on the latency tube: docs/benchmarks.md); null: the fixed base stride the memory was trained at")
    use_memory: bool = Field(True, description="condition propagated slices on the memory bank (false: the memory3d decoder alone, for comparison)")
    agreement_reference: Literal["no_memory", "slice2d"] = Field("no_memory", description="memory_agreement: the memory-free mask a propagated slice's memory mask is checked against and gives way to (and, with memory_blend, is blended with): the memory model's decode of an empty bank (its learned no-memory embedding added, as for a prompted slice in training) or slice2d's (the plain slice embedding, the decoder both engines share)")
    memory_agreement: float = Field(0.5, ge=0, le=1, allow_inf_nan=False, description="propagated slices are also decoded without the memory, and where the two masks' Dice is below this the memory-free mask is kept (a memory that led the walk off the object; one more decode per slice, no encoding; chosen on training cases, docs/benchmarks.md); 0: off")
    memory_blend: float = Field(0.0, ge=0, lt=1, allow_inf_nan=False, description="propagated slices: the weight of the memory-free decode (agreement_reference) in the logits and predicted IoU, the memory decode's weight being 1 minus it (an ensemble of the two answers; the memory_agreement check still compares the memory mask alone); 0: the memory decode alone")
