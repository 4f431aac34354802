"""Generation on a Ray cluster: a pool of Ray actors, each loading the run's generator and interpreter
once, makes the shards of :mod:`datasetgan.shards` (and the scores of a drop-uncertain pass).

Ray is an optional extra (``pip install 'datasetgan[ray]'``). The driver hands each shard to an idle
actor and takes the records back with ``ray.wait`` as they complete (keeping the task references, so
that a stopped job can ``ray.cancel`` them; the ordered scoring pass uses ``ray.util.ActorPool``). An
actor writes its shard straight into the output folder, which must be a path every node sees. A worker process that dies (crash, kill, lost node) is restarted by Ray and the
shard it held is retried (``max_restarts``, ``max_task_retries``); a shard is written atomically, so
a retry never meets half a shard, and its bytes do not depend on the worker that made it.
"""
from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

from .errors import DatasetganError
from .shards import ShardRequest, ShardStopped, ShardTask, pair_scores, write_shard

INSTALL_HINT = "pip install 'datasetgan[ray]'"
RETRIES = 3  # per shard, after a worker process died
STOP_WAIT_S = 120  # for cancelled tasks to end (a running one stops after the batch in hand)


class RayError(DatasetganError, RuntimeError):
    pass


def import_ray():
    try:
        import ray
    except ImportError:
        raise RayError(f"--ray needs Ray, an optional extra: {INSTALL_HINT}") from None
    return ray


@contextlib.contextmanager
def local_cluster(cpus: int | None = None, env: dict | None = None, timeout: float = 300):
    """A one-node Ray cluster bound to 127.0.0.1 for the duration of the block; yields its address.

    `ray start --head --block` runs in a session of its own, so stopping that process group stops
    exactly this cluster (never `ray stop`, which stops every cluster of the machine). ``env`` is the
    environment of the cluster's processes (default: this one with a HOME of the cluster's own)."""
    from stylegan2_ops.build import CACHE_ENV, cache_root

    import_ray()
    root = Path(tempfile.mkdtemp(prefix="dg-ray-"))  # short: Ray's socket paths have a length limit
    if env is None:  # a HOME of its own: no Ray token or state of the user's goes in or out
        env = dict(os.environ, HOME=str(root / "home"))
    env = {CACHE_ENV: str(cache_root()), **env}  # workers reuse the compiled fused operations
    port = _free_port()
    cmd = [shutil.which("ray", path=os.path.dirname(sys.executable)) or "ray", "start", "--head", "--block",
           "--node-ip-address", "127.0.0.1", "--port", str(port), "--include-dashboard", "false",
           "--disable-usage-stats", "--temp-dir", str(root / "t"), "--object-store-memory", str(200 * 2 ** 20)]
    if cpus:
        cmd += ["--num-cpus", str(cpus)]
    log = root / "head.log"
    with open(log, "w") as out:
        head = subprocess.Popen(cmd, env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        deadline = time.monotonic() + timeout
        while "Ray runtime started" not in log.read_text():
            if head.poll() is not None or time.monotonic() > deadline:
                raise RayError(f"could not start a local Ray cluster: {log.read_text().strip()[-500:]}")
            time.sleep(0.5)
        yield f"127.0.0.1:{port}"
    finally:
        ray = import_ray()
        if ray.is_initialized():  # a driver left connected would end this process when the cluster goes
            ray.shutdown()
        for sig, wait in ((signal.SIGTERM, 60), (signal.SIGKILL, 30)):
            try:
                os.killpg(head.pid, sig)
                head.wait(wait)
                break
            except ProcessLookupError:
                break
            except subprocess.TimeoutExpired:
                continue
        shutil.rmtree(root, ignore_errors=True)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def connect(address: str):
    """Join the cluster at ``address`` ('auto': the one `ray start` made on this machine); returns the
    ray module."""
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

        from stylegan2_ops import tune_allocator

        from .factory import PairFactory

        tune_allocator()  # as in the generate command: freed buffers kept for reuse
        torch.set_num_threads(threads)
        self.factory = PairFactory(run_dir, device=device)

    def hashes(self) -> tuple[str, str]:
        return self.factory.generator_sha256, self.factory.interpreter_sha256

    def write(self, task: ShardTask, req: ShardRequest) -> dict | None:
        """The shard's record, or None when the task was cancelled (ray.cancel) before it was done."""
        import ray

        context = ray.get_runtime_context()
        try:
            return write_shard(self.factory, task, req, should_stop=context.is_canceled)
        except ShardStopped:
            return None

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
        self.pool = ActorPool(self.actors)  # for the scoring pass, whose chunks come back in order

    def scores(self, chunks, req):
        req = self.ray.put(req)  # once in the object store, not serialised with every task
        yield from self.pool.map(lambda actor, seeds: actor.scores.remote(seeds, req), chunks)

    def write(self, tasks, req, should_stop=None):
        """Shards to idle actors, records back as they complete; ``should_stop()`` cancels the tasks
        still queued or running (a running one stops after its batch in hand and leaves no file, or
        completes its shard if that was its last batch)."""
        todo, idle, running = list(tasks), list(self.actors), {}
        req = self.ray.put(req)  # once in the object store, not serialised with every task
        try:
            while todo or running:
                while todo and idle:
                    actor, task = idle.pop(), todo.pop(0)
                    running[actor.write.remote(task, req)] = (task, actor)
                if should_stop is not None and should_stop():
                    return
                done, _ = self.ray.wait(list(running), num_returns=1, timeout=0.5)
                for ref in done:
                    task, actor = running.pop(ref)
                    idle.append(actor)
                    rec = self.ray.get(ref)
                    if rec is not None:
                        yield task, rec
        finally:  # stopped early, or the consumer went away: cancel, and return once they have ended
            for ref in running:
                self.ray.cancel(ref)
            self.ray.wait(list(running), num_returns=len(running), timeout=STOP_WAIT_S)

    def close(self) -> None:
        for actor in self.actors:
            self.ray.kill(actor)
        self.actors = []


class RayPools:
    """The service's Ray workers: one pool per model, made on first use and remade when the model's
    weights change (a pool holds one generator + interpreter)."""

    def __init__(self, address: str, device: str = "cpu", workers: int | None = None, threads: int | None = None):
        self.address, self.device, self.workers, self.threads = address, device, workers, threads
        self.pools: dict[str, tuple[tuple[str, str], RayWorkers]] = {}
        self.lock = threading.Lock()  # job worker threads share the pools
        connect(address)

    def get(self, run_dir, hashes: tuple[str, str]) -> RayWorkers:
        with self.lock:
            return self._get(str(Path(run_dir).resolve()), tuple(hashes))

    def _get(self, key: str, hashes: tuple[str, str]) -> RayWorkers:
        held = self.pools.get(key)
        if held is None or held[0] != hashes:
            if held is not None:
                held[1].close()
            self.pools[key] = (hashes, RayWorkers(self.address, key, self.device, self.workers, self.threads, hashes))
        return self.pools[key][1]

    def close(self) -> None:
        with self.lock:
            for _, pool in self.pools.values():
                pool.close()
            self.pools = {}
