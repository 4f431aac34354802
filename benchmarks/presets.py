"""The CPU preset study (issue 15): arms x seeds of `datasetgan train`, resumable, then a report.

    # from a clean checkout (the runner refuses uncommitted code, and records the commit of every run)
    cd /work/wt/study && export PYTHONPATH=$PWD
    nohup nice -n 10 /work/main/.venv/bin/python benchmarks/presets.py run --jobs 2 [--kimg 100 --arms ...] \
        >> /work/runs/presets/log 2>&1 &
    python benchmarks/presets.py phantom             # once: the second data set, for `run --dataset phantom`
    python benchmarks/presets.py report              # benchmarks/presets.md, results/presets.json, curves

``run`` trains every arm of :data:`ARMS` (in the table's order, all seeds of an arm before the next arm,
so partial results are usable) as separate processes, ``--jobs`` at a time, each on one thread and at
niceness 10, into ROOT/<dataset>/<arm>/seed<k>/. A run that was stopped continues with `--resume`; a
finished one (its newest snapshot at --kimg) is skipped, so rerunning the same command continues the
study. Each run's ``study.json`` names the git commit of the code that trained it (every commit, if it
was resumed on other code); the pids of the runner and of its trainings are in ROOT/*.pid.

The setting: preset cpu-tiny (32x32), 20 kimg, a snapshot with FID every 4 kimg, seeds 0, 1, 2.
``run --kimg K`` takes runs further (a finished 20 kimg run resumes), snapshotting every 8 kimg after
the first 20 (:data:`CADENCE`): at 20 kimg D does not overfit yet (ADA's p stayed below 0.01), so the
arms that change ADA can only differ on longer runs. The report's columns are every snapshot reached. FID
is computed from 500 generated images against all training images: FID-500 takes 60-66 CPU seconds
per snapshot (fid_cpu_seconds in the logs), 4 kimg of training about 72; FID-1000 would have taken
about 150 (Inception on 1000 images, timed on 64), and a run over 15 CPU minutes. FID from so few
images is biased upwards (the fewer images, the higher): compare arms only with each other (all at
the same n), never with the literature. ``train_cpu_seconds`` counts the CPU time of the training
steps alone (no FID, no snapshots); runs share the 2 cores with each other and with other work,
which may inflate CPU time a little (shared caches), alike for arms running in the same period. All
runs of a study should train on one commit (the report lists them): code that trains faster would
bias the tables at equal CPU time.

Arm 'pipeline alone' (the pipeline switched on at p = 0) is not trained: tests/test_training.py
(test_fixed_p0_trains_bit_identically_to_no_augmentation) shows that it trains bit-identically to
`--aug none`. Arm 'ada-mirror' (x-flipped copies of the images) is measured for completeness; mirroring
is wrong wherever left and right matter (chest X-rays, cardiac MRI in a fixed orientation, as ACDC):
the generator would learn mirrored anatomy.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import shlex
import shutil
import signal
import statistics
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from results import write_json, write_section

from datasetgan.atomic import atomic_write_text

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
ROOT = Path("/work/runs/presets")
ACDC = Path("/work/shared/data/acdc/train")
DATASETS = ("acdc", "phantom")
PRESET, KIMG, FID_N, SEEDS = "cpu-tiny", 20.0, 500, (0, 1, 2)
# Snapshot (and FID) cadence: (until kimg, every kimg). A FID costs about as much CPU as 4 kimg of
# training, so runs longer than 20 kimg snapshot every 8 kimg after the first 20.
CADENCE = ((20.0, 4.0), (math.inf, 8.0))
GAMMA = 0.0002 * 32**2 / 16  # cpu-tiny's automatic R1 gamma (presets.auto_r1_gamma(32, 16))
NICENESS = 10
CPU_SLACK = 0.1  # a run counts at a CPU budget if its training got within 10 % of it (fid_at_cpu)

# The arms, in priority order: name, `datasetgan train` options on top of the preset, what it tests.
ARMS = [
    ("none", "--aug none", "no augmentation (baseline)"),
    ("ada", "--aug ada", "ADA as cpu-tiny's default: target 0.6, ada_kimg 100, 'bgc'"),
    ("fixed-p0.1", "--aug fixed --p 0.1", "fixed p = 0.1"),
    ("ada-bg", "--aug ada --augpipe bg", "ADA without colour ops (no luma flip = inverted MRI)"),
    ("ada-b", "--aug ada --augpipe b", "ADA with pixel blitting only"),
    ("ada-kimg500", "--aug ada --ada-kimg 500", "ADA at the paper's speed (p 0 -> 1 in 500k images)"),
    ("ada-target0.8", "--aug ada --target 0.8", "ADA target 0.8"),
    ("fixed-p0.3", "--aug fixed --p 0.3", "fixed p = 0.3"),
    ("ada-wideD", "--aug ada --d-cbase 2048 --d-cmax 256", "ADA, D twice as wide (channel base and max x2)"),
    ("ada-gamma4x", f"--aug ada --gamma {GAMMA * 4:g}", "ADA, R1 gamma x4"),
    ("ada-gamma0.25x", f"--aug ada --gamma {GAMMA / 4:g}", "ADA, R1 gamma x0.25"),
    ("ada-nopl", "--aug ada --pl-weight 0", "ADA without path-length regularisation"),
    ("ada-mirror", "--aug ada --mirror", "ADA with x-flipped copies (wrong where left/right matter)"),
    ("ada-lr0.5", "--aug ada --glr 0.00125 --dlr 0.00125", "ADA, both learning rates x0.5"),
    ("ada-map4", "--aug ada --map 4", "ADA, 4 mapping layers instead of 2"),
]
ARM_ARGS = {name: args for name, args, _ in ARMS}


def sh(cmd: list[str], cwd: Path) -> str:
    return subprocess.run(cmd, cwd=cwd, capture_output=True, text=True, check=True).stdout.strip()


def code_version() -> dict:
    """The commit of the datasetgan package this process (and its trainings) import, and whether its
    tracked files differ from it."""
    import datasetgan

    repo = Path(datasetgan.__file__).resolve().parents[1]
    changed = sh(["git", "status", "--porcelain", "--untracked-files=no"], repo)
    return {"commit": sh(["git", "rev-parse", "HEAD"], repo), "dirty": bool(changed), "code": str(repo)}


def load_average() -> str:
    return " ".join(f"{x:.2f}" for x in os.getloadavg())


def data_folder(root: Path, dataset: str) -> Path:
    """ACDC's training slices, or the phantom slices `presets.py phantom` writes into ROOT/phantom-data."""
    return ACDC if dataset == "acdc" else root / "phantom-data"


