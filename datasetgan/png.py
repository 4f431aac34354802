"""PNG encoding: the one place where uint8 pixel arrays become PNG bytes.

Pillow writes the same bytes for the same array, which the byte-identical pairs rely on.
"""

from __future__ import annotations

import io

import numpy as np
from PIL import Image


def png_bytes(array: np.ndarray) -> bytes:
    """uint8 [H, W], [H, W, 1] or [H, W, 3] -> PNG bytes (8-bit grayscale or RGB)."""
    a = np.asarray(array)
    if a.ndim == 3 and a.shape[2] == 1:
        a = a[..., 0]
    buf = io.BytesIO()
    Image.fromarray(a).save(buf, format="PNG")
    return buf.getvalue()
