"""Unit tests of the service parts that need no server: tar framing, request schema, guards, registry,
and how far generation runs after a stream is abandoned (with a counting stand-in factory)."""

from __future__ import annotations

import base64
import io
import json
import tarfile
from dataclasses import dataclass

import anyio
import numpy as np
import pytest
from pydantic import ValidationError

from datasetgan.encoding import RECORD, drop_most_uncertain, tar_end, tar_member
from datasetgan.service.guards import Slots, presented_key
from datasetgan.service.registry import ModelRegistry, UnknownModel
from datasetgan.service.routers.models import thread_iter
from datasetgan.service.schemas import JobRequest, PairsRequest
from datasetgan.service.streaming import pair_chunks
from datasetgan.weightfiles import write_pair


def test_tar_members_are_deterministic_and_readable():
    data = [(f"{s:08d}.image.png", bytes(range(s % 256)) * 3) for s in (0, 1, 77, 512)]
    body = b"".join(tar_member(n, d) for n, d in data)
    body += tar_end(len(body))
    assert len(body) % RECORD == 0
    tar = tarfile.open(fileobj=io.BytesIO(body))
    got = [(m.name, tar.extractfile(m).read(), m.mtime, m.uid, m.uname, m.mode) for m in tar.getmembers()]
    assert got == [(n, d, 0, 0, "", 0o644) for n, d in data]
    # python's own writer with the same metadata gives the same member bytes
    ref = io.BytesIO()
    with tarfile.open(fileobj=ref, mode="w", format=tarfile.USTAR_FORMAT) as t:
        for n, d in data:
            info = tarfile.TarInfo(n)
            info.size, info.mtime, info.mode, info.uname, info.gname = len(d), 0, 0o644, "", ""
            t.addfile(info, io.BytesIO(d))
    assert ref.getvalue() == body


@pytest.mark.parametrize(
    "body, ok",
    [
        ({"n": 3}, True),
        ({"seeds": [5, 2]}, True),
        ({"n": 2, "seeds": [5, 2]}, True),
        ({"n": 0}, False),
        ({"n": "3"}, False),
        ({"n": 3, "extra": 1}, False),
        ({"n": 3, "truncation": float("nan")}, False),
        ({"seeds": []}, False),
        ({"seed_start": 5}, False),
        ({"n": 2, "seed_start": 99_999_999}, False),
        ({"n": 3, "include": []}, True),
        ({"n": 3, "drop_uncertain": -0.1}, False),
    ],
)
def test_request_schema(body, ok):
    if ok:
        req = PairsRequest.model_validate(body)
        assert req.n == len(body.get("seeds", [])) or req.n == body["n"]
        assert [req.seed_at(i) for i in range(req.n)] == body.get("seeds", list(range(req.n)))
    else:
        with pytest.raises(ValidationError):
            PairsRequest.model_validate(body)
    with pytest.raises(ValidationError):
        JobRequest.model_validate({"n": 3, "format": "tar"})  # jobs always write tar shards


def test_presented_key_forms():
    assert presented_key({b"x-api-key": b"k1"}) == "k1"
    assert presented_key({b"authorization": b"Bearer k2"}) == "k2"
    assert presented_key({b"authorization": b"Basic " + base64.b64encode(b"user:k3")}) == "k3"
    assert presented_key({b"authorization": b"Basic !!"}) is None
    assert presented_key({}) is None


def test_slots_limit_and_idempotent_release():
    slots = Slots(2)
    a, b = slots.try_acquire(), slots.try_acquire()
    assert a and b and slots.try_acquire() is None
    a.release()
    a.release()
    assert slots.used == 1 and slots.try_acquire() is not None and slots.try_acquire() is None


def test_registry_lists_ready_runs_only_and_refuses_paths(tmp_path):
    def sidecar(path, **meta):
        write_pair(path, b"x", meta)

    for name in ("ready", "no_interpreter"):
        (tmp_path / name).mkdir()
        sidecar(tmp_path / name / "generator.safetensors", config={"resolution": 32, "img_channels": 3})
    sidecar(
        tmp_path / "ready" / "interpreter.safetensors",
        classes=[{"id": 0, "name": "bg", "color": "#000000"}, {"id": 1, "name": "fg", "color": "#ff0000"}],
    )
    (tmp_path / ".jobs").mkdir()
    reg = ModelRegistry(tmp_path, loader=lambda p: pytest.fail("listing must not load models"))
    listed = [r.public() for r in reg.list()]
    assert [m["id"] for m in listed] == ["ready"]
    assert listed[0]["resolution"] == 32 and listed[0]["channels"] == 3 and len(listed[0]["classes"]) == 2
    for bad in ("no_interpreter", "..", "../ready", ".jobs", "missing", "a/b", ""):
        with pytest.raises(UnknownModel):
            reg.info(bad)


