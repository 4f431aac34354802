"""Per layer: the generator's upsampling convolutions, reference order vs convolution first (conv_up).

For each configuration, the shapes of every upsampling modulated convolution of the generator's
synthesis network are recorded from one forward pass, and each ``modulated_conv2d`` call is timed in
the fused ``cpu`` backend three ways, interleaved round by round, median of the rounds, in process
CPU time:

* ``ref order``: FIR upsampling, then the convolution at the high resolution (activation-scaled or
  grouped, as ``stylegan2_ops.fused.modulate_activations`` picks);
* ``conv_up``: always the sub-pixel convolution at the low resolution (activation-scaled, shared
  weight), pixel_shuffle, FIR, border strips;
* ``rule``: what the backend does by default (``fused.up_at_low_resolution``).

Two workloads per layer: forward + backward (G main) and forward + backward + double backward
(path length). ``--steps`` adds our whole amortised training step (benchmarks/vs_official.py's
timing: G main + D main + path length / 4 + R1 / 16) with the rule against ref order everywhere;
``--render`` the generation path (``render_one`` with feature taps, batch 1, forward only) both ways.
Prints tables and writes its section of RESULTS.md and results/resample_layers.json.

    PYTHONPATH=$PWD python benchmarks/resample_layers.py --threads 1 --rounds 7
"""

from __future__ import annotations

import argparse
import datetime
import os
import statistics
import time

import numpy as np
import torch
from results import write_json, write_section  # benchmarks/results.py
from vs_official import Ours
from vs_official import compare as compare_steps

import stylegan2_ops as ops
from datasetgan.networks import Generator
from datasetgan.presets import make_config
from datasetgan.render import render_one
from stylegan2_ops import fused

SECTION = "## Upsampling convolutions per layer: reference order vs conv_up"
CONFIGS = {
    "cpu-tiny": dict(preset="cpu-tiny"),
    "cpu-small": dict(preset="cpu-small"),
    "wide64": dict(preset="cpu-small", channel_base=4096, channel_max=256, z_dim=512, w_dim=512, batch=8),
    "paper64": dict(preset="cpu-small", channel_base=16384, channel_max=512, z_dim=512, w_dim=512, batch=4),
}
THRESHOLDS = ("MIN_UP_SIDE", "MIN_UP_CHANNELS", "MIN_UP_PIXELS")  # of stylegan2_ops.fused, per path:
PATHS = {"ref order": (10**9,) * 3, "conv_up": (1,) * 3, "rule": tuple(getattr(fused, t) for t in THRESHOLDS)}


def use(path: str) -> None:
    """Make the fused backend take ``path`` for upsampling convolutions."""
    for name, value in zip(THRESHOLDS, PATHS[path]):
        setattr(fused, name, value)


def up_layers(cfg) -> list[dict]:
    """x and weight shapes of each upsampling modulated convolution in one synthesis pass."""
    G = Generator(cfg.generator_config())
    shapes = []
    for m in G.modules():
        if getattr(m, "up", 1) > 1 and hasattr(m, "weight"):
            m.register_forward_pre_hook(lambda m, args: shapes.append(dict(x=args[0].shape, w=m.weight.shape)))
    with torch.no_grad():
        G(torch.randn(cfg.batch, cfg.z_dim))
    return shapes


