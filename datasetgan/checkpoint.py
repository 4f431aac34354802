"""Checkpoints: tensors in safetensors, metadata in a JSON sidecar, both written atomically.

``weights.safetensors`` holds the tensors; ``weights.json`` holds the configuration and the SHA-256 of
the safetensors file. Loading verifies the hash before parsing, so a truncated or tampered file is
refused with a clear message, and nothing is ever unpickled.
"""
from __future__ import annotations

import hashlib
import json
from pathlib import Path

import torch
from safetensors.torch import load as st_load
from safetensors.torch import save as st_save

from .atomic import atomic_write_bytes, atomic_write_text
from .errors import DatasetganError
from .networks import Generator, GeneratorConfig

FORMAT = "datasetgan-checkpoint/1"


class CheckpointError(DatasetganError, RuntimeError):
    pass


def sidecar(path: Path) -> Path:
    return Path(path).with_suffix(".json")


def file_sha256(path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def save_tensors(path, tensors: dict[str, torch.Tensor], meta: dict) -> str:
    """Write ``tensors`` to ``path`` (.safetensors) and ``meta`` + hash to its .json sidecar."""
    path = Path(path)
    data = st_save({k: v.detach().contiguous().cpu() for k, v in tensors.items()})
    sha = hashlib.sha256(data).hexdigest()
    atomic_write_bytes(path, data)
    atomic_write_text(sidecar(path), json.dumps({"format": FORMAT, "sha256": sha, **meta}, indent=1))
    return sha


def load_meta(path) -> dict:
    path = Path(path)
    try:
        meta = json.loads(sidecar(path).read_text())
    except FileNotFoundError:
        raise CheckpointError(f"{path}: its metadata file {sidecar(path).name} is missing") from None
    except json.JSONDecodeError as e:
        raise CheckpointError(f"{sidecar(path)}: not valid JSON ({e})") from None
    if meta.get("format") != FORMAT:
        raise CheckpointError(f"{sidecar(path)}: not a {FORMAT} file")
    return meta


def load_tensors(path, device="cpu") -> tuple[dict[str, torch.Tensor], dict]:
    """Read a checkpoint written by :func:`save_tensors`, verifying its hash first."""
    path = Path(path)
    meta = load_meta(path)
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        raise CheckpointError(f"{path}: file not found") from None
    if hashlib.sha256(data).hexdigest() != meta["sha256"]:
        raise CheckpointError(f"{path}: SHA-256 does not match {sidecar(path).name}; "
                              "the file is truncated, corrupted or was modified")
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
        raise CheckpointError(f"{path}: weights do not match the configuration "
                              f"(missing {missing[:3]}, unexpected {unexpected[:3]})")
    G.eval().requires_grad_(False)
    G.sha256 = meta["sha256"]
    return G
