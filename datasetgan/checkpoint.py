"""Checkpoints: tensors in safetensors, metadata in a JSON sidecar, written as one unit.

``weights.safetensors`` holds the tensors; ``weights.json`` holds the configuration and the SHA-256 of
the safetensors file (see :mod:`datasetgan.weightfiles` for how the pair survives a kill between its
writes). Loading verifies the hash before parsing, so a truncated or tampered file is refused with a
clear message, and nothing is ever unpickled.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import torch
from safetensors.torch import load as st_load
from safetensors.torch import save as st_save

from .networks import Generator, GeneratorConfig
from .weightfiles import FORMAT, CheckpointError, check_sha, file_sha256, read_meta, sidecar, write_pair

__all__ = [
    "FORMAT",
    "CheckpointError",
    "file_sha256",
    "sidecar",
    "save_tensors",
    "load_meta",
    "load_tensors",
    "save_generator",
    "load_generator",
]


def save_tensors(path, tensors: dict[str, torch.Tensor], meta: dict) -> str:
    """Write ``tensors`` to ``path`` (.safetensors) and ``meta`` + hash to its .json sidecar."""
    return write_pair(path, st_save({k: v.detach().contiguous().cpu() for k, v in tensors.items()}), meta)


def load_meta(path) -> dict:
    return read_meta(path)


def load_tensors(path, device="cpu") -> tuple[dict[str, torch.Tensor], dict]:
    """Read a checkpoint written by :func:`save_tensors`, verifying its hash first."""
    path = Path(path)
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        read_meta(path)  # a missing sidecar is the clearer message when both are gone
        raise CheckpointError(f"{path}: file not found") from None
    sha = hashlib.sha256(data).hexdigest()
    meta = read_meta(path, sha)
    check_sha(path, meta, sha)
    try:
        tensors = st_load(data)
    except Exception as e:  # safetensors raises its own error types
        raise CheckpointError(f"{path}: not a valid safetensors file ({e})") from None
    return {k: v.to(device) for k, v in tensors.items()}, meta


def save_generator(path, G: Generator, extra: dict | None = None) -> str:
    return save_tensors(path, G.state_dict(), {"kind": "generator", "config": G.cfg.to_dict(), **(extra or {})})


def load_generator(path, device="cpu") -> Generator:
    tensors, meta = load_tensors(path, device)
    if meta.get("kind") != "generator":
        raise CheckpointError(f"{path}: holds a {meta.get('kind')!r}, not a generator")
    G = Generator(GeneratorConfig(**meta["config"])).to(device)
    missing, unexpected = G.load_state_dict(tensors, strict=False)
    if missing or unexpected:
        raise CheckpointError(
            f"{path}: weights do not match the configuration (missing {missing[:3]}, unexpected {unexpected[:3]})"
        )
    G.eval().requires_grad_(False)
    G.sha256 = meta["sha256"]
    return G