def run_dir(root: Path, dataset: str, arm: str, seed: int) -> Path:
    return root / dataset / arm / f"seed{seed}"


def images_seen(run: Path) -> int:
    """The images seen at the run's newest snapshot (0: none yet)."""
    pointer = run / "training" / "latest.json"
    return json.loads(pointer.read_text())["nimg"] if pointer.is_file() else 0


def read_json(path: Path, default):
    return json.loads(path.read_text()) if path.is_file() else default


def write_json_file(path: Path, doc) -> None:
    atomic_write_text(path, json.dumps(doc, indent=1) + "\n")


def legs(kimg: float) -> list[tuple[float, float]]:
    """(until kimg, snapshot every kimg) legs of :data:`CADENCE` that take a run to ``kimg``."""
    out, start = [], 0.0
    for until, snap in CADENCE:
        if start < kimg:
            out.append((min(until, kimg), snap))
        start = until
    return out


def train_command(data: Path, run: Path, arm: str, seed: int, kimg: float, snap: float, resume: bool) -> list[str]:
    """`datasetgan train` at niceness NICENESS (nice adds to the runner's own niceness)."""
    return [
        *("nice", "-n", str(max(NICENESS - os.nice(0), 0))),
        sys.executable,
        *("-m", "datasetgan", "train", str(data), "--out", str(run), "--preset", PRESET),
        *("--kimg", f"{kimg:g}", "--snap", f"{snap:g}", "--fid", str(FID_N), "--seed", str(seed)),
        *("--threads", "1", "--keep", "1", "--no-progress"),
        *shlex.split(ARM_ARGS[arm]),
        *(["--resume"] if resume else []),
    ]


