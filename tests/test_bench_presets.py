"""benchmarks/presets.py: the study's report from run folders, and a rerun that skips finished runs."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parents[1] / "benchmarks" / "presets.py"


def fake_run(root: Path, arm: str, seed: int, fids: list[float], cpu_per_kimg: float, finished: bool) -> None:
    """A run folder as `presets.py run` leaves it: study.json, log.jsonl with FID every 4 kimg, latest.json."""
    run = root / "acdc" / arm / f"seed{seed}"
    (run / "training").mkdir(parents=True)
    sessions = [{"commit": "abc123" * 6 + "abcd", "dirty": False, "command": "...", "from_nimg": 0}]
    (run / "study.json").write_text(json.dumps({"dataset": "acdc", "arm": arm, "seed": seed, "sessions": sessions}))
    rows = [{"kimg": 0.0, "nimg": 0, "fid": None, "p": 0.0, "r_t": None, "train_cpu_seconds": 0.0}]
    for i, fid in enumerate(fids):
        kimg = 4.0 * (i + 1)
        for k in (kimg - 2, kimg):  # a log line between snapshots, without FID
            rows.append(
                {"kimg": k, "nimg": int(k * 1000), "fid": fid if k == kimg else None, "p": 0.01 * k, "r_t": 0.5}
                | {"train_cpu_seconds": cpu_per_kimg * k}
            )
    (run / "training" / "log.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    nimg = 20000 if finished else int(4000 * len(fids))
    (run / "training" / "latest.json").write_text(json.dumps({"snapshot": "x", "nimg": nimg}))


def presets(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(SCRIPT.parents[1]), os.environ.get("PYTHONPATH", "")]))
    res = subprocess.run([sys.executable, str(SCRIPT), *args], capture_output=True, text=True, env=env, cwd=cwd)
    assert res.returncode == 0, res.stderr
    return res


@pytest.fixture()
def study(tmp_path):
    root = tmp_path / "runs"
    fake_run(root, "none", 0, [200, 150, 120, 110, 100], cpu_per_kimg=10, finished=True)
    fake_run(root, "none", 1, [210, 160, 130, 120, 110], cpu_per_kimg=10, finished=True)
    fake_run(root, "ada", 0, [220, 140, 100, 90, 80], cpu_per_kimg=20, finished=True)
    fake_run(root, "ada", 1, [230], cpu_per_kimg=20, finished=False)  # still training
    return root


def test_report_tables_at_equal_kimg_and_cpu_time(study, tmp_path):
    out = tmp_path / "out"
    presets("report", "--root", str(study), "--out", str(out), cwd=tmp_path)
    md = (out / "presets.md").read_text()
    assert "INTERIM" in md and "3 of 45 planned ACDC runs finished" in md
    # equal kimg: mean ± sample std over seeds, n counts the runs that reached the snapshot
    assert "| none | 2 (2) | 205.0 ± 7.1 (n=2) | 155.0 ± 7.1 (n=2) |" in md
    assert "| ada | 2 (1) | 225.0 ± 7.1 (n=2) | 140.0 (n=1) |" in md
    # equal CPU time: budgets are the baseline's CPU seconds at its snapshots (40, 80, ... s); ada (20 s per
    # kimg) has its 4 kimg snapshot within 80 s and its 8 kimg one within 160 s; its unfinished seed 1
    # (last snapshot at 80 s) counts up to the 80 s budget only.
    cpu_table = md.split("at equal training CPU time")[1]
    assert "| 0.7 CPU min | 1.3 CPU min | 2.0 CPU min | 2.7 CPU min | 3.3 CPU min |" in cpu_table
    assert "| ada | – | 225.0 ± 7.1 (n=2) | 220.0 (n=1) | 140.0 (n=1) | 140.0 (n=1) | 20.0 |" in cpu_table
    doc = json.loads((out / "results" / "presets.json").read_text())
    assert doc["interim"] is True
    run = next(r for r in doc["runs"] if r["arm"] == "ada" and r["seed"] == 0)
    assert run["commits"] == ["abc123" * 6 + "abcd"] and run["options"] == "--aug ada"
    assert [s["kimg"] for s in run["snapshots"]] == [4, 8, 12, 16, 20]
    assert run["snapshots"][1] == {
        "kimg": 8.0,
        "train_cpu_seconds": 160.0,
        "fid": 140,
        "fid_cpu_seconds": None,
        "p": 0.08,
        "r_t": 0.5,
    }
    assert "CPU preset study" in (out / "RESULTS.md").read_text() and (out / "presets_acdc.png").stat().st_size > 0


def test_a_run_that_ended_early_does_not_count_at_larger_cpu_budgets(tmp_path):
    """A run that stopped at 8 kimg (80 CPU s) has no FID at 120-200 CPU s, even though it is finished."""
    root, out = tmp_path / "runs", tmp_path / "out"
    fake_run(root, "none", 0, [200, 150, 120, 110, 100], cpu_per_kimg=10, finished=True)
    fake_run(root, "ada", 0, [150, 140], cpu_per_kimg=10, finished=True)
    presets("report", "--root", str(root), "--out", str(out), cwd=tmp_path)
    cpu_table = (out / "presets.md").read_text().split("at equal training CPU time")[1]
    assert "| ada | 150.0 (n=1) | 140.0 (n=1) | – | – | – | 10.0 |" in cpu_table


def test_run_skips_finished_runs(study, tmp_path):
    res = presets(
        "run", "--root", str(study), "--arms", "none", "--seeds", "0", "1", "--allow-dirty", "--jobs", "2", cwd=tmp_path
    )
    assert "start" not in res.stdout and "finished" in res.stdout
    assert not list(study.glob("*.pid"))  # the runner's pid file is gone when it ends
    sessions = json.loads((study / "acdc" / "none" / "seed0" / "study.json").read_text())["sessions"]
    assert len(sessions) == 1  # nothing was started again


def test_run_leaves_a_run_alone_while_its_training_is_alive(study, tmp_path):
    """A runner killed with -9 leaves its trainings running: a new runner must not start a second one."""
    run = study / "acdc" / "ada" / "seed1"
    other = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)", str(run)])
    try:
        (study / "acdc-ada-seed1.pid").write_text(f"{other.pid}\n")
        res = presets("run", "--root", str(study), "--arms", "ada", "--seeds", "1", "--allow-dirty", cwd=tmp_path)
    finally:
        other.kill()
        other.wait()
    assert f"skip acdc-ada-seed1: still training under pid {other.pid}" in res.stdout and "start" not in res.stdout
    assert len(json.loads((run / "study.json").read_text())["sessions"]) == 1


@pytest.fixture()
def presets_module(monkeypatch):
    """benchmarks/presets.py imported in this process (it imports `results` from its own folder)."""
    import importlib.util

    monkeypatch.syspath_prepend(str(SCRIPT.parent))
    spec = importlib.util.spec_from_file_location("presets_study", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_runner_resumes_a_stopped_run_and_restarts_one_killed_before_its_first_snapshot(
    presets_module, tmp_path, monkeypatch
):
    calls = []

    def command(data, run, arm, seed, kimg, snap, resume):
        calls.append((run.name, arm, resume))
        return [sys.executable, "-c", "pass"]  # stands in for `datasetgan train`

    monkeypatch.setattr(presets_module, "train_command", command)
    root = tmp_path / "runs"
    stopped = root / "acdc" / "ada" / "seed0"
    (stopped / "training").mkdir(parents=True)
    (stopped / "training" / "latest.json").write_text(json.dumps({"snapshot": "x", "nimg": 8000}))
    early = root / "acdc" / "ada" / "seed1"  # killed before its first snapshot: a stale log, no latest.json
    (early / "training").mkdir(parents=True)
    (early / "training" / "log.jsonl").write_text('{"nimg": 0}\n')
    runner = presets_module.Runner(root, {"commit": "c0ffee", "dirty": False, "code": "."})
    runner.train("acdc", "ada", 0, 20)
    runner.train("acdc", "ada", 1, 20)
    assert calls == [("seed0", "ada", True), ("seed1", "ada", False)]
    assert not (early / "training").exists()  # the fresh start does not append to the stale log
    session = json.loads((stopped / "study.json").read_text())["sessions"][0]
    assert session["commit"] == "c0ffee" and session["from_nimg"] == 8000 and session["returncode"] == 0
    assert not list(root.glob("*.pid"))


def test_a_longer_study_resumes_finished_short_runs_with_the_sparser_cadence(presets_module, tmp_path, monkeypatch):
    """`run --kimg 100` on a run finished at 20 kimg: one more leg, resumed, every 8 kimg; 12 kimg: one leg."""
    assert presets_module.legs(12) == [(12, 4.0)]
    assert presets_module.legs(20) == [(20.0, 4.0)]
    assert presets_module.legs(100) == [(20.0, 4.0), (100, 8.0)]
    calls = []

    def command(data, run, arm, seed, kimg, snap, resume):
        calls.append((kimg, snap, resume))
        return [sys.executable, "-c", "pass"]

    monkeypatch.setattr(presets_module, "train_command", command)
    root = tmp_path / "runs"
    run = root / "acdc" / "none" / "seed0"
    (run / "training").mkdir(parents=True)
    (run / "training" / "latest.json").write_text(json.dumps({"snapshot": "x", "nimg": 20000}))
    runner = presets_module.Runner(root, {"commit": "c0ffee", "dirty": False, "code": "."})
    runner.train("acdc", "none", 0, 20)
    assert calls == []  # finished at 20 kimg
    runner.train("acdc", "none", 0, 100)
    assert calls == [(100, 8.0, True)]
    assert json.loads((run / "study.json").read_text())["kimg"] == 100  # the report counts it unfinished