def workload(layer: dict, double: bool):
    torch.manual_seed(0)
    x = torch.randn(layer["x"], requires_grad=True)
    w = torch.randn(layer["w"], requires_grad=True)
    styles = torch.randn(layer["x"][:2], requires_grad=True)
    f = ops.setup_filter([1, 3, 3, 1])

    def run():
        y = ops.modulated_conv2d(x, w, styles, f=f, up=2, padding=layer["w"][2] // 2)
        grads = torch.autograd.grad(y.square().sum(), (x, w, styles), create_graph=double)
        if double:
            torch.autograd.grad(sum(g.square().sum() for g in grads), (x, w, styles))

    return run


class Switched(Ours):
    """Our trainer, stepping with the conv_up thresholds of one path."""

    def __init__(self, cfg, images, path):
        super().__init__(cfg, images)
        self.name, self.path = path, path

    def step(self, step_count: int) -> None:
        use(self.path)
        try:
            super().step(step_count)
        finally:
            use("rule")


def whole_steps(name: str, rounds: int) -> dict:
    """img/s (wall and CPU) of our amortised step, ref order vs the rule, interleaved."""
    overrides = dict(CONFIGS[name], aug="fixed", aug_p=0.2)
    cfg = make_config(overrides.pop("preset"), **overrides)
    images = np.random.default_rng(0).integers(0, 256, (64, cfg.img_channels, cfg.resolution, cfg.resolution))
    res = compare_steps([Switched(cfg, images.astype(np.uint8), p) for p in ("ref order", "rule")], cfg, rounds)
    return {path: {k: res[path][k] for k in ("img_s_wall", "img_s_cpu")} for path in res}


def render_seconds(name: str, seeds: int, rounds: int) -> dict:
    """Process CPU seconds to render ``seeds`` seeds with their feature taps, per path, interleaved."""
    overrides = dict(CONFIGS[name])
    G = Generator(make_config(overrides.pop("preset"), **overrides).generator_config()).eval()

    def run():
        with torch.no_grad():
            for seed in range(seeds):
                render_one(G, seed, with_taps=True)

    times = {path: [] for path in ("ref order", "rule")}
    for r in range(rounds + 1):  # round 0 warms up
        for path in list(times) if r % 2 else list(times)[::-1]:
            use(path)
            t = cpu_seconds(run, 1)
            if r:
                times[path].append(t)
    use("rule")
    return {path: statistics.median(v) for path, v in times.items()}


def cpu_seconds(fn, inner: int) -> float:
    start = time.process_time()
    for _ in range(inner):
        fn()
    return (time.process_time() - start) / inner


def compare(layer: dict, double: bool, rounds: int) -> dict[str, float]:
    run = workload(layer, double)
    times = {name: [] for name in PATHS}
    for r in range(rounds + 1):  # round 0 warms up
        for name in list(PATHS) if r % 2 else list(PATHS)[::-1]:
            use(name)
            t = cpu_seconds(run, 3)
            if r:
                times[name].append(t)
    use("rule")
    return {name: statistics.median(v) for name, v in times.items()}


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--configs", nargs="+", default=list(CONFIGS), choices=list(CONFIGS))
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--rounds", type=int, default=7)
    ap.add_argument("--steps", type=int, default=0, help="rounds of whole training steps (0: none)")
    ap.add_argument("--render", type=int, default=0, help="seeds rendered per round (0: no render timing)")
    ap.add_argument("--no-write", action="store_true")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    ops.conv2d_resample(
        torch.zeros(1, 1, 4, 4), torch.zeros(1, 1, 3, 3), f=ops.setup_filter([1, 3, 3, 1]), up=2, padding=1
    )
    load0 = os.getloadavg()[0]
    rows = []
    for name in args.configs:
        overrides = dict(CONFIGS[name])
        cfg = make_config(overrides.pop("preset"), **overrides)
        for layer in up_layers(cfg):
            row = dict(config=name, x=list(layer["x"]), w=list(layer["w"]))
            for label, double in (("fwd_bwd", False), ("fwd_bwd_2bwd", True)):
                for path, t in compare(layer, double, args.rounds).items():
                    row[f"{label}_{path.replace(' ', '_')}_ms"] = 1e3 * t
            rows.append(row)
            print(row, flush=True)
    steps = {name: whole_steps(name, args.steps) for name in args.configs} if args.steps else {}
    for name, res in steps.items():
        print(name, res, flush=True)
    render = {name: render_seconds(name, args.render, args.rounds) for name in args.configs} if args.render else {}
    for name, res in render.items():
        print(name, res, flush=True)
    load1 = os.getloadavg()[0]
    command = "PYTHONPATH=$PWD python benchmarks/resample_layers.py " + " ".join(
        [
            f"--threads {args.threads}",
            f"--rounds {args.rounds}",
            f"--steps {args.steps}",
            f"--render {args.render}",
            "--configs",
            *args.configs,
        ]
    )
    now = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    lines = [
        SECTION,
        "",
        f"Command: `{command}` ({now}; torch {torch.__version__}, {args.threads} thread(s), 2-core machine, "
        f"load average {load0:.1f} → {load1:.1f}). Process CPU ms per modulated_conv2d call (up=2, 3x3), "
        f"median of {args.rounds} interleaved rounds of 3 calls; speed-up = ref order / path (> 1: faster). "
        f"Rule: conv_up from {fused.MIN_UP_SIDE} px, {fused.MIN_UP_CHANNELS} input channels and "
        f"{fused.MIN_UP_PIXELS} pixels per batch (N * H * W).",
        "",
        "| config | x | w | fwd+bwd ref order ms | conv_up | rule | + double bwd ref order ms | conv_up | rule |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        cells = [r["config"], "x".join(map(str, r["x"])), "x".join(map(str, r["w"]))]
        for label in ("fwd_bwd", "fwd_bwd_2bwd"):
            base = r[f"{label}_ref_order_ms"]
            cells += [f"{base:.1f}"] + [f"{base / r[f'{label}_{p}_ms']:.2f}x" for p in ("conv_up", "rule")]
        lines.append("| " + " | ".join(cells) + " |")
    if steps:
        lines += [
            "",
            f"Our whole amortised training step, ref order everywhere vs the rule (img/s, median of {args.steps} "
            "interleaved rounds, vs_official.py's timing):",
            "",
            "| config | ref order img/s CPU | rule img/s CPU | speed-up CPU | speed-up wall |",
            "|---|---|---|---|---|",
        ]
        for name, res in steps.items():
            a, b = res["ref order"], res["rule"]
            lines.append(
                f"| {name} | {a['img_s_cpu']:.2f} | {b['img_s_cpu']:.2f} | {b['img_s_cpu'] / a['img_s_cpu']:.3f}x "
                f"| {b['img_s_wall'] / a['img_s_wall']:.3f}x |"
            )
    if render:
        lines += [
            "",
            f"Generation path: {args.render} seeds rendered with their feature taps (render_one, batch 1), process "
            f"CPU s, median of {args.rounds} interleaved rounds:",
            "",
            "| config | ref order s | rule s | speed-up |",
            "|---|---|---|---|",
        ]
        lines += [
            f"| {name} | {t['ref order']:.3f} | {t['rule']:.3f} | {t['ref order'] / t['rule']:.3f}x |"
            for name, t in render.items()
        ]
    text = "\n".join(lines) + "\n"
    print(text)
    if not args.no_write:
        write_section(text)
        write_json(
            "resample_layers",
            dict(
                command=command, date=now, threads=args.threads, load_average=[load0, load1], layers=rows, steps=steps
            ),
        )


if __name__ == "__main__":
    main()
