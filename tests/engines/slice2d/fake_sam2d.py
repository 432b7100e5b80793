"""A stand-in for a 2D SAM with the same call signatures: it "segments" the bright pixels (> 0.5 after the
engine's intensity mapping) inside the prompted box, or around the positive clicks, or inside the mask
prompt's box. Deterministic and instant, so the propagation logic is tested without weights."""
from __future__ import annotations

from typing import Any

import numpy as np
import torch
import torch.nn.functional as F


class FakeSam2D:
    device = torch.device("cpu")

    def __init__(self, iou: float = 0.9, logit: float = 4.0) -> None:
        self.iou = iou
        self.logit = logit  # the mask's logit magnitude: under 1 the masks are "unstable" (SAM's stability score 0)
        self.encode_calls = 0
        self.decode_calls: list[dict[str, Any]] = []

    def encode(self, images: torch.Tensor) -> torch.Tensor:
        self.encode_calls += 1
        small = F.avg_pool2d(images[:, :1], 4)  # (B, 1, 64, 64)
        return small.expand(-1, 256, -1, -1).contiguous()

    def decode(self, embeddings: torch.Tensor, points: Any = None, labels: Any = None, boxes: Any = None, mask_input: Any = None, multimask: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
        self.decode_calls.append({"points": points, "labels": labels, "boxes": boxes, "mask": mask_input})
        bright = F.interpolate(embeddings[:, :1].float(), size=(256, 256), mode="nearest")[0, 0] > 0.5
        allowed = torch.zeros(256, 256, dtype=torch.bool)
        if boxes is not None:
            x0, y0, x1, y1 = boxes.reshape(-1, 4)[-1].tolist()
            allowed[int(max(y0, 0)) : int(np.ceil(y1)), int(max(x0, 0)) : int(np.ceil(x1))] = True
        elif mask_input is not None:
            allowed = mask_input[0, 0] > 0.5
            allowed = F.max_pool2d(allowed[None, None].float(), 9, 1, 4)[0, 0] > 0
        if points is not None:
            for (x, y), lab in zip(points[0].tolist(), labels[0].tolist()):
                if lab == 1 and boxes is None:
                    allowed[int(max(y - 70, 0)) : int(y + 70), int(max(x - 70, 0)) : int(x + 70)] = True
        keep = bright & allowed
        if points is not None:
            for (x, y), lab in zip(points[0].tolist(), labels[0].tolist()):
                if lab == 0:
                    keep[int(max(y - 3, 0)) : int(y + 4), int(max(x - 3, 0)) : int(x + 4)] = False
        logits = torch.where(keep, self.logit, -4.0)[None, None]
        return logits, torch.tensor([[self.iou]])
