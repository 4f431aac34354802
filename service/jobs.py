"""Jobs for large requests: generated in background threads into tar shards, with state on disk.

    JOBS/
      <id>/job.json              state (atomic JSON), rewritten at every phase change and shard
      <id>/scores/<k>.npy        scores of chunk k (drop_uncertain jobs), so scoring resumes too
      <id>/kept.npy              indices of the kept seeds, once scoring is complete
      <id>/shards/shard-<k>.tar  complete shards (written to a temporary file, then renamed)
      idempotency/<sha256 of key>.json   {"job": id, "request": sha256 of the request}, written before
                                         the job.json it names (a retry finds that job, or none)

A shard appears only when complete and is recorded in job.json right after. A server that stops
(or crashes) mid-shard loses at most that shard's work: at start-up every queued or running job is
queued again and continues from its last complete shard. A job whose model was replaced since it
began is reported as failed rather than mixing pairs of two models.
"""

from __future__ import annotations

import hashlib
import io
import json
import logging
import math
import queue
import secrets
import shutil
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np

from datasetgan.atomic import atomic_write_bytes, atomic_write_text
from datasetgan.encoding import PART_KEYS, ShardFile, encode_parts, kept_seeds
from datasetgan.errors import DatasetganError

from .schemas import JobRequest
from .streaming import Metrics

log = logging.getLogger("service.jobs")
ACTIVE = ("queued", "running")
SHARD_FIELDS = ("pairs", "bytes", "sha256", "first_seed", "last_seed")
JOB_ID_CHARS = set("0123456789abcdef")


class JobConflict(DatasetganError, ValueError):
    pass


class Cancelled(Exception):
    pass


def valid_job_id(job_id: str) -> bool:
    return isinstance(job_id, str) and len(job_id) == 16 and set(job_id) <= JOB_ID_CHARS


def request_digest(model: str, req: JobRequest) -> str:
    doc = {"model": model, "request": req.model_dump(mode="json")}
    return hashlib.sha256(json.dumps(doc, sort_keys=True).encode()).hexdigest()


class JobStore:
    """Job states in memory, mirrored to disk on every change; one lock guards them all."""

    def __init__(self, root: Path):
        self.root = Path(root)
        self.root.mkdir(parents=True, exist_ok=True)
        (self.root / "idempotency").mkdir(exist_ok=True)
        self.lock = threading.RLock()
        self.jobs: dict[str, dict[str, Any]] = {}
        self.cancel_events: dict[str, threading.Event] = {}
        for path in sorted(self.root.glob("*/job.json")):
            try:
                job = json.loads(path.read_text())
                if valid_job_id(job.get("id", "")) and path.parent.name == job["id"]:
                    self.jobs[job["id"]] = job
                    self.cancel_events[job["id"]] = threading.Event()
            except (OSError, ValueError, KeyError) as e:
                log.warning("ignoring unreadable job state %s (%s)", path, e)

    def dir(self, job_id: str) -> Path:
        return self.root / job_id

    def shard_path(self, job_id: str, k: int) -> Path:
        return self.dir(job_id) / "shards" / f"shard-{k:05d}.tar"

    def save(self, job: dict) -> None:
        job["updated"] = time.time()
        atomic_write_text(self.dir(job["id"]) / "job.json", json.dumps(job, indent=1))

    def get(self, job_id: str) -> dict | None:
        with self.lock:
            job = self.jobs.get(job_id)
            return json.loads(json.dumps(job)) if job else None

    def create(
        self, model: str, req: JobRequest, hashes: tuple[str, str], shard_size: int, idempotency_key: str | None
    ) -> tuple[dict, bool]:
        """A new queued job, or (with a known Idempotency-Key) the job made for it; (job, created)."""
        digest = request_digest(model, req)
        with self.lock:
            key_file = None
            if idempotency_key is not None:
                key_file = self.root / "idempotency" / (hashlib.sha256(idempotency_key.encode()).hexdigest() + ".json")
                if key_file.exists():
                    rec = json.loads(key_file.read_text())
                    if rec["job"] in self.jobs:
                        if rec["request"] != digest:
                            raise JobConflict("this Idempotency-Key was already used for a different request")
                        return self.get(rec["job"]), False
            job_id = secrets.token_hex(8)
            now = time.time()
            job = {
                "id": job_id,
                "model": model,
                "state": "queued",
                "phase": "queued",
                "n": req.n,
                "pairs_total": None if req.drop_uncertain > 0 else req.n,
                "pairs_done": 0,
                "scored": 0,
                "dropped": 0,
                "shard_size": shard_size,
                "shards": [],
                "error": None,
                "created": now,
                "updated": now,
                "request": req.model_dump(mode="json"),
                "request_sha256": digest,
                "generator_sha256": hashes[0],
                "interpreter_sha256": hashes[1],
            }
            # The key first: killed before job.json, it names no job and a retry makes the one job.
            if key_file is not None:
                atomic_write_text(key_file, json.dumps({"job": job_id, "request": digest}))
            self.save(job)
            self.jobs[job_id] = job
            self.cancel_events[job_id] = threading.Event()
            return self.get(job_id), True

    def update(self, job_id: str, persist: bool = True, **fields) -> dict:
        with self.lock:
            job = self.jobs[job_id]
            if job["state"] == "cancelled" and fields.get("state") not in (None, "cancelled"):
                raise Cancelled()
            job.update(fields)
            if persist:
                self.save(job)
            else:
                job["updated"] = time.time()
            return job

    def cancel(self, job_id: str) -> str:
        """Cancel an active job (its shards are removed) or delete a finished one; returns what was done."""
        with self.lock:
            job = self.jobs[job_id]
            self.cancel_events[job_id].set()
            if job["state"] in ACTIVE:
                job.update(state="cancelled", phase="cancelled", shards=[])
                self.save(job)
                shutil.rmtree(self.dir(job_id) / "shards", ignore_errors=True)
                return "cancelled"
            del self.jobs[job_id]
            shutil.rmtree(self.dir(job_id), ignore_errors=True)
            return "deleted"

    def unfinished(self) -> list[str]:
        with self.lock:
            return [j["id"] for j in sorted(self.jobs.values(), key=lambda j: j["created"]) if j["state"] in ACTIVE]


