"""`Prompts`: one checked batch of prompt tensors, what `decoding.check_prompts` returns and both the exact
decoder (`decoding.decode_prompts`) and the fast one (`fast_decoder.fast_decode`) take."""
from __future__ import annotations

from dataclasses import dataclass

from torch import Tensor


@dataclass(frozen=True)
class Prompts:
    """Validated prompts of a batch of B prompt sets (see `check_prompts`).

    Attributes:
        embeddings: (B, P, n, n) image (or memory-conditioned) embeddings, expanded to the batch.
        points: (B, N, 2) float or None; labels: (B, N) long in {-1, 0, 1} (with points) or None.
        boxes: (B, K, 4) float or None; mask_input: (B, 1, 4n, 4n) float or None.
        batch: B.
    """

    embeddings: Tensor
    points: Tensor | None
    labels: Tensor | None
    boxes: Tensor | None
    mask_input: Tensor | None
    batch: int
