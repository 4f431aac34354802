"""The data-factory service against a real uvicorn process (`datasetgan serve`) on 127.0.0.1 with
the tiny run of conftest. Every pair the server sends is compared with the library's own
PairFactory + encode_pair output for the same seed, byte for byte."""
from __future__ import annotations

import base64
import hashlib
import io
import json
import os
import signal
import subprocess
import sys
import tarfile
import time
from pathlib import Path

import httpx
import numpy as np
import pytest
import torch
from PIL import Image

import datasetgan
import datasetgan.service as service
from support import free_port

from datasetgan.encoding import drop_most_uncertain, encode_pair
from datasetgan.factory import PairFactory

ALL = ["image", "mask", "overlay", "uncertainty"]
KEYS = {"image": "image.png", "mask": "mask.png", "overlay": "overlay.png", "uncertainty": "uncertainty.png"}


class Server:
    """`datasetgan serve` in a subprocess; its output goes to a log file shown when it fails to start."""

    def __init__(self, runs: Path, jobs: Path, log: Path, *args: str, api_key: str | None = None):
        self.runs, self.jobs, self.log, self.args, self.api_key = runs, jobs, log, args, api_key
        self.proc = None

    def start(self) -> "Server":
        self.port = free_port()
        env = {k: v for k, v in os.environ.items() if k != "DATASETGAN_API_KEY"}
        roots = {str(Path(m.__file__).resolve().parents[1]) for m in (datasetgan, service)}
        env["PYTHONPATH"] = os.pathsep.join(sorted(roots) + [env.get("PYTHONPATH", "")])
        if self.api_key:
            env["DATASETGAN_API_KEY"] = self.api_key
        cmd = [sys.executable, "-m", "datasetgan", "serve", "--runs", str(self.runs), "--jobs-dir", str(self.jobs),
               "--port", str(self.port), "--threads", "1", "--log-level", "warning", *self.args]
        self.logf = open(self.log, "ab")
        self.proc = subprocess.Popen(cmd, stdout=self.logf, stderr=subprocess.STDOUT, env=env)
        deadline = time.monotonic() + 600  # the first start may compile the fused ops
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                break
            try:
                if httpx.get(self.url("/healthz"), timeout=2).status_code == 200:
                    return self
            except httpx.HTTPError:
                pass
            time.sleep(0.2)
        self.kill()
        raise RuntimeError(f"server did not start:\n{self.log.read_text()[-3000:]}")

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.port}{path}"

    def client(self, **kw) -> httpx.Client:
        return httpx.Client(base_url=f"http://127.0.0.1:{self.port}", timeout=60, **kw)

    def counters(self) -> dict:
        return httpx.get(self.url("/readyz"), timeout=10).json()

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(20)
            except subprocess.TimeoutExpired:
                self.kill()
        self.logf.close()

    def kill(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(20)


def post_pairs(client: httpx.Client, body: dict, model: str = "run") -> httpx.Response:
    """POST a pairs request, waiting out a 429 (a slot is freed just after the previous stream ends)."""
    for _ in range(50):
        r = client.post(f"/v1/models/{model}/pairs", json=body)
        if r.status_code != 429:
            return r
        time.sleep(0.1)
    return r


@pytest.fixture(scope="module", autouse=True)
def reference_ops():
    """stylegan2_ops' reference backend, here and in the servers (which inherit the environment): the
    service does not depend on the backend, and its tests should not wait for the C++ build, which
    the ops tests cover. Both sides use the same backend, so their bytes can be compared."""
    old = os.environ.get("STYLEGAN2_OPS_BACKEND")
    os.environ["STYLEGAN2_OPS_BACKEND"] = "ref"
    yield
    if old is None:
        del os.environ["STYLEGAN2_OPS_BACKEND"]
    else:
        os.environ["STYLEGAN2_OPS_BACKEND"] = old


@pytest.fixture(scope="module")
def tiny_run(reference_ops, tmp_path_factory) -> Path:
    """The conftest recipe, built here under the reference backend (the session's tiny_run may be
    set up before this module's backend choice, and would then wait for the C++ build)."""
    from conftest import build_tiny_run
    return build_tiny_run(tmp_path_factory.mktemp("service_runs") / "run")


@pytest.fixture(scope="module")
def runs(tiny_run) -> Path:
    return tiny_run.parent  # the folder of runs; the tiny run's id is its folder name, "run"


@pytest.fixture(scope="module")
def factory(tiny_run) -> PairFactory:
    torch.set_num_threads(1)  # the servers use the other core
    return PairFactory(tiny_run)


def expected(factory: PairFactory, seeds, include=ALL, truncation=1.0) -> dict[int, dict[str, bytes]]:
    parts = tuple(KEYS[p] for p in include) + ("json",)
    return {p.seed: encode_pair(p, factory.classes, parts) for p in factory.pairs(seeds, truncation=truncation)}


@pytest.fixture(scope="module")
def server(runs, tmp_path_factory):
    tmp = tmp_path_factory.mktemp("server_a")
    s = Server(runs, tmp / "jobs", tmp / "log.txt", "--max-n", "20000", "--max-concurrent", "2",
               "--batch-size", "4").start()
    yield s
    s.stop()


@pytest.fixture(scope="module")
def job_server(runs, tmp_path_factory):
    tmp = tmp_path_factory.mktemp("server_b")
    s = Server(runs, tmp / "jobs", tmp / "log.txt", "--max-n", "8", "--max-job-n", "3000", "--shard-size", "40",
               "--batch-size", "4").start()
    yield s
    s.stop()


# -- models and streaming ---------------------------------------------------------------------------


def test_models_lists_the_run(server, tiny_run, factory):
    with server.client() as c:
        models = c.get("/v1/models").json()["models"]
        assert [m["id"] for m in models] == ["run"]
        m = models[0]
        assert (m["resolution"], m["channels"]) == (factory.resolution, factory.img_channels)
        assert [c_["name"] for c_ in m["classes"]] == [c_.name for c_ in factory.classes]
        assert m["generator_sha256"] == factory.generator_sha256
        assert m["interpreter_sha256"] == factory.interpreter_sha256
        assert c.get("/v1/models/run").json() == m
        assert c.get("/v1/models/nothing").status_code == 404


def test_stream_50_pairs_as_tar(server, factory):
    seeds = list(range(1000, 1050))
    with server.client() as c:
        r = post_pairs(c, {"n": 50, "seed_start": 1000, "include": ALL})
    assert r.status_code == 200, r.text
    assert r.headers["content-type"] == "application/x-tar"
    want = expected(factory, seeds)
    tar = tarfile.open(fileobj=io.BytesIO(r.content))
    members = tar.getmembers()
    assert [m.name for m in members] == [f"{s:08d}.{KEYS[p] if p in KEYS else p}" for s in seeds
                                         for p in ALL + ["json"]]
    k = len(factory.classes)
    for m in members:
        assert m.isreg() and m.mtime == 0 and m.uid == 0 and m.gid == 0 and m.mode == 0o644
        seed, key = int(m.name[:8]), m.name[9:]
        data = tar.extractfile(m).read()
        assert data == want[seed][key], m.name
        if key == "json":
            rec = json.loads(data)
            assert rec["seed"] == seed and rec["generator_sha256"] == factory.generator_sha256
            continue
        im = Image.open(io.BytesIO(data))
        assert im.format == "PNG" and im.size == (factory.resolution, factory.resolution)
        if key == "mask.png":
            assert im.mode == "L" and np.asarray(im).max() < k
        elif key == "image.png":
            assert im.mode == ("L" if factory.img_channels == 1 else "RGB")
        elif key == "overlay.png":
            assert im.mode == "RGB"
    assert len(r.content) % 512 == 0


def test_stream_50_pairs_as_ndjson(server, factory):
    with server.client() as c:
        r = post_pairs(c, {"n": 50, "seed_start": 7, "format": "ndjson", "include": ["mask", "image"]})
    assert r.status_code == 200 and r.headers["content-type"] == "application/x-ndjson"
    lines = r.content.decode().splitlines()
    want = expected(factory, range(7, 57), include=["mask", "image"])
    assert len(lines) == 50
    for seed, line in zip(range(7, 57), lines):
        doc = json.loads(line)
        assert set(doc) == {"seed", "image.png", "mask.png", "json"}
        assert doc["seed"] == seed
        assert base64.b64decode(doc["image.png"]) == want[seed]["image.png"]
        mask = base64.b64decode(doc["mask.png"])
        assert mask == want[seed]["mask.png"]
        assert np.asarray(Image.open(io.BytesIO(mask))).max() < len(factory.classes)
        assert doc["json"] == json.loads(want[seed]["json"])


def test_same_request_gives_the_same_bytes(server):
    body = {"n": 12, "seed_start": 300, "include": ALL, "truncation": 0.7}
    with server.client() as c:
        a, b = post_pairs(c, body), post_pairs(c, body)
        nd = [post_pairs(c, {**body, "format": "ndjson"}).content for _ in range(2)]
        listed = post_pairs(c, {**{k: v for k, v in body.items() if k != "seed_start"},
                                "seeds": list(range(300, 312))})
    assert a.status_code == b.status_code == 200
    assert a.content == b.content and nd[0] == nd[1]
    assert listed.content == a.content  # the same seeds listed explicitly: the same pairs


def test_drop_uncertain_streams_the_kept_seeds(server, factory):
    seeds = list(range(500, 520))
    scores = [p.score for p in factory.pairs(seeds)]
    kept = [seeds[i] for i in drop_most_uncertain(scores, 0.25)]
    with server.client() as c:
        r = post_pairs(c, {"n": 20, "seed_start": 500, "drop_uncertain": 0.25, "format": "ndjson"})
    got = [json.loads(line)["seed"] for line in r.content.decode().splitlines()]
    assert got == kept and len(got) == 15


def wait_stable(server: Server, key: str, quiet: float = 1.5, timeout: float = 60) -> int:
    """The counter once it has not changed for ``quiet`` seconds."""
    deadline = time.monotonic() + timeout
    last = server.counters().get(key, 0)
    while time.monotonic() < deadline:
        time.sleep(quiet)
        now = server.counters().get(key, 0)
        if now == last:
            return now
        last = now
    raise AssertionError(f"{key} still growing after {timeout} s")


def test_client_disconnect_stops_generation(server):
    n = 20000
    before = wait_stable(server, "generated_pairs_total", quiet=0.5)
    with server.client() as c:
        with c.stream("POST", "/v1/models/run/pairs", json={"n": n, "include": ALL}) as r:
            assert r.status_code == 200
            got = 0
            for chunk in r.iter_raw():
                got += len(chunk)
                if got > 20_000:
                    break
    after = wait_stable(server, "generated_pairs_total")
    print(f"generated {after - before} of {n} pairs before stopping (client read {got} bytes)")
    assert 0 < after - before < n // 4
    assert server.counters()["active_streams"] == 0


def test_concurrency_limit_and_health_while_streaming(server):
    with server.client() as c, server.client() as c2:
        with c.stream("POST", "/v1/models/run/pairs", json={"n": 20000}) as r1, \
                c2.stream("POST", "/v1/models/run/pairs", json={"n": 20000}) as r2:
            assert r1.status_code == r2.status_code == 200
            it1, it2 = r1.iter_raw(), r2.iter_raw()  # kept alive: a dropped iterator closes its response
            next(it1), next(it2)
            with server.client() as c3:
                r3 = c3.post("/v1/models/run/pairs", json={"n": 1})
                assert r3.status_code == 429 and int(r3.headers["retry-after"]) > 0
                assert "retry" in r3.json()["detail"]
                health = httpx.get(server.url("/healthz"), timeout=5)  # answered while both streams generate
                assert health.status_code == 200
    deadline = time.monotonic() + 30
    while server.counters()["active_streams"] and time.monotonic() < deadline:
        time.sleep(0.2)
    with server.client() as c:
        assert c.post("/v1/models/run/pairs", json={"n": 1}).status_code == 200


@pytest.mark.parametrize("body", [
    {"n": 0}, {"n": -1}, {"n": 10 ** 9}, {"n": "5"}, {"n": True}, {"n": 2.5}, {"n": None}, {},
    {"n": 5, "colour": "red"}, {"n": 2, "format": "zip"}, {"n": 2, "include": ["image", "image"]},
    {"n": 2, "include": ["depth"]}, {"n": 2, "truncation": "high"}, {"n": 2, "truncation": -1},
    {"n": 2, "drop_uncertain": 1.0}, {"n": 2, "seeds": [1, 2, 3]}, {"n": 2, "seed_start": 1, "seeds": [1, 2]},
    {"seeds": [4, 4]}, {"seeds": [-3]}, {"n": 2, "seed_start": 99_999_999}, [1, 2], "n=5", 5,
    {"n": 20001},  # over --max-n: points to jobs
])
def test_bad_inputs_get_a_4xx_with_a_message(server, body):
    with server.client() as c:
        r = c.post("/v1/models/run/pairs", json=body)
    assert r.status_code == 422, r.text
    doc = r.json()
    message = doc.get("message") or doc["detail"]
    assert isinstance(message, str) and message
    if body == {"n": 20001}:
        assert "/jobs" in message


def test_malformed_unknown_and_oversized_requests(server):
    with server.client() as c:
        r = c.post("/v1/models/run/pairs", content=b'{"n": 5,', headers={"content-type": "application/json"})
        assert r.status_code == 422 and "JSON" in r.text
        r = c.post("/v1/models/run/pairs", content=b"n=5", headers={"content-type": "text/plain"})
        assert 400 <= r.status_code < 500
        r = c.post("/v1/models/nope/pairs", json={"n": 2})
        assert r.status_code == 404 and "nope" in r.json()["detail"]
        r = c.post("/v1/models/..%2F..%2Fetc/pairs", json={"n": 2})
        assert r.status_code == 404
        big = b'{"n": 1, "seeds": [' + b"1," * (1 << 20) + b"2]}"
        r = c.post("/v1/models/run/pairs", content=big, headers={"content-type": "application/json"})
        assert r.status_code == 413 and "limit" in r.json()["detail"]

        def chunked():
            for _ in range(64):
                yield b" " * 32768
        r = c.post("/v1/models/run/pairs", content=chunked(), headers={"content-type": "application/json"})
        assert r.status_code == 413
        assert c.get("/v1/jobs/0123456789abcdef").status_code == 404
        assert c.get("/v1/jobs/../../x").status_code == 404


def test_annotation_page_mount(server):
    with server.client() as c:
        r = c.get("/annotate/run/")
    try:
        import datasetgan.annotate.api  # noqa: F401
    except ImportError:
        assert r.status_code == 404 and "annotate" in r.json()["detail"]
    else:
        assert r.status_code == 200 and "html" in r.headers["content-type"]


# -- jobs ---------------------------------------------------------------------------------------------


def sse_events(client: httpx.Client, path: str, until=lambda ev, data: ev == "end", timeout: float = 120):
    """(event, data) pairs of a server-sent event stream, up to and including the first that ``until``."""
    out = []
    with client.stream("GET", path, timeout=timeout) as r:
        assert r.status_code == 200 and r.headers["content-type"].startswith("text/event-stream")
        event, data = None, None
        for line in r.iter_lines():
            if line.startswith("event: "):
                event = line[7:]
            elif line.startswith("data: "):
                data = json.loads(line[6:])
            elif line == "" and event:
                out.append((event, data))
                if until(event, data):
                    return out
                event = data = None
    return out


def tar_members(data: bytes) -> list[tuple[str, bytes]]:
    tar = tarfile.open(fileobj=io.BytesIO(data))
    return [(m.name, tar.extractfile(m).read()) for m in tar.getmembers()]


def test_job_runs_survives_restart_downloads_with_range(job_server, factory):
    s, n, size = job_server, 600, 40
    body = {"n": n, "seed_start": 2000}
    with s.client() as c:
        r = c.post("/v1/models/run/jobs", json=body, headers={"Idempotency-Key": "job-1"})
        assert r.status_code == 202, r.text
        job_id, location = r.json()["id"], r.headers["location"]
        assert location == f"/v1/jobs/{job_id}"
        again = c.post("/v1/models/run/jobs", json=body, headers={"Idempotency-Key": "job-1"})
        assert again.status_code == 202 and again.json()["id"] == job_id and again.headers["location"] == location
        other = c.post("/v1/models/run/jobs", json={**body, "n": 5}, headers={"Idempotency-Key": "job-1"})
        assert other.status_code == 409
        events = sse_events(c, f"{location}/events", until=lambda ev, d: ev == "end" or d["shards"] >= 3)
    assert events[-1][0] == "progress" and events[-1][1]["state"] == "running"
    done_counts = [d["pairs_done"] for _, d in events]
    assert done_counts == sorted(done_counts)

    s.kill()  # a crash: no chance to save anything more
    on_disk = json.loads((s.jobs / job_id / "job.json").read_text())
    assert on_disk["state"] == "running" and 3 <= len(on_disk["shards"]) < n // size
    kept_shards = len(on_disk["shards"])
    s.start()
    with s.client() as c:
        job = c.get(location).json()
        assert job["state"] in ("queued", "running") and len(job["shards"]) >= kept_shards
        events = sse_events(c, f"{location}/events")
        assert events[-1][1]["state"] == "done"
        job = c.get(location).json()
        assert job["state"] == "done" and job["pairs_done"] == n and len(job["shards"]) == n // size
        # the restarted server continued after the last complete shard instead of starting again
        assert s.counters()["generated_pairs_total"] == n - kept_shards * size
        shards = []
        for rec in job["shards"]:
            r = c.get(rec["url"])
            assert r.status_code == 200 and len(r.content) == rec["bytes"]
            assert hashlib.sha256(r.content).hexdigest() == rec["sha256"]
            shards.append(r.content)
        names = [name for data in shards for name, _ in tar_members(data)]
        assert names == [f"{seed:08d}.{k}" for seed in range(2000, 2000 + n) for k in ("image.png", "mask.png", "json")]
        # shards before, at and after the crash hold exactly the library's pairs
        for k in (kept_shards - 1, kept_shards, len(shards) - 1):
            seeds = range(2000 + k * size, 2000 + (k + 1) * size)
            want = expected(factory, seeds, include=["image", "mask"])
            got = tar_members(shards[k])
            assert got == [(f"{sd:08d}.{key}", want[sd][key]) for sd in seeds for key in ("image.png", "mask.png", "json")]
        # HTTP Range on a shard
        full = shards[0]
        r = c.get(job["shards"][0]["url"], headers={"Range": "bytes=1000-2999"})
        assert r.status_code == 206 and r.content == full[1000:3000]
        assert r.headers["content-range"] == f"bytes 1000-2999/{len(full)}"
        r = c.get(job["shards"][0]["url"], headers={"Range": "bytes=-500"})
        assert r.status_code == 206 and r.content == full[-500:]
        r = c.get(job["shards"][0]["url"], headers={"Range": f"bytes={len(full) + 10}-"})
        assert r.status_code == 416
        assert c.get(f"{location}/shards/{n // size}").status_code == 404
        # a finished job is deleted on DELETE
        assert c.delete(location).json()["result"] == "deleted"
        assert c.get(location).status_code == 404 and c.get(job["shards"][0]["url"]).status_code == 404


def test_job_cancel_stops_it(job_server):
    s = job_server
    with s.client() as c:
        r = c.post("/v1/models/run/jobs", json={"n": 3000, "seed_start": 50_000})
        location = r.headers["location"]
        sse_events(c, f"{location}/events", until=lambda ev, d: ev == "end" or d["pairs_done"] > 0)
        r = c.delete(location)
        assert r.status_code == 200 and r.json()["result"] == "cancelled"
        job = c.get(location).json()
        assert job["state"] == "cancelled" and job["shards"] == []
        assert sse_events(c, f"{location}/events")[-1][1]["state"] == "cancelled"
        stopped = wait_stable(s, "generated_pairs_total", quiet=1.0)
        assert stopped < 3000 + s.counters().get("generated_pairs_total", 0)  # a number, and not growing
        assert job["pairs_done"] < 3000
        # the worker is free again: a small drop_uncertain job completes
        r = c.post("/v1/models/run/jobs", json={"n": 30, "seed_start": 10, "drop_uncertain": 0.2})
        events = sse_events(c, f"{r.headers['location']}/events")
        assert events[-1][1]["state"] == "done" and events[-1][1]["pairs_total"] == 24
        assert wait_stable(s, "generated_pairs_total", quiet=0.5) == stopped + 30 + 24


def test_drop_uncertain_job_keeps_the_right_seeds(job_server, factory):
    seeds = list(range(10, 40))
    kept = [seeds[i] for i in drop_most_uncertain([p.score for p in factory.pairs(seeds)], 0.2)]
    with job_server.client() as c:
        r = c.post("/v1/models/run/jobs", json={"n": 30, "seed_start": 10, "drop_uncertain": 0.2})
        sse_events(c, f"{r.headers['location']}/events")
        job = c.get(r.headers["location"]).json()
        names = [name for rec in job["shards"] for name, _ in tar_members(c.get(rec["url"]).content)]
    assert job["dropped"] == 6 and sorted({int(x[:8]) for x in names}) == kept


# -- API key and schema fuzzing -------------------------------------------------------------------------


def test_api_key_required_except_health(runs, tmp_path):
    s = Server(runs, tmp_path / "jobs", tmp_path / "log.txt", api_key="s3cret-key").start()
    try:
        assert httpx.get(s.url("/healthz")).status_code == 200
        assert httpx.get(s.url("/readyz")).status_code == 200
        for path in ("/v1/models", "/docs", "/openapi.json", "/metrics", "/v1/jobs"):
            r = httpx.get(s.url(path))
            assert r.status_code == 401 and "API key" in r.json()["detail"], path
        assert httpx.get(s.url("/v1/models"), headers={"X-API-Key": "wrong"}).status_code == 401
        r = httpx.post(s.url("/v1/models/run/pairs"), json={"n": 2})
        assert r.status_code == 401
        assert httpx.get(s.url("/v1/models"), headers={"X-API-Key": "s3cret-key"}).status_code == 200
        assert httpx.get(s.url("/v1/models"), headers={"Authorization": "Bearer s3cret-key"}).status_code == 200
        assert httpx.get(s.url("/docs"), auth=("any", "s3cret-key")).status_code == 200
        r = httpx.post(s.url("/v1/models/run/pairs"), json={"n": 2}, headers={"X-API-Key": "s3cret-key"})
        assert r.status_code == 200 and len(tarfile.open(fileobj=io.BytesIO(r.content)).getnames()) == 6
    finally:
        s.stop()


def test_no_key_means_open(server):
    assert httpx.get(server.url("/v1/models")).status_code == 200
    assert httpx.get(server.url("/docs")).status_code == 200


def test_schemathesis_finds_no_server_error(job_server, tmp_path):
    exe = Path(sys.executable).with_name("schemathesis")
    cmd = [str(exe) if exe.exists() else "schemathesis", "run", job_server.url("/openapi.json"),
           "--checks", "not_a_server_error", "--max-examples", "20", "--max-time", "25", "--workers", "1",
           "--request-timeout", "30", "--seed", "1", "--generation-database", "none"]
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=240, cwd=tmp_path)
    print(out.stdout[-4000:])
    assert out.returncode == 0, out.stdout[-6000:] + out.stderr[-2000:]
