"""The second reference run on ACDC (benchmarks/reference_acdc.sh): three labelling arms beside the seed
paper's figures and the first reference run's.

    PYTHONPATH=$PWD python benchmarks/reference_acdc.py pick DATA --n 30 --seed 0 --groups 'patient\\d+' --out DIR
    PYTHONPATH=$PWD python benchmarks/reference_acdc.py report RUN [--arms seeds,real,both] [--note TEXT] [--to DIR]

``pick`` chooses n labelled images of DATA reproducibly and spread over its groups (patients): the
groups in a seeded random order, one image drawn at random from each in turn, again round the groups
only when every group has given one. DIR gets images/ and masks/ of links to the chosen files,
DATA's labels.json and picked.json (the names and how they were chosen); nothing is copied.

``report`` reads the run folder the script wrote (RUN: the shared stages; RUN/arms/ARM: each arm's
annotations, interpreter, generated pairs, grading, agreement and benchmark) and writes the section
"## Second reference run on ACDC (labelling arms)" of RESULTS.md and results/reference_acdc.json
in DIR (default: benchmarks/, next to this script): one record per (arm, model, training set).
"""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path

import numpy as np
from results import RESULTS, write_json, write_section  # benchmarks/results.py, next to this script

from datasetgan.atomic import atomic_write_text
from datasetgan.bench.report import fmt
from datasetgan.bench.runner import name_groups
from datasetgan.bench.trainer import steps_per_epoch
from datasetgan.data import DataError, list_images, locate, mask_path_for

SECTION = "## Second reference run on ACDC (labelling arms)"
ARMS = {
    "seeds": "generated seeds labelled by the U-Net annotator",
    "real": "real ACDC train slices with their expert masks, projected",
    "both": "both sets of annotations",
}
KINDS = ("synthetic", "real", "hybrid")
# The seed paper (DeepLabV3, 256x256, test-R mIoU) and its pair grading (share of 1.5k pairs).
SEED = {"synthetic": 0.551, "real": 0.799, "hybrid": 0.762}
SEED_GRADES = {"good": 0.74, "partial": 0.11, "bad": 0.15}
GOALS = {"synthetic": 0.85, "hybrid": 1.0}  # share of the same model's real-trained test-R mIoU (issue #9)
# The first reference run (RESULTS.md "Reference run on ACDC (end to end)"): test-R mIoU, 5 folds.
FIRST_RUN = {
    "deeplabv3_mobilenet_v3_large": {"synthetic": 0.426, "real": 0.452, "hybrid": 0.428},
    "fcn_mobilenet_v3_large": {"synthetic": 0.430, "real": 0.437, "hybrid": 0.427},
    "unet": {"synthetic": 0.475, "real": 0.649, "hybrid": 0.500},
}


# ---------------------------------------------------------------------------------------------
# pick


def pick(names: list[str], n: int, seed: int, groups: str) -> list[str]:
    """n of ``names`` spread over their groups (regex matches), reproducibly; sorted."""
    by_group: dict[str, list[str]] = {}
    for name, g in zip(names, name_groups(names, groups)):
        by_group.setdefault(g, []).append(name)
    rng = np.random.default_rng(seed)
    keys = sorted(by_group)
    pools = [list(rng.permutation(by_group[keys[i]])) for i in rng.permutation(len(keys))]
    chosen: list[str] = []
    while len(chosen) < min(n, len(names)):
        for pool in pools:
            if pool and len(chosen) < n:
                chosen.append(str(pool.pop()))
    return sorted(chosen)


def write_pick(data: Path, n: int, seed: int, groups: str, out: Path) -> list[str]:
    """The folder of links to the chosen images and masks (unchanged if it already holds this choice)."""
    image_dir, mask_dir, labels = locate(data)
    if mask_dir is None or labels is None:
        raise DataError(f"{data}: needs masks/ and labels.json")
    files = {f.name: f for f in list_images(image_dir)}
    chosen = pick(sorted(files), n, seed, groups)
    record = {"source": str(data.resolve()), "n": n, "seed": seed, "groups": groups, "names": chosen}
    done = out / "picked.json"
    if done.is_file():
        if json.loads(done.read_text()) != record:
            raise DataError(f"{done}: holds another choice; remove {out} to choose again")
        return chosen
    for sub in ("images", "masks"):
        (out / sub).mkdir(parents=True, exist_ok=True)
    for name in chosen:
        mask = mask_path_for(mask_dir, files[name])
        if mask is None:
            raise DataError(f"{files[name]}: no mask with the same name in {mask_dir}")
        for link, target in ((out / "images" / name, files[name]), (out / "masks" / mask.name, mask)):
            link.unlink(missing_ok=True)
            link.symlink_to(target.resolve())
    (out / "labels.json").unlink(missing_ok=True)
    (out / "labels.json").symlink_to(labels.resolve())
    atomic_write_text(done, json.dumps(record, indent=1))  # last: the folder is complete
    return chosen