@dataclass
class FakePair:
    seed: int
    image: np.ndarray
    mask: np.ndarray
    uncertainty: np.ndarray
    score: float
    record: dict


class CountingFactory:
    """Stand-in with PairFactory's interface that counts the pairs it has computed."""

    classes = ["a", "b"]

    def __init__(self):
        self.made = 0

    def pairs(self, seeds, truncation=1.0, batch_size=8, should_stop=None):
        seeds = list(seeds)
        for s in range(0, len(seeds), batch_size):
            if should_stop and should_stop():
                return
            batch = seeds[s : s + batch_size]
            self.made += len(batch)
            z = np.zeros((4, 4), np.uint8)
            yield from (FakePair(x, z[..., None], z, z.astype(np.float32), float(x % 7), {"seed": x}) for x in batch)


@pytest.mark.parametrize("drop", [0.0, 0.5])
def test_abandoned_stream_stops_within_one_batch(drop):
    factory, batch = CountingFactory(), 4

    async def consume_three():
        stop = []
        chunks = pair_chunks(
            factory,
            range(1000),
            truncation=1.0,
            include=["image"],
            fmt="tar",
            drop_uncertain=drop,
            batch_size=batch,
            should_stop=lambda: bool(stop),
        )
        got = 0
        agen = thread_iter(chunks)
        async for _ in agen:
            got += 1
            if got == 3:
                break
        await agen.aclose()
        stop.append(True)
        return got

    assert anyio.run(consume_three) == 3
    made = factory.made
    scored = 1000 if drop else 0
    assert made <= scored + 3 + batch  # the batch in hand at most, never the rest of the 1000
    assert made >= scored + 3


def test_drop_uncertain_stream_is_the_kept_subset():
    factory = CountingFactory()
    chunks = list(
        pair_chunks(
            factory,
            range(10, 30),
            truncation=1.0,
            include=[],
            fmt="ndjson",
            drop_uncertain=0.25,
            batch_size=3,
            should_stop=lambda: False,
        )
    )
    seeds = [json.loads(c)["seed"] for c in chunks if c]
    kept = [10 + i for i in drop_most_uncertain([float(s % 7) for s in range(10, 30)], 0.25)]
    assert seeds == kept and len(seeds) == 15


class FakeRegistry:
    def __init__(self, hashes):
        self.hashes, self.made = hashes, CountingFactory()

    def info(self, model):
        from types import SimpleNamespace

        return SimpleNamespace(generator_sha256=self.hashes[0], interpreter_sha256=self.hashes[1])

    def factory(self, model, hashes=None):
        return self.made


def run_jobs(store, registry, timeout=30):
    import time

    from datasetgan.service.jobs import JobRunner

    runner = JobRunner(store, registry, batch_size=4)
    runner.start()
    deadline = time.monotonic() + timeout
    while store.unfinished() and time.monotonic() < deadline:
        time.sleep(0.05)
    runner.stop()


def test_job_of_a_replaced_model_is_reported_not_mixed(tmp_path):
    from datasetgan.service.jobs import JobStore

    store = JobStore(tmp_path)
    job, created = store.create("m", JobRequest(n=10), ("g1", "i1"), 4, None)
    run_jobs(JobStore(tmp_path), FakeRegistry(("g2", "i1")))  # a restarted server sees another generator
    state = json.loads((tmp_path / job["id"] / "job.json").read_text())
    assert state["state"] == "failed" and "changed" in state["error"] and state["shards"] == []


