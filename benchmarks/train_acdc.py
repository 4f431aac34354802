"""Two training runs side by side (the preset's default vs no augmentation): FID by images seen and by
training CPU time, ADA's p, and the goals of issue 15.

Reads RUN/training/log.jsonl of each run (FID-500 at every snapshot, `train_cpu_seconds`, p, r_t) and
measures FID-2000 (pytorch-fid's distance, `datasetgan fid --n 2000` on the snapshot) at the last
snapshot each run reached within ``--budget-hours`` of training CPU time, plus every ``--fid2000-every``
kimg; those scores are cached in RUN/fid2000.json, so a rerun only scores new snapshots. Writes the
curves (benchmarks/train_acdc_curves.png), the section "cpu-small on ACDC: default vs none (issue 15)"
of RESULTS.md and benchmarks/results/train_acdc.json. The first run is the one the goals are about:
its FID-2000 within the budget (``--goal-fid``), and never behind the second run at a snapshot after
``--after-kimg``, at equal images seen. ``--export FILE`` writes the first run's generator at the
budget's snapshot (e.g. benchmarks/models/acdc64.safetensors).

    PYTHONPATH=$PWD python benchmarks/train_acdc.py /work/runs/acdc64-s15/ada /work/runs/acdc64-s15/none \\
        --names default none --data ../shared/data/acdc/train --code eef6c79 [--heldout ../shared/data/acdc/val]
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
from pathlib import Path

import results
import torch

from datasetgan.atomic import atomic_write_text
from datasetgan.training import read_log

HERE = Path(__file__).resolve().parent
FID_N = 2000
OVERFIT_KEYS = ("kimg", "p", "r_train", "r_heldout", "r_augmented", "logit_train", "logit_heldout", "logit_augmented")


def within_budget(snaps: list[dict], budget_s: float) -> dict | None:
    inside = [r for r in snaps if r["train_cpu_seconds"] <= budget_s]
    return inside[-1] if inside else None


def goal_text(snap: dict | None, goal: float, trained_s: float, budget_s: float) -> str:
    """The FID-2000 goal's line; says "so far" while the run has not trained its whole budget."""
    so_far = (
        f" so far (the run has trained {trained_s / 3600:.2f} of {budget_s / 3600:g} CPU h)"
        if trained_s < budget_s
        else ""
    )
    if snap is None:
        return "no snapshot within the budget yet"
    if snap.get("fid2000") is None:
        return f"not measured: the snapshot at {snap['kimg']:g} kimg is not on disk (train with --keep 0)"
    verdict = "met" if snap["fid2000"] <= goal else "not met" + so_far
    return f"{snap['fid2000']:.1f} at {snap['kimg']:g} kimg ({verdict})"


def never_behind_text(behind: list[tuple[float, float]], compared: int) -> str:
    if not compared:
        return "no common snapshot after that yet."
    if not behind:
        return f"met ({compared} common snapshots)."
    gaps = ", ".join(f"{k:g} kimg by {d:.1f}" for k, d in behind)
    return f"not met at {len(behind)} of {compared} common snapshots: behind at {gaps}."


def fid2000(run: Path, nimg: int, data: str) -> float | None:
    """FID-2000 of the snapshot at ``nimg`` (cached in RUN/fid2000.json), None if that snapshot is gone."""
    from datasetgan.data import load_image_folder
    from datasetgan.fid import FIDEvaluator
    from datasetgan.training import snapshot_generator, snapshot_name

    cache_path = run / "fid2000.json"
    cache = json.loads(cache_path.read_text()) if cache_path.exists() else {}
    if str(nimg) not in cache:
        snap = run / "training" / snapshot_name(nimg)
        if not snap.exists():
            return None
        G, _ = snapshot_generator(snap)
        images = load_image_folder(data, G.cfg.resolution, masks="ignore").images
        cache[str(nimg)] = FIDEvaluator(images, FID_N, seed=0, reference=True)(G)
        atomic_write_text(cache_path, json.dumps(cache, indent=1))
    return cache[str(nimg)]


