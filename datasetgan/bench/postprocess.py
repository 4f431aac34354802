"""Post-processing of predicted label maps, each reported as its own row of the benchmark:

* small-component removal (the pneumothorax pipeline's heuristic): connected components (8-connected)
  of a foreground class smaller than ``min_area`` pixels become background; ``auto`` picks the area on
  the fold's held-out part, among :func:`area_candidates`, maximising the foreground mean Dice;
* the prior-only baseline: the per-pixel majority class of the training masks, whatever the image.
"""

from __future__ import annotations

import numpy as np

from .metrics import confusion_matrix, scores_from_confusion

AUTO_AREAS_AT_64 = (0, 2, 4, 8, 16, 32, 64)  # pixels at 64x64, scaled with the image area


def remove_small_components(pred: np.ndarray, min_area: int) -> np.ndarray:
    """Label maps [N, H, W] with every foreground component below ``min_area`` pixels set to 0."""
    from scipy.ndimage import label

    out = np.array(pred, copy=True)
    if min_area <= 1:
        return out
    eight = np.ones((3, 3), dtype=bool)
    for i in range(len(out)):
        for c in np.unique(out[i]):
            if c == 0:
                continue
            comps, n = label(out[i] == c, structure=eight)
            sizes = np.bincount(comps.ravel(), minlength=n + 1)
            small = np.flatnonzero(sizes < min_area)
            small = small[small > 0]
            if len(small):
                out[i][np.isin(comps, small)] = 0
    return out


def area_candidates(resolution: int) -> list[int]:
    scale = (resolution / 64) ** 2
    return sorted({int(round(a * scale)) for a in AUTO_AREAS_AT_64})


def choose_min_area(pred: np.ndarray, truth: np.ndarray, num_classes: int, candidates) -> int:
    """The candidate area whose removal gives the best foreground mean Dice on (pred, truth); ties go
    to the smaller area."""
    best, best_dice = 0, -1.0
    for area in sorted(candidates):
        dice = scores_from_confusion(confusion_matrix(remove_small_components(pred, area), truth, num_classes))[
            "mdice_fg"
        ]
        if dice == dice and dice > best_dice + 1e-12:  # NaN-safe
            best, best_dice = area, dice
    return best


def prior_map(masks: np.ndarray, num_classes: int) -> tuple[np.ndarray, np.ndarray]:
    """(majority class uint8 [H, W], its frequency float [H, W]) over training masks [N, H, W]."""
    masks = np.asarray(masks)
    counts = np.stack([(masks == c).sum(0) for c in range(num_classes)])
    return counts.argmax(0).astype(np.uint8), (counts.max(0) / max(len(masks), 1)).astype(np.float32)
