"""benchmarks/train_acdc.py: the goals of issue 15 from two runs' logs (budget in training CPU time)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

SCRIPT = Path(__file__).resolve().parents[1] / "benchmarks" / "train_acdc.py"


def fake_run(run: Path, fids: list[float], cpu_per_kimg: float) -> None:
    """A run's log.jsonl: a snapshot with FID-500 every 16 kimg, a line without FID between; no snapshot files."""
    (run / "training").mkdir(parents=True)
    rows = [{"kimg": 0.0, "nimg": 0, "fid": None, "p": 0.0, "r_t": None, "train_cpu_seconds": 0.0}]
    for i, fid in enumerate(fids):
        for k in (16.0 * i + 8, 16.0 * (i + 1)):
            last = k % 16 == 0
            rows.append(
                {"kimg": k, "nimg": int(k * 1000), "fid": fid if last else None, "p": 0.001 * k, "r_t": 0.6}
                | {"train_cpu_seconds": cpu_per_kimg * k}
            )
    (run / "training" / "log.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))


def test_goals_count_only_snapshots_within_the_cpu_budget_and_after_the_start(tmp_path):
    # 100 CPU s per kimg: 1 CPU h = 36 kimg, so the snapshots within it are 16 and 32 kimg.
    fake_run(tmp_path / "default", [300.0, 200.0, 150.0, 140.0], cpu_per_kimg=100.0)
    fake_run(tmp_path / "none", [250.0, 210.0, 140.0, 145.0], cpu_per_kimg=90.0)
    out = tmp_path / "out"
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(SCRIPT.parents[1]), os.environ.get("PYTHONPATH", "")]))
    cmd = [sys.executable, str(SCRIPT), str(tmp_path / "default"), str(tmp_path / "none"), "--data", str(tmp_path)]
    run_opts = dict(capture_output=True, text=True, env=env)
    res = subprocess.run([*cmd, "--budget-hours", "1", "--out", str(out)], **run_opts)
    assert res.returncode == 0, res.stderr
    doc = json.loads((out / "results" / "train_acdc.json").read_text())
    # Behind at 48 kimg only: 16 kimg is not after --after-kimg 16, 32 and 64 kimg are ahead.
    assert doc["goals"]["behind_after_kimg"] == [{"kimg": 48.0, "fid500_gap": 10.0}]
    assert doc["goals"]["fid2000_within_budget"] is None  # the 32 kimg snapshot file is not on disk
    snaps = doc["runs"]["default"]["snapshots"]
    assert [s["kimg"] for s in snaps] == [16.0, 32.0, 48.0, 64.0] and snaps[1]["train_cpu_seconds"] == 3200.0
    section = (out / "RESULTS.md").read_text()
    assert "the snapshot at 32 kimg is not on disk" in section
    assert "not met at 1 of 3 common snapshots: behind at 48 kimg by 10.0" in section
    assert (out / "train_acdc_curves.png").stat().st_size > 0
    # Scores cached in RUN/fid2000.json stand for the snapshot files; a run short of its budget says "so far".
    (tmp_path / "default" / "fid2000.json").write_text(json.dumps({"32000": 120.0, "64000": 99.0}))
    assert subprocess.run([*cmd, "--budget-hours", "1", "--out", str(out)], **run_opts).returncode == 0
    assert (
        "**FID-2000 of default within 1 CPU h ≤ 100:** 120.0 at 32 kimg (not met)\n" in (out / "RESULTS.md").read_text()
    )
    assert subprocess.run([*cmd, "--goal-fid", "90", "--out", str(out)], **run_opts).returncode == 0
    assert "99.0 at 64 kimg (not met so far (the run has trained 1.78 of 4 CPU h))" in (out / "RESULTS.md").read_text()
    # --export needs the budget's snapshot file: a one-line error, nothing written.
    res = subprocess.run([*cmd, "--out", str(out), "--export", str(tmp_path / "g.safetensors")], **run_opts)
    assert res.returncode != 0 and "no snapshot file within the budget" in res.stderr and "Traceback" not in res.stderr
    assert not (tmp_path / "g.safetensors").exists()
