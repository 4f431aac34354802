"""Sharded generation: seeds -> WebDataset tar shards ``{prefix}-{k:06d}.tar`` and a manifest, made on
this machine or by a pool of Ray workers (:mod:`datasetgan.raygen`), resumable shard by shard.

    OUT/{prefix}-000000.tar ...   shard k: the pairs of kept seeds k*shard_size .. (k+1)*shard_size-1
    OUT/plan.json                 the request and the model hashes; rerunning the same request
                                  continues it, another request in the same folder is refused
    OUT/scores.json               every seed's uncertainty score (with drop_uncertain), written once
    OUT/manifest.json, labels.json   written last: every shard with its seed range, size and SHA-256

A shard is written to a temporary file and renamed when complete, so a shard file that exists is
finished and a rerun skips it. A shard's bytes depend only on the models, its seeds, the truncation
and the parts; where and in which order shards are made never shows in them.
"""
from __future__ import annotations

import json
import tarfile
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Iterator, Protocol

from .atomic import atomic_write_text
from .checkpoint import file_sha256
from .encoding import KEYS, ShardFile, encode_pair, kept_seeds
from .errors import DatasetganError

PLAN = "plan.json"
SCORES = "scores.json"


class ShardError(DatasetganError, ValueError):
    pass


class ShardStopped(Exception):
    """A shard was cancelled before it was complete (nothing of it was written)."""


@dataclass
class ShardRequest:
    """What to generate: the seeds (in output order) and how."""

    seeds: list[int]
    truncation: float = 1.0
    include: tuple[str, ...] = KEYS  # the files of a pair, in member order
    drop_uncertain: float = 0.0
    shard_size: int = 1000
    prefix: str = "shard"
    batch_size: int = 8  # seeds rendered per batch; does not change the bytes

    def chunks(self, seeds: list[int]) -> list[list[int]]:
        return [seeds[i: i + self.shard_size] for i in range(0, len(seeds), self.shard_size)]

    def name(self, k: int) -> str:
        return f"{self.prefix}-{k:06d}.tar"

    def plan(self, factory) -> dict:
        doc = asdict(self)
        del doc["batch_size"]
        doc["include"] = list(self.include)
        return {**doc, "generator_sha256": factory.generator_sha256, "interpreter_sha256": factory.interpreter_sha256}


@dataclass
class ShardTask:
    index: int
    seeds: list[int]
    path: str  # absolute: workers on other machines see the same path


class Workers(Protocol):
    """Where pairs are made: :class:`LocalWorkers` here, or ``raygen.RayWorkers`` on a cluster."""

    def scores(self, chunks: list[list[int]], req: ShardRequest) -> Iterator[list[float]]:
        """The uncertainty scores of each chunk of seeds, chunk by chunk in order."""

    def write(self, tasks: list[ShardTask], req: ShardRequest, should_stop=None) -> Iterator[tuple[ShardTask, dict]]:
        """Write the shards; yields (task, record) as each one completes, in any order, until
        ``should_stop()`` (shards in progress are then abandoned, leaving no file)."""


def write_shard(factory, task: ShardTask, req: ShardRequest, should_stop=None) -> dict:
    """Render and write one shard, its members in the order of ``req.include``; returns its record
    (seed range, pairs, bytes, SHA-256, scores). Stopped early, it leaves no file and raises."""
    scores = []
    with ShardFile(task.path) as shard:
        for pair in factory.pairs(task.seeds, req.truncation, req.batch_size, should_stop):
            files = encode_pair(pair, factory.classes, req.include)
            shard.add(pair.seed, [(k, files[k]) for k in req.include])
            scores.append(float(pair.score))
        if len(scores) != len(task.seeds):
            raise ShardStopped(f"shard {task.index} stopped after {len(scores)} of {len(task.seeds)} pairs")
    return {"index": task.index, "name": Path(task.path).name, **shard.record, "scores": scores}


def pair_scores(factory, seeds: list[int], req: ShardRequest) -> list[float]:
    return [float(p.score) for p in factory.pairs(seeds, req.truncation, req.batch_size)]


def read_shard(path: Path, index: int) -> dict:
    """The record of a finished shard on disk (as :func:`write_shard` returned it)."""
    seeds, scores = [], []
    with tarfile.open(path) as tar:
        for member in tar:
            if member.name.endswith(".json"):
                rec = json.loads(tar.extractfile(member).read())
                seeds.append(int(rec["seed"]))
                scores.append(float(rec["uncertainty_score"]))
    return {"index": index, "name": path.name, "pairs": len(seeds), "bytes": path.stat().st_size,
            "sha256": file_sha256(path), "first_seed": seeds[0] if seeds else None,
            "last_seed": seeds[-1] if seeds else None, "scores": scores}


