"""The extension cache: one folder per compile command, builds in private folders installed atomically."""
from __future__ import annotations

import os
import subprocess
import sys

import pytest

from stylegan2_ops import build


def test_cache_folder_depends_on_everything_in_the_compile_command(monkeypatch, tmp_path):
    from torch.utils import cpp_extension

    monkeypatch.setenv(build.CACHE_ENV, str(tmp_path))
    base = build.build_dir("cpu")
    assert build.build_dir("cpu") == base  # stable
    real = cpp_extension.include_paths()
    with monkeypatch.context() as m:  # a second virtual environment with the same torch version
        m.setattr(cpp_extension, "include_paths", lambda *a, **k: ["/other/venv/torch/include"] + real[1:])
        assert build.build_dir("cpu") != base
    with monkeypatch.context() as m:  # another compiler
        m.setenv("CXX", "clang++")
        assert build.build_dir("cpu") != base
    with monkeypatch.context() as m:  # other flags
        m.setattr(build, "cpu_flags", lambda: ["-O2"])
        assert build.build_dir("cpu") != base


@pytest.fixture
def fake_compiler(monkeypatch, tmp_path):
    """build.load with a stand-in compiler that records where it ran and writes a stand-in module."""
    monkeypatch.setenv(build.CACHE_ENV, str(tmp_path))
    monkeypatch.setattr(build, "build_dir", lambda kind: tmp_path / "cpu-key")
    monkeypatch.setattr(build, "import_module", lambda name, path: ("imported", path.read_bytes()))
    fake = type("FakeCompiler", (), {"runs": [], "fail": False})()

    def compile_into(kind, name, private, verbose):
        fake.runs.append(private)
        assert private.parent == tmp_path / "cpu-key" and private.name.startswith(f"build-{os.getpid()}-")
        private.mkdir(parents=True)
        if fake.fail:
            (private / "half.o").write_bytes(b"...")
            raise RuntimeError("compiler exploded")
        (private / f"{name}.so").write_bytes(b"module")
        return "built"

    monkeypatch.setattr(build, "compile_into", compile_into)
    return fake


def dead_pid() -> int:
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


def test_build_runs_privately_and_installs_atomically(fake_compiler, tmp_path):
    where = tmp_path / "cpu-key"
    stale = where / f"build-{dead_pid()}-0badc0de"   # a killed build's leftovers (its ninja may be orphaned)
    live = where / f"build-{os.getppid()}-cafe0000"  # a build in progress in another process
    for d in (stale, live):
        (d / "src").mkdir(parents=True)
    fake_compiler.fail = True
    with pytest.raises(build.BuildError, match="compiler exploded"):
        build.load.__wrapped__("cpu")
    assert not (where / "stylegan2_ops_cpu.so").exists() and not fake_compiler.runs[0].exists()
    assert not stale.exists() and live.exists()

    fake_compiler.fail = False
    assert build.load.__wrapped__("cpu") == "built"
    assert (where / "stylegan2_ops_cpu.so").read_bytes() == b"module" and not fake_compiler.runs[1].exists()
    assert build.load.__wrapped__("cpu") == ("imported", b"module") and len(fake_compiler.runs) == 2  # no rebuild


KILLED_BUILD_CHECK = """
import torch
from stylegan2_ops import build
build.load("cpu")
x, b = torch.randn(2, 3, 4, 4), torch.randn(3)
import stylegan2_ops as ops
torch.testing.assert_close(ops.bias_act(x, b, act="lrelu", backend="cpu"), ops.bias_act(x, b, act="lrelu", backend="ref"))
"""


@pytest.mark.slow
def test_a_build_whose_process_is_killed_is_harmless(tmp_path):
    """Kill a process while it compiles (its ninja lives on as an orphan): the next build in the same
    cache removes the leftovers, builds, and the module it installs works."""
    import signal
    import time
    from pathlib import Path

    repo = Path(__file__).resolve().parents[1]
    env = {**os.environ, build.CACHE_ENV: str(tmp_path), "OMP_NUM_THREADS": "1",
           "PYTHONPATH": os.pathsep.join([str(repo), os.environ.get("PYTHONPATH", "")])}
    first = subprocess.Popen([sys.executable, "-c", "from stylegan2_ops import build; build.load('cpu')"], env=env)
    deadline = time.monotonic() + 300
    while not list(tmp_path.glob("*/build-*/build.ninja")):
        assert first.poll() is None and time.monotonic() < deadline, "the first build did not start"
        time.sleep(0.2)
    time.sleep(3)  # the compiler is running now
    first.send_signal(signal.SIGKILL)
    first.wait()
    killed = list(tmp_path.glob("*/build-*"))
    second = subprocess.run([sys.executable, "-c", KILLED_BUILD_CHECK], env=env, capture_output=True, text=True)
    assert second.returncode == 0, second.stderr[-2000:]
    assert killed and not any(d.exists() for d in killed)
    assert len(list(tmp_path.glob("*/stylegan2_ops_cpu.so"))) == 1
