"""Training speed of the presets: images per second of complete StyleGAN2-ADA training steps.

A training step is G main + D main, plus path-length regularisation every ``pl_interval`` steps and
R1 every ``r1_interval`` steps. We time a plain step, a step with path length only and a step with
both, a few times each, and amortise the regularisers over their intervals:

    seconds per step = plain + (pl - plain) / pl_interval + (both - pl) / r1_interval

Augmentation runs at p = 0.2 (ADA's p on a small data set after a while). Random images stand in for
data (speed does not depend on content). Reports wall-clock and process CPU seconds; on a shared
machine the wall clock suffers from other processes, so CPU seconds / threads is the better guide to
an idle machine. Writes the "Training speed" section of benchmarks/RESULTS.md.

    PYTHONPATH=$PWD python benchmarks/train_speed.py --threads 2
"""

from __future__ import annotations

import argparse
import os
import platform
import time

from stylegan2_ops import tune_allocator

tune_allocator()

import numpy as np  # noqa: E402
import torch  # noqa: E402
from results import write_section  # noqa: E402  (benchmarks/results.py)

from datasetgan.networks import count_parameters  # noqa: E402
from datasetgan.presets import PRESETS, make_config  # noqa: E402
from datasetgan.training import Trainer  # noqa: E402

SECTION = "Training speed"


def timed_step(trainer: Trainer, step_count: int, repeats: int) -> tuple[float, float]:
    """Median wall and CPU seconds of a training step taken at ``step_count``."""
    walls, cpus = [], []
    for _ in range(repeats):
        trainer.step_count = step_count
        w, c = time.perf_counter(), time.process_time()
        trainer.train_step()
        walls.append(time.perf_counter() - w)
        cpus.append(time.process_time() - c)
    return float(np.median(walls)), float(np.median(cpus))


def measure(preset: str, batch: int | None, repeats: int, p: float) -> dict:
    cfg = make_config(preset, batch=batch)
    images = np.random.default_rng(0).integers(0, 256, (64, 1, cfg.resolution, cfg.resolution), dtype=np.uint8)
    tr = Trainer(cfg, images)
    tr.ada.p = p
    timed_step(tr, 1, 1)  # warm-up: first-call allocations
    plain = timed_step(tr, 1, repeats)
    pl = timed_step(tr, cfg.pl_interval, repeats) if cfg.pl_interval % cfg.r1_interval else None
    both = timed_step(tr, 0, repeats)
    if pl is None:  # path length is never due without R1: attribute the joint cost to both
        pl = plain
    per_step = [plain[i] + (pl[i] - plain[i]) / cfg.pl_interval + (both[i] - pl[i]) / cfg.r1_interval for i in range(2)]
    return {
        "preset": preset,
        "resolution": cfg.resolution,
        "batch": cfg.batch,
        "channels": f"{cfg.channel_base}/{cfg.channel_max}",
        "mapping": cfg.mapping_layers,
        "params_G": count_parameters(tr.G),
        "params_D": count_parameters(tr.D),
        "plain_s": plain[0],
        "pl_s": pl[0],
        "both_s": both[0],
        "img_s_wall": cfg.batch / per_step[0],
        "img_s_cpu": cfg.batch / per_step[1],
    }


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--presets", nargs="+", default=list(PRESETS))
    ap.add_argument(
        "--paper-batch",
        type=int,
        default=8,
        help="batch for paper256 (its real batch, 64, takes minutes per step on a CPU)",
    )
    ap.add_argument("--p", type=float, default=0.2)
    ap.add_argument("--no-write", action="store_true")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    load = os.getloadavg()[0]
    rows = []
    for preset in args.presets:
        batch = args.paper_batch if preset == "paper256" else None
        r = measure(preset, batch, 1 if preset == "paper256" else args.repeats, args.p)
        rows.append(r)
        print(
            f"{preset:10s} {r['resolution']:4d}px batch {r['batch']:3d}: {r['img_s_wall']:7.2f} img/s wall, "
            f"{r['img_s_cpu'] * args.threads:7.2f} img/s from CPU time "
            f"(plain step {r['plain_s']:.2f}s, +PL {r['pl_s']:.2f}s, +PL+R1 {r['both_s']:.2f}s)",
            flush=True,
        )
    lines = [
        f"Command: `PYTHONPATH=$PWD python benchmarks/train_speed.py --threads {args.threads}` "
        f"({platform.processor() or platform.machine()}, {os.cpu_count()} cores, torch {torch.__version__}, "
        f"{args.threads} threads, load average {load:.1f} at the start: the machine was shared, so wall "
        "figures are pessimistic and the CPU-time figures are what one idle core would do; ADA p = %.1f; "
        "glibc malloc tuned; stylegan2_ops backend: fused CPU)." % args.p,
        "",
        "| preset | res | batch | channel base/max | mapping | G params | D params | img/s (wall) | "
        "img/s per core (from CPU time) | 100k images on one idle core |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        cpu_rate = r["img_s_cpu"] * args.threads  # images per second if the threads had the cores alone
        lines.append(
            f"| {r['preset']} | {r['resolution']} | {r['batch']} | {r['channels']} | {r['mapping']} | "
            f"{r['params_G'] / 1e6:.2f}M | {r['params_D'] / 1e6:.2f}M | {r['img_s_wall']:.2f} | "
            f"{cpu_rate:.2f} | {100_000 / cpu_rate / 3600:.1f} h |"
        )
    lines += [
        "",
        "Amortised over the regularisation intervals (path length every `pl_interval`, R1 every "
        "`r1_interval` steps). paper256 is timed at batch %d for one repeat only." % args.paper_batch,
    ]
    text = "\n".join(lines)
    print(text)
    if not args.no_write:
        write_section(f"## {SECTION}\n\n{text.strip()}\n")


if __name__ == "__main__":
    main()