class JobRunner:
    """Worker threads that take queued jobs in order and write their shards."""

    def __init__(
        self,
        store: JobStore,
        registry,
        batch_size: int,
        workers: int = 1,
        metrics: Metrics | None = None,
        ray_pools=None,
    ):
        self.store, self.registry, self.ray_pools = store, registry, ray_pools  # ray_pools: raygen.RayPools
        self.batch_size, self.metrics = batch_size, metrics
        self.queue: queue.Queue[str | None] = queue.Queue()
        self.stopping = threading.Event()
        self.threads = [
            threading.Thread(target=self._work, name=f"job-worker-{i}", daemon=True) for i in range(workers)
        ]

    def start(self) -> None:
        for job_id in self.store.unfinished():  # jobs left by an earlier server: continue them
            job = self.store.get(job_id)
            self.store.update(job_id, state="queued", phase="resuming" if job["shards"] or job["scored"] else "queued")
            log.info("resuming job %s (%d shards done)", job_id, len(job["shards"]))
            self.queue.put(job_id)
        for t in self.threads:
            t.start()

    def submit(self, job_id: str) -> None:
        self.queue.put(job_id)

    def stop(self, timeout: float = 10.0) -> None:
        self.stopping.set()
        for _ in self.threads:
            self.queue.put(None)
        for t in self.threads:
            t.join(timeout)

    def _work(self) -> None:
        while not self.stopping.is_set():
            job_id = self.queue.get()
            if job_id is None:
                return
            try:
                self._process(job_id)
            except Exception:  # a worker outlives any one job, e.g. one deleted while it was failing
                log.exception("job %s: could not record its outcome", job_id)

    def _process(self, job_id: str) -> None:
        job = self.store.get(job_id)
        if job is None or job["state"] not in ACTIVE:
            return
        try:
            self._run(job_id)
        except Cancelled:
            log.info("job %s cancelled", job_id)
        except Exception as e:  # a failed job is reported in its state, never lost silently
            log.exception("job %s failed", job_id)
            try:
                self.store.update(job_id, state="failed", phase="failed", error=f"{e.__class__.__name__}: {e}")
            except Cancelled:
                pass

    def _should_stop(self, job_id: str):
        ev = self.store.cancel_events[job_id]
        return lambda: ev.is_set() or self.stopping.is_set()

    def _check(self, job_id: str) -> None:
        if self.store.cancel_events[job_id].is_set():
            raise Cancelled()
        if self.stopping.is_set():
            raise Cancelled()  # server stopping: state stays as saved, resumed at next start

    def _run(self, job_id: str) -> None:
        store, job = self.store, self.store.get(job_id)
        req = JobRequest.model_validate(job["request"])
        info = self.registry.info(job["model"])
        if (info.generator_sha256, info.interpreter_sha256) != (job["generator_sha256"], job["interpreter_sha256"]):
            raise RuntimeError(
                "the model's generator or interpreter changed since the job was created; submit the job again"
            )
        factory = self.registry.factory(job["model"], (info.generator_sha256, info.interpreter_sha256))
        should_stop = self._should_stop(job_id)
        seeds = req.seeds if req.seeds is not None else range(req.seed_start, req.seed_start + req.n)
        size = job["shard_size"]
        jdir = store.dir(job_id)
        store.update(job_id, state="running")

        if req.drop_uncertain > 0:
            kept_file = jdir / "kept.npy"
            if not kept_file.exists():
                store.update(job_id, phase="scoring")
                scores = []
                for c in range(math.ceil(req.n / size)):
                    chunk_file = jdir / "scores" / f"{c:05d}.npy"
                    chunk = seeds[c * size : (c + 1) * size]
                    if chunk_file.exists():
                        part = np.load(chunk_file, allow_pickle=False)
                    else:
                        part = []
                        for pair in factory.pairs(
                            chunk, truncation=req.truncation, batch_size=self.batch_size, should_stop=should_stop
                        ):
                            part.append(float(pair.score))
                            if self.metrics:
                                self.metrics.add("generated_pairs_total")
                            store.update(job_id, persist=False, scored=c * size + len(part))
                        self._check(job_id)
                        part = np.asarray(part, dtype=np.float64)
                        _save_npy(chunk_file, part)
                    scores.extend(part.tolist())
                    store.update(job_id, scored=len(scores))
                kept = kept_seeds(range(req.n), scores, req.drop_uncertain)  # indices, in order
                _save_npy(kept_file, np.asarray(kept, dtype=np.int64))
            kept = np.load(kept_file, allow_pickle=False)
            order = [seeds[int(i)] for i in kept]
            store.update(job_id, pairs_total=len(order), dropped=req.n - len(order), scored=req.n)
        else:
            order = seeds
        total = len(order)

        # continue with the shards not complete on disk
        done = [
            rec
            for rec in store.get(job_id)["shards"]
            if (p := store.shard_path(job_id, rec["index"])).exists() and p.stat().st_size == rec["bytes"]
        ]
        store.update(job_id, shards=done, pairs_done=sum(r["pairs"] for r in done), phase="generating")
        finished = {r["index"] for r in done}
        todo = [k for k in range(math.ceil(total / size)) if k not in finished]
        if self.ray_pools is not None:
            self._generate_on_ray(job_id, info, order, size, todo, req)
        else:
            self._generate_here(job_id, factory, order, size, todo, req)
        store.update(job_id, state="done", phase="done", pairs_done=total, pairs_total=total)
        log.info("job %s done: %d pairs in %d shards", job_id, total, math.ceil(total / size))

    def _generate_here(self, job_id: str, factory, order, size: int, todo: list[int], req: JobRequest) -> None:
        """The job's missing shards, one after the other, in this process."""
        store, should_stop = self.store, self._should_stop(job_id)
        for k in todo:
            shard_seeds = order[k * size : (k + 1) * size]
            base = store.get(job_id)["pairs_done"]
            with ShardFile(store.shard_path(job_id, k)) as shard:
                for pair in factory.pairs(
                    shard_seeds, truncation=req.truncation, batch_size=self.batch_size, should_stop=should_stop
                ):
                    if self.metrics:
                        self.metrics.add("generated_pairs_total")
                    shard.add(pair.seed, encode_parts(pair, factory.classes, req.include))
                    store.update(job_id, persist=False, pairs_done=base + len(shard.seeds))
                self._check(job_id)  # raising here discards the partial shard
                if len(shard.seeds) != len(shard_seeds):
                    raise RuntimeError(f"the factory returned {len(shard.seeds)} of {len(shard_seeds)} pairs")
            self._record(job_id, {"index": k, **shard.record})

    def _record(self, job_id: str, rec: dict) -> None:
        """A complete shard joins the job's list (kept in index order)."""
        with self.store.lock:
            self._check(job_id)
            shards = sorted(self.store.jobs[job_id]["shards"] + [rec], key=lambda r: r["index"])
            self.store.update(job_id, shards=shards, pairs_done=sum(r["pairs"] for r in shards))

    def _generate_on_ray(self, job_id: str, info, order, size: int, todo: list[int], req: JobRequest) -> None:
        """The job's missing shards as tasks on the Ray cluster's workers for this model; a cancelled
        job cancels its tasks."""
        from datasetgan.shards import ShardRequest, ShardTask

        workers = self.ray_pools.get(info.path, (info.generator_sha256, info.interpreter_sha256))
        keys = tuple(PART_KEYS[p] for p in req.include) + ("json",)
        sreq = ShardRequest([], req.truncation, keys, batch_size=self.batch_size)  # the tasks hold the seeds
        tasks = [
            ShardTask(k, [int(s) for s in order[k * size : (k + 1) * size]], str(self.store.shard_path(job_id, k)))
            for k in todo
        ]
        try:
            for task, rec in workers.write(tasks, sreq, should_stop=self._should_stop(job_id)):
                if self.metrics:
                    self.metrics.add("generated_pairs_total", rec["pairs"])
                self._record(job_id, {"index": task.index, **{k: rec[k] for k in SHARD_FIELDS}})
        finally:
            if self.store.cancel_events[job_id].is_set():  # shards that tasks finished after the cancel
                shutil.rmtree(self.store.dir(job_id) / "shards", ignore_errors=True)
        self._check(job_id)


def _save_npy(path: Path, array: np.ndarray) -> None:
    buf = io.BytesIO()
    np.save(buf, array, allow_pickle=False)
    atomic_write_bytes(path, buf.getvalue())
