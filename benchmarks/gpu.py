"""GPU figures in one run: paper256 training images/s, pairs/s at 256x256 and peak GPU memory.

Training: the paper256 preset (its batch) on random images for --warmup + --steps steps, timed over
the last --steps (CUDA synchronised). Pairs: a paper256-sized generator with random weights and the
paper's 10-member interpreter (trained for a moment on masks cut from image intensity, built on the
CPU with the test suite's recipe), rendering --pairs seeds on the GPU. Peak memory is
torch.cuda.max_memory_allocated of each part. Writes benchmarks/results/gpu.json (and prints it);
`pytest -m gpu && python benchmarks/gpu.py` is the one-line GPU check of the README.

    PYTHONPATH=$PWD python benchmarks/gpu.py [--steps 20] [--pairs 64]
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import platform
import sys
import tempfile
import time
from dataclasses import asdict
from pathlib import Path

import numpy as np
import torch
from results import write_json  # benchmarks/results.py, next to this script

from datasetgan.factory import PairFactory
from datasetgan.presets import make_config
from datasetgan.training import Trainer

ROOT = Path(__file__).resolve().parents[1]


def training(steps: int, warmup: int) -> dict:
    cfg = make_config("paper256")
    cfg.img_channels = 1
    images = np.random.default_rng(0).integers(0, 255, (256, 1, 256, 256), dtype=np.uint8)
    torch.cuda.reset_peak_memory_stats()
    trainer = Trainer(cfg, images, device="cuda")
    for _ in range(warmup):
        trainer.train_step()
    torch.cuda.synchronize()
    t0 = time.perf_counter()
    for _ in range(steps):
        trainer.train_step()
    torch.cuda.synchronize()
    dt = time.perf_counter() - t0
    return {
        "train_images_per_s": round(steps * cfg.batch / dt, 2),
        "train_batch": cfg.batch,
        "train_steps_timed": steps,
        "train_peak_memory_gib": round(torch.cuda.max_memory_allocated() / 2**30, 2),
    }


def build_run(folder: Path) -> Path:
    """A 256x256 run of paper size, by tests/conftest.py's build_tiny_run (loaded from its file)."""
    spec = importlib.util.spec_from_file_location("gpu_bench_conftest", ROOT / "tests" / "conftest.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    g = asdict(make_config("paper256").generator_config())
    return mod.build_tiny_run(folder, resolution=256, annotated=2, members=10, hidden=(256, 128), generator=g)


def pairs(run: Path, n: int) -> dict:
    factory = PairFactory(run, device="cuda")
    list(factory.pairs(range(4)))  # warm-up
    torch.cuda.synchronize()
    torch.cuda.reset_peak_memory_stats()
    t0 = time.perf_counter()
    made = sum(1 for _ in factory.pairs(range(100, 100 + n)))
    torch.cuda.synchronize()
    dt = time.perf_counter() - t0
    return {
        "pairs_per_s_256": round(made / dt, 2),
        "pairs_timed": made,
        "pairs_peak_memory_gib": round(torch.cuda.max_memory_allocated() / 2**30, 2),
    }


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--steps", type=int, default=20)
    ap.add_argument("--warmup", type=int, default=5)
    ap.add_argument("--pairs", type=int, default=64)
    args = ap.parse_args()
    if not torch.cuda.is_available():
        sys.exit("benchmarks/gpu.py needs a CUDA device")
    with tempfile.TemporaryDirectory(prefix="dg-gpu-") as tmp:
        figures = {**training(args.steps, args.warmup), **pairs(build_run(Path(tmp) / "run"), args.pairs)}
    doc = {
        "command": "PYTHONPATH=$PWD python benchmarks/gpu.py " + " ".join(sys.argv[1:]),
        "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
        "gpu": torch.cuda.get_device_name(),
        "gpus": torch.cuda.device_count(),
        "machine": f"{platform.machine()}, {os.cpu_count()} cores",
        "torch": torch.__version__,
        "load_average": [round(x, 2) for x in os.getloadavg()],
        **figures,
    }
    path = write_json("gpu", doc)
    print(json.dumps(doc, indent=2))
    print(f"written to {path}")


if __name__ == "__main__":
    main()
