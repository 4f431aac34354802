"""Backend selection: which implementation serves an operation for a given tensor."""
from __future__ import annotations

import os

from . import ref

BACKENDS = ("ref", "cpu", "cuda")
ENV_VAR = "STYLEGAN2_OPS_BACKEND"


def requested(backend: str | None) -> str:
    """The backend asked for by argument, else by environment variable, else 'auto'."""
    name = backend or os.environ.get(ENV_VAR, "auto") or "auto"
    if name not in BACKENDS + ("auto",):
        raise ValueError(f"unknown stylegan2_ops backend {name!r}; choose auto, {', '.join(BACKENDS)}")
    return name


def select(op: str, x, backend: str | None = None):
    """Return the module implementing ``op`` for tensor ``x``.

    Only the reference backend exists so far; compiled backends plug in here.
    """
    requested(backend)
    return ref
