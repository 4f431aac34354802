"""Seeds: their range, the ``1,2,5-9`` syntax and a reproducible random choice.

A seed names files with 8 digits (pairs ``{seed:08d}.png``, annotation items ``seed_{seed:08d}``),
so every stage accepts seeds 0..MAX_SEED and no more.
"""

from __future__ import annotations

import re

import numpy as np

from .errors import DatasetganError

MAX_SEED = 10**8 - 1
MAX_RANGE = 100_001  # seeds in one a-b range of parse_seeds


class SeedError(DatasetganError, ValueError):
    pass


def check_seed(seed) -> int:
    if not 0 <= int(seed) <= MAX_SEED:
        raise SeedError(f"seed {seed} is out of range 0..{MAX_SEED}")
    return int(seed)


def parse_seeds(text: str) -> list[int]:
    """'1,2,5-9' -> [1, 2, 5, 6, 7, 8, 9] (order kept, repeats dropped)."""
    seeds: list[int] = []
    for part in (p.strip() for p in text.split(",")):
        if re.fullmatch(r"[0-9]+", part, re.ASCII):
            seeds.append(int(part))
        elif m := re.fullmatch(r"([0-9]+)\s*-\s*([0-9]+)", part, re.ASCII):
            lo, hi = int(m[1]), int(m[2])
            if hi < lo or hi - lo >= MAX_RANGE:
                raise SeedError(f"range {part} must go upwards and hold at most {MAX_RANGE} seeds")
            seeds.extend(range(lo, hi + 1))
        elif part:
            raise SeedError(f"{part!r} is not a seed or a range like 5-9")
    bad = [s for s in seeds if s > MAX_SEED]
    if bad:
        raise SeedError(f"seeds must be in 0..{MAX_SEED}, got {bad[:5]}")
    if not seeds:
        raise SeedError("no seeds given")
    return list(dict.fromkeys(seeds))


def random_seeds(n: int, rng_seed: int) -> list[int]:
    """n distinct seeds from a seeded RNG; the first k of n are the same for every n >= k."""
    rng = np.random.default_rng(rng_seed)
    out: dict[int, None] = {}
    while len(out) < n:
        out.setdefault(int(rng.integers(0, MAX_SEED + 1)), None)
    return list(out)
