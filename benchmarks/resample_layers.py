"""The resampling work of our training step, variant against variant, in one process.

Variants of the fused ``cpu`` backend (switched through the thresholds of ``stylegan2_ops.fused``):

* ``2D FIR``: the state before: every FIR through the one-pass 2D kernel, upsampling convolutions in
  the reference order (FIR upsampling, then the convolution at the high resolution);
* ``ref order``: separable FIR (two 1D passes), upsampling convolutions still in the reference order;
* ``conv_up``: separable FIR, every upsampling convolution at the low resolution (sub-pixel
  convolution, pixel_shuffle, FIR, border strips; activation-scaled shared weight);
* ``rule``: the defaults (separable FIR; conv_up where ``fused.up_at_low_resolution`` takes it).

Per layer: the shapes of every upsampling modulated convolution of the generator are recorded from
one forward pass, and each ``modulated_conv2d`` call is timed as ``ref order``, ``conv_up`` and
``rule`` (forward + backward, as in G main; + double backward, as in path length). ``--steps`` times
our whole amortised training step (benchmarks/vs_official.py's timing: G main + D main + path
length / 4 + R1 / 16) as ``2D FIR``, ``ref order`` and ``rule``; ``--render`` the generation path
(``render_one`` with feature taps, batch 1, forward only) the same three ways. All interleaved
round by round, median of the rounds, process CPU time. Prints tables and writes its section of
RESULTS.md and results/resample_layers.json.

    PYTHONPATH=$PWD python benchmarks/resample_layers.py --threads 1 --rounds 5 --steps 3 --render 16
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

SECTION = "## Resampling in the training step: separable FIR and conv_up"
CONFIGS = {
    "cpu-tiny": dict(preset="cpu-tiny"),
    "cpu-small": dict(preset="cpu-small"),
    "wide64": dict(preset="cpu-small", channel_base=4096, channel_max=256, z_dim=512, w_dim=512, batch=8),
    "paper64": dict(preset="cpu-small", channel_base=16384, channel_max=512, z_dim=512, w_dim=512, batch=4),
}
SWITCHES = ("SEPARABLE_FIR", "MIN_UP_SIDE", "MIN_UP_CHANNELS", "MIN_UP_PIXELS")
DEFAULTS = {name: getattr(fused, name) for name in SWITCHES}
NEVER = dict(MIN_UP_SIDE=10**9, MIN_UP_CHANNELS=10**9, MIN_UP_PIXELS=10**9)
VARIANTS = {
    "2D FIR": dict(NEVER, SEPARABLE_FIR=False),
    "ref order": NEVER,
    "conv_up": dict(MIN_UP_SIDE=1, MIN_UP_CHANNELS=1, MIN_UP_PIXELS=1),
    "rule": {},
}
STEP_VARIANTS = ("2D FIR", "ref order", "rule")


def use(variant: str) -> None:
    """Switch the fused backend to ``variant``."""
    for name, value in dict(DEFAULTS, **VARIANTS[variant]).items():
        setattr(fused, name, value)


def config(name: str, **overrides):
    values = dict(CONFIGS[name], **overrides)
    return make_config(values.pop("preset"), **values)


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


def layer_workload(layer: dict, double: bool):
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


def cpu_seconds(fn, inner: int = 1) -> float:
    start = time.process_time()
    for _ in range(inner):
        fn()
    return (time.process_time() - start) / inner


def interleaved(run, variants, rounds: int, inner: int = 1) -> dict[str, float]:
    """Median process CPU seconds of run() per variant; round 0 warms up."""
    times = {v: [] for v in variants}
    for r in range(rounds + 1):
        for v in list(variants) if r % 2 else list(variants)[::-1]:
            use(v)
            t = cpu_seconds(run, inner)
            if r:
                times[v].append(t)
    use("rule")
    return {v: statistics.median(t) for v, t in times.items()}


class Switched(Ours):
    """Our trainer, stepping as one variant."""

    def __init__(self, cfg, images, variant):
        super().__init__(cfg, images)
        self.name = variant

    def step(self, step_count: int) -> None:
        use(self.name)
        try:
            super().step(step_count)
        finally:
            use("rule")


def whole_steps(name: str, rounds: int) -> dict:
    """img/s (wall and CPU) of our amortised training step per variant, interleaved."""
    cfg = config(name, aug="fixed", aug_p=0.2)
    images = np.random.default_rng(0).integers(0, 256, (64, cfg.img_channels, cfg.resolution, cfg.resolution))
    impls = [Switched(cfg, images.astype(np.uint8), v) for v in STEP_VARIANTS]
    res = compare_steps(impls, cfg, rounds)
    return {v: {k: res[v][k] for k in ("img_s_wall", "img_s_cpu")} for v in res}


def render_seconds(name: str, seeds: int, rounds: int) -> dict:
    """Process CPU seconds to render ``seeds`` seeds with their feature taps, per variant."""
    G = Generator(config(name).generator_config()).eval()

    def run():
        with torch.no_grad():
            for seed in range(seeds):
                render_one(G, seed, with_taps=True)

    return interleaved(run, STEP_VARIANTS, rounds)


def report(args, rows, steps, render, load, now) -> str:
    command = "PYTHONPATH=$PWD python benchmarks/resample_layers.py " + " ".join(
        [f"--threads {args.threads}", f"--rounds {args.rounds}", f"--steps {args.steps}", f"--render {args.render}"]
        + ["--configs", *args.configs]
    )
    lines = [
        SECTION,
        "",
        f"Command: `{command}` ({now}; torch {torch.__version__}, {args.threads} thread(s), 2-core machine "
        f"shared with other jobs, load average {load[0]:.1f} → {load[1]:.1f}). Process CPU time, interleaved, "
        f"median of {args.rounds} rounds. Variants: 2D FIR = before (one-pass 2D FIR kernel, upsampling "
        "convolutions in the reference order); ref order = separable FIR only; conv_up = separable FIR and every "
        f"upsampling convolution at the low resolution; rule = the defaults (conv_up from {fused.MIN_UP_SIDE} px, "
        f"{fused.MIN_UP_CHANNELS} input channels and {fused.MIN_UP_PIXELS} pixels per batch).",
        "",
        "Per layer (modulated_conv2d, up=2, 3x3; ms per call of ref order, speed-up of the others):",
        "",
        "| config | x | w | fwd+bwd ref order ms | conv_up | rule | + double bwd ref order ms | conv_up | rule |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        cells = [r["config"], "x".join(map(str, r["x"])), "x".join(map(str, r["w"]))]
        for label in ("fwd_bwd", "fwd_bwd_2bwd"):
            base = r[label]["ref order"]
            cells += [f"{1e3 * base:.1f}"] + [f"{base / r[label][v]:.2f}x" for v in ("conv_up", "rule")]
        lines.append("| " + " | ".join(cells) + " |")
    if steps:
        lines += [
            "",
            f"Our whole amortised training step (img/s from CPU time; median of {args.steps} interleaved rounds):",
            "",
            "| config | 2D FIR (before) | ref order (separable FIR) | rule (+ conv_up) | after / before CPU "
            "| after / before wall |",
            "|---|---|---|---|---|---|",
        ]
        for name, res in steps.items():
            a, b, c = (res[v] for v in STEP_VARIANTS)
            lines.append(
                f"| {name} | {a['img_s_cpu']:.2f} | {b['img_s_cpu']:.2f} | {c['img_s_cpu']:.2f} "
                f"| **{c['img_s_cpu'] / a['img_s_cpu']:.3f}x** | {c['img_s_wall'] / a['img_s_wall']:.3f}x |"
            )
    if render:
        lines += [
            "",
            f"Generation path: {args.render} seeds rendered with their feature taps (render_one, batch 1), CPU s:",
            "",
            "| config | 2D FIR (before) | ref order (separable FIR) | rule (+ conv_up) | after / before speed |",
            "|---|---|---|---|---|",
        ]
        for name, t in render.items():
            a, b, c = (t[v] for v in STEP_VARIANTS)
            lines.append(f"| {name} | {a:.3f} | {b:.3f} | {c:.3f} | **{a / c:.3f}x** |")
    return "\n".join(lines) + "\n", command


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--configs", nargs="+", default=list(CONFIGS), choices=list(CONFIGS))
    ap.add_argument("--step-configs", nargs="+", default=["cpu-tiny", "cpu-small", "wide64"], choices=list(CONFIGS))
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--steps", type=int, default=0, help="rounds of whole training steps (0: none)")
    ap.add_argument("--render", type=int, default=0, help="seeds rendered per round (0: no render timing)")
    ap.add_argument("--skip-layers", action="store_true")
    ap.add_argument("--no-write", action="store_true")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    load0 = os.getloadavg()[0]
    rows = []
    for name in [] if args.skip_layers else args.configs:
        for layer in up_layers(config(name)):
            row = dict(config=name, x=list(layer["x"]), w=list(layer["w"]))
            for label, double in (("fwd_bwd", False), ("fwd_bwd_2bwd", True)):
                row[label] = interleaved(
                    layer_workload(layer, double), ("ref order", "conv_up", "rule"), args.rounds, 3
                )
            rows.append(row)
            print(row, flush=True)
    steps = {}
    for name in args.step_configs if args.steps else []:
        steps[name] = whole_steps(name, args.steps)
        print(name, steps[name], flush=True)
    render = {}
    for name in args.configs if args.render else []:
        render[name] = render_seconds(name, args.render, args.rounds)
        print(name, render[name], flush=True)
    now = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    load = (load0, os.getloadavg()[0])
    text, command = report(args, rows, steps, render, load, now)
    print(text)
    if not args.no_write:
        write_section(text)
        doc = dict(command=command, date=now, threads=args.threads, load_average=list(load))
        write_json("resample_layers", dict(doc, layers_cpu_s=rows, steps=steps, render_cpu_s=render))


if __name__ == "__main__":
    main()
