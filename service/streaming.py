"""Pairs as bytes, produced lazily: tar members in WebDataset layout or NDJSON lines.

Tar headers are deterministic (mtime 0, uid/gid 0, no user names, mode 0644), so the same request
gives the same bytes. A pair is encoded the moment the factory yields it, and only one pair's bytes
are held at a time.

``drop_uncertain`` needs every score before the first pair can be kept or dropped. Rather than hold
the pairs, a scoring pass renders the requested seeds and keeps only their scores (8 bytes each);
the kept seeds are then rendered again and streamed. Rendering is a pure function of the seed, so
the second pass reproduces exactly the pairs that were scored. It costs twice the compute for such
requests, but memory stays flat and nothing touches the disk.
"""
from __future__ import annotations

import base64
import json
import tarfile
import threading
from collections import Counter
from typing import Callable, Iterator, Sequence

BLOCK = 512
RECORD = 20 * BLOCK  # tar archives are padded to whole 10 KiB records, like GNU tar and Python's tarfile
PART_KEYS = {"image": "image.png", "mask": "mask.png", "overlay": "overlay.png", "uncertainty": "uncertainty.png"}
TICK = b""  # yielded while scoring: nothing to send, but lets the caller notice a disconnect


class Metrics:
    """Thread-safe counters, shown at /metrics and /readyz."""

    def __init__(self):
        self._lock = threading.Lock()
        self._c: Counter = Counter()

    def add(self, name: str, k: int = 1) -> None:
        with self._lock:
            self._c[name] += k

    def snapshot(self) -> dict[str, int]:
        with self._lock:
            return dict(self._c)


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


def encode_parts(codec, pair, classes, include: Sequence[str]) -> list[tuple[str, bytes]]:
    """(key, bytes) of a pair in a fixed order: the included images, then the JSON record."""
    keys = tuple(PART_KEYS[p] for p in include) + ("json",)
    encoded = codec.encode_pair(pair, classes, include=keys)
    return [(k, encoded[k]) for k in keys]


def tar_pair(seed: int, parts: list[tuple[str, bytes]]) -> bytes:
    return b"".join(tar_member(f"{seed:08d}.{key}", data) for key, data in parts)


def ndjson_pair(seed: int, parts: list[tuple[str, bytes]]) -> bytes:
    """One line: {"seed": .., "image.png": base64, ..., "json": the record}; keys sorted, so stable."""
    doc = {"seed": seed}
    for key, data in parts:
        doc[key] = json.loads(data) if key == "json" else base64.b64encode(data).decode("ascii")
    return json.dumps(doc, sort_keys=True, separators=(",", ":")).encode() + b"\n"


def scores_of(factory, seeds: Sequence[int], truncation: float, batch_size: int,
              should_stop: Callable[[], bool], metrics: Metrics | None = None) -> Iterator[float]:
    """Scores of the seeds, in order (the pairs themselves are dropped as soon as scored)."""
    for pair in factory.pairs(seeds, truncation=truncation, batch_size=batch_size, should_stop=should_stop):
        if metrics:
            metrics.add("generated_pairs_total")
        yield float(pair.score)


def kept_seeds(codec, seeds: Sequence[int], scores: Sequence[float], fraction: float) -> list[int]:
    """The seeds that survive dropping the most uncertain ``fraction``, in request order."""
    kept = sorted(int(i) for i in codec.drop_most_uncertain(list(scores), fraction))
    return [seeds[i] for i in kept]


def first_alone(factory, seeds: Sequence[int], truncation: float, batch_size: int,
                should_stop: Callable[[], bool]) -> Iterator:
    """The pairs of the seeds, the first one in a batch of its own so that the first byte leaves
    after one pair's work rather than a whole batch's (a pair does not depend on its batch)."""
    for part in (seeds[:1], seeds[1:]):
        if len(part):
            yield from factory.pairs(part, truncation=truncation, batch_size=batch_size, should_stop=should_stop)


def pair_chunks(factory, codec, seeds: Sequence[int], *, truncation: float, include: Sequence[str], fmt: str,
                drop_uncertain: float, batch_size: int, should_stop: Callable[[], bool],
                metrics: Metrics | None = None) -> Iterator[bytes]:
    """The response body, one pair per chunk (TICK while scoring), ending a tar with its end blocks."""
    if drop_uncertain > 0:
        scores = []
        for s in scores_of(factory, seeds, truncation, batch_size, should_stop, metrics):
            scores.append(s)
            yield TICK
        if should_stop():
            return
        seeds = kept_seeds(codec, seeds, scores, drop_uncertain)
    written = 0
    classes = factory.classes
    for pair in first_alone(factory, seeds, truncation, batch_size, should_stop):
        if metrics:
            metrics.add("generated_pairs_total")
        parts = encode_parts(codec, pair, classes, include)
        chunk = tar_pair(pair.seed, parts) if fmt == "tar" else ndjson_pair(pair.seed, parts)
        written += len(chunk)
        if metrics:
            metrics.add("streamed_pairs_total")
        yield chunk
    if fmt == "tar" and not should_stop():
        yield tar_end(written)

