"""`datasetgan generate --format wds --ray` on a real Ray cluster (a head node on 127.0.0.1 with its own
HOME and temp dir, started once for the module), against a local run of the same command."""
from __future__ import annotations

import hashlib
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest

pytest.importorskip("ray", reason="the optional extra `ray` is not installed (pip install '.[ray]')")

import datasetgan  # noqa: E402
from stylegan2_ops.build import cache_root  # noqa: E402
from support import free_port, wait_ready  # noqa: E402

ROOT = str(Path(datasetgan.__file__).resolve().parents[1])


def ray_env(home: Path) -> dict:
    env = {k: v for k, v in os.environ.items() if not k.startswith("RAY_")}
    env.update(HOME=str(home), PYTHONPATH=os.pathsep.join([ROOT, env.get("PYTHONPATH", "")]),
               RAY_USAGE_STATS_ENABLED="0", OMP_NUM_THREADS="1", STYLEGAN2_OPS_CACHE=str(cache_root()))
    return env


@pytest.fixture(scope="module")
def ray_cluster():
    """A one-node Ray cluster on 127.0.0.1 with its own HOME, shared by the module; yields (address,
    the environment for its drivers)."""
    from datasetgan.raygen import local_cluster

    home = Path(tempfile.mkdtemp(prefix="dg-ray-home-"))
    env = ray_env(home)
    try:
        with local_cluster(cpus=2, env=env) as address:
            yield address, env
    finally:
        shutil.rmtree(home, ignore_errors=True)


def generate(run, out, env, *args, timeout=600):
    cmd = [sys.executable, "-m", "datasetgan", "generate", str(run), "--format", "wds", "--out", str(out), *args]
    return subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=timeout)


def test_ray_shards_equal_local_shards_and_resume(ray_cluster, tiny_run, tmp_path):
    address, env = ray_cluster
    args = ["--n", "7", "--seed-start", "40", "--shard-size", "2", "--prefix", "set", "--drop-uncertain", "0.2"]
    local = generate(tiny_run, tmp_path / "local", env, *args)
    assert local.returncode == 0, local.stderr
    remote = generate(tiny_run, tmp_path / "ray", env, *args, "--ray", address, "--workers", "2")
    assert remote.returncode == 0, remote.stderr
    assert "shards 3/3" in remote.stderr  # the progress bar counts shards (and pairs)
    man_l = json.loads((tmp_path / "local" / "manifest.json").read_text())
    man_r = json.loads((tmp_path / "ray" / "manifest.json").read_text())
    assert man_r == man_l and len(man_r["seeds_kept"]) == 6 and man_r["shards"] == [f"set-00000{k}.tar" for k in range(3)]
    for rec in man_r["shard_info"]:
        data = (tmp_path / "ray" / rec["name"]).read_bytes()
        assert data == (tmp_path / "local" / rec["name"]).read_bytes()
        assert hashlib.sha256(data).hexdigest() == rec["sha256"]

    # a rerun skips finished shards: only the removed one is made again, byte for byte
    before = {rec["name"]: (tmp_path / "ray" / rec["name"]).stat().st_mtime_ns for rec in man_r["shard_info"]}
    (tmp_path / "ray" / "set-000002.tar").unlink()
    again = generate(tiny_run, tmp_path / "ray", env, *args, "--ray", address)
    assert again.returncode == 0, again.stderr
    after = {name: (tmp_path / "ray" / name).stat().st_mtime_ns for name in before}
    assert [n for n in before if before[n] != after[n]] == ["set-000002.tar"]
    assert (tmp_path / "ray" / "set-000002.tar").read_bytes() == (tmp_path / "local" / "set-000002.tar").read_bytes()


def test_ray_refuses_a_run_it_cannot_load(ray_cluster, tmp_path):
    address, env = ray_cluster
    r = generate(tmp_path / "missing", tmp_path / "o", env, "--n", "2", "--ray", address)
    assert r.returncode == 1 and "does not exist" in r.stderr and "Traceback" not in r.stderr


def test_ray_missing_extra_says_how_to_install(tiny_run, tmp_path):
    """Without the extra, --ray fails with one line naming the install command (Ray hidden from import)."""
    blocker = tmp_path / "noray"
    (blocker / "ray").mkdir(parents=True)
    (blocker / "ray" / "__init__.py").write_text("raise ImportError('no ray here')\n")
    env = ray_env(tmp_path)
    env["PYTHONPATH"] = os.pathsep.join([str(blocker), env["PYTHONPATH"]])
    r = generate(tiny_run, tmp_path / "o", env, "--n", "2", "--ray", "auto")
    assert r.returncode == 1 and "pip install 'datasetgan[ray]'" in r.stderr and "Traceback" not in r.stderr


def sse_until_end(client, url) -> list[dict]:
    events, event = [], None
    with client.stream("GET", url, timeout=300) as r:
        for line in r.iter_lines():
            if line.startswith("event: "):
                event = line[7:]
            elif line.startswith("data: "):
                events.append(json.loads(line[6:]))
                if event == "end":
                    return events
    return events


def expected_shard(factory, seeds, parts, path) -> bytes:
    from datasetgan.encoding import ShardFile, encode_parts

    with ShardFile(path) as shard:
        for pair in factory.pairs(seeds):
            shard.add(pair.seed, encode_parts(pair, factory.classes, parts))
    return Path(path).read_bytes()


