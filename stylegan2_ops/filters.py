"""FIR filter helpers shared by every backend."""

from __future__ import annotations

import torch


def setup_filter(f=(1, 3, 3, 1), normalize=True, separable=True, device="cpu") -> torch.Tensor:
    """Make a float32 FIR filter tensor from a list of taps.

    A 1D list gives a separable filter (applied along x then y) unless ``separable=False``, in
    which case its outer product is returned as a 2D filter. ``normalize`` scales the taps so the
    2D filter sums to 1 (unit DC gain).
    """
    f = torch.as_tensor(f, dtype=torch.float32, device=device)
    if f.ndim == 0:
        f = f[None]
    if f.ndim == 1 and not separable:
        f = torch.outer(f, f)
    if f.ndim not in (1, 2):
        raise ValueError(f"a filter must be 1D or 2D, got shape {tuple(f.shape)}")
    if normalize:
        f = f / f.sum()
    return f


def filter_size(f) -> int:
    return f.shape[-1]


def up_padding(f, up: int) -> tuple[int, int, int, int]:
    """Padding that makes upfirdn2d(x, f, up) exactly ``up`` times larger and centred."""
    k = filter_size(f)
    p0 = (k + up - 1) // 2
    p1 = (k - up) // 2
    return p0, p1, p0, p1


def down_padding(f, down: int) -> tuple[int, int, int, int]:
    """Padding that makes upfirdn2d(x, f, down=down) exactly ``down`` times smaller and centred."""
    k = filter_size(f)
    p0 = (k - down + 1) // 2
    p1 = (k - down) // 2
    return p0, p1, p0, p1
