"""`Memory`: one slice's entry in the memory bank, and `select_memories`, the bank's policy.

A memory stores the slice *index* it came from, not an offset, so the same memory serves every
later current slice: its signed offset is ``memory.index - current`` (`Memory.offset`), computed
when the bank conditions a slice (`Memory3D.condition`).
"""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import Tensor


@dataclass(frozen=True)
class Memory:
    """A memorised slice (made by `Memory3D.memorize`).

    Attributes:
        features: (B, D, n, n) memory features (LiteMedSAM preset: (B, 64, 64, 64)).
        pos: (1 or B, D, n, n) their 2D position encoding.
        index: the slice's position along the propagation axis in slices (divided by the walk's step when the
            engine decides every n-th slice, so consecutive decided slices are 1 apart as in training): a
            number, or a (B,) tensor when the batch items come from different slices.
        conditioning: True for a prompted slice (SAM2's conditioning frame), False for a slice
            predicted through the memory.
    """

    features: Tensor
    pos: Tensor
    index: float | Tensor
    conditioning: bool = False

    def offset(self, current: float | Tensor) -> Tensor:
        """Signed offset ``index - current`` in slices, as a float tensor of shape (B,) or ().

        ``current`` may be an int or a (B,) tensor (one current slice per batch item).
        """
        dev = self.features.device
        mine = torch.as_tensor(self.index, device=dev, dtype=torch.float32)
        return mine - torch.as_tensor(current, device=dev, dtype=torch.float32)

    def detach(self) -> "Memory":
        """The same memory without autograd history (for a bank kept across training steps)."""
        return Memory(self.features.detach(), self.pos.detach(), self.index, self.conditioning)


def _distance(memory: Memory, current: float) -> float:
    idx = memory.index
    if isinstance(idx, Tensor):
        return float(idx.float().sub(current).abs().max())
    return float(abs(idx - current))


def select_memories(bank: Sequence[Memory], current: float, max_recent: int = 6,
                    max_conditioning: int = 2) -> list[Memory]:
    """The memories that condition slice ``current``: SAM2's bank policy for a volume.

    Keeps the ``max_conditioning`` conditioning (prompted) memories nearest to ``current`` and the
    ``max_recent`` non-conditioning memories nearest to it (in a sweep these are the most recent).
    A memory of ``current`` itself is never used. Order: as in ``bank`` (attention is order-free).

    Args:
        bank: every memory available (any order).
        current: the index of the slice to condition (int; batch items with tensor indices are
            ranked by their largest distance).
        max_recent, max_conditioning: `Memory3DConfig.max_bank` and ``max_conditioning``.
    Returns:
        the selected memories, a sub-list of ``bank``.
    """
    others = [m for m in bank if _distance(m, current) > 0]
    cond = sorted((m for m in others if m.conditioning), key=lambda m: _distance(m, current))[:max_conditioning]
    recent = sorted((m for m in others if not m.conditioning), key=lambda m: _distance(m, current))[:max_recent]
    keep = {id(m) for m in cond + recent}
    return [m for m in others if id(m) in keep]