def test_worker_survives_a_job_whose_failure_cannot_be_recorded(tmp_path):
    """A job deleted while it fails (its state file gone) must not kill the worker thread: /readyz would
    report the service not ready for good."""
    import threading
    import time

    from datasetgan.service.jobs import JobRunner, JobStore

    store = JobStore(tmp_path)
    job, _ = store.create("m", JobRequest(n=10), ("g1", "i1"), 4, None)  # fails: the model changed
    tried = threading.Event()
    real_update = store.update

    def update(job_id, **kw):
        if kw.get("state") == "failed":
            tried.set()
            raise FileNotFoundError("job folder deleted meanwhile")
        return real_update(job_id, **kw)

    store.update = update
    runner = JobRunner(store, FakeRegistry(("g2", "i1")), batch_size=4)
    runner.start()
    try:
        assert tried.wait(30)
        time.sleep(0.5)  # the worker has handled the error by now (or died of it)
        assert all(t.is_alive() for t in runner.threads)
    finally:
        runner.stop()


def test_job_resumes_after_its_last_complete_shard(tmp_path):
    from datasetgan.service.jobs import JobStore

    store = JobStore(tmp_path)
    job, _ = store.create("m", JobRequest(n=10, seed_start=3), ("g", "i"), 4, "key")
    reg = FakeRegistry(("g", "i"))
    run_jobs(store, reg)
    full = [(tmp_path / job["id"] / "shards" / f"shard-{k:05d}.tar").read_bytes() for k in range(3)]
    # pretend the server died while writing the last shard: drop it from the state and the disk
    state = json.loads((tmp_path / job["id"] / "job.json").read_text())
    state.update(state="running", shards=state["shards"][:2])
    (tmp_path / job["id"] / "job.json").write_text(json.dumps(state))
    (tmp_path / job["id"] / "shards" / "shard-00002.tar").unlink()
    reg2 = FakeRegistry(("g", "i"))
    store2 = JobStore(tmp_path)
    assert store2.create("m", JobRequest(n=10, seed_start=3), ("g", "i"), 4, "key")[0]["id"] == job["id"]
    run_jobs(store2, reg2)
    assert reg2.made.made == 2  # only the two pairs of the missing shard were made again
    again = [(tmp_path / job["id"] / "shards" / f"shard-{k:05d}.tar").read_bytes() for k in range(3)]
    assert again == full and store2.get(job["id"])["state"] == "done"
    names = [m for data in again for m in tarfile.open(fileobj=io.BytesIO(data)).getnames()]
    assert names == [f"{s:08d}.{k}" for s in range(3, 13) for k in ("image.png", "mask.png", "json")]


@pytest.mark.parametrize("kill_at", [0, 1, 2])
def test_job_creation_killed_at_any_point_never_makes_two_jobs(tmp_path, monkeypatch, kill_at):
    """A server killed between the job's state and its Idempotency-Key file: a retry with the key
    after the restart finds the first job, or makes the only one."""
    import datasetgan.service.jobs as jobs

    class Killed(BaseException):
        pass

    real_write, writes = jobs.atomic_write_text, []

    def write(path, text):
        if len(writes) == kill_at:
            raise Killed()
        writes.append(path)
        real_write(path, text)

    req = JobRequest(n=10)
    monkeypatch.setattr(jobs, "atomic_write_text", write)
    try:
        first = jobs.JobStore(tmp_path).create("m", req, ("g", "i"), 4, "key")[0]
    except Killed:
        first = None
    monkeypatch.undo()
    store = jobs.JobStore(tmp_path)  # the restarted server
    job, created = store.create("m", req, ("g", "i"), 4, "key")
    assert [p.parent.name for p in tmp_path.glob("*/job.json")] == [job["id"]] == list(store.jobs)
    assert created == (first is None)


def test_serve_cli_refuses_bad_options(tmp_path):
    from click.testing import CliRunner

    from datasetgan.cli import main

    runner = CliRunner()
    r = runner.invoke(main, ["serve", "--help"])
    assert r.exit_code == 0 and "Example" in r.output
    r = runner.invoke(main, ["serve", "--runs", str(tmp_path / "missing")])
    assert r.exit_code == 2 and "no such folder" in r.output
    r = runner.invoke(main, ["serve", "--runs", str(tmp_path), "--max-n", "0"])
    assert r.exit_code == 2 and "--max-n" in r.output
    (tmp_path / "file").write_text("")
    r = runner.invoke(main, ["serve", "--runs", str(tmp_path), "--jobs-dir", str(tmp_path / "file" / "jobs")])
    assert r.exit_code == 1 and "jobs folder" in r.output and "Traceback" not in r.output