class LocalWorkers:
    """Shards made one after the other by the factory of this process."""

    def __init__(self, factory):
        self.factory = factory

    def scores(self, chunks, req):
        for chunk in chunks:
            yield pair_scores(self.factory, chunk, req)

    def write(self, tasks, req, should_stop=None):
        for task in tasks:
            try:
                yield task, write_shard(self.factory, task, req, should_stop)
            except ShardStopped:
                return


def open_folder(out: Path, plan: dict) -> None:
    """A new or empty folder gets the plan; a folder holding the same plan is continued."""
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        try:
            same = json.loads((out / PLAN).read_text()) == plan
        except (OSError, ValueError):
            same = False
        if not same:
            raise ShardError(f"{out} exists and is not an empty folder, nor an unfinished generation of the "
                             "same request; choose a new output folder")
        return
    out.mkdir(parents=True, exist_ok=True)
    atomic_write_text(out / PLAN, json.dumps(plan, indent=1))


def generate_shards(factory, req: ShardRequest, out, workers: Workers | None = None, progress: bool = False) -> dict:
    """Write the shards of ``req`` into ``out`` (skipping finished ones) and return the manifest.

    ``factory`` supplies the model hashes and classes (and renders, with the default LocalWorkers)."""
    if len(set(req.seeds)) != len(req.seeds):
        raise ShardError("seeds must be distinct")
    if req.shard_size < 1:
        raise ShardError("shard_size must be at least 1")
    workers = workers or LocalWorkers(factory)
    out = Path(out).resolve()
    open_folder(out, req.plan(factory))

    kept, all_scores = list(req.seeds), None
    if req.drop_uncertain > 0:
        all_scores = _scores(out, req, workers)
        kept = kept_seeds(req.seeds, all_scores, req.drop_uncertain)
    tasks = [ShardTask(k, seeds, str(out / req.name(k))) for k, seeds in enumerate(req.chunks(kept))]
    records = {t.index: read_shard(Path(t.path), t.index) for t in tasks if Path(t.path).is_file()}
    todo = [t for t in tasks if t.index not in records]

    bar = _Bar(len(tasks), len(kept), progress)
    bar.advance(len(records), sum(r["pairs"] for r in records.values()))
    try:
        for task, rec in workers.write(todo, req):
            records[task.index] = rec
            bar.advance(1, rec["pairs"])
    finally:
        bar.close()

    by_seed = dict(zip(req.seeds, all_scores)) if all_scores is not None else \
        {s: v for t in tasks for s, v in zip(t.seeds, records[t.index]["scores"])}
    shard_info = [{k: v for k, v in records[t.index].items() if k != "scores"} for t in tasks]
    return write_manifest(out, factory, "wds", req.truncation, req.drop_uncertain, req.seeds, kept, by_seed,
                          req.include, shard_size=req.shard_size, shards=[r["name"] for r in shard_info],
                          shard_info=shard_info)


def write_manifest(out: Path, factory, fmt: str, truncation: float, drop_uncertain: float, seeds: list[int],
                   kept: list[int], scores: dict[int, float], include, **extra) -> dict:
    """manifest.json (and labels.json) of a generated set: the options, the seeds kept and dropped,
    every score, the model hashes; returns the manifest."""
    from .data import labels_to_json

    manifest = {"format": fmt, "truncation": float(truncation), "noise_mode": factory.noise_mode,
                "resolution": factory.resolution, "img_channels": factory.img_channels,
                "generator_sha256": factory.generator_sha256, "interpreter_sha256": factory.interpreter_sha256,
                "drop_uncertain": float(drop_uncertain), "requested": len(seeds), "complete": True,
                "seeds_kept": kept, "seeds_dropped": sorted(set(seeds) - set(kept)),
                "scores": {f"{s:08d}": scores[s] for s in seeds},
                "uncertainty_scale_nats": factory.uncertainty_scale, "parts": [k for k in KEYS if k in include],
                **extra}
    atomic_write_text(out / "labels.json", labels_to_json(factory.classes))
    atomic_write_text(out / "manifest.json", json.dumps(manifest, indent=1))
    return manifest


def _scores(out: Path, req: ShardRequest, workers: Workers) -> list[float]:
    """Every seed's score, computed once per folder (a rerun reads them back)."""
    path = out / SCORES
    if path.is_file():
        return json.loads(path.read_text())
    scores: list[float] = []
    for part in workers.scores(req.chunks(req.seeds), req):
        scores.extend(part)
    atomic_write_text(path, json.dumps(scores))
    return scores


class _Bar:
    """A progress bar over pairs that also counts shards (no-op when disabled)."""

    def __init__(self, shards: int, pairs: int, enabled: bool):
        self.shards, self.done = shards, 0
        self.bar = None
        if enabled:
            from tqdm import tqdm
            self.bar = tqdm(total=pairs, desc="shards 0/%d" % shards, unit="pair", dynamic_ncols=True)

    def advance(self, shards: int, pairs: int) -> None:
        self.done += shards
        if self.bar is not None:
            self.bar.set_description(f"shards {self.done}/{self.shards}", refresh=False)
            self.bar.update(pairs)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
