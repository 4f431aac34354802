"""k-fold splits of a training set: each fold trains on k-1 parts and holds one part out."""

from __future__ import annotations

import numpy as np

from ..errors import ConfigError


def kfold(n: int, k: int, seed: int = 0) -> list[tuple[np.ndarray, np.ndarray]]:
    """[(train indices, held-out indices)] for k folds over n items, shuffled by ``seed``.

    The held-out parts are disjoint and together cover 0..n-1; their sizes differ by at most one.
    ``k=1`` trains once on everything (no held-out part).
    """
    if k < 1:
        raise ConfigError(f"the number of folds must be at least 1, got {k}")
    if k > 1 and n < k:
        raise ConfigError(f"cannot make {k} folds from {n} item(s)")
    if n < 1:
        raise ConfigError("cannot make folds from an empty set")
    order = np.random.default_rng(seed).permutation(n)
    if k == 1:
        return [(np.sort(order), np.zeros(0, dtype=np.int64))]
    parts = np.array_split(order, k)
    return [(np.sort(np.concatenate(parts[:i] + parts[i + 1 :])), np.sort(parts[i])) for i in range(k)]


def group_kfold(groups: list[str], k: int, seed: int = 0) -> list[tuple[np.ndarray, np.ndarray]]:
    """Like :func:`kfold`, but items of one group (e.g. slices of one patient) stay in one fold, so the
    held-out score is not inflated by near-duplicates. Groups are shuffled by ``seed`` and each goes,
    largest first, to the fold holding the fewest items."""
    if k < 2:
        return kfold(len(groups), k, seed)
    names, inverse, counts = np.unique(np.asarray(groups, dtype=str), return_inverse=True, return_counts=True)
    if len(names) < k:
        raise ConfigError(f"cannot make {k} folds from {len(names)} group(s)")
    order = np.random.default_rng(seed).permutation(len(names))
    order = order[np.argsort(-counts[order], kind="stable")]
    fold_of, sizes = np.zeros(len(names), dtype=np.int64), np.zeros(k, dtype=np.int64)
    for g in order:
        f = int(np.argmin(sizes))
        fold_of[g] = f
        sizes[f] += counts[g]
    item_fold = fold_of[inverse]
    return [(np.flatnonzero(item_fold != f), np.flatnonzero(item_fold == f)) for f in range(k)]
