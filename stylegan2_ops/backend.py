"""Backend selection: which implementation serves an operation for a given tensor.

``auto`` (the default) picks ``cuda`` for CUDA tensors and ``cpu`` for CPU tensors; if that backend
cannot be built, it falls back to ``ref`` after one warning that says why. A backend forced by
argument or by the ``STYLEGAN2_OPS_BACKEND`` environment variable is used or fails loudly.
"""

from __future__ import annotations

import functools
import os
import warnings

import torch

from . import ref
from .build import BuildError, load

BACKENDS = ("ref", "cpu", "cuda")
ENV_VAR = "STYLEGAN2_OPS_BACKEND"


def requested(backend: str | None) -> str:
    """The backend asked for by argument, else by environment variable, else 'auto'."""
    name = backend or os.environ.get(ENV_VAR, "auto") or "auto"
    if name not in BACKENDS + ("auto",):
        raise ValueError(f"unknown stylegan2_ops backend {name!r}; choose auto, {', '.join(BACKENDS)}")
    return name


@functools.cache
def compiled(name: str):
    """The FusedBackend for ``cpu`` or ``cuda``; builds on first call; raises BuildError."""
    from .fused import FusedBackend

    lib = load(name)
    dtypes = (torch.float32, torch.float64) if name == "cpu" else (torch.float16, torch.float32, torch.float64)
    return FusedBackend(name, lib, dtypes)


@functools.cache
def compiled_or_none(name: str):
    """Like :func:`compiled` but warns once and returns None when the build fails."""
    try:
        return compiled(name)
    except BuildError as exc:
        warnings.warn(
            f"stylegan2_ops: the {name} backend is unavailable, using the slower reference backend instead ({exc})",
            RuntimeWarning,
            stacklevel=3,
        )
        return None


def select(op: str, x, backend: str | None = None):
    """Return the object implementing ``op`` (an attribute of the same name) for tensor ``x``."""
    name = requested(backend)
    if name == "ref":
        return ref
    device = "cuda" if x.is_cuda else "cpu" if x.device.type == "cpu" else None
    if name == "auto":
        if device is None:
            return ref
        return compiled_or_none(device) or ref
    if device != name:
        raise ValueError(f"stylegan2_ops backend {name!r} cannot run {op} on a {x.device.type} tensor")
    return compiled(name)