@torch.no_grad()
def d_overfit(run: Path, train_dir: str, heldout_dir: str) -> list[tuple]:
    """[(kimg, p, r train, r held-out, r augmented train, mean logit train, held-out, augmented train)] for
    every snapshot on disk. r is the share of positive logits; "augmented train" applies the run's
    pipeline at the snapshot's p, as training does (ADA's premise: D's logits on the training images
    drift away from those on unseen ones; issue 15's question: does D give up on augmented reals?)."""
    from datasetgan.augment import AugmentPipe
    from datasetgan.data import load_image_folder
    from datasetgan.networks import Discriminator
    from datasetgan.presets import TrainConfig
    from datasetgan.training import load_snapshot

    out, images = [], {}
    for snap in sorted((run / "training").glob("snapshot-*.safetensors")):
        tensors, meta = load_snapshot(snap)
        cfg = TrainConfig.from_dict(meta["config"])
        if not images:  # every snapshot of a run has the same resolution
            images = {
                key: torch.from_numpy(load_image_folder(folder, cfg.resolution, masks="ignore").images).float() / 127.5
                - 1
                for key, folder in (("train", train_dir), ("heldout", heldout_dir))
            }
        p = meta["state"]["ada"]["p"]
        gen = torch.Generator().manual_seed(0)
        images["augmented"] = AugmentPipe(cfg.augpipe)(images["train"], p, gen)
        D = Discriminator(cfg.discriminator_config()).eval()
        D.load_state_dict({k[2:]: v for k, v in tensors.items() if k.startswith("D.")})
        logits = {}
        for key, imgs in images.items():
            n = len(imgs) - len(imgs) % cfg.batch  # whole minibatches, as in training (minibatch std)
            logits[key] = torch.cat([D(imgs[i : i + cfg.batch]).flatten() for i in range(0, n, cfg.batch)])
        keys = ("train", "heldout", "augmented")
        row = [meta["state"]["nimg"] / 1000, p]
        row += [float(torch.sign(logits[k]).mean()) for k in keys]
        row += [float(logits[k].mean()) for k in keys]
        out.append(tuple(row))
    return out


def plot(runs: dict[str, list[dict]], logs: dict[str, list[dict]], budget_h: float, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib.figure import Figure

    fig = Figure(figsize=(14, 3.8), dpi=90)
    ax_k, ax_h, ax_p = fig.subplots(1, 3)
    for name, snaps in runs.items():
        ax_k.plot([r["kimg"] for r in snaps], [r["fid"] for r in snaps], "o-", ms=3, label=name)
        ax_h.plot([r["train_cpu_seconds"] / 3600 for r in snaps], [r["fid"] for r in snaps], "o-", ms=3, label=name)
        rows = logs[name]
        ax_p.plot([r["kimg"] for r in rows], [r["p"] for r in rows], label=f"{name} p")
        rt = [(r["kimg"], r["r_t"]) for r in rows if r.get("r_t") is not None]
        if rt:
            ax_p.plot(*zip(*rt), lw=0.5, alpha=0.6, label=f"{name} r_t")
    ax_h.axvline(budget_h, color="gray", lw=0.8, ls=":")
    ax_k.set(title="FID-500 by images seen", xlabel="kimg")
    ax_h.set(title="FID-500 by training CPU time", xlabel="CPU hours (training only)")
    ax_p.set(title="ADA p and r_t", xlabel="kimg")
    for ax in (ax_k, ax_h, ax_p):
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path)