# ---------------------------------------------------------------------------------------------
# report


def read_json(path: Path) -> dict:
    return json.loads(path.read_text()) if path.is_file() else {}


def set_kind(key: str) -> str:
    return next(k for k in KINDS if key.startswith(k))


def steps_per_fold(entry: dict) -> float | None:
    """Mean optimiser steps per fold: sets of different sizes are compared at equal steps."""
    t = entry["train"]
    n = [steps_per_epoch(f["n_train"], t["batch_size"]) for f in entry["folds"]]
    return t["epochs"] * sum(n) / len(n) if n else None


def model_rows(doc: dict, kinds: tuple[str, ...]) -> dict[tuple[str, str], dict]:
    """(model, kind) -> experiment entry of a results.json: the plain rows (no prior-only baseline,
    post-processing or SWA row)."""
    return {
        (e["model_name"], set_kind(e["set"])): e
        for e in doc.get("experiments", {}).values()
        if e.get("model") and not e.get("post") and not e.get("swa") and set_kind(e["set"]) in kinds
    }


def miou(entry: dict, split: str) -> list | None:
    return ((entry.get("summary") or {}).get(split) or {}).get("miou")


def shared_test_g(shared: dict, e: dict, arm: str, arm_test_g: str | None) -> tuple[list | None, str | None]:
    """A real-trained row's test-G mIoU on ``arm``'s test-G set, and that set's path: the set the shared
    benchmark named after the arm, or (results of one unnamed test-G set) its set if it is the arm's;
    else nothing (another arm's test-G masks come from another interpreter)."""
    sets = (shared.get("test_sets") or {}).get("test_g_sets") or {}
    if arm in sets:
        return ((e.get("summary") or {}).get("test_g_sets") or {}).get(arm, {}).get("miou"), sets[arm].get("path")
    path = ((shared.get("test_sets") or {}).get("test_g") or {}).get("path")
    same = bool(path and arm_test_g) and Path(path).resolve() == Path(arm_test_g).resolve()
    return (miou(e, "test_g"), path) if same else (None, None)


def record(arm: str, model: str, kind: str, e: dict, real_e: dict | None, test_g: tuple) -> dict:
    """``test_g``: the row's test-G mIoU [mean, std] (or None) and the test-G set's path."""
    tr, (tg, test_g_set) = miou(e, "test_r"), test_g
    real = miou(real_e, "test_r") if real_e else None
    share = tr[0] / real[0] if tr and real and kind != "real" else None
    goal = GOALS.get(kind)
    return {
        "arm": arm,
        "model": model,
        "training_set": kind,
        "set": e["set"],
        "folds": len(e["folds"]),
        "folds_k": e["folds_k"],
        "epochs": e["train"]["epochs"],
        "steps_per_fold": steps_per_fold(e),
        "test_r_miou_mean": tr[0] if tr else None,
        "test_r_miou_std": tr[1] if tr else None,
        "test_g_miou_mean": tg[0] if tg else None,
        "test_g_miou_std": tg[1] if tg else None,
        "test_g_set": test_g_set,
        "share_of_real": share,
        "goal_share_of_real": goal,
        "goal_met": share >= goal if share is not None and goal is not None else None,
        "shared_across_arms": kind == "real",
        "first_run_test_r_miou": FIRST_RUN.get(model, {}).get(kind),
        "seed_paper_test_r_miou": SEED[kind],
    }


def arm_summary(run: Path, arm: str) -> dict:
    folder = run / "arms" / arm
    doc = read_json(folder / "bench/results.json")
    interp = read_json(folder / "interpreter.json")
    a, g = doc.get("agreement"), doc.get("grading")
    return {
        "folder": str(folder),
        "annotations": len(interp.get("annotations", [])) or None,
        "agreement": {k: a[k] for k in ("n", "classes", "iou", "dice", "miou", "miou_fg", "pixel_accuracy")}
        if a
        else None,
        "grading": {"n": g["n"], **{k: v / g["n"] for k, v in g["counts"].items()}, "mean_wrong": g["mean_wrong"]}
        if g
        else None,
        "bench_command": doc.get("command"),
    }


def timings(run: Path) -> list[dict]:
    """RUN/timings.tsv (the script's per-stage wall times and load averages)."""
    path = run / "timings.tsv"
    rows = [line.split("\t") for line in path.read_text().splitlines()] if path.is_file() else []
    return [{"date": r[0], "stage": r[1], "seconds": int(r[2]), "load_average": r[3]} for r in rows if len(r) == 4]


