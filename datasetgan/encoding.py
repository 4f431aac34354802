"""Pairs as bytes, without torch: PNG files, the overlay, the uncertainty map, the JSON record, the
uncertainty drop, and the one tar writer of every WebDataset shard or stream.

The factory (generated folders and shards), the service's streams and its jobs all encode through
this module, so the same pair is the same bytes everywhere. A pair here is anything with the
attributes of :class:`datasetgan.factory.Pair` (``seed``, ``image``, ``mask``, ``uncertainty``,
``record``).

Tar: members are written one at a time with fixed metadata (mtime 0, uid/gid 0, no user or group
name, mode 0644, USTAR headers from the standard library's ``tarfile.TarInfo``), so a pair's bytes can
leave a streamed response the moment the pair is made. These are exactly the bytes of
``webdataset.TarWriter(user="", group="", mode=0o644, mtime=0, encoder=False)`` given the same members
(``tests/test_encoding.py`` checks it); that writer is not used directly because it buffers 10 KiB
records (a stream could not send a pair as soon as it is made) and importing ``webdataset`` loads torch.
"""

from __future__ import annotations

import hashlib
import json
import math
import tarfile
from pathlib import Path
from typing import Sequence

import numpy as np

from .atomic import atomic_path
from .data import DEFAULT_COLORS, ClassInfo
from .errors import DatasetganError
from .png import png_bytes

KEYS = ("image.png", "mask.png", "overlay.png", "uncertainty.png", "json")
PART_KEYS = {"image": "image.png", "mask": "mask.png", "overlay": "overlay.png", "uncertainty": "uncertainty.png"}
OVERLAY_ALPHA = 0.5
BLOCK = 512
RECORD = 20 * BLOCK  # tar archives are padded to whole 10 KiB records, like GNU tar and Python's tarfile


class EncodingError(DatasetganError, ValueError):
    pass


# ---------------------------------------------------------------------------------------------
# Pair files


def hex_rgb(color: str, fallback: str) -> tuple[int, int, int]:
    for c in (color, fallback):
        c = (c or "").lstrip("#")
        if len(c) == 6:
            try:
                return tuple(int(c[i : i + 2], 16) for i in (0, 2, 4))
            except ValueError:
                pass
    return (255, 0, 0)


def overlay(image: np.ndarray, mask: np.ndarray, classes: list[ClassInfo]) -> np.ndarray:
    """RGB image with every pixel of class >= 1 blended with its class colour (class 0 left as is)."""
    rgb = np.repeat(image, 3, axis=2) if image.shape[2] == 1 else image
    palette = np.array(
        [hex_rgb(c.color, DEFAULT_COLORS[c.id % len(DEFAULT_COLORS)]) for c in classes]
        + [(255, 0, 0)] * (256 - len(classes)),
        dtype=np.float32,
    )
    tint = palette[mask]
    out = rgb.astype(np.float32)
    sel = mask > 0
    out[sel] = (1 - OVERLAY_ALPHA) * out[sel] + OVERLAY_ALPHA * tint[sel]
    return np.round(out).clip(0, 255).astype(np.uint8)


def js_scale(members: int, num_classes: int) -> float:
    """The largest possible JS of ``members`` distributions over ``num_classes`` classes bounds the 8-bit map."""
    return math.log(max(2, min(members, num_classes)))


def uncertainty_png(js: np.ndarray, scale: float) -> np.ndarray:
    return np.round(np.clip(js / scale, 0, 1) * 255).astype(np.uint8)


def encode_pair(pair, classes: list[ClassInfo], include=KEYS) -> dict[str, bytes]:
    """The files of a pair as bytes, in the order of KEYS (same pair -> same bytes)."""
    bad = set(include) - set(KEYS)
    if bad:
        raise EncodingError(f"unknown part(s) {sorted(bad)}; choose from {list(KEYS)}")
    img = pair.image[..., 0] if pair.image.shape[2] == 1 else pair.image
    scale = float(pair.record.get("uncertainty_scale_nats") or js_scale(10, len(classes)))
    make = {
        "image.png": lambda: png_bytes(img),
        "mask.png": lambda: png_bytes(pair.mask),
        "overlay.png": lambda: png_bytes(overlay(pair.image, pair.mask, classes)),
        "uncertainty.png": lambda: png_bytes(uncertainty_png(pair.uncertainty, scale)),
        "json": lambda: json.dumps(pair.record, sort_keys=True, indent=1).encode(),
    }
    return {k: make[k]() for k in KEYS if k in include}