def parse_args():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("runs", nargs=2, type=Path, help="the default's run folder, then the no-augmentation run's")
    ap.add_argument("--names", nargs=2, default=["default", "none"])
    ap.add_argument("--data", required=True, help="the runs' training images (FID-2000 is measured against them)")
    ap.add_argument("--budget-hours", type=float, default=4.0, help="training CPU hours of the goal")
    ap.add_argument("--goal-fid", type=float, default=100.0)
    ap.add_argument("--after-kimg", type=float, default=16.0)
    ap.add_argument("--fid2000-every", type=float, default=0, help="also FID-2000 every this many kimg (0: none)")
    ap.add_argument("--code", default="", help="the commit that trained the runs (recorded)")
    ap.add_argument("--heldout", help="held-out real images: also measure how far each run's D overfits")
    ap.add_argument("--export", type=Path, help="write the first run's generator at the budget's snapshot here")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--out", type=Path, default=HERE, help="where RESULTS.md, results/ and the curves go")
    return ap.parse_args()


def comparison(runs: dict[str, list[dict]], after_kimg: float) -> tuple[list[tuple], list[tuple]]:
    """[(first's snapshot, second's)] at equal images seen, and [(kimg, FID gap)] where the first is
    behind after ``after_kimg``."""
    a, b = runs.values()
    by_nimg = {r["nimg"]: r for r in b}
    pairs = [(r, by_nimg[r["nimg"]]) for r in a if r["nimg"] in by_nimg]
    behind = [(r["kimg"], r["fid"] - q["fid"]) for r, q in pairs if r["kimg"] > after_kimg and r["fid"] > q["fid"]]
    return pairs, behind


def section(args, logs: dict, runs: dict, pairs: list, behind: list, overfit: dict, load: tuple) -> str:
    a, b = args.names
    budget_s = args.budget_hours * 3600
    command = (
        "PYTHONPATH=$PWD python benchmarks/train_acdc.py "
        + " ".join(str(r) for r in args.runs)
        + f" --names {a} {b} --data {args.data} --budget-hours {args.budget_hours:g}"
        + (f" --heldout {args.heldout}" if args.heldout else "")
    )
    lines = [
        f"## cpu-small on ACDC: {a} vs {b} (issue 15)",
        "",
        f"{datetime.date.today()}, load average {load[0]:.1f}; code {args.code or 'not recorded'}. Command:",
        "",
        f"```\n{command}\n```",
        "",
        f"FID-500 at every snapshot (eigenvalue distance, 500 generated images vs all training images); "
        f"FID-{FID_N} with pytorch-fid's distance where measured. CPU h = training CPU time (`train_cpu_seconds`, "
        "no FID or snapshot time).",
        "",
        f"| kimg | CPU h {a} | FID-500 {a} | p {a} | CPU h {b} | FID-500 {b} | {a} - {b} |",
        "|---|---|---|---|---|---|---|",
        *(
            f"| {r['kimg']:g} | {r['train_cpu_seconds'] / 3600:.2f} | {r['fid']:.1f} | {r['p']:.3f} | "
            f"{q['train_cpu_seconds'] / 3600:.2f} | {q['fid']:.1f} | {r['fid'] - q['fid']:+.1f} |"
            for r, q in pairs
        ),
        "",
        f"FID-{FID_N} (pytorch-fid distance):",
        "",
        "| run | kimg | CPU h | FID-2000 |",
        "|---|---|---|---|",
        *(
            f"| {name} | {r['kimg']:g} | {r['train_cpu_seconds'] / 3600:.2f} | {r['fid2000']:.1f} |"
            for name, snaps in runs.items()
            for r in snaps
            if r.get("fid2000") is not None
        ),
        "",
        f"- **FID-{FID_N} of {a} within {args.budget_hours:g} CPU h ≤ {args.goal_fid:g}:** "
        + goal_text(within_budget(runs[a], budget_s), args.goal_fid, logs[a][-1]["train_cpu_seconds"], budget_s),
        f"- **{a} never behind {b} after {args.after_kimg:g} kimg (FID-500, equal images seen):** "
        + never_behind_text(behind, sum(r["kimg"] > args.after_kimg for r, _ in pairs)),
        "",
        "![curves](train_acdc_curves.png)",
    ]
    for name, rows in overfit.items():
        lines += [
            "",
            f"D of {name} on the training images, {args.heldout} (held out) and the training images augmented "
            "at the snapshot's p: share of positive logits (r) and mean logit.",
            "",
            "| kimg | p | r train | r held-out | r augmented | logit train | logit held-out | logit augmented |",
            "|---|---|---|---|---|---|---|---|",
            *("| {:.0f} | {:.3f} | {:.3f} | {:.3f} | {:.3f} | {:.2f} | {:.2f} | {:.2f} |".format(*row) for row in rows),
        ]
    return "\n".join(lines) + "\n"


