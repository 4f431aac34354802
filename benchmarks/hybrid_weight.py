"""`--hybrid-real-weight` measured (issue 16, part 3): U-Net trained on a hybrid set of synthetic pairs plus
30 real ACDC train slices, with the real images' share of every minibatch set to W, scored on ACDC test.

The synthetic pairs here are procedural phantom slices (`datasetgan.phantom`, ACDC's class ids and
names) written as a generated folder (seed-numbered files), standing in for a generator's output: the
question measured is only how the minibatch share of the few real images moves the score.

    PYTHONPATH=$PWD python benchmarks/hybrid_weight.py run --out /work/runs/bench19/hybrid
    PYTHONPATH=$PWD python benchmarks/hybrid_weight.py report --out /work/runs/bench19/hybrid

`run` is resumable (one benchmark folder per W under OUT; finished folds are skipped); `report` writes
the "## Hybrid sets: share of real images per minibatch" section of benchmarks/RESULTS.md and
benchmarks/results/hybrid_weight.json from the results.json files.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
from bench_losses import acdc, fmt_load, loads, uptime  # benchmarks/bench_losses.py, next to this script
from results import write_json, write_section

WEIGHTS = ("natural", "0.1", "0.25", "0.5")
N_SYNTHETIC, N_REAL = 600, 30
OPTIONS = [
    "--models",
    "unet",
    "--sets",
    "hybrid",
    "--hybrid-real",
    str(N_REAL),
    "--synthetic-sizes",
    str(N_SYNTHETIC),
    "--folds",
    "3",
    "--epochs",
    "5",
    "--threads",
    "1",
    "--no-prior",
    "--no-progress",
]


def phantom_folder(out: Path) -> Path:
    """N_SYNTHETIC phantom slices named by seed, as `datasetgan generate` names pairs."""
    from datasetgan.atomic import atomic_write_bytes, atomic_write_text
    from datasetgan.data import labels_to_json
    from datasetgan.phantom import CLASSES, phantom_slice
    from datasetgan.png import png_bytes

    if not (out / "labels.json").is_file():  # written last: a complete folder
        for i in range(N_SYNTHETIC):
            image, mask = phantom_slice(0, i, 64)
            atomic_write_bytes(out / "images" / f"{i:08d}.png", png_bytes(image))
            atomic_write_bytes(out / "masks" / f"{i:08d}.png", png_bytes(mask))
        atomic_write_text(out / "labels.json", labels_to_json(CLASSES))
    return out


def run(out: Path) -> None:
    data, synth = acdc(), phantom_folder(out / "phantom")
    for w in WEIGHTS:
        folder = out / f"w_{w}"
        folder.mkdir(parents=True, exist_ok=True)
        weight = [] if w == "natural" else ["--hybrid-real-weight", w]
        print(uptime(), flush=True)
        subprocess.run(
            [
                sys.executable,
                "-m",
                "datasetgan",
                "bench",
                "run",
                str(folder),
                "--synthetic",
                str(synth),
                "--real",
                str(data / "train"),
                "--test-real",
                str(data / "test"),
            ]
            + OPTIONS
            + weight,
            check=True,
        )
    print(uptime(), flush=True)


def report(out: Path, log: Path) -> None:
    rows, records = [], []
    for w in WEIGHTS:
        path = out / f"w_{w}" / "bench/results.json"
        if not path.is_file():
            continue
        doc = json.loads(path.read_text())
        for key, e in doc["experiments"].items():
            vals = {k: [f["test_r"][k] for f in e["folds"] if f.get("test_r")] for k in ("miou", "mdice_fg", "hd95")}
            share = N_REAL / (N_REAL + N_SYNTHETIC) if w == "natural" else float(w)
            rec = {
                "weight": w,
                "real_share_of_batches": share,
                "row": key,
                "folds": len(e["folds"]),
                "command": doc.get("command"),
                **{f"test_r_{k}": [float(np.mean(v)), float(np.std(v))] if v else None for k, v in vals.items()},
            }
            records.append(rec)
            cell = lambda k: "-" if not rec[f"test_r_{k}"] else "{:.3f} ± {:.3f}".format(*rec[f"test_r_{k}"])  # noqa: E731
            rows.append(
                f"| {w} ({share:.0%}) | {key} | {rec['folds']}/{e['folds_k']} | {cell('miou')} | "
                f"{cell('mdice_fg')} | {cell('hd95')} |"
            )
    la = loads(log)
    text = "\n".join(
        [
            "## Hybrid sets: share of real images per minibatch (`--hybrid-real-weight`)",
            "",
            f"U-Net, 64x64, {N_SYNTHETIC} synthetic + {N_REAL} real ACDC train slices (drawn at random, seed 0), "
            "3 folds (each fold trains on two thirds of this hybrid set, the same images for every W), 5 epochs "
            "(sized for a shared 2-core machine), 1 thread, scored on ACDC test (test-R). W = natural is plain "
            "shuffling (the real images' share of the set). Synthetic pairs: procedural phantom "
            "slices (`datasetgan.phantom`), not a generator's output. Commands: `benchmarks/hybrid_weight.py run` "
            f"(each row's command is in benchmarks/results/hybrid_weight.json). Load average (1/5/15 min) "
            + (f"{fmt_load(la[0])} at start, {fmt_load(la[-1])} at the end." if la else "not logged."),
            "",
            "| real share W | row | folds | test-R mIoU | test-R Dice (fg) | test-R HD95 (px) |",
            "|---|---|---|---|---|---|",
            *rows,
            "",
        ]
    )
    print(text)
    write_section(text)
    write_json(
        "hybrid_weight",
        {
            "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
            "load_average_start_end": [la[0], la[-1]] if la else None,
            "machine": "shared 2-core CPU, 1 thread",
            "records": records,
        },
    )


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("action", choices=["run", "report"])
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--log", type=Path, help="log holding the run's `uptime` lines (default OUT/../hybrid.log)")
    a = ap.parse_args()
    if a.action == "run":
        run(a.out)
    else:
        report(a.out, a.log or a.out.parent / "hybrid.log")


if __name__ == "__main__":
    main()