def training_alive(pid_file: Path, run: Path) -> int | None:
    """The pid in ``pid_file`` if that process is still training ``run`` (a runner killed with -9 leaves its
    trainings running: a new runner must not start a second process on the same folder)."""
    try:
        pid = int(pid_file.read_text())
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
    except (OSError, ValueError):
        return None
    return pid if str(run).encode() in cmdline else None


class Runner:
    """Starts trainings, keeps their pid files, and stops them all when the runner is stopped."""

    def __init__(self, root: Path, version: dict):
        self.root, self.version = root, version
        self.procs: dict[str, subprocess.Popen] = {}
        self.lock, self.stopping = threading.Lock(), False

    def train(self, dataset: str, arm: str, seed: int, kimg: float) -> None:
        """Take the run to ``kimg`` thousand images, leg by leg of :data:`CADENCE`."""
        for until, snap in legs(kimg):
            if not self.train_leg(dataset, arm, seed, until, snap, kimg):
                return

    def train_leg(self, dataset: str, arm: str, seed: int, kimg: float, snap: float, target: float) -> bool:
        """Train until ``kimg``; False if the run cannot go on now (stopped, failed, trained elsewhere)."""
        run = run_dir(self.root, dataset, arm, seed)
        done = images_seen(run)
        if self.stopping:
            return False
        if done >= kimg * 1000:
            return True
        key = f"{dataset}-{arm}-seed{seed}"
        pid = training_alive(self.root / f"{key}.pid", run)
        if pid:
            print(f"{time.strftime('%H:%M:%S')} skip {key}: still training under pid {pid}", flush=True)
            return False
        if done == 0 and (run / "training").exists():  # killed before its first snapshot: nothing to resume
            shutil.rmtree(run / "training")
        run.mkdir(parents=True, exist_ok=True)
        info = read_json(run / "study.json", {"dataset": dataset, "arm": arm, "seed": seed, "sessions": []})
        cmd = train_command(data_folder(self.root, dataset), run, arm, seed, kimg, snap, resume=done > 0)
        info["kimg"] = max(info.get("kimg", KIMG), target)  # the length the study asked for, finished or not
        info["sessions"].append({**self.version, "command": shlex.join(cmd), "from_nimg": done, "start": time.time()})
        write_json_file(run / "study.json", info)
        with self.lock:
            if self.stopping:
                return False
            env = dict(os.environ, OMP_NUM_THREADS="1", MKL_NUM_THREADS="1")
            with open(run / "train.log", "a") as log:
                proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env=env)
            self.procs[key] = proc
            (self.root / f"{key}.pid").write_text(f"{proc.pid}\n")
        print(f"{time.strftime('%H:%M:%S')} start {key} from {done} images (pid {proc.pid})", flush=True)
        rc = proc.wait()
        with self.lock:
            self.procs.pop(key, None)
            (self.root / f"{key}.pid").unlink(missing_ok=True)
        info["sessions"][-1].update(end=time.time(), returncode=rc, to_nimg=images_seen(run))
        write_json_file(run / "study.json", info)
        status = "done" if rc == 0 else "stopped" if self.stopping else f"FAILED ({rc})"
        reached = info["sessions"][-1]["to_nimg"] / 1000
        print(f"{time.strftime('%H:%M:%S')} {status} {key} at {reached:g} kimg (leg to {kimg:g})", flush=True)
        return rc == 0

    def stop(self, *_):
        with self.lock:
            self.stopping = True
            for proc in self.procs.values():
                proc.send_signal(signal.SIGINT)  # training stops cleanly; --resume continues from its snapshot


