"""k-fold splits of a training set: each fold trains on k-1 parts and holds one part out."""
from __future__ import annotations

import numpy as np


def kfold(n: int, k: int, seed: int = 0) -> list[tuple[np.ndarray, np.ndarray]]:
    """[(train indices, held-out indices)] for k folds over n items, shuffled by ``seed``.

    The held-out parts are disjoint and together cover 0..n-1; their sizes differ by at most one.
    ``k=1`` trains once on everything (no held-out part).
    """
    if k < 1:
        raise ValueError(f"the number of folds must be at least 1, got {k}")
    if k > 1 and n < k:
        raise ValueError(f"cannot make {k} folds from {n} item(s)")
    if n < 1:
        raise ValueError("cannot make folds from an empty set")
    order = np.random.default_rng(seed).permutation(n)
    if k == 1:
        return [(np.sort(order), np.zeros(0, dtype=np.int64))]
    parts = np.array_split(order, k)
    return [(np.sort(np.concatenate(parts[:i] + parts[i + 1:])), np.sort(parts[i])) for i in range(k)]