def json_doc(args, folders: dict, runs: dict, behind: list, overfit: dict, load: tuple) -> dict:
    at_budget = within_budget(runs[args.names[0]], args.budget_hours * 3600)
    keys = ("kimg", "nimg", "train_cpu_seconds", "fid", "fid2000", "p", "r_t")
    return {
        "command": "benchmarks/train_acdc.py",
        "date": str(datetime.date.today()),
        "load_average": list(load),
        "code": args.code,
        "budget_cpu_hours": args.budget_hours,
        "runs": {
            n: {
                "folder": str(folders[n]),
                "d_overfit": [dict(zip(OVERFIT_KEYS, row)) for row in overfit.get(n, [])],
                "snapshots": [{k: r.get(k) for k in keys} for r in s],
            }
            for n, s in runs.items()
        },
        "goals": {
            "fid2000_within_budget": at_budget.get("fid2000") if at_budget else None,
            "fid2000_goal": args.goal_fid,
            "behind_after_kimg": [{"kimg": k, "fid500_gap": d} for k, d in behind],
        },
    }


def main():
    args = parse_args()
    torch.set_num_threads(args.threads)
    args.out.mkdir(parents=True, exist_ok=True)
    budget_s = args.budget_hours * 3600
    folders = dict(zip(args.names, args.runs))
    logs = {n: read_log(r / "training/log.jsonl") for n, r in folders.items()}
    for name, rows in logs.items():
        if not rows:
            raise SystemExit(f"error: {folders[name] / 'training/log.jsonl'} is missing or empty (not a training run?)")
    runs = {n: [r for r in rows if r.get("fid") is not None] for n, rows in logs.items()}
    for name, snaps in runs.items():  # FID-2000 at the budget's last snapshot (and every --fid2000-every kimg)
        last = within_budget(snaps, budget_s)
        for r in snaps:
            every = args.fid2000_every and r["nimg"] % round(args.fid2000_every * 1000) == 0
            if r is last or every:
                r["fid2000"] = fid2000(folders[name], r["nimg"], args.data)
    plot(runs, logs, args.budget_hours, args.out / "train_acdc_curves.png")
    pairs, behind = comparison(runs, args.after_kimg)
    overfit = {n: d_overfit(r, args.data, args.heldout) for n, r in folders.items()} if args.heldout else {}
    load = os.getloadavg()
    text = section(args, logs, runs, pairs, behind, overfit, load)
    print(text)
    results.write_section(text, args.out / "RESULTS.md")
    results.write_json("train_acdc", json_doc(args, folders, runs, behind, overfit, load), args.out / "results")
    if args.export:
        export(folders[args.names[0]], within_budget(runs[args.names[0]], budget_s), args)


def export(run: Path, snap: dict | None, args) -> None:
    from datasetgan.training import export_snapshot, snapshot_name

    path = run / "training" / snapshot_name(snap["nimg"]) if snap else None
    if path is None or not path.exists():
        raise SystemExit(f"error: no snapshot file within the budget to export ({path})")
    export_snapshot(path, args.export, args.data)
    print(f"exported {path} ({snap['kimg']:g} kimg) to {args.export}")


if __name__ == "__main__":
    main()
