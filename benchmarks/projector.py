"""Benchmark of the projector (GAN inversion): reconstruction quality of real images against steps,
with and without noise optimisation, pixel-only against pixel + perceptual loss, and what the
interpreter reads from the projections.

Two data sets, each with its own generator:

* phantom: the bundled demo run (demo/run: 32x32 generator trained on the procedural cardiac phantom,
  interpreter trained on 30 model-labelled generated seeds) and held-out phantom slices (seed 1, never
  seen in training) with their true masks;
* ACDC: a generator trained on ACDC train slices (``--acdc-run``, e.g. ``datasetgan train
  ../shared/data/acdc/train --out RUN --preset cpu-demo --kimg 100``) and ACDC val slices (patients
  never seen in training) with their expert masks.

For every configuration, the same real images are projected and each projection is rendered exactly
from its stored tensors; PSNR and SSIM are MONAI's (SSIM: Gaussian window 11, sigma 1.5, 0..255).
Where the run has an interpreter, its masks of the projections are scored against the real masks
(mIoU over all classes, one confusion matrix over the images): the interpreter on real anatomy.
With ``--train-interpreter N``, an interpreter is also trained on N projected real train slices with
their real masks (what ``datasetgan annotate --import-real`` + ``datasetgan interpret`` do) and scored
the same way.

    PYTHONPATH=$PWD python benchmarks/projector.py --acdc-run /work/runs/i16-acdc32/run --n 8 --threads 1
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import torch
from results import write_json, write_section  # benchmarks/results.py, next to this script

from datasetgan.bench.agreement import agreement, predict_masks
from datasetgan.checkpoint import load_generator
from datasetgan.data import load_image_folder
from datasetgan.demo import bundled_run
from datasetgan.features import TapFeatures
from datasetgan.interpreter import InterpreterConfig, InterpreterInfo, load_interpreter, train_interpreter
from datasetgan.phantom import CLASSES as PHANTOM_CLASSES
from datasetgan.phantom import phantom_slice
from datasetgan.projector import (
    DiscriminatorFeatures,
    InceptionFeatures,
    ProjectionError,
    ProjectorConfig,
    load_discriminator,
    project,
    quality,
    reconstruct,
)
from datasetgan.runfolder import RunFolder

SECTION = "## Projector (GAN inversion)"


def find_acdc() -> Path:
    """../shared/data/acdc beside the repository (also from a git worktree one level deeper)."""
    here = Path(__file__).resolve()
    return next(
        (p / "shared/data/acdc" for p in here.parents if (p / "shared/data/acdc/val").is_dir()),
        here.parents[2] / "shared/data/acdc",
    )


ACDC = find_acdc()


def phantom_set(n: int, resolution: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    pairs = [phantom_slice(seed, i, resolution) for i in range(n)]
    images = np.stack([im if im.ndim == 3 else im[None] for im, _ in pairs])
    return images.astype(np.uint8), np.stack([m for _, m in pairs])


def acdc_set(split: str, n: int, resolution: int) -> tuple[np.ndarray, np.ndarray]:
    """n slices spread evenly over the split (sorted by name, so over its patients)."""
    data = load_image_folder(ACDC / split, resolution, masks="require")
    pick = np.linspace(0, len(data) - 1, n).round().astype(int)
    return data.images[pick], data.masks[pick]


def interpreter_miou(G, interp, projections, masks) -> float:
    """The interpreter's agreement with the real masks (datasetgan bench agreement's measure)."""
    return agreement(predict_masks(G, interp, projections), masks, [c.name for c in interp.info.classes])["miou"]


def train_on_projections(G, projections, masks, classes, seed: int = 0):
    """The interpreter `datasetgan interpret` trains on imported real images (smaller: 3 members)."""
    taps = [reconstruct(G, p, with_taps=True)[1] for p in projections]
    feats = TapFeatures.from_tap_dicts(G.feature_taps(), taps, G.cfg.resolution)
    info = InterpreterInfo(feats.taps, classes, G.cfg.resolution, G.cfg.img_channels, G.sha256)
    cfg = InterpreterConfig(members=3, epochs=8, patience=2, seed=seed)
    return train_interpreter(feats, masks, info, cfg)


def run_config(G, images, masks, cfg: ProjectorConfig, features, interpreters: dict) -> tuple[dict, list]:
    t0 = time.perf_counter()
    projections = project(G, images, cfg, features=features)
    seconds = (time.perf_counter() - t0) / len(images)
    q = [quality(img.transpose(1, 2, 0), reconstruct(G, p)) for img, p in zip(images, projections)]
    row = {
        "steps": cfg.steps,
        "perceptual": cfg.perceptual,
        "noise": cfg.optimize_noise,
        "psnr_db_mean": statistics.mean(x["psnr"] for x in q),
        "psnr_db_std": statistics.pstdev(x["psnr"] for x in q),
        "ssim_mean": statistics.mean(x["ssim"] for x in q),
        "ssim_std": statistics.pstdev(x["ssim"] for x in q),
        "seconds_per_image": seconds,
    }
    for name, interp in interpreters.items():
        row[f"miou_{name}"] = interpreter_miou(G, interp, projections, masks)
    print({k: round(v, 4) if isinstance(v, float) else v for k, v in row.items()}, flush=True)
    return row, projections


def benchmark_set(name, run: Path, images, masks, train, classes, args) -> dict:
    G = load_generator(RunFolder(run).generator)
    interpreters = {}
    if RunFolder(run).interpreter.is_file():
        interpreters["run_interpreter"] = load_interpreter(RunFolder(run).interpreter)
    features = {"inception": InceptionFeatures(), "none": None}
    try:
        features["discriminator"] = DiscriminatorFeatures(load_discriminator(run))
    except ProjectionError as e:
        print(f"{name}: no discriminator features ({e})")
    rows = []
    best = ProjectorConfig(steps=args.compare_steps, seed=0)
    if train is not None:  # the interpreter learnt from projected real train slices, scored on the test slices
        train_images, train_masks = train
        projections = project(G, train_images, best, features=features["inception"])
        interpreters[f"projected_real_{len(train_images)}"] = train_on_projections(G, projections, train_masks, classes)
    for steps in args.steps:
        rows.append(run_config(G, images, masks, ProjectorConfig(steps=steps), features["inception"], interpreters)[0])
    for perceptual in [p for p in ("none", "inception", "discriminator") if p in features]:
        for noise in (True, False):
            if perceptual == "inception" and noise and args.compare_steps in args.steps:
                continue  # measured in the sweep above
            cfg = ProjectorConfig(steps=args.compare_steps, perceptual=perceptual, optimize_noise=noise)
            rows.append(run_config(G, images, masks, cfg, features[perceptual], interpreters)[0])
    return {
        "name": name,
        "run": str(run),
        "generator_sha256": G.sha256,
        "resolution": G.cfg.resolution,
        "images": len(images),
        "interpreters": sorted(interpreters),
        "rows": rows,
    }


def table(result: dict) -> list[str]:
    keys = [k for k in result["rows"][0] if k.startswith("miou_")]
    lines = [
        "| steps | perceptual loss | noise optimised | PSNR dB (mean ± std) | SSIM (mean ± std) | s / image |"
        + "".join(f" interpreter mIoU: {k[5:]} |" for k in keys),
        "|---|---|---|---|---|---|" + "---|" * len(keys),
    ]
    for r in result["rows"]:
        lines.append(
            f"| {r['steps']} | {r['perceptual']} | {'yes' if r['noise'] else 'no'} | "
            f"{r['psnr_db_mean']:.2f} ± {r['psnr_db_std']:.2f} | {r['ssim_mean']:.3f} ± {r['ssim_std']:.3f} | "
            f"{r['seconds_per_image']:.1f} |" + "".join(f" {r[k]:.3f} |" for k in keys)
        )
    return lines


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--acdc-run", type=Path, default=None, help="a run trained on ACDC train (skipped if absent)")
    ap.add_argument("--n", type=int, default=8, help="real images projected per data set")
    ap.add_argument("--steps", type=int, nargs="+", default=[50, 100, 200, 400])
    ap.add_argument("--compare-steps", type=int, default=200, help="steps of the loss / noise comparison")
    ap.add_argument(
        "--train-interpreter",
        type=int,
        default=0,
        help="also train an interpreter on this many projected real train slices",
    )
    ap.add_argument("--threads", type=int, default=1)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    load_start = os.getloadavg()[0]
    started = time.time()

    results = []
    demo = bundled_run()
    res = load_generator(RunFolder(demo).generator).cfg.resolution
    train = phantom_set(args.train_interpreter, res, seed=0) if args.train_interpreter else None
    results.append(
        benchmark_set("phantom (demo run)", demo, *phantom_set(args.n, res, seed=1), train, PHANTOM_CLASSES, args)
    )
    if args.acdc_run is not None and RunFolder(args.acdc_run).generator.is_file():
        from datasetgan.data import read_labels

        res = load_generator(RunFolder(args.acdc_run).generator).cfg.resolution
        train = acdc_set("train", args.train_interpreter, res) if args.train_interpreter else None
        results.append(
            benchmark_set(
                "ACDC", args.acdc_run, *acdc_set("val", args.n, res), train, read_labels(ACDC / "labels.json"), args
            )
        )
    load_end = os.getloadavg()[0]
    command = "PYTHONPATH=$PWD python benchmarks/projector.py " + " ".join(sys.argv[1:])
    machine = (
        f"{platform.machine()}, {os.cpu_count()} cores shared with other work, torch {torch.__version__}, "
        f"{args.threads} thread(s), load average {load_start:.1f} at the start and {load_end:.1f} at the end"
    )
    lines = [
        SECTION,
        "",
        f"Command: `{command}` ({time.strftime('%Y-%m-%d', time.gmtime(started))}; {machine}; "
        f"{(time.time() - started) / 60:.0f} minutes). Each row projects the same {args.n} real images "
        "(never seen in training) into W+ (one w per layer, from the mean w) with Adam, renders each projection "
        "exactly from its stored tensors and scores it against the real image: PSNR and SSIM are MONAI's "
        "(SSIM: Gaussian window 11, sigma 1.5, on 0..255). Perceptual loss: `inception` = the first blocks of "
        "FID's Inception-v3, `discriminator` = the run's own discriminator blocks, `none` = pixel loss only. "
        "Interpreter mIoU: the masks an interpreter reads from the projections' features, against the real "
        "masks (all classes, one confusion matrix): `run_interpreter` is the run's own (the demo's was trained "
        "on 30 model-labelled generated seeds); `projected_real_N` was trained here on N projected real train "
        "slices with their real masks (3 members), as `annotate --import-real` + `interpret` do. "
        "Seconds per image are wall time on the shared machine (indicative only).",
        "",
    ]
    for r in results:
        lines += (
            [
                f"**{r['name']}**: generator {r['generator_sha256'][:12]} ({r['resolution']}x{r['resolution']}, "
                f"`{r['run']}`), {r['images']} images.",
                "",
            ]
            + table(r)
            + [""]
        )
    write_section("\n".join(lines))
    write_json(
        "projector",
        {
            "command": command,
            "date": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(started)),
            "machine": machine,
            "load_average_start": load_start,
            "load_average_end": load_end,
            "sets": results,
        },
    )
    print("\n".join(lines))


if __name__ == "__main__":
    main()