def test_serve_runs_jobs_on_ray(ray_cluster, tiny_run, tmp_path):
    import httpx

    from datasetgan.factory import PairFactory

    address, env = ray_cluster
    runs = tmp_path / "runs"
    shutil.copytree(tiny_run, runs / "run")
    port = free_port()
    log = open(tmp_path / "server.log", "wb")
    server = subprocess.Popen([sys.executable, "-m", "datasetgan", "serve", "--runs", str(runs), "--port", str(port),
                               "--jobs-dir", str(tmp_path / "jobs"), "--shard-size", "2", "--threads", "1",
                               "--log-level", "warning", "--ray", address, "--ray-workers", "2"],
                              env=env, stdout=log, stderr=subprocess.STDOUT)
    try:
        with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=60) as c:
            wait_ready(c, server, tmp_path / "server.log")
            parts = ["mask", "image"]
            r = c.post("/v1/models/run/jobs", json={"n": 6, "seed_start": 50, "include": parts})
            assert r.status_code == 202, r.text
            location = r.headers["location"]
            events = sse_until_end(c, f"{location}/events")
            assert events[-1]["state"] == "done" and events[-1]["shards"] == 3, events
            job = c.get(location).json()
            factory = PairFactory(runs / "run")
            for rec in job["shards"]:
                data = c.get(rec["url"]).content
                assert hashlib.sha256(data).hexdigest() == rec["sha256"]
                seeds = range(50 + 2 * rec["index"], 52 + 2 * rec["index"])
                assert data == expected_shard(factory, seeds, parts, tmp_path / f"want-{rec['index']}.tar")
            whole = c.get(job["shards"][1]["url"]).content
            part = c.get(job["shards"][1]["url"], headers={"Range": "bytes=100-299"})
            assert part.status_code == 206 and part.content == whole[100:300]

            # DELETE cancels the job's Ray tasks: no shard appears after the cancellation
            r = c.post("/v1/models/run/jobs", json={"n": 400, "seed_start": 0})
            big = r.json()
            shards = tmp_path / "jobs" / big["id"] / "shards"
            deadline = time.monotonic() + 300
            while not (shards.is_dir() and any(shards.glob("*.tar"))):
                assert time.monotonic() < deadline
                time.sleep(0.2)
            assert c.delete(big["url"]).json()["result"] == "cancelled"
            time.sleep(3)  # a task still running would write its shard now
            assert not shards.exists() or not any(shards.iterdir())
            assert c.get(big["url"]).json()["state"] == "cancelled"
    finally:
        server.terminate()
        server.wait(60)
        log.close()


def cluster_workers(home: str) -> list[int]:
    """PIDs of this cluster's shard workers (Ray titles them ray::ShardMaker; HOME tells our cluster's)."""
    pids = []
    for proc in Path("/proc").iterdir():
        try:
            cmd = (proc / "cmdline").read_bytes()
            environ = (proc / "environ").read_bytes().split(b"\0")
        except (OSError, ValueError):
            continue
        if b"ray::ShardMaker" in cmd and f"HOME={home}".encode() in environ:
            pids.append(int(proc.name))
    return pids


def test_a_killed_worker_is_restarted_and_its_shard_retried(ray_cluster, tiny_run, tmp_path):
    address, env = ray_cluster
    args = ["--n", "60", "--shard-size", "2", "--batch-size", "1"]
    out = tmp_path / "ray"
    proc = subprocess.Popen([sys.executable, "-m", "datasetgan", "generate", str(tiny_run), "--format", "wds",
                             "--out", str(out), *args, "--ray", address, "--workers", "2"],
                            env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        deadline = time.monotonic() + 300
        while not (out.is_dir() and any(out.glob("shard-*.tar"))):
            assert proc.poll() is None and time.monotonic() < deadline, proc.stdout.read()
            time.sleep(0.1)
        victims = cluster_workers(env["HOME"])
        assert victims
        os.kill(victims[0], signal.SIGKILL)
        output, _ = proc.communicate(timeout=600)
        assert proc.returncode == 0, output
    finally:
        if proc.poll() is None:
            proc.kill()
    local = generate(tiny_run, tmp_path / "local", env, *args)
    assert local.returncode == 0, local.stderr
    man = json.loads((out / "manifest.json").read_text())
    assert len(man["shards"]) == 30
    for name in man["shards"]:
        assert (out / name).read_bytes() == (tmp_path / "local" / name).read_bytes()


def test_ray_local_starts_its_own_cluster_on_loopback(tiny_run, tmp_path):
    env = ray_env(tmp_path / "home")
    (tmp_path / "home").mkdir()
    args = ["--n", "4", "--shard-size", "2"]
    r = generate(tiny_run, tmp_path / "ray", env, *args, "--ray", "local", "--workers", "1")
    assert r.returncode == 0, r.stderr
    local = generate(tiny_run, tmp_path / "local", env, *args)
    assert local.returncode == 0, local.stderr
    for name in ("shard-000000.tar", "shard-000001.tar"):
        assert (tmp_path / "ray" / name).read_bytes() == (tmp_path / "local" / name).read_bytes()
