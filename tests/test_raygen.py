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
from support import free_port  # noqa: E402

ROOT = str(Path(datasetgan.__file__).resolve().parents[1])


def ray_env(home: Path) -> dict:
    env = {k: v for k, v in os.environ.items() if not k.startswith("RAY_")}
    env.update(HOME=str(home), PYTHONPATH=os.pathsep.join([ROOT, env.get("PYTHONPATH", "")]),
               RAY_USAGE_STATS_ENABLED="0", OMP_NUM_THREADS="1")
    return env


@pytest.fixture(scope="module")
def ray_cluster():
    """A one-node Ray cluster bound to 127.0.0.1; yields (address, env for its drivers)."""
    # Ray's socket paths must stay short: a temp dir directly under /tmp, not pytest's deep tmp_path.
    root = Path(tempfile.mkdtemp(prefix="dg-ray-"))
    (root / "home").mkdir()
    env = ray_env(root / "home")
    ray = shutil.which("ray", path=os.path.dirname(sys.executable)) or "ray"
    port = free_port()
    # --block keeps `ray start` in the foreground, in a session of its own: stopping that process
    # group stops exactly this cluster's processes (never `ray stop`, which stops every cluster here).
    log = root / "head.log"
    with open(log, "w") as out:
        head = subprocess.Popen([ray, "start", "--head", "--block", "--node-ip-address", "127.0.0.1",
                                 "--port", str(port), "--num-cpus", "2", "--object-store-memory", str(80 * 2 ** 20),
                                 "--include-dashboard", "false", "--disable-usage-stats", "--temp-dir", str(root / "t")],
                                env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        deadline = time.monotonic() + 300
        while "Ray runtime started" not in log.read_text():
            assert head.poll() is None and time.monotonic() < deadline, log.read_text()
            time.sleep(0.5)
        yield f"127.0.0.1:{port}", env
    finally:
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