def collect(run: Path, arms: list[str]) -> dict:
    shared = read_json(run / "bench/results.json")
    real_rows = model_rows(shared, ("real",))
    records = []
    for arm in arms:
        doc = read_json(run / "arms" / arm / "bench/results.json")
        arm_test_g = ((doc.get("test_sets") or {}).get("test_g") or {}).get("path")
        rows = model_rows(doc, ("synthetic", "hybrid"))
        for model in sorted({m for m, _ in rows} | {m for m, _ in real_rows}):
            for kind in KINDS:
                e = real_rows.get((model, kind)) if kind == "real" else rows.get((model, kind))
                if e:
                    g = shared_test_g(shared, e, arm, arm_test_g) if kind == "real" else (miou(e, "test_g"), arm_test_g)
                    records.append(record(arm, model, kind, e, real_rows.get((model, "real")), g))
    gen = read_json(run / "generator.json")
    ann = read_json(run / "annotator.json")
    fid = (read_json(run / "fid.json") or {}).get("fid")
    return {
        "run": str(run),
        "generator": {
            "sha256": gen.get("sha256"),
            "kimg": (gen.get("training") or {}).get("nimg", 0) / 1000 or None,
            "preset": ((gen.get("training") or {}).get("config") or {}).get("preset"),
            "resolution": (gen.get("config") or {}).get("resolution"),
        },
        "fid": read_json(run / "fid.json") or None,  # the figure, the numbers of images, the command
        "annotator": {"n_train": ann["trained_on"]["n"], "test_r_miou": ann["test_r"]["miou"]} if ann else None,
        "real_annotations": read_json(run / "real/train/picked.json") or None,
        "agreement_set": read_json(run / "real/val/picked.json") or None,
        "real_bench_command": shared.get("command"),
        "arms": {arm: {**arm_summary(run, arm), "fid": fid} for arm in arms},  # one generator: one FID
        "records": records,
        "timings": timings(run),
    }


def goal_lines(doc: dict) -> list[str]:
    out = []
    for arm in doc["arms"]:
        parts = []
        for r in doc["records"]:
            if r["arm"] == arm and r["model"] == "unet" and r["share_of_real"] is not None:
                gap = r["share_of_real"] - r["goal_share_of_real"]
                verdict = f"met by {gap:+.2f}" if gap >= 0 else f"short by {-gap:.2f}"
                parts.append(
                    f"{r['training_set']} {r['share_of_real']:.2f} of real (goal ≥ {r['goal_share_of_real']:.2f}: "
                    f"{verdict})"
                )
        out.append(f"- Arm `{arm}`, U-Net: " + ("; ".join(parts) if parts else "not benchmarked yet") + ".")
    return out


def pct(x) -> str:
    return f"{x:.0%}"


