"""Figures and a table comparing two training runs (ADA vs no augmentation) at equal images seen.

Reads RUN/training/log.jsonl of each run, draws FID and p/r_t against thousands of images into
benchmarks/train_acdc_curves.png, copies each run's sample grid at the newest snapshot both runs
have reached into benchmarks/train_acdc_grid_<name>.png, and prints a Markdown table of FID at every
snapshot both runs reached.
With ``--heldout DIR`` it also measures how far each run's D overfits: the share of positive logits
(r_t without augmentation) and the mean logit of D on the training images and on held-out real images
of the same kind, at every snapshot on disk (ADA's premise is that the two drift apart).

    PYTHONPATH=$PWD python benchmarks/train_acdc.py /work/runs/acdc64-ada /work/runs/acdc64-noaug \
        --names ada noaug --heldout ../shared/data/acdc/val
"""

from __future__ import annotations

import argparse
import json
import shutil
from pathlib import Path

import torch

HERE = Path(__file__).resolve().parent


def rows(run: Path) -> list[dict]:
    return [json.loads(line) for line in (run / "training/log.jsonl").read_text().splitlines() if line.strip()]


@torch.no_grad()
def d_overfit(run: Path, train_dir: str, heldout_dir: str) -> list[tuple]:
    """[(kimg, r train, r held-out, mean logit train, mean logit held-out)] for every snapshot on disk."""
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
        D = Discriminator(cfg.discriminator_config()).eval()
        D.load_state_dict({k[2:]: v for k, v in tensors.items() if k.startswith("D.")})
        row = [meta["state"]["nimg"] / 1000]
        logits = {}
        for key, imgs in images.items():
            n = len(imgs) - len(imgs) % cfg.batch  # whole minibatches, as in training (minibatch std)
            logits[key] = torch.cat([D(imgs[i : i + cfg.batch]).flatten() for i in range(0, n, cfg.batch)])
        row += [float(torch.sign(logits[k]).mean()) for k in ("train", "heldout")]
        row += [float(logits[k].mean()) for k in ("train", "heldout")]
        out.append(tuple(row))
    return out


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("runs", nargs="+", type=Path)
    ap.add_argument("--names", nargs="+", default=None)
    ap.add_argument("--heldout", help="held-out real images (e.g. ../shared/data/acdc/val) for the D overfitting table")
    ap.add_argument("--train-data", default="../shared/data/acdc/train", help="the runs' training images")
    args = ap.parse_args()
    names = args.names or [r.name for r in args.runs]
    logs = {n: rows(r) for n, r in zip(names, args.runs)}

    import matplotlib

    matplotlib.use("Agg")
    from matplotlib.figure import Figure

    fig = Figure(figsize=(11, 3.6), dpi=90)
    ax_fid, ax_p = fig.subplots(1, 2)
    for name, rs in logs.items():
        pts = [(r["kimg"], r["fid"]) for r in rs if r.get("fid") is not None]
        if pts:
            ax_fid.plot(*zip(*pts), "o-", ms=3, label=name)
        ax_p.plot([r["kimg"] for r in rs], [r["p"] for r in rs], label=f"{name} p")
        rt = [(r["kimg"], r["r_t"]) for r in rs if r.get("r_t") is not None]
        if rt:
            ax_p.plot(*zip(*rt), "--", lw=0.8, label=f"{name} r_t")
    ax_p.axhline(0.6, color="gray", lw=0.5, ls=":")
    ax_fid.set_title("FID (500 generated images) vs kimg")
    ax_p.set_title("ADA p and r_t (target 0.6) vs kimg")
    for ax in (ax_fid, ax_p):
        ax.set_xlabel("kimg")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(HERE / "train_acdc_curves.png")

    # FID at snapshots both runs reached.
    fids = {n: {r["nimg"]: r["fid"] for r in rs if r.get("fid") is not None} for n, rs in logs.items()}
    common = sorted(set.intersection(*(set(f) for f in fids.values())))
    print("| kimg | " + " | ".join(f"FID {n}" for n in names) + " | " + " | ".join(f"p {n}" for n in names) + " |")
    print("|---" * (1 + 2 * len(names)) + "|")
    p_at = {n: {r["nimg"]: r["p"] for r in rs} for n, rs in logs.items()}
    for nimg in common:
        print(
            f"| {nimg / 1000:.1f} | "
            + " | ".join(f"{fids[n][nimg]:.1f}" for n in names)
            + " | "
            + " | ".join(f"{p_at[n][nimg]:.3f}" for n in names)
            + " |"
        )
    # Sample grids at the newest snapshot both runs reached.
    grids = [set(int(p.stem.split("-")[1]) for p in (r / "training").glob("grid-*.png")) for r in args.runs]
    last = max(set.intersection(*grids))
    for name, run in zip(names, args.runs):
        shutil.copy(run / "training" / f"grid-{last:09d}.png", HERE / f"train_acdc_grid_{name}.png")
    shutil.copy(args.runs[0] / "training" / "reals.png", HERE / "train_acdc_reals.png")
    for name, rs in logs.items():
        r = rs[-1]
        print(
            f"{name}: {r['nimg']} images seen, {r['train_seconds'] / 3600:.2f} h of training, "
            f"p {r['p']:.3f}, last images/s {r['images_per_s']}"
        )
    print(f"grids at {last} images")
    if args.heldout:
        torch.set_num_threads(1)
        for name, run in zip(names, args.runs):
            print(f"\nD of {name} (no augmentation applied): share of positive logits and mean logit\n")
            print("| kimg | sign train | sign held-out | logit train | logit held-out |\n|---|---|---|---|---|")
            for row in d_overfit(run, args.train_data, args.heldout):
                print("| {:.0f} | {:.3f} | {:.3f} | {:.2f} | {:.2f} |".format(*row))


if __name__ == "__main__":
    main()