def cmd_run(args) -> None:
    version = code_version()
    if version["dirty"] and not args.allow_dirty:
        sys.exit(f"error: {version['code']} has uncommitted changes; run the study from a clean checkout")
    args.root.mkdir(parents=True, exist_ok=True)
    arms = args.arms or [name for name, _, _ in ARMS]
    unknown = set(arms) - set(ARM_ARGS)
    if unknown:
        sys.exit(f"error: unknown arm(s) {', '.join(sorted(unknown))}; choose from {', '.join(ARM_ARGS)}")
    if not data_folder(args.root, args.dataset).is_dir():
        sys.exit(f"error: {data_folder(args.root, args.dataset)} does not exist (phantom: `presets.py phantom` first)")
    runner = Runner(args.root, version)
    signal.signal(signal.SIGTERM, runner.stop)
    signal.signal(signal.SIGINT, runner.stop)
    pid_file = args.root / "runner.pid"
    pid_file.write_text(f"{os.getpid()}\n")
    print(
        f"{time.strftime('%F %T')} study on {args.dataset}: {len(arms)} arm(s) x seeds {args.seeds} to {args.kimg:g} kimg, "
        f"{args.jobs} at a time; code {version['commit'][:12]} in {version['code']}; load {load_average()}",
        flush=True,
    )
    try:
        with ThreadPoolExecutor(args.jobs) as pool:
            jobs = [
                pool.submit(runner.train, args.dataset, arm, seed, args.kimg) for arm in arms for seed in args.seeds
            ]
            for job in jobs:
                job.result()
    finally:
        pid_file.unlink(missing_ok=True)
    print(f"{time.strftime('%F %T')} finished; load {load_average()}", flush=True)


def cmd_phantom(args) -> None:
    from datasetgan.phantom import write_phantom_folder

    out = data_folder(args.root, "phantom")
    if (out / "phantom.json").is_file():
        print(f"{out} exists")
        return
    write_phantom_folder(out, args.n, resolution=64, seed=0)
    print(f"wrote {args.n} phantom slices to {out}")


# -- report ----------------------------------------------------------------------------------------


def collect(root: Path) -> list[dict]:
    """Every run under ROOT: its arm, seed, commits and, per snapshot with an FID, kimg, CPU seconds,
    FID, p and r_t."""
    runs = []
    for info_path in sorted(root.glob("*/*/seed*/study.json")):
        info, run = json.loads(info_path.read_text()), info_path.parent
        log = run / "training" / "log.jsonl"
        rows = [json.loads(line) for line in log.read_text().splitlines() if line.strip()] if log.is_file() else []
        snaps = [
            {
                "kimg": r["kimg"],
                "train_cpu_seconds": r.get("train_cpu_seconds"),
                "fid": r["fid"],
                "fid_cpu_seconds": r.get("fid_cpu_seconds"),
                "p": r["p"],
                "r_t": r["r_t"],
            }
            for r in rows
            if r.get("fid") is not None
        ]
        commits = list(dict.fromkeys(s["commit"] + ("+dirty" if s["dirty"] else "") for s in info["sessions"]))
        runs.append(
            {
                "dataset": info["dataset"],
                "arm": info["arm"],
                "seed": info["seed"],
                "options": ARM_ARGS.get(info["arm"]),
                "commits": commits,
                "kimg": info.get("kimg", KIMG),
                "finished": images_seen(run) >= info.get("kimg", KIMG) * 1000,
                "train_cpu_seconds": rows[-1].get("train_cpu_seconds", 0) if rows else 0,
                "p_max": max((r["p"] for r in rows), default=0.0),
                "snapshots": snaps,
            }
        )
    return runs


def mean_std(values: list[float]) -> str:
    if not values:
        return "–"
    if len(values) == 1:
        return f"{values[0]:.1f} (n=1)"
    return f"{statistics.mean(values):.1f} ± {statistics.stdev(values):.1f} (n={len(values)})"


