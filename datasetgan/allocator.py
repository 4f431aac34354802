"""glibc malloc tuning for training on the CPU.

PyTorch's CPU allocator hands large activations straight to glibc. By default glibc serves blocks
above a (dynamic) threshold with fresh mmap() calls and returns freed memory to the kernel at once,
so every training step pays for page faults and zeroing of hundreds of megabytes. Raising the mmap
and trim thresholds and keeping a large top pad lets the heap reuse that memory instead; on this
CPU it nearly halves the time of a training step. Same effect as starting Python with
MALLOC_MMAP_THRESHOLD_=33554432 MALLOC_TRIM_THRESHOLD_=4294967296 MALLOC_TOP_PAD_=1073741824.
"""
from __future__ import annotations

import ctypes
import ctypes.util
import sys

# mallopt() parameter numbers from glibc's <malloc.h>
M_TRIM_THRESHOLD = -1
M_TOP_PAD = -2
M_MMAP_THRESHOLD = -3

SETTINGS = {M_MMAP_THRESHOLD: 32 * 2 ** 20, M_TRIM_THRESHOLD: 2 ** 32 - 1, M_TOP_PAD: 2 ** 30}


def tune_allocator() -> bool:
    """Apply the settings with mallopt(); False (and no change) where glibc is not available."""
    if not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        mallopt = libc.mallopt
    except (OSError, AttributeError):
        return False
    mallopt.argtypes, mallopt.restype = [ctypes.c_int, ctypes.c_int], ctypes.c_int
    # M_TRIM_THRESHOLD is an int in mallopt's signature; clamp to its maximum.
    return all(mallopt(k, min(v, 2 ** 31 - 1)) == 1 for k, v in SETTINGS.items())
