"""Segmenter benchmark on ACDC: DeepLabV3, FCN and U-Net trained on 500 real slices, scored on
ACDC test (test-R), with the `--profile cpu` settings. Prints the comparison and writes it into the
"## Segmenter benchmark" section of benchmarks/RESULTS.md (only that section is replaced).

    PYTHONPATH=$PWD python benchmarks/segmenters.py [--run runs/acdc_cpu] [--report-only] [-- extra bench options]
    PYTHONPATH=$PWD python benchmarks/segmenters.py --report-only --run runs/acdc_cpu --run runs/acdc_cpu_os8

The run is resumable: folds already in RUN/bench/results.json are skipped, so rerunning after an
interruption continues where it stopped; --report-only only rewrites the section (one table per run).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

import torch
from results import write_section  # benchmarks/results.py, next to this script

ROOT = Path(__file__).resolve().parents[1]
SECTION = "## Segmenter benchmark"


def acdc() -> Path:
    for base in (ROOT.parent, ROOT.parents[1]):  # main checkout, or a worktree one level deeper
        if (base / "shared/data/acdc").is_dir():
            return base / "shared/data/acdc"
    sys.exit("ACDC not found at ../shared/data/acdc")


def section(doc: dict, command: str, run: Path, title: str) -> str:
    from datasetgan.bench.report import fmt

    prof = doc["profile"]
    groups = next((e["fold_groups"] for e in doc["experiments"].values() if e.get("fold_groups")), None)
    lines = [
        f"### {title}",
        "",
        f"Command (run from `{os.getcwd()}`; the data is ../shared/data/acdc from the main checkout): `{command}`",
        "",
        f"Machine: shared 2-core CPU, `torch.set_num_threads({doc['profile']['threads']})`. "
        f"Profile `{doc['profile']['name']}`: {doc['profile']['resolution']}x{doc['profile']['resolution']}, "
        f"{doc['profile']['train']['epochs']} epochs, batch {doc['profile']['train']['batch_size']}, "
        f"{doc['profile']['train']['optimizer']} lr {doc['profile']['train']['lr']}, "
        f"loss {doc['profile']['train'].get('loss', 'ce')}, "
        f"MobileNetV3 output stride {prof.get('output_stride', 16)}, U-Net widths {prof.get('unet_channels')}; "
        "training set = 500 ACDC train slices drawn at random (seed 0), k-fold CV (each fold trains on 4/5"
        + (f", slices grouped by `{groups}` so no patient is in two folds" if groups else "")
        + "), "
        f"test-R = ACDC test ({(doc.get('test_sets') or {}).get('test_r', {}).get('n')} slices, unseen patients).",
        "",
        "mIoU includes background; 'no bg' excludes it; Dice is the mean over foreground classes; "
        "HD95 in pixels at 64x64. Mean ± std over the folds completed (column 'folds').",
        "",
        "| model | folds | test-R mIoU | test-R mIoU (no bg) | test-R Dice | test-R HD95 (px) | pixel acc. "
        "| held-out fold mIoU | wall s / fold | CPU s / fold |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for key, e in doc["experiments"].items():
        s = e.get("summary") or {}
        folds = e.get("folds", [])
        secs = sum(f["seconds"] for f in folds) / max(len(folds), 1)
        cpu = [f["cpu_seconds"] for f in folds if f.get("cpu_seconds") is not None]
        cpu_s = f"{sum(cpu) / len(cpu):.0f}" if cpu else "-"
        g = lambda split, k, d=3: fmt((s.get(split) or {}).get(k), d)  # noqa: E731
        lines.append(
            f"| {e['model_name']} | {len(folds)}/{e['folds_k']} | {g('test_r', 'miou')} | "
            f"{g('test_r', 'miou_fg')} | {g('test_r', 'mdice_fg')} | {g('test_r', 'hd95', 2)} | "
            f"{g('test_r', 'pixel_accuracy')} | {g('val', 'miou')} | {secs:.0f} | {cpu_s} |"
        )
    names = [c["name"] for c in doc["classes"]][1:]
    lines += [
        "",
        "Per-class Dice on test-R: "
        + "; ".join(
            f"{e['model_name']}: "
            + ", ".join(
                f"{n} {fmt(d)}" for n, d in zip(names, (e.get("summary") or {}).get("test_r", {}).get("dice", [])[1:])
            )
            for e in doc["experiments"].values()
        ),
        "",
        f"Full tables, bar chart and prediction grid: `{run}/bench/` (tables.md, bars.png, predictions.png).",
        "",
    ]
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--run", action="append", help="run folder (repeat to report several; default runs/acdc_cpu)")
    ap.add_argument("--note", default="", help="text put under the section heading")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--report-only", action="store_true")
    ap.add_argument("extra", nargs="*", help="more `datasetgan bench` options (after --)")
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    data = acdc()
    runs = a.run or ["runs/acdc_cpu"]
    base = [
        "--real",
        str(data / "train"),
        "--test-real",
        str(data / "test"),
        "--profile",
        "cpu",
        "--models",
        "deeplabv3,fcn,unet",
        "--real-limit",
        "500",
        "--sets",
        "real",
        "--fold-groups",
        r"patient\d+",
        "--threads",
        str(a.threads),
    ]
    if not a.report_only:
        from datasetgan.cli import main as cli

        for run in runs:
            Path(run).mkdir(parents=True, exist_ok=True)
            cli.main(["bench", "run", run] + base + a.extra, standalone_mode=False)
    parts = [SECTION, ""] + ([a.note, ""] if a.note else [])
    for run in runs:
        doc = json.loads((Path(run) / "bench/results.json").read_text())
        extra = list(a.extra)
        # runs made before results.json kept "command": rebuild it from the recorded settings
        if doc["profile"].get("output_stride", 16) != 16 and "--output-stride" not in extra:
            extra += ["--output-stride", str(doc["profile"]["output_stride"])]
        if doc["profile"]["train"].get("loss", "ce") != "ce" and "--loss" not in extra:
            extra += ["--loss", doc["profile"]["train"]["loss"]]
        command = doc.get("command") or " ".join(["datasetgan", "bench", "run", run] + base + extra)
        command = command.replace(str(data), os.path.relpath(data))
        parts.append(section(doc, command, Path(run), f"`{run}`"))
    text = "\n".join(parts)
    print(text)
    write_section(text)


if __name__ == "__main__":
    main()