def fid_at_cpu(run: dict, budget: float) -> float | None:
    """FID of the run's newest snapshot within ``budget`` training CPU seconds; None if its training has not
    reached the budget (less CPU_SLACK: seeds of one arm differ by ~5 % in CPU per kimg, and the budgets are
    the slowest baseline seed's), whether it is still going or ended earlier, as a shorter run does."""
    within = [s for s in run["snapshots"] if s["train_cpu_seconds"] <= budget]
    if not within or run["train_cpu_seconds"] < budget * (1 - CPU_SLACK):
        return None
    return within[-1]["fid"]


def tables(runs: list[dict], dataset: str) -> tuple[str, dict]:
    """Markdown tables (FID at equal kimg, at equal CPU time, p and r_t) and their figures."""
    arms = [name for name, _, _ in ARMS if any(r["arm"] == name and r["dataset"] == dataset for r in runs)]
    by_arm = {a: [r for r in runs if r["arm"] == a and r["dataset"] == dataset] for a in arms}
    kimgs = sorted({s["kimg"] for a in arms for r in by_arm[a] for s in r["snapshots"]})
    out, figures = [], {"kimg": {}, "cpu": {}}

    out.append(f"### FID-{FID_N} at equal images seen ({dataset})\n")
    out.append("| arm | runs (finished) | " + " | ".join(f"{k:g} kimg" for k in kimgs) + " | p at end | r_t at end |")
    out.append("|---" * (len(kimgs) + 4) + "|")
    for arm in arms:
        cells, figures["kimg"][arm] = [], {}
        for k in kimgs:
            vals = [s["fid"] for r in by_arm[arm] for s in r["snapshots"] if abs(s["kimg"] - k) < 1e-6]
            cells.append(mean_std(vals))
            figures["kimg"][arm][f"{k:g}"] = vals
        last = [r["snapshots"][-1] for r in by_arm[arm] if r["finished"] and r["snapshots"]]
        p_end = f"{statistics.mean(s['p'] for s in last):.3f}" if last else "–"
        rt_end = (
            f"{statistics.mean(s['r_t'] for s in last):.2f}"
            if last and all(s["r_t"] is not None for s in last)
            else "–"
        )
        n_fin = sum(r["finished"] for r in by_arm[arm])
        out.append(f"| {arm} | {len(by_arm[arm])} ({n_fin}) | " + " | ".join(cells) + f" | {p_end} | {rt_end} |")

    # CPU budgets: the baseline's (or the first arm's) training CPU time at each snapshot, its slowest seed's,
    # rounded up to 10 s, so that every baseline seed's snapshot counts at its budget.
    ref = (by_arm.get("none") or by_arm[arms[0]]) if arms else []
    budgets = []
    for k in kimgs:
        t = [s["train_cpu_seconds"] for r in ref for s in r["snapshots"] if abs(s["kimg"] - k) < 1e-6]
        if t:
            budgets.append(math.ceil(max(t) / 10) * 10)
    out.append(f"\n### FID-{FID_N} at equal training CPU time ({dataset})\n")
    out.append(
        "Budgets: the baseline's training CPU seconds at its snapshots (its slowest seed, rounded up to 10 s). "
        "Each run contributes the FID of "
        f"its newest snapshot within the budget; a run whose training has not reached {1 - CPU_SLACK:.0%} of the "
        "budget (still going, or ended earlier) is left out.\n"
    )
    out.append("| arm | " + " | ".join(f"{b / 60:.1f} CPU min" for b in budgets) + " | CPU s per kimg |")
    out.append("|---" * (len(budgets) + 2) + "|")
    for arm in arms:
        cells, figures["cpu"][arm] = [], {}
        for b in budgets:
            vals = [v for r in by_arm[arm] if (v := fid_at_cpu(r, b)) is not None]
            cells.append(mean_std(vals))
            figures["cpu"][arm][f"{b:g}"] = vals
        rates = [
            r["snapshots"][-1]["train_cpu_seconds"] / r["snapshots"][-1]["kimg"] for r in by_arm[arm] if r["snapshots"]
        ]
        rate = f"{statistics.mean(rates):.1f}" if rates else "–"
        out.append(f"| {arm} | " + " | ".join(cells) + f" | {rate} |")
    return "\n".join(out) + "\n", figures