def encode_parts(pair, classes, include: Sequence[str]) -> list[tuple[str, bytes]]:
    """(key, bytes) of a pair for the request parts ``include`` (image, mask, ...), in that order,
    then the JSON record."""
    keys = tuple(PART_KEYS[p] for p in include) + ("json",)
    encoded = encode_pair(pair, classes, include=keys)
    return [(k, encoded[k]) for k in keys]


def drop_most_uncertain(scores, fraction: float) -> list[int]:
    """Indices kept after dropping exactly round(fraction * n) highest scores (ties: later index dropped first)."""
    if not 0 <= fraction <= 1 or math.isnan(fraction):
        raise EncodingError(f"the fraction to drop must be in [0, 1], got {fraction}")
    n = len(scores)
    k = round(fraction * n)
    by_uncertainty = sorted(range(n), key=lambda i: (-float(scores[i]), -i))
    return sorted(by_uncertainty[k:])


def kept_seeds(seeds: Sequence[int], scores: Sequence[float], fraction: float) -> list[int]:
    """The seeds that survive dropping the most uncertain ``fraction``, in their given order."""
    return [seeds[i] for i in drop_most_uncertain(list(scores), fraction)]


# ---------------------------------------------------------------------------------------------
# Tar (WebDataset layout: {seed:08d}.{key})


def tar_member(name: str, data: bytes) -> bytes:
    """One regular-file member: a USTAR header with fixed metadata, the data, zero padding."""
    info = tarfile.TarInfo(name)
    info.size = len(data)
    info.mtime = 0
    info.mode = 0o644
    info.uid = info.gid = 0
    info.uname = info.gname = ""
    info.type = tarfile.REGTYPE
    return info.tobuf(format=tarfile.USTAR_FORMAT, encoding="utf-8", errors="strict") + data + bytes(-len(data) % BLOCK)


def tar_end(written: int) -> bytes:
    """End of archive: two zero blocks, then zeros up to a whole record."""
    total = written + 2 * BLOCK
    return bytes(2 * BLOCK + (-total % RECORD))


def tar_pair(seed: int, parts: list[tuple[str, bytes]]) -> bytes:
    return b"".join(tar_member(f"{seed:08d}.{key}", data) for key, data in parts)


class ShardFile:
    """One tar shard written atomically (a temporary file renamed when complete) and hashed as written.

        with ShardFile(path) as shard:
            shard.add(seed, parts)
        shard.record  # {"pairs", "bytes", "sha256", "first_seed", "last_seed"}

    An exception inside the block leaves no file behind.
    """

    def __init__(self, path):
        self.path = Path(path)
        self.hash, self.written, self.seeds = hashlib.sha256(), 0, []
        self.record: dict | None = None

    def __enter__(self) -> "ShardFile":
        self._atomic = atomic_path(self.path)
        self._file = open(self._atomic.__enter__(), "wb")
        return self

    def _write(self, data: bytes) -> None:
        self._file.write(data)
        self.hash.update(data)
        self.written += len(data)

    def add(self, seed: int, parts: list[tuple[str, bytes]]) -> None:
        self._write(tar_pair(seed, parts))
        self.seeds.append(int(seed))

    def __exit__(self, exc_type, exc, tb):
        try:
            if exc_type is None:
                self._write(tar_end(self.written))
            self._file.close()
        finally:
            suppress = self._atomic.__exit__(exc_type, exc, tb)
        if exc_type is None:
            self.record = {
                "pairs": len(self.seeds),
                "bytes": self.written,
                "sha256": self.hash.hexdigest(),
                "first_seed": self.seeds[0] if self.seeds else None,
                "last_seed": self.seeds[-1] if self.seeds else None,
            }
        return suppress
