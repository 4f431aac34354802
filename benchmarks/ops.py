"""Benchmark the fused ``cpu`` backend of stylegan2_ops against ``ref`` in one process.

Measures each operation (forward, and forward + backward), a whole generator forward pass and a
whole training step (G forward + D on fakes + D on reals with the R1 penalty, backward through all,
which needs D's double backward) at 64x64 and 128x128. The two backends run side by side and
interleaved (ref, cpu, ref, cpu, ...) so load from other processes on the machine hits both alike;
the figure per backend is the median of the rounds and the ratio is ref time / cpu time (> 1: the
cpu backend is faster). Prints a table and replaces its own section of benchmarks/RESULTS.md.

    PYTHONPATH=$PWD python benchmarks/ops.py --threads 2 --rounds 7 --network-rounds 5
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import time

import torch
import torch.nn.functional as F
from results import RESULTS, write_section  # benchmarks/results.py, next to this script

import stylegan2_ops as ops
from datasetgan.networks import Discriminator, DiscriminatorConfig, Generator, GeneratorConfig

SECTION = "## stylegan2_ops: fused cpu backend vs ref"
BACKENDS = ("ref", "cpu")


def timed(fn) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def compare(fn_for_backend, rounds: int, inner: int = 1, warmup: bool = True) -> dict[str, float]:
    """Median seconds per call of fn_for_backend(name)() for each backend, interleaved."""
    calls = {name: fn_for_backend(name) for name in BACKENDS}
    for name in BACKENDS if warmup else ():  # first-call allocations
        calls[name]()
    times = {name: [] for name in BACKENDS}
    for r in range(rounds):
        order = BACKENDS if r % 2 == 0 else BACKENDS[::-1]
        for name in order:
            times[name].append(timed(lambda: [calls[name]() for _ in range(inner)]) / inner)
    return {name: statistics.median(v) for name, v in times.items()}


def op_cases():
    """(label, make(backend) -> callable) for single operations at the shapes of a 64x64 model."""
    torch.manual_seed(0)
    f = ops.setup_filter([1, 3, 3, 1])
    n = 4
    cases = []

    def fwd_and_bwd(label, inputs, run):
        def make_fwd(be):
            return lambda: run(be, *[t.detach() for t in inputs])

        def make_bwd(be):
            def step():
                xs = [t.detach().requires_grad_() for t in inputs]
                y = run(be, *xs)
                torch.autograd.grad(y, xs, torch.ones_like(y))

            return step

        cases.append((f"{label} forward", make_fwd))
        cases.append((f"{label} forward+backward", make_bwd))

    x = torch.randn(n, 128, 64, 64)
    b = torch.randn(128)
    fwd_and_bwd(
        "bias_act lrelu+clamp [4,128,64,64]",
        [x, b],
        lambda be, x, b: ops.bias_act(x, b, act="lrelu", gain=2**0.5, clamp=256, backend=be),
    )
    x = torch.randn(n, 128, 32, 32)
    fwd_and_bwd(
        "upfirdn2d up=2 [4,128,32,32]",
        [x],
        lambda be, x: ops.upfirdn2d(x, f, up=2, padding=ops.up_padding(f, 2), gain=4, backend=be),
    )
    x = torch.randn(n, 128, 64, 64)
    fwd_and_bwd(
        "upfirdn2d down=2 [4,128,64,64]",
        [x],
        lambda be, x: ops.upfirdn2d(x, f, down=2, padding=ops.down_padding(f, 2), backend=be),
    )
    x, w = torch.randn(n, 64, 64, 64), torch.randn(128, 64, 3, 3)
    fwd_and_bwd(
        "conv2d_resample 3x3 down=2 64->128 ch [4,64,64,64]",
        [x, w],
        lambda be, x, w: ops.conv2d_resample(x, w, f=f, down=2, padding=1, backend=be),
    )
    w1 = torch.randn(128, 64, 1, 1)
    fwd_and_bwd(
        "conv2d_resample 1x1 down=2 64->128 ch [4,64,64,64]",
        [x, w1],
        lambda be, x, w: ops.conv2d_resample(x, w, f=f, down=2, backend=be),
    )
    for i, o, res, up in ((256, 256, 8, 1), (256, 256, 16, 2), (128, 64, 64, 2), (64, 64, 64, 1)):
        x = torch.randn(n, i, res // up, res // up)
        w, s = torch.randn(o, i, 3, 3), torch.randn(n, i)
        fwd_and_bwd(
            f"modulated_conv2d 3x3 up={up} {i}->{o} ch at {res}x{res}",
            [x, w, s],
            lambda be, x, w, s, up=up: ops.modulated_conv2d(x, w, s, f=f, up=up, padding=1, backend=be),
        )
    # R1 needs the double backward of D's convolutions.
    x, w = torch.randn(n, 64, 64, 64), torch.randn(128, 64, 3, 3)

    def make_double(be):
        def step():
            xs = x.detach().requires_grad_()
            y = ops.bias_act(
                ops.conv2d_resample(xs, w, f=f, down=2, padding=1, backend=be),
                torch.zeros(128),
                act="lrelu",
                clamp=256,
                backend=be,
            )
            (g,) = torch.autograd.grad(y.square().sum(), xs, create_graph=True)
            g.square().sum().backward()

        return step

    cases.append(("conv 3x3 down=2 + bias_act, double backward (R1)", make_double))
    return cases


def network_cases(res: int, batch: int):
    torch.manual_seed(0)
    g = Generator(GeneratorConfig(resolution=res))
    d = Discriminator(DiscriminatorConfig(resolution=res))
    z = torch.randn(batch, g.cfg.z_dim)
    real = torch.randn(batch, 1, res, res)

    def with_backend(be, fn):
        def run():
            os.environ[ops.backend.ENV_VAR] = be
            try:
                fn()
            finally:
                del os.environ[ops.backend.ENV_VAR]

        return run

    def g_forward():
        with torch.no_grad():
            g(z, noise_mode="const")

    def train_step():
        fake = g(z)
        loss_g = F.softplus(-d(fake)).mean()
        loss_g.backward()
        real_x = real.detach().requires_grad_()
        logits = d(real_x)
        (r1,) = torch.autograd.grad(logits.sum(), real_x, create_graph=True)
        (F.softplus(-logits).mean() + r1.square().sum([1, 2, 3]).mean() * 5).backward()
        for p in list(g.parameters()) + list(d.parameters()):
            p.grad = None

    return [
        (f"G forward {res}x{res} (batch {batch})", lambda be: with_backend(be, g_forward)),
        (f"training step G+D+R1 {res}x{res} (batch {batch})", lambda be: with_backend(be, train_step)),
    ]


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--rounds", type=int, default=7, help="interleaved rounds per operation (median)")
    parser.add_argument(
        "--network-rounds",
        type=int,
        default=5,
        help="interleaved rounds per whole-network item (median; no warm-up round)",
    )
    parser.add_argument("--batch", type=int, default=4)
    parser.add_argument("--resolutions", type=int, nargs="+", default=[64, 128])
    parser.add_argument("--no-tune-allocator", action="store_true", help="leave glibc malloc at its defaults")
    parser.add_argument("--no-write", action="store_true", help="do not update benchmarks/RESULTS.md")
    args = parser.parse_args()

    torch.set_num_threads(args.threads)
    tuned = False if args.no_tune_allocator else ops.tune_allocator()
    ops.backend.compiled("cpu")  # build before timing
    os.environ.pop(ops.backend.ENV_VAR, None)

    rows = []
    items = [(label, make, False) for label, make in op_cases()]
    for res in args.resolutions:
        items += [(label, make, True) for label, make in network_cases(res, args.batch)]
    for label, make, network in items:
        if network:
            t = compare(make, args.network_rounds, warmup=False)
        else:
            t = compare(make, args.rounds, inner=3 if label.endswith(" forward") else 1)
        ratio = t["ref"] / t["cpu"]
        rows.append((label, t["ref"], t["cpu"], ratio))
        print(
            f"{label:60s} ref {t['ref'] * 1e3:9.1f} ms   cpu {t['cpu'] * 1e3:9.1f} ms   ratio {ratio:5.2f}x", flush=True
        )

    lines = [
        SECTION,
        "",
        f"Command: `PYTHONPATH=$PWD python benchmarks/ops.py --threads {args.threads} --rounds {args.rounds} "
        f"--network-rounds {args.network_rounds} "
        f"--batch {args.batch} --resolutions {' '.join(map(str, args.resolutions))}"
        f"{' --no-tune-allocator' if args.no_tune_allocator else ''}`",
        "",
        f"Machine: {platform.machine()}, {os.cpu_count()} CPU cores shared with other jobs (load average "
        f"{os.getloadavg()[0]:.1f} at the end); torch {torch.__version__}, {args.threads} threads; glibc malloc "
        f"{'tuned with stylegan2_ops.tune_allocator()' if tuned else 'at its defaults'} for both backends.",
        "Both backends run in the same process, interleaved round by round; each figure is the median of "
        f"{args.rounds} rounds ({args.network_rounds} for whole networks); ratio = ref time / cpu time (above 1: the cpu backend is faster). "
        "Other processes shared the cores, so single figures are noisy (and absolute times inflated "
        "many times over when the load is high); the ratios are the point. "
        "modulated_conv2d 64->64 at 64x64 does the same work in both backends (one grouped convolution, "
        "no resampling), so its ratio shows the noise level.",
        "Networks: default GeneratorConfig / DiscriminatorConfig (channel_base 4096, channel_max 256, 1 channel).",
        "",
        "| item | ref (ms) | cpu (ms) | ref / cpu |",
        "|---|---:|---:|---:|",
    ]
    lines += [f"| {label} | {r * 1e3:.1f} | {c * 1e3:.1f} | {ratio:.2f}x |" for label, r, c, ratio in rows]
    section = "\n".join(lines) + "\n"
    if not args.no_write:
        write_section(section)
        print(f"updated {RESULTS}")


if __name__ == "__main__":
    main()