def section(doc: dict, note: str) -> str:
    gen, fid, ann = doc["generator"], doc["fid"], doc["annotator"]
    real, val = doc["real_annotations"], doc["agreement_set"]
    lines = [SECTION, ""] + ([note, ""] if note else [])
    lines.append(
        f"- Run folder `{doc['run']}`; generator {str(gen['sha256'])[:12]} ({gen['preset']}, {gen['resolution']} px"
        + (f", {gen['kimg']:.0f} kimg" if gen["kimg"] else "")
        + ")"
        + (f"; FID {fid['fid']:.1f} ({fid['generated']} generated vs {fid['real']} real slices)" if fid else "")
        + ". One generator, so one FID for every arm."
    )
    if ann:
        lines.append(
            f"- U-Net annotator (arm `seeds`' labeller): {ann['n_train']} ACDC train slices, test-R mIoU "
            f"{ann['test_r_miou']:.3f}."
        )
    if real:
        lines.append(
            f"- Real annotations (arms `real` and `both`; also the real part of every hybrid set): {len(real['names'])} "
            f"ACDC train slices spread over patients (`pick`: seed {real['seed']}, groups `{real['groups']}`), "
            "projected once and shared."
        )
    if val:
        lines.append(
            f"- Interpreter agreement: {len(val['names'])} ACDC val slices (seed {val['seed']}), projected once; each "
            "arm's interpreter reads their masks from the projections' features, scored against the expert masks "
            "(IoU per class from one confusion matrix, mIoU with background)."
        )
    if doc.get("real_bench_command"):
        lines.append(f"- Real-set rows (shared by the arms): `{doc['real_bench_command']}`")
    lines += ["", "| arm | annotations | agreement mIoU | agreement IoU per class | pairs good / partial / bad | FID |"]
    lines.append("|---|---|---|---|---|---|")
    for arm, a in doc["arms"].items():
        ag, gr = a["agreement"], a["grading"]
        per_class = ", ".join(f"{c} {v:.3f}" for c, v in zip(ag["classes"], ag["iou"]) if v == v) if ag else "-"
        grades = f"{pct(gr['good'])} / {pct(gr['partial'])} / {pct(gr['bad'])} of {gr['n']}" if gr else "-"
        cells = [
            f"{arm}: {ARMS[arm]}",
            str(a["annotations"] or "-"),
            f"{ag['miou']:.3f}" if ag else "-",
            per_class,
            grades,
            f"{fid['fid']:.1f}" if fid else "-",
        ]
        lines.append("| " + " | ".join(cells) + " |")
    lines += [
        "",
        "Seed paper's pair grading: " + ", ".join(f"{k} {pct(v)}" for k, v in SEED_GRADES.items()) + ".",
        "",
        "**Goals** (share of the same model's real-trained test-R mIoU):",
        *goal_lines(doc),
        "",
        "test-R = ACDC test (unseen patients); test-G = the arm's generated pairs from unseen seeds (masks from "
        "the arm's interpreter; the real-set models, trained once, are scored on every arm's test-G: JSON "
        "`test_g_set`); mIoU with background; mean ± std over the folds completed.",
        "",
        "| arm | model | training set | folds | epochs (steps per fold) | test-R mIoU | test-G mIoU | share of real | "
        "goal | first run test-R | seed paper test-R (DeepLabV3, 256 px) |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in doc["records"]:
        share = f"{r['share_of_real']:.2f}" if r["share_of_real"] is not None else "-"
        goal = f"≥ {r['goal_share_of_real']:.2f}" if r["goal_share_of_real"] else "-"
        steps = f"{r['epochs']} ({r['steps_per_fold']:.0f})" if r["steps_per_fold"] else str(r["epochs"])
        first = f"{r['first_run_test_r_miou']:.3f}" if r["first_run_test_r_miou"] else "-"
        lines.append(
            f"| {r['arm']} | {r['model']} | {r['set']} | {r['folds']}/{r['folds_k']} | {steps} | "
            f"{fmt([r['test_r_miou_mean'], r['test_r_miou_std']])} | {fmt([r['test_g_miou_mean'], r['test_g_miou_std']])} "
            f"| {share} | {goal} | {first} | {r['seed_paper_test_r_miou']:.3f} |"
        )
    if doc["timings"]:
        per_stage: dict[str, list[dict]] = {}  # a stage run again (resumed, or finding its work done) adds rows
        for t in doc["timings"]:
            per_stage.setdefault(t["stage"], []).append(t)
        total = sum(t["seconds"] for t in doc["timings"])
        cells = [
            f"{stage} {sum(t['seconds'] for t in rows)} s"
            + (f" in {len(rows)} runs" if len(rows) > 1 else "")
            + f" (load {rows[-1]['load_average'].split()[0]})"
            for stage, rows in per_stage.items()
        ]
        lines += ["", f"Stage wall times (RUN/timings.tsv, {total / 3600:.1f} h in all): " + ", ".join(cells) + "."]
    return "\n".join(lines) + "\n"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="command", required=True)
    p = sub.add_parser("pick", help="choose labelled images spread over groups (patients)")
    p.add_argument("data", type=Path)
    p.add_argument("--n", type=int, required=True)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--groups", default=r"patient\d+", help="regex whose match names an image's group")
    p.add_argument("--out", type=Path, required=True)
    r = sub.add_parser("report", help="the RESULTS.md section and results/reference_acdc.json")
    r.add_argument("run", type=Path)
    r.add_argument("--arms", default=",".join(ARMS))
    r.add_argument("--note", default="")
    r.add_argument("--to", type=Path, default=RESULTS.parent, help="folder of RESULTS.md and results/")
    a = ap.parse_args()
    if a.command == "pick":
        try:
            chosen = write_pick(a.data, a.n, a.seed, a.groups, a.out)
        except DataError as e:
            raise SystemExit(f"error: {e}") from None
        print(f"{len(chosen)} of {a.data} in {a.out}")
        return
    arms = [x for x in a.arms.split(",") if x]
    doc = collect(a.run, arms)
    text = section(doc, a.note)
    print(text)
    write_section(text, a.to / "RESULTS.md")
    load = os.getloadavg()
    doc.update(
        command="PYTHONPATH=$PWD python benchmarks/reference_acdc.py report " + f"{a.run} --arms {a.arms}",
        date=time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        load_average=list(load),
        goals=GOALS,
        seed_paper={"test_r_miou": SEED, "grading": SEED_GRADES},
        first_run_test_r_miou=FIRST_RUN,
    )
    print(f"wrote {write_json('reference_acdc', doc, a.to / 'results')}")


if __name__ == "__main__":
    main()
