"""`memory3d` engine: SAM2-3dMed's way to a 3D mask - slices as the frames of a video, each propagated slice
conditioned on a memory bank of the slices decided before it.

The same walk as `slice2d` (anchor slice, both directions at once, the same stopping rules and editing),
with one difference per propagated slice k: its frozen LiteMedSAM embedding first attends to the bank
(`Memory3D.condition`): the prompted slice and any painted slice as conditioning memories, plus the most
recent slices decided on the way, each with its signed offset to k. The conditioned embedding is decoded
with the previous slice's box (`propagation_prompt`, as slice2d) and the decided slice joins the bank
(`Memory3D.memorize`). A correction on another slice is a new anchor whose mask is a conditioning memory,
so re-propagating from it is SAM2's way to edit. Slices are encoded once, only when visited (cached).
"""
from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from voxsam.engines.memory3d.options import Memory3DOptions
from voxsam.engines.options import validate_options
from voxsam.engines.slice2d.engine import Slice2DEngine
from voxsam.engines.slice2d.loading import load_model
from voxsam.engines.slice2d.slices import PreparedVolume, SliceInput, SliceResult
from voxsam.errors import CheckpointError
from voxsam.prompts import Box, Point, PromptSet

log = logging.getLogger(__name__)

#: memory3d weights trained by this project (see weights/MEMORY3D_MODEL_CARD.md)
BUNDLED_MEMORY = Path(__file__).resolve().parents[2] / "weights" / "memory3d.pt"


@dataclass
class Bank:
    """One propagation's memories (shared by both directions) and its slice axis."""

    axis: int
    memories: list[Any] = field(default_factory=list)
    step: int = 1  # slices per walk step: memories sit at index / step, so decided neighbours are 1 apart

    def position(self, k: int) -> float:
        return k / self.step


