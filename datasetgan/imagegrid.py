"""Image grids: many small images tiled into one PNG a person can look at."""

from __future__ import annotations

import math

import numpy as np

from .atomic import atomic_write_bytes
from .png import png_bytes


def make_grid(images: np.ndarray, cols: int | None = None, pad: int = 1, pad_value: int = 0) -> np.ndarray:
    """uint8 images [N, H, W, C] (C = 1 or 3) -> one uint8 image [rows*(H+pad)-pad, cols*(W+pad)-pad, C].

    ``cols`` defaults to the smallest count that makes the grid at least as wide as tall.
    """
    images = np.asarray(images)
    if images.ndim != 4 or images.dtype != np.uint8:
        raise ValueError(f"expected uint8 images [N, H, W, C], got {images.dtype} {images.shape}")
    n, h, w, c = images.shape
    cols = cols or max(1, math.ceil(math.sqrt(n)))
    rows = max(1, math.ceil(n / cols))
    grid = np.full((rows * (h + pad) - pad, cols * (w + pad) - pad, c), pad_value, dtype=np.uint8)
    for i in range(n):
        r, k = divmod(i, cols)
        grid[r * (h + pad) : r * (h + pad) + h, k * (w + pad) : k * (w + pad) + w] = images[i]
    return grid


def save_grid(path, images: np.ndarray, cols: int | None = None, pad: int = 1) -> None:
    """Tile uint8 images [N, H, W, C] into a grid and write it atomically as PNG."""
    atomic_write_bytes(path, png_bytes(make_grid(images, cols, pad)))
