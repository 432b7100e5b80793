"""Which CT window an object is encoded under.

The slice engines map CT to [0, 1] through one soft-tissue window (`ct_window`, [-160, 240] HU: what LiteMedSAM
and the fine-tuned decoders saw). Aerated lung lies far below it: a click in a lung shows the model a flat black
field whose lobes, fissures and vessels are gone, and it segments whatever edge it finds. When the prompted
tissue has lung parenchyma's density (`LUNG_TISSUE_HU`) and the window shows it black, the prompted slice is also
segmented under common clinical lung windows, and the window whose mask the model rates best (predicted IoU;
for a painted slice: how well the model redraws it from its box) is kept for the whole object, its propagation
and later edits. Pure air (an airway's or a bowel's lumen, below -950 HU) keeps the soft window: the object
around a lumen is its wall, and under a lung window the model took the lumen alone (head-and-neck training
cases; docs/benchmarks.md "Lung windows"). Bone is left alone too: a bone window lowered mandible Dice on
head-and-neck training cases (0.291 -> 0.254).
"""
from __future__ import annotations

import numpy as np

#: lung windows (low, high) in HU: level -600 / width 1500 (the usual preset), -700 / 1000 and -500 / 1000
LUNG_WINDOWS: tuple[tuple[float, float], ...] = ((-1350.0, 150.0), (-1200.0, -200.0), (-1000.0, 0.0))

#: densities (HU) that get the lung windows: aerated lung, between air (-950, the emphysema threshold) and the
#: -500 usual for lung masks; above it the tissue is not aerated lung
LUNG_TISSUE_HU: tuple[float, float] = (-950.0, -500.0)


def prompted_intensity(
    display: np.ndarray, points: np.ndarray | None, labels: np.ndarray | None, box: np.ndarray | None, mask: np.ndarray | None
) -> float | None:
    """Median stored intensity (HU for CT) of the tissue a slice's prompts point at.

    Args:
        display: (H, W) the prompted slice in display orientation, stored values.
        points: (N, 2) display (row, column) clicks, with `labels` (N,) 1 positive / 0 negative: the pixels
            clicked (not a neighbourhood: next to an airway's wall, one would mix lumen and wall into lung's density).
        box: (4,) display (r0, c0, r1, c1); its central half is taken when there are no positive clicks.
        mask: (H, W) bool, a painted or earlier mask of the slice: it wins over clicks and box.
    Returns:
        the median, or None when the prompts cover no pixel.
    """
    H, W = display.shape
    pick = np.zeros((H, W), dtype=bool)
    if mask is not None and mask.any():
        pick = mask
    elif points is not None and labels is not None and (labels == 1).any():
        rc = np.clip(np.round(points[labels == 1]).astype(int), 0, [H - 1, W - 1])
        pick[rc[:, 0], rc[:, 1]] = True
    elif box is not None:
        r0, c0, r1, c1 = box
        dr, dc = (r1 - r0) / 4, (c1 - c0) / 4
        pick[max(int(round(r0 + dr)), 0):int(round(r1 - dr)) + 1, max(int(round(c0 + dc)), 0):int(round(c1 - dc)) + 1] = True
    values = display[pick]
    values = values[np.isfinite(values)]
    return float(np.median(values)) if values.size else None


def candidate_windows(is_ct: bool, window: tuple[float, float], intensity: float | None) -> list[tuple[float, float]]:
    """The windows to try for an object whose prompted tissue has `intensity`: none (keep `window`) unless it
    is CT of lung density (`LUNG_TISSUE_HU`) that `window` shows black, then `window` itself and the lung windows."""
    if not is_ct or intensity is None or intensity >= window[0]:
        return []
    if not LUNG_TISSUE_HU[0] < intensity < LUNG_TISSUE_HU[1]:
        return []
    return [window, *(w for w in LUNG_WINDOWS if w != window)]