class Memory3DEngine(Slice2DEngine):
    """Memory propagation over slices (SAM2-3dMed). Options: `Memory3DOptions`; `memory` overrides the weights.

    Slices are encoded by the released LiteMedSAM encoder, or, when the memory file holds an encoder tail
    (trained with `model.encoder_tail`), through that last stage + neck (only on a model loaded here: a
    `model` passed in is used as it is)."""

    name = "memory3d"

    def __init__(self, options: Memory3DOptions | None = None, model: Any = None, memory: Any = None, **overrides: Any) -> None:
        if options is None:
            options = validate_options("memory3d", Memory3DOptions, overrides)  # type: ignore[assignment]
        elif overrides:
            options = options.model_copy(update=dict(validate_options("memory3d", Memory3DOptions, overrides).model_dump(exclude_unset=True)))
        assert isinstance(options, Memory3DOptions)
        own_model = model is None
        if own_model:
            # the encoder the memory was trained on: the released one, whatever encoder tail a slice2d decoder
            # file carries, unless the memory file holds its own tail
            model = load_model(options, encoder_tail=False)
        if memory is None:
            memory = load_memory_model(options, model)
        tail = getattr(memory, "encoder_tail", None)
        if tail is not None and own_model:
            from voxsam.models.memory3d import apply_encoder_tail

            apply_encoder_tail(model, tail, f"{options.memory_weights or BUNDLED_MEMORY}: encoder tail")
        super().__init__(options, model)
        self.options: Memory3DOptions = options
        self.memory = memory.float().eval()
        if options.prompt_decoder == "memory":
            # prompted slices too go through the memory model's decoder (with no memory), as in training
            self.slices.decoder = lambda emb, **prompts: self.memory.decode(self.memory.condition(emb, [], 0), **prompts)

    # ------------------------------------------------------------------ slice2d's hooks
    def _chain_context(
        self, prepared: PreparedVolume, axis: int, anchor: int, start: np.ndarray, locked: dict[int, np.ndarray],
        prompts: PromptSet, old: np.ndarray | None,
    ) -> Bank:
        """The bank's conditioning memories: the anchor, painted slices and, when editing, the old mask on the
        slices of the object's earlier 2D prompts on this axis (SAM2 keeps every prompted frame)."""
        bank = Bank(axis, step=1 if old is not None else self.slice_step(prepared, axis))  # as the walk's stride
        view = prepared.view(axis)
        conditioning = {anchor: start, **locked}
        if old is not None:
            earlier_prompts: list[Box | Point] = [*prompts.boxes, *prompts.points]
            for prompt in earlier_prompts:
                ref = prompt.slice
                if ref is not None and ref.axis == axis and ref.index not in conditioning:
                    earlier = view.take(old, ref.index)  # already in display orientation
                    if earlier.any():
                        conditioning[ref.index] = earlier
        for k, mask in conditioning.items():
            emb, geom = self.slices.embedding(prepared, axis, k)
            bank.memories.append(self._memorize(emb, geom, mask, bank.position(k), conditioning=True))
        return bank

    def _segment_next(
        self, context: Any, prepared: PreparedVolume, axis: int, k: int, points: np.ndarray | None, labels: np.ndarray | None,
        box: np.ndarray | None, mask_prompt: np.ndarray | None, expand: float,
    ) -> SliceResult:
        import torch

        from voxsam.models.memory3d import select_memories

        cfg = self.memory.config
        here = context.position(k)
        chosen = select_memories(context.memories, here, cfg.max_bank, cfg.max_conditioning) if self.options.use_memory else []

        floor, blend = self.options.memory_agreement, self.options.memory_blend

        def decode(emb: Any, **prompts: Any) -> Any:
            low, iou = self.memory.decode(self.memory.condition(emb, chosen, here), **prompts)
            if (floor <= 0 and blend <= 0) or not chosen:
                return low, iou
            if self.options.agreement_reference == "slice2d":
                plain_low, plain_iou = self.slices.model.decode(emb, **prompts)  # slice2d's own answer
            else:
                plain_low, plain_iou = self.memory.decode(self.memory.condition(emb, [], here), **prompts)
            a, b = low > 0, plain_low > 0
            both = (a.sum(dim=(1, 2, 3)) + b.sum(dim=(1, 2, 3))).clamp(min=1)
            keep = (2 * (a & b).sum(dim=(1, 2, 3)) / both >= floor).view(-1, 1, 1, 1)  # per prompt set
            # two answers of one decoder, with and without the memory: their weighted mean (an ensemble of two)
            low, iou = torch.lerp(low, plain_low, blend), torch.lerp(iou, plain_iou, blend)
            return torch.where(keep, low, plain_low), torch.where(keep.view(-1, 1), iou, plain_iou)

        with torch.inference_mode():
            return self.slices.segment_with(prepared, axis, k, points, labels, box, mask_prompt, expand, decode=decode)

    def _accept(self, context: Any, k: int, result: SliceResult) -> None:
        context.memories.append(self._memorize(result.embedding, result.geom, result.mask, context.position(k), conditioning=False))

    def _memorize(self, emb: Any, geom: SliceInput, display: np.ndarray, position: float, conditioning: bool) -> Any:
        """A memory of a decided slice from its display mask (as +-10 logits on the 256 grid, as in training)."""
        import torch

        from voxsam.engines.slice2d.slices import prompt_tensors

        grid = prompt_tensors(geom, mask=display)["mask_input"]  # (1, 1, 256, 256) binary on the model grid
        with torch.inference_mode():
            return self.memory.memorize(emb, grid * 20.0 - 10.0, position, conditioning=conditioning)


def load_memory_model(options: Memory3DOptions, sam2d: Any) -> Any:
    """The memory model: `memory_weights`, else the bundled file; without either, a fresh one on `sam2d`'s
    prompt encoder + decoder whose memory attention is still zero: it then decodes exactly as slice2d (said in
    the log)."""
    from voxsam.models.memory3d import build_memory3d, load_memory3d

    path = options.memory_weights or (BUNDLED_MEMORY if BUNDLED_MEMORY.is_file() else None)
    if path is not None:
        if not Path(path).is_file():
            raise CheckpointError(f"{path}: no such memory3d weights file")
        return load_memory3d(path)
    log.warning("memory3d: no trained weights (%s is missing); the memory is untrained and changes nothing", BUNDLED_MEMORY)
    return build_memory3d("litemedsam_mem", sam2d=sam2d)
