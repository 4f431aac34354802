"""Losses, post-processing and the prior baseline compared with `datasetgan bench run` (issue 19), on ACDC
(U-Net, 5 folds grouped by patient, real training slices, test-R = ACDC test) and on a second modality
unlike ACDC: "lesions", a generated ultrasound-like set of binary masks of small nodules (speckle
texture, 0-3 nodules of 2-6 px radius anywhere in the image, a quarter of the images without any).

    PYTHONPATH=$PWD python benchmarks/bench_losses.py run acdc --out /work/runs/bench19/acdc [-- bench options]
    PYTHONPATH=$PWD python benchmarks/bench_losses.py run lesions --out /work/runs/bench19/lesions
    PYTHONPATH=$PWD python benchmarks/bench_losses.py report acdc --out ... [--log LOG]

`run` is resumable (folds in OUT/bench/results.json are skipped, so a loss added to a suite later trains
only that loss' rows) and logs `uptime` before and after;
`report` writes the "## Losses and post-processing: ..." section of benchmarks/RESULTS.md, its chart
benchmarks/bench_losses_SUITE.png and benchmarks/results/bench_losses_SUITE.json from OUT/bench/results.json and
the load averages in the
log, recomputing nothing.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
from results import write_json, write_section  # benchmarks/results.py, next to this script

ROOT = Path(__file__).resolve().parents[1]
LOSSES = "dice_ce,ce,focal,jaccard,lovasz,tversky,boundary,gambling"
SUITES = {
    "acdc": [
        "--models",
        "unet",
        "--sets",
        "real",
        "--folds",
        "5",
        "--fold-groups",
        r"patient\d+",
        "--epochs",
        "15",
        "--threads",
        "1",
        "--loss",
        LOSSES,
        "--min-component",
        "auto",
        "--classifier-gate",
        "--swa",
    ],
    "lesions": [
        "--models",
        "unet",
        "--sets",
        "real",
        "--folds",
        "5",
        "--epochs",
        "10",
        "--threads",
        "1",
        "--real-limit",
        "all",
        "--loss",
        "dice_ce,ce,focal,lovasz,tversky,gambling",
        "--min-component",
        "auto",
        "--classifier-gate",
        "--swa",
    ],
}
LESION_CLASSES = [{"id": 0, "name": "background", "color": "#000000"}, {"id": 1, "name": "nodule", "color": "#e6194b"}]


def acdc() -> Path:
    for base in ROOT.parents:  # beside the main checkout, a worktree one level deeper, or a copy elsewhere
        if (base / "shared/data/acdc").is_dir():
            return base / "shared/data/acdc"
    sys.exit("ACDC not found at ../shared/data/acdc")


def lesion_slice(rng: np.random.Generator, size: int = 64) -> tuple[np.ndarray, np.ndarray]:
    """One ultrasound-like image (uint8 [size, size]) and its binary nodule mask."""
    from scipy.ndimage import gaussian_filter

    yy, xx = np.mgrid[0:size, 0:size].astype(np.float64)
    tissue = 0.45 + 0.25 * gaussian_filter(rng.standard_normal((size, size)), size / 8) * 4
    mask = np.zeros((size, size), np.uint8)
    echo = np.ones((size, size))
    for _ in range(rng.choice([0, 1, 1, 2, 3], p=[0.25, 0.3, 0.2, 0.15, 0.1])):
        cy, cx = rng.uniform(6, size - 6, 2)
        a, b = rng.uniform(2, 6, 2)
        t = rng.uniform(0, np.pi)
        u = ((xx - cx) * np.cos(t) + (yy - cy) * np.sin(t)) / a
        v = (-(xx - cx) * np.sin(t) + (yy - cy) * np.cos(t)) / b
        r = np.sqrt(u**2 + v**2)
        inside = r <= 1
        mask[inside] = 1
        echo = np.where(inside, rng.uniform(0.35, 0.6), echo)  # hypoechoic nodule
        echo = np.where((r > 1) & (r <= 1.35), np.maximum(echo, 1.35), echo)  # brighter halo
    speckle = rng.rayleigh(0.8, (size, size))
    image = gaussian_filter(np.clip(tissue, 0.1, 1) * echo * speckle, 0.7)
    return (np.clip(image / 1.6, 0, 1) * 255).astype(np.uint8), mask


def write_lesions(out: Path, n: int, seed: int) -> Path:
    from datasetgan.atomic import atomic_write_bytes, atomic_write_text
    from datasetgan.png import png_bytes

    rng = np.random.default_rng(seed)
    for i in range(n):
        image, mask = lesion_slice(rng)
        atomic_write_bytes(out / "images" / f"lesion_{i:05d}.png", png_bytes(image))
        atomic_write_bytes(out / "masks" / f"lesion_{i:05d}.png", png_bytes(mask))
    atomic_write_text(out / "labels.json", json.dumps({"classes": LESION_CLASSES}, indent=1))
    return out


def data_args(suite: str, out: Path) -> list[str]:
    if suite == "acdc":
        data = acdc()
        return ["--real", str(data / "train"), "--test-real", str(data / "test")]
    folder = out.parent / "lesions_data"
    if not (folder / "labels.json").is_file():  # written last: a complete folder
        write_lesions(folder / "train", 200, seed=1)
        write_lesions(folder / "test", 150, seed=2)
        (folder / "labels.json").write_text(json.dumps({"classes": LESION_CLASSES}))
    return ["--real", str(folder / "train"), "--test-real", str(folder / "test")]


def uptime() -> str:
    return subprocess.run(["uptime"], capture_output=True, text=True).stdout.strip()


def run(suite: str, out: Path, extra: list[str]) -> None:
    out.mkdir(parents=True, exist_ok=True)
    command = ["datasetgan", "bench", "run", str(out)] + data_args(suite, out) + SUITES[suite] + extra
    print(uptime(), flush=True)
    subprocess.run([sys.executable, "-m", "datasetgan"] + command[1:] + ["--no-progress"], check=True)
    print(uptime(), flush=True)


def loads(log: Path | None) -> list[list[float]]:
    if not log or not log.is_file():
        return []
    return [
        [float(x) for x in m.groups()]
        for m in re.finditer(r"load average: ([\d.]+), ([\d.]+), ([\d.]+)", log.read_text())
    ]


def fmt_load(load: list[float]) -> str:
    return " / ".join(f"{x:.2f}" for x in load)


def report(suite: str, out: Path, log: Path | None, note: str = "") -> None:
    from datasetgan.bench.compare import METRICS, cell, compare, vs_best, write_comparison

    write_comparison(out / "bench")  # methods.md/.json/.png from results.json
    chart = Path(__file__).resolve().parent / f"bench_losses_{suite}.png"
    chart.write_bytes((out / "bench/methods.png").read_bytes())
    doc = json.loads((out / "bench/results.json").read_text())
    comp = compare(doc)
    prof = doc["profile"]
    exps = doc["experiments"]
    secs = {k: [f.get("seconds") for f in e["folds"] if f.get("seconds") is not None] for k, e in exps.items()}
    cpu = {k: [f.get("cpu_seconds") for f in e["folds"] if f.get("cpu_seconds") is not None] for k, e in exps.items()}
    gate = [
        f[s]["gate_accuracy"]
        for e in exps.values()
        if e.get("post") == "gate"
        for f in e["folds"]
        for s in ("test_r",)
        if (f.get(s) or {}).get("gate_accuracy") is not None
    ]
    areas = [f.get("min_area") for e in exps.values() if e.get("post") == "mincomp" for f in e["folds"]]
    la = loads(log)
    test = (doc.get("test_sets") or {}).get("test_r") or {}
    cols = [m for m in METRICS if any(m[0] in r["metrics"] for r in comp["methods"])]
    title = {
        "acdc": "ACDC (U-Net, real training slices)",
        "lesions": "generated ultrasound-like nodules (binary, small structures)",
    }[suite]
    lines = [
        f"## Losses and post-processing: {title}",
        "",
        f"Command: `{doc.get('command', '')}` (via `benchmarks/bench_losses.py run {suite}`); "
        f"report: `benchmarks/bench_losses.py report {suite}`.",
        "",
        "Machine: shared 2-core CPU (other engineers' jobs running), 1 thread, load average (1/5/15 min) "
        + (
            f"{fmt_load(la[0])} at start, {fmt_load(la[-1])} at the end (1-min values logged during the run: "
            f"{', '.join(f'{x[0]:.1f}' for x in la)})"
            if la
            else "not logged"
        )
        + ". "
        f"{prof['resolution']}x{prof['resolution']}, {prof['train']['epochs']} epochs "
        f"(the cpu profile has 20; reduced to fit the session), batch {prof['train']['batch_size']}, "
        f"{prof['train']['optimizer']} lr {prof['train']['lr']}, U-Net widths {prof['unet_channels']}; "
        f"{next(iter(exps.values()))['n_train']} training images in {prof['folds']} folds; test-R: "
        f"{test.get('n')} images. Every loss trains the same steps per fold; the +mincomp and +gate rows "
        f"post-process the first loss' model of the same fold, +swa retrains it with a cosine schedule and "
        f"SWA of the last quarter of the epochs; prior = per-pixel majority class of the fold's training masks.",
        "",
        f"Scores on test-R, mean ± std over folds. {comp['note']}.",
        "",
        "| row | folds | " + " | ".join(t for _, t, _ in cols) + " | vs best | CPU s / fold |",
        "|" + "---|" * (len(cols) + 4),
    ]
    for r in comp["methods"]:
        c = cpu.get(r["key"])
        cells = [r["key"], str(r["folds"])] + [cell(r["metrics"].get(k)) for k, _, _ in cols]
        cells += [vs_best(r, comp), f"{np.mean(c):.0f}" if c else "-"]
        lines.append("| " + " | ".join(cells) + " |")
    if gate:
        lines += [
            "",
            f"Classifier gate accuracy on test-R (image shows foreground or not): "
            f"{np.mean(gate):.3f} ± {np.std(gate):.3f} over folds.",
        ]
    if areas:
        lines.append(f"Small-component area chosen on each fold's held-out part (pixels): {areas}.")
    if note:
        lines += ["", note]
    lines += ["", f"![foreground Dice per row, mean ± std over folds]({chart.name})", ""]
    text = "\n".join(lines)
    print(text)
    write_section(text)
    write_json(
        f"bench_losses_{suite}",
        {
            "command": doc.get("command"),
            "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
            "load_average_start_end": [la[0], la[-1]] if la else None,
            "machine": "shared 2-core CPU, 1 thread",
            "profile": prof,
            "comparison": comp,
            "wall_seconds_per_fold": {k: v for k, v in secs.items() if v},
            "cpu_seconds_per_fold": {k: v for k, v in cpu.items() if v},
            "gate_accuracy_test_r": gate,
            "min_area_per_fold": areas,
            "metric_notes": doc.get("metric_notes"),
            "reading": note,
            "cwd": os.getcwd(),
        },
    )


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("action", choices=["run", "report"])
    ap.add_argument("suite", choices=sorted(SUITES))
    ap.add_argument("--out", type=Path, required=True, help="the benchmark's RUN folder")
    ap.add_argument("--log", type=Path, help="log holding the run's `uptime` lines (default OUT/../SUITE.log)")
    ap.add_argument("--note", default="", help="report: text put under the table (what the figures show)")
    ap.add_argument("extra", nargs="*", help="more `datasetgan bench run` options (after --)")
    a = ap.parse_args()
    if a.action == "run":
        run(a.suite, a.out, a.extra)
    else:
        report(a.suite, a.out, a.log or a.out.parent / f"{a.suite}.log", a.note)


if __name__ == "__main__":
    main()