def plot(runs: list[dict], dataset: str, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib.figure import Figure

    fig = Figure(figsize=(15, 4.2), dpi=80)
    ax_k, ax_c, ax_p = fig.subplots(1, 3)
    colours = matplotlib.colormaps["tab10"]
    for i, (arm, _, _) in enumerate(ARMS):
        mine = [r for r in runs if r["arm"] == arm and r["dataset"] == dataset and r["snapshots"]]
        for j, r in enumerate(mine):
            s = r["snapshots"]
            label = arm if j == 0 else None
            kw = dict(color=colours(i % 10), ls="-" if i < 10 else "--", lw=1, ms=3, alpha=0.8)
            ax_k.plot([x["kimg"] for x in s], [x["fid"] for x in s], marker="o", label=label, **kw)
            ax_c.plot([x["train_cpu_seconds"] / 60 for x in s], [x["fid"] for x in s], marker="o", **kw)
            ax_p.plot([x["kimg"] for x in s], [x["p"] for x in s], **kw)
    ax_k.set(title=f"FID-{FID_N} vs kimg ({dataset}; one line per seed)", xlabel="kimg", ylabel="FID")
    ax_c.set(title="FID vs training CPU minutes", xlabel="CPU min (training steps only)")
    ax_p.set(title="p at snapshots", xlabel="kimg")
    for ax in (ax_k, ax_c, ax_p):
        ax.grid(alpha=0.3)
    ax_k.legend(fontsize=6, ncol=2)
    fig.tight_layout()
    fig.savefig(path)


def cadence_text() -> str:
    """'4 kimg up to 20 kimg, then every 8 kimg' from :data:`CADENCE`."""
    parts = [f"{snap:g} kimg" + (f" up to {until:g} kimg" if math.isfinite(until) else "") for until, snap in CADENCE]
    return ", then every ".join(parts)


def cmd_report(args) -> None:
    runs = collect(args.root)
    if not runs:
        sys.exit(f"error: no runs under {args.root}")
    args.out.mkdir(parents=True, exist_ok=True)
    version, study_load = code_version(), load_average()
    planned = len(ARMS) * len(SEEDS)
    finished = sum(r["finished"] and r["dataset"] == "acdc" for r in runs)
    interim = finished < planned
    commits = sorted({c for r in runs for c in r["commits"]})
    md = [
        "# CPU preset study (issue 15)" + (" — INTERIM, partial results" if interim else ""),
        "",
        f"Report of {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}, load average {study_load} "
        f"(1/5/15 min). {finished} of {planned} planned ACDC runs finished"
        + (" (the study is still running: figures will change)." if interim else "."),
        "",
        f"Setting: preset {PRESET} (32x32) on {ACDC} (1312 slices), {KIMG:g} kimg (longer where a run's `kimg` "
        f"in results/presets.json says so), a snapshot and FID-{FID_N} (generated images against all training "
        f"images) every {cadence_text()}, seeds "
        f"{', '.join(map(str, SEEDS))}, one thread per run, 2 runs at a time at niceness 10 on a 2-core machine "
        "shared with other work. FID from 500 images is biased upwards (the fewer images, the higher): "
        "compare the arms with each other only. CPU time counts training steps only (no FID, no snapshots).",
        "",
        "```",
        "cd /work/wt/study && export PYTHONPATH=$PWD   # a clean checkout of the commit(s) below",
        "nohup nice -n 10 /work/main/.venv/bin/python /work/main/benchmarks/presets.py run --jobs 2 "
        "[--kimg 100 --arms ...] >> /work/runs/presets/log 2>&1 &",
        "python benchmarks/presets.py report",
        "```",
        "",
        f"Code that trained the runs: {', '.join(c[:12] for c in commits)} (per run in results/presets.json). "
        "The ADA defect found before the study (contrast scaled around each image's own mean instead of "
        "multiplying by c around 0 as in the ADA paper) is fixed from commit 9c06a16 on, before any run.",
        "",
        "Why some runs go past 20 kimg: at 20 kimg D does not overfit yet (r_t 0.3-0.6, ADA's p below 0.01), so "
        "ADA cannot differ from no augmentation there; the runs' target kimg is `kimg` in results/presets.json.",
        "",
        "The 'pipeline alone' arm (pipeline on, p = 0) is not trained: a test "
        "(tests/test_training.py::test_fixed_p0_trains_bit_identically_to_no_augmentation) shows `--aug fixed --p 0` "
        "trains bit-identically to `--aug none`.",
        "",
        "Arms (options on top of the preset):",
        "",
        "| arm | options | what |",
        "|---|---|---|",
        *(f"| {n} | `{a}` | {w} |" for n, a, w in ARMS),
        "",
    ]
    doc = {
        "command": shlex.join(["python", "benchmarks/presets.py", *sys.argv[1:]]),
        "date": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "load_average": study_load,
        "interim": interim,
        "setting": {
            "preset": PRESET,
            "kimg": KIMG,
            "cadence": [[until if math.isfinite(until) else None, snap] for until, snap in CADENCE],
            "fid_images": FID_N,
            "seeds": list(SEEDS),
        },
        "report_code": version,
        "runs": runs,
        "tables": {},
    }
    ada = [r for r in runs if "--aug ada" in (r["options"] or "")]
    if ada:
        top = max(ada, key=lambda r: r["p_max"])
        md += [
            f"Highest p any ADA run reached so far (any log line): {top['p_max']:.4f} ({top['dataset']}, "
            f"{top['arm']}, seed {top['seed']}).",
            "",
        ]
    for dataset in sorted({r["dataset"] for r in runs}):
        text, figures = tables(runs, dataset)
        md += [text]
        doc["tables"][dataset] = figures
        png = args.out / f"presets_{dataset}.png"
        plot(runs, dataset, png)
        md += [f"![FID and p curves, {dataset}]({png.name})", ""]
    md_text = "\n".join(md)
    (args.out / "presets.md").write_text(md_text)
    write_json("presets", doc, args.out / "results")
    write_section(
        "## CPU preset study (issue 15)\n\n"
        + ("**Interim, partial results.** " if interim else "")
        + f"{finished} of {planned} ACDC runs finished; tables, curves and the setting in "
        "benchmarks/presets.md, per run and snapshot in benchmarks/results/presets.json.\n",
        args.out / "RESULTS.md",
    )
    print(md_text)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--root", type=Path, default=ROOT, help=f"where the runs go (default {ROOT})")
    sub = ap.add_subparsers(dest="command", required=True)
    run = sub.add_parser("run", parents=[common], help="train the arms (resumes stopped runs, skips finished ones)")
    run.add_argument("--jobs", type=int, default=2)
    run.add_argument("--dataset", choices=DATASETS, default="acdc")
    run.add_argument("--arms", nargs="+", help="only these arms (default: all, in priority order)")
    run.add_argument("--seeds", nargs="+", type=int, default=list(SEEDS))
    run.add_argument("--kimg", type=float, default=KIMG, help=f"train each run to this many kimg (default {KIMG:g})")
    run.add_argument("--allow-dirty", action="store_true", help="run uncommitted code (recorded as +dirty)")
    ph = sub.add_parser("phantom", parents=[common], help="write the phantom data set once")
    ph.add_argument("--n", type=int, default=3000)
    rep = sub.add_parser(
        "report", parents=[common], help="benchmarks/presets.md, benchmarks/results/presets.json, curves"
    )
    rep.add_argument(
        "--out", type=Path, default=HERE, help="folder of presets.md, RESULTS.md, results/ (default: benchmarks)"
    )
    args = ap.parse_args()
    {"run": cmd_run, "phantom": cmd_phantom, "report": cmd_report}[args.command](args)


if __name__ == "__main__":
    main()
