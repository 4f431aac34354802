"""Pairs as bytes, produced lazily: tar members in WebDataset layout or NDJSON lines.

Pairs are encoded and framed by :mod:`datasetgan.encoding` (deterministic tar headers), so the same
request gives the same bytes, equal to a job's shards and to ``datasetgan generate --format wds``.
A pair is encoded the moment the factory yields it, and only one pair's bytes are held at a time.

``drop_uncertain`` needs every score before the first pair can be kept or dropped. Rather than hold
the pairs, a scoring pass renders the requested seeds and keeps only their scores (8 bytes each);
the kept seeds are then rendered again and streamed. Rendering is a pure function of the seed, so
the second pass reproduces exactly the pairs that were scored. It costs twice the compute for such
requests, but memory stays flat and nothing touches the disk.
"""

from __future__ import annotations

import base64
import json
import threading
from collections import Counter
from typing import Callable, Iterator, Sequence

from datasetgan.encoding import encode_parts, kept_seeds, tar_end, tar_pair

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


def ndjson_pair(seed: int, parts: list[tuple[str, bytes]]) -> bytes:
    """One line: {"seed": .., "image.png": base64, ..., "json": the record}; keys sorted, so stable."""
    doc = {"seed": seed}
    for key, data in parts:
        doc[key] = json.loads(data) if key == "json" else base64.b64encode(data).decode("ascii")
    return json.dumps(doc, sort_keys=True, separators=(",", ":")).encode() + b"\n"


def scores_of(
    factory,
    seeds: Sequence[int],
    truncation: float,
    batch_size: int,
    should_stop: Callable[[], bool],
    metrics: Metrics | None = None,
) -> Iterator[float]:
    """Scores of the seeds, in order (the pairs themselves are dropped as soon as scored)."""
    for pair in factory.pairs(seeds, truncation=truncation, batch_size=batch_size, should_stop=should_stop):
        if metrics:
            metrics.add("generated_pairs_total")
        yield float(pair.score)


def first_alone(
    factory, seeds: Sequence[int], truncation: float, batch_size: int, should_stop: Callable[[], bool]
) -> Iterator:
    """The pairs of the seeds, the first one in a batch of its own so that the first byte leaves
    after one pair's work rather than a whole batch's (a pair does not depend on its batch)."""
    for part in (seeds[:1], seeds[1:]):
        if len(part):
            yield from factory.pairs(part, truncation=truncation, batch_size=batch_size, should_stop=should_stop)


def pair_chunks(
    factory,
    seeds: Sequence[int],
    *,
    truncation: float,
    include: Sequence[str],
    fmt: str,
    drop_uncertain: float,
    batch_size: int,
    should_stop: Callable[[], bool],
    metrics: Metrics | None = None,
) -> Iterator[bytes]:
    """The response body, one pair per chunk (TICK while scoring), ending a tar with its end blocks."""
    if drop_uncertain > 0:
        scores = []
        for s in scores_of(factory, seeds, truncation, batch_size, should_stop, metrics):
            scores.append(s)
            yield TICK
        if should_stop():
            return
        seeds = kept_seeds(seeds, scores, drop_uncertain)
    written = 0
    classes = factory.classes
    for pair in first_alone(factory, seeds, truncation, batch_size, should_stop):
        if metrics:
            metrics.add("generated_pairs_total")
        parts = encode_parts(pair, classes, include)
        chunk = tar_pair(pair.seed, parts) if fmt == "tar" else ndjson_pair(pair.seed, parts)
        written += len(chunk)
        if metrics:
            metrics.add("streamed_pairs_total")
        yield chunk
    if fmt == "tar" and not should_stop():
        yield tar_end(written)
