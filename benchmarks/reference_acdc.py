"""The reference ACDC run (benchmarks/reference_acdc.sh) beside the seed paper's figures: prints the
"## Reference run on ACDC" section and writes it into benchmarks/RESULTS.md.

    PYTHONPATH=$PWD python benchmarks/reference_acdc.py runs/acdc64 [--note "text under the heading"]

Reads RUN/bench/results.json (benchmark, grading), RUN/annotator.json, RUN/fid.json and RUN/generator.json;
reports whatever stages have finished, with the number of folds behind every mean.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from results import write_section  # benchmarks/results.py, next to this script

from datasetgan.bench.report import fmt
from datasetgan.bench.trainer import steps_per_epoch

SECTION = "## Reference run on ACDC (end to end)"
# The seed paper (DeepLabV3, 256x256, test-R mIoU) and its pair grading (share of 1.5k pairs).
SEED = {"synthetic": 0.551, "real": 0.799, "hybrid": 0.762}
SEED_GRADES = {"good": 0.74, "partial": 0.11, "bad": 0.15}
GOALS = {"synthetic": 0.85, "hybrid": 1.0}  # share of the real-trained test-R mIoU (issue #9)


def set_kind(key: str) -> str:
    return next(k for k in ("synthetic", "hybrid", "real") if key.startswith(k))


def steps(entry: dict) -> str:
    """'epochs (mean optimiser steps per fold)': sets of different sizes are compared at equal steps."""
    t = entry["train"]
    n = [steps_per_epoch(f["n_train"], t["batch_size"]) for f in entry["folds"]]
    return f"{t['epochs']} ({t['epochs'] * sum(n) / len(n):.0f})" if n else str(t["epochs"])


def section(run: Path, note: str) -> str:
    doc = json.loads((run / "bench/results.json").read_text())
    lines = [SECTION, ""] + ([note, ""] if note else [])
    gen = json.loads((run / "generator.json").read_text()) if (run / "generator.json").is_file() else {}
    nimg = gen.get("training", {}).get("nimg")
    fid = json.loads((run / "fid.json").read_text()) if (run / "fid.json").is_file() else None
    lines.append(
        f"- Run folder `{run}`; generator: cpu-small with ADA"
        + (f", {nimg / 1000:.0f} kimg" if nimg else "")
        + (
            f"; FID {fid['fid']:.1f} ({fid['generated']} generated vs {fid['real']} real slices, "
            f"pytorch-fid's distance)"
            if fid
            else ""
        )
        + "."
    )
    ann_file = run / "annotator.json"  # the annotator's sidecar records what it learnt from and its test-R score
    if ann_file.is_file():
        ann = json.loads(ann_file.read_text())
        lines.append(
            f"- Model-assisted annotator ({ann['config']['arch']}, trained on {ann['trained_on']['n']} "
            f"labelled slices of `{ann['trained_on']['path']}`): test-R mIoU {ann['test_r']['miou']:.3f}, "
            "the ceiling of this run's labels."
        )
    g = doc.get("grading")
    if g:
        c, n = g["counts"], g["n"]
        lines.append(
            f"- Pair grading of {n} generated pairs against the annotator: good {c['good'] / n:.0%}, "
            f"partial {c['partial'] / n:.0%}, bad {c['bad'] / n:.0%} (seed paper: "
            + ", ".join(f"{k} {v:.0%}" for k, v in SEED_GRADES.items())
            + ")."
        )
    if doc.get("command"):
        lines.append(f"- Benchmark command: `{doc['command']}`")
    lines += [
        "",
        "test-R = ACDC test (unseen patients), test-G = generated pairs from unseen seeds; mIoU "
        "includes background; mean ± std over the folds completed.",
        "",
        "| model | training set | folds | epochs (steps per fold) | test-R mIoU | test-G mIoU | "
        "share of real-trained test-R | goal | seed paper test-R (DeepLabV3, 256px) |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    by_model: dict[str, dict[str, dict]] = {}
    for key, e in doc["experiments"].items():
        by_model.setdefault(e["model_name"], {})[set_kind(e["set"])] = e
    for model, sets in sorted(by_model.items()):
        real = (((sets.get("real") or {}).get("summary") or {}).get("test_r") or {}).get("miou", [None])[0]
        for kind in ("synthetic", "real", "hybrid"):
            e = sets.get(kind)
            if not e:
                continue
            s = e.get("summary") or {}
            tr = (s.get("test_r") or {}).get("miou")
            share = f"{tr[0] / real:.2f}" if tr and real and kind != "real" else "-"
            goal = f"≥ {GOALS[kind]:.2f}" if kind in GOALS else "-"
            lines.append(
                f"| {model} | {e['set']} | {len(e['folds'])}/{e['folds_k']} | {steps(e)} | {fmt(tr)} | "
                f"{fmt((s.get('test_g') or {}).get('miou'))} | {share} | {goal} | {SEED[kind]:.3f} |"
            )
    return "\n".join(lines) + "\n"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("run", type=Path)
    ap.add_argument("--note", default="")
    a = ap.parse_args()
    text = section(a.run, a.note)
    print(text)
    write_section(text)


if __name__ == "__main__":
    main()
