"""Generation on a Ray cluster: a pool of Ray actors, each loading the run's generator and interpreter
once, makes the shards of :mod:`datasetgan.shards` (and the scores of a drop-uncertain pass).

Ray is an optional extra (``pip install 'datasetgan[ray]'``). The driver hands shards to idle actors
(``ray.util.ActorPool``); an actor writes its shard straight into the output folder, which must be a
path every node sees. A worker process that dies (crash, kill, lost node) is restarted by Ray and the
shard it held is retried (``max_restarts``, ``max_task_retries``); a shard is written atomically, so
a retry never meets half a shard, and its bytes do not depend on the worker that made it.
"""
from __future__ import annotations

from pathlib import Path

from .errors import DatasetganError
from .shards import ShardRequest, ShardTask, pair_scores, write_shard

INSTALL_HINT = "pip install 'datasetgan[ray]'"
RETRIES = 3  # per shard, after a worker process died


class RayError(DatasetganError, RuntimeError):
    pass


def import_ray():
    try:
        import ray
    except ImportError:
        raise RayError(f"--ray needs Ray, an optional extra: {INSTALL_HINT}") from None
    return ray


def connect(address: str):
    """Join the cluster at ``address`` ('auto': the one `ray start` made on this machine; 'local': a new
    one-machine cluster for this process); returns the ray module."""
    ray = import_ray()
    if not ray.is_initialized():
        try:
            ray.init(address=address, log_to_driver=False, configure_logging=False)
        except (ConnectionError, RuntimeError, ValueError) as e:
            raise RayError(f"--ray {address}: cannot join the Ray cluster ({str(e).splitlines()[0]})") from None
    return ray


class ShardMaker:
    """One Ray actor: a PairFactory loaded once, then any number of shards."""

    def __init__(self, run_dir: str, device: str, threads: int):
        import torch

        from .factory import PairFactory

        torch.set_num_threads(threads)
        self.factory = PairFactory(run_dir, device=device)

    def hashes(self) -> tuple[str, str]:
        return self.factory.generator_sha256, self.factory.interpreter_sha256

    def write(self, task: ShardTask, req: ShardRequest) -> dict:
        return write_shard(self.factory, task, req)

    def scores(self, seeds: list[int], req: ShardRequest) -> list[float]:
        return pair_scores(self.factory, seeds, req)


class RayWorkers:
    """The :class:`datasetgan.shards.Workers` of a Ray cluster: ``workers`` actors (default: one per
    CPU of the cluster, or one per GPU on cuda), each with ``threads`` CPUs."""

    def __init__(self, address: str, run_dir, device: str = "cpu", workers: int | None = None,
                 threads: int | None = None, hashes: tuple[str, str] | None = None):
        ray = self.ray = connect(address)
        from ray.util import ActorPool

        threads = threads or 1
        gpus = 1 if str(device).startswith("cuda") else 0
        total = ray.cluster_resources()
        if workers is None:
            workers = int(total.get("GPU", 0)) if gpus else int(total.get("CPU", 1) // threads)
        if workers < 1:
            raise RayError(f"the Ray cluster at {address} has no {'GPU' if gpus else 'CPU'} for a worker")
        remote = ray.remote(num_cpus=threads, num_gpus=gpus, max_restarts=-1,
                            max_task_retries=RETRIES)(ShardMaker)
        run_dir = str(Path(run_dir).resolve())
        self.actors = [remote.remote(run_dir, device, threads) for _ in range(workers)]
        try:
            seen = set(ray.get([a.hashes.remote() for a in self.actors]))
        except Exception as e:  # the models failed to load on a worker: say why, in one line
            self.close()
            raise RayError(f"a Ray worker could not load {run_dir}: {str(e).strip().splitlines()[-1]}") from None
        if len(seen) != 1 or (hashes is not None and seen != {tuple(hashes)}):
            self.close()
            raise RayError(f"Ray workers see different models at {run_dir}; it must be the same path on every node")
        self.pool = ActorPool(self.actors)

    def scores(self, chunks, req):
        yield from self.pool.map(lambda actor, seeds: actor.scores.remote(seeds, req), chunks)

    def write(self, tasks, req):
        by_index = {t.index: t for t in tasks}
        for rec in self.pool.map_unordered(lambda actor, task: actor.write.remote(task, req), tasks):
            yield by_index[rec["index"]], rec

    def close(self) -> None:
        for actor in self.actors:
            self.ray.kill(actor)
        self.actors = []
