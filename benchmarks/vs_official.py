"""Training speed against NVIDIA's official StyleGAN2-ADA (stylegan2-ada-pytorch), side by side.

Both implementations train the same configuration in one process: fp32, the official networks with
``num_fp16_res=0``, the 'skip' generator and 'resnet' discriminator, the 'bgc' augmentation at a
fixed p, style mixing 0.9, path length (weight 2, batch / 2) every ``--pl-interval`` steps and R1
every ``--r1-interval`` steps, lazy-regularisation Adam, an EMA copy of G. The official code runs its
plain PyTorch path (its CUDA plugins do not run on a CPU); ours runs the fused ``cpu`` backend.

Three kinds of step are timed: plain (G main + D main), with path length, and with path length + R1;
rounds interleave the implementations (ours then official, official then ours on the next round) so
that load from other processes hits both alike. Per kind the median of the rounds is taken, and the
amortised step is

    plain + (pl - plain) / pl_interval + (both - pl) / r1_interval

in wall-clock and in process CPU seconds. ``--profile`` adds, per implementation and kind, the 15
operators with the most self CPU time (torch.profiler), and the multiply-adds executed by convolutions
and matrix products (torch.utils.flop_counter) against this CPU's fp32 peak.

The official code is imported from ``--official DIR`` (a checkout of NVlabs/stylegan2-ada-pytorch,
commit d72cc7d, kept outside this repository; nothing of it is copied here):

    git clone https://github.com/NVlabs/stylegan2-ada-pytorch /tmp/sg2ada && git -C /tmp/sg2ada checkout d72cc7d
    PYTHONPATH=$PWD python benchmarks/vs_official.py --official /tmp/sg2ada --threads 1 2 --profile

Runtime shims (in this process only): none are needed on torch 2.14 / Python 3.11 beyond running on
the CPU: the official ``bias_act``/``upfirdn2d`` take their reference path for CPU tensors,
``conv2d_gradfix`` is a no-op there and ``grid_sample_gradfix`` falls back to
``torch.nn.functional.grid_sample`` after one warning, which is silenced.
"""

from __future__ import annotations

import argparse
import copy
import datetime
import importlib
import math
import os
import platform
import statistics
import sys
import time
import warnings
from pathlib import Path

from stylegan2_ops import tune_allocator

tune_allocator()  # both implementations profit alike: it is process-wide

import numpy as np  # noqa: E402
import torch  # noqa: E402
from results import write_json, write_section  # noqa: E402  (benchmarks/results.py)
from torch.utils.flop_counter import FlopCounterMode  # noqa: E402

from datasetgan.presets import make_config  # noqa: E402
from datasetgan.training import Trainer  # noqa: E402

SECTION = "Training speed vs the official StyleGAN2-ADA"
KINDS = ("plain", "pl", "both")
CONFIGS = {
    "cpu-tiny": dict(preset="cpu-tiny"),
    "cpu-small": dict(preset="cpu-small"),
    "wide64": dict(preset="cpu-small", channel_base=4096, channel_max=256, z_dim=512, w_dim=512, batch=8),
}
OFFICIAL_BGC = dict(
    xflip=1,
    rotate90=1,
    xint=1,
    scale=1,
    rotate=1,
    aniso=1,
    xfrac=1,
    brightness=1,
    contrast=1,
    lumaflip=1,
    hue=1,
    saturation=1,
)


def load_official(folder: str):
    """The official modules (networks, augment, loss), imported from a checkout at ``folder``."""
    root = Path(folder).expanduser().resolve()
    if not (root / "training" / "networks.py").is_file() or not (root / "torch_utils").is_dir():
        sys.exit(
            f"--official {folder}: not a checkout of NVlabs/stylegan2-ada-pytorch (no training/networks.py); "
            "fetch it at commit d72cc7d into a folder outside this repository"
        )
    # The checkout is not an installable package: its modules import each other as top-level
    # 'dnnlib', 'torch_utils', 'training', so its folder has to be on the import path.
    sys.path.insert(0, str(root))
    warnings.filterwarnings("ignore", message=".*grid_sample_gradfix.*")
    return (
        importlib.import_module("training.networks"),
        importlib.import_module("training.augment"),
        importlib.import_module("training.loss"),
    )


class Ours:
    """Our Trainer, one step at a time, at a fixed step count (which decides the regularisers)."""

    name = "ours"

    def __init__(self, cfg, images):
        self.trainer = Trainer(cfg, images)

    def step(self, step_count: int) -> None:
        self.trainer.step_count = step_count
        self.trainer.train_step()


class Official:
    """The official networks, loss and augmentation, driven the way its training loop drives them:
    per phase fresh latents, zero_grad, requires_grad on that phase's network only, accumulate with
    gain = interval, NaN-clean the gradients, Adam step; then the EMA update."""

    name = "official"

    def __init__(self, cfg, images, modules):
        networks, augment, loss = modules
        torch.manual_seed(cfg.seed)
        common = dict(c_dim=0, img_resolution=cfg.resolution, img_channels=cfg.img_channels)
        self.G = networks.Generator(
            z_dim=cfg.z_dim,
            w_dim=cfg.w_dim,
            **common,
            mapping_kwargs=dict(num_layers=cfg.mapping_layers),
            synthesis_kwargs=dict(
                channel_base=cfg.channel_base,
                channel_max=cfg.channel_max,
                num_fp16_res=0,
                conv_clamp=None,
                architecture="skip",
            ),
        )
        self.D = networks.Discriminator(
            **common,
            architecture="resnet",
            channel_base=cfg.channel_base,
            channel_max=cfg.channel_max,
            num_fp16_res=0,
            conv_clamp=None,
            epilogue_kwargs=dict(mbstd_group_size=cfg.mbstd_group),
        )
        self.G_ema = copy.deepcopy(self.G).eval().requires_grad_(False)
        self.G.requires_grad_(False)
        self.D.requires_grad_(False)
        self.pipe = augment.AugmentPipe(**OFFICIAL_BGC)
        self.pipe.p.copy_(torch.as_tensor(cfg.aug_p))
        self.loss = loss.StyleGAN2Loss(
            torch.device("cpu"),
            self.G.mapping,
            self.G.synthesis,
            self.D,
            self.pipe,
            style_mixing_prob=cfg.style_mixing,
            r1_gamma=cfg.r1_gamma,
            pl_batch_shrink=cfg.pl_batch_shrink,
            pl_decay=cfg.pl_decay,
            pl_weight=cfg.pl_weight,
        )
        self.opt_G = self.adam(self.G, cfg, cfg.pl_interval)
        self.opt_D = self.adam(self.D, cfg, cfg.r1_interval)
        self.cfg, self.images = cfg, torch.from_numpy(images)

    @staticmethod
    def adam(module, cfg, interval):
        c = interval / (interval + 1)
        return torch.optim.Adam(module.parameters(), lr=cfg.g_lr * c, betas=[b**c for b in cfg.betas], eps=cfg.eps)

    def step(self, step_count: int) -> None:
        cfg, n = self.cfg, self.cfg.batch
        real = self.images[torch.randint(len(self.images), (n,))].float() / 127.5 - 1
        c = torch.zeros(n, 0)
        phases = [("Gmain", self.G, self.opt_G, 1)]
        if step_count % cfg.pl_interval == 0:
            phases.append(("Greg", self.G, self.opt_G, cfg.pl_interval))
        phases.append(("Dmain", self.D, self.opt_D, 1))
        if step_count % cfg.r1_interval == 0:
            phases.append(("Dreg", self.D, self.opt_D, cfg.r1_interval))
        for phase, module, opt, gain in phases:
            opt.zero_grad(set_to_none=True)
            module.requires_grad_(True)
            self.loss.accumulate_gradients(phase, real, c, torch.randn(n, cfg.z_dim), c, sync=True, gain=gain)
            module.requires_grad_(False)
            for p in module.parameters():
                if p.grad is not None:
                    torch.nan_to_num(p.grad, nan=0, posinf=1e5, neginf=-1e5, out=p.grad)
            opt.step()
        beta = 0.5 ** (n / (cfg.ema_kimg * 1000))
        with torch.no_grad():
            for p_ema, p in zip(self.G_ema.parameters(), self.G.parameters()):
                p_ema.copy_(p.lerp(p_ema, beta))


KIND_STEP = {"plain": lambda cfg: 1, "pl": lambda cfg: cfg.pl_interval, "both": lambda cfg: 0}


def timed(impl, step_count: int) -> tuple[float, float]:
    w, c = time.perf_counter(), time.process_time()
    impl.step(step_count)
    return time.perf_counter() - w, time.process_time() - c


def amortised(t: dict, cfg) -> float:
    return t["plain"] + (t["pl"] - t["plain"]) / cfg.pl_interval + (t["both"] - t["pl"]) / cfg.r1_interval


def compare(impls, cfg, rounds: int) -> dict:
    """Median wall and CPU seconds per step kind for each implementation, interleaved."""
    kinds = [k for k in KINDS if k != "pl" or cfg.pl_interval % cfg.r1_interval]
    for impl in impls:  # warm-up: first-call allocations, lazy initialisation
        for kind in kinds:
            timed(impl, KIND_STEP[kind](cfg))
    samples = {impl.name: {k: ([], []) for k in kinds} for impl in impls}
    for r in range(rounds):
        for kind in kinds:
            for impl in impls if r % 2 == 0 else impls[::-1]:
                wall, cpu = timed(impl, KIND_STEP[kind](cfg))
                samples[impl.name][kind][0].append(wall)
                samples[impl.name][kind][1].append(cpu)
    out = {}
    for name, per_kind in samples.items():
        wall = {k: statistics.median(v[0]) for k, v in per_kind.items()}
        cpu = {k: statistics.median(v[1]) for k, v in per_kind.items()}
        wall.setdefault("pl", wall["plain"])  # pl never due without R1: its cost is in 'both'
        cpu.setdefault("pl", cpu["plain"])
        out[name] = {
            "step_s": wall,
            "step_cpu_s": cpu,
            "img_s_wall": cfg.batch / amortised(wall, cfg),
            "img_s_cpu": cfg.batch / amortised(cpu, cfg),
        }
    return out


def profile(impl, cfg, kind: str, top: int = 15) -> dict:
    """Self CPU time of the top operators of one step of ``kind``."""
    from torch.profiler import ProfilerActivity
    from torch.profiler import profile as torch_profile

    with torch_profile(activities=[ProfilerActivity.CPU]) as prof:
        impl.step(KIND_STEP[kind](cfg))
    events = sorted(prof.key_averages(), key=lambda e: e.self_cpu_time_total, reverse=True)
    total = sum(e.self_cpu_time_total for e in events)
    return {
        "self_cpu_ms": total / 1e3,
        "top": [
            {
                "op": e.key,
                "self_cpu_ms": e.self_cpu_time_total / 1e3,
                "calls": e.count,
                "share": e.self_cpu_time_total / total,
            }
            for e in events[:top]
        ],
    }


def conv_backward_flops(
    grad_out_shape,
    x_shape,
    w_shape,
    _bias,
    _stride,
    _padding,
    _dilation,
    transposed,
    _output_padding,
    _groups,
    output_mask,
    out_shape=None,
    **_,
) -> int:
    """FLOPs of a convolution's backward: each of the input and weight gradients costs as much as the
    forward. (torch 2.14's own formula ignores ``groups`` and overcounts grouped convolutions.)"""
    pixels = grad_out_shape[0] * math.prod(x_shape[2:] if transposed else grad_out_shape[2:])
    return 2 * pixels * math.prod(w_shape) * (int(output_mask[0]) + int(output_mask[1]))


class GlobalOnly:
    """Stands in for FlopCounterMode's module tracker: every count goes to 'Global'."""

    parents = {"Global"}

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False


def macs_per_step(impl, cfg) -> float:
    """Multiply-adds executed by convolutions and matrix products (forward, backward and double
    backward; not the elementwise, FIR or augmentation work) in an amortised step."""
    macs = {}
    for kind in KINDS:
        counter = FlopCounterMode(
            display=False, custom_mapping={torch.ops.aten.convolution_backward: conv_backward_flops}
        )
        counter.mod_tracker = GlobalOnly()  # its module hooks break autograd.grad on leaves (R1)
        with counter:
            impl.step(KIND_STEP[kind](cfg))
        macs[kind] = counter.get_total_flops() / 2
    return amortised(macs, cfg)


def fma_peak() -> dict:
    """This CPU's fp32 peak per core: FMA units x SIMD lanes x 2 flops x clock (the nominal clock that
    /proc/cpuinfo reports; a boosting core may run faster), and the rate a large matrix product
    (torch.mm, 1 thread) reaches, as the practical ceiling."""
    mhz = None
    try:
        mhz = max(
            float(line.split(":")[1])
            for line in Path("/proc/cpuinfo").read_text().splitlines()
            if line.startswith("cpu MHz")
        )
    except (OSError, ValueError):
        pass
    flags = Path("/proc/cpuinfo").read_text() if Path("/proc/cpuinfo").exists() else ""
    lanes = 16 if " avx512f" in flags else 8 if " avx2" in flags else 4
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    a, b = torch.randn(1536, 1536), torch.randn(1536, 1536)
    mm = 1536**3 / best_time(lambda: torch.mm(a, b))
    # The convolution kind a training step is made of: 3x3, 256 channels, 32², batch 8 (oneDNN).
    x, w = torch.randn(8, 256, 32, 32), torch.randn(256, 256, 3, 3)
    conv = 8 * 32 * 32 * w.numel() / best_time(lambda: torch.nn.functional.conv2d(x, w, padding=1))
    torch.set_num_threads(threads)
    return {
        "clock_ghz": mhz / 1000 if mhz else None,
        "fma_units": 2,
        "fp32_lanes": lanes,
        "peak_macs_per_core": 2 * lanes * mhz * 1e6 if mhz else None,
        "mm_macs_per_core": mm,
        "conv_macs_per_core": conv,
    }


def best_time(fn, repeats: int = 7) -> float:
    """Best wall time of ``repeats`` calls after a warm-up call (the rate a core reaches undisturbed)."""
    fn()
    return min(timed_call(fn) for _ in range(repeats))


def timed_call(fn) -> float:
    t = time.perf_counter()
    fn()
    return time.perf_counter() - t


def measure_config(name: str, threads: int, rounds: int, args, modules) -> dict:
    torch.set_num_threads(threads)
    overrides = dict(
        CONFIGS[name], aug="fixed", aug_p=args.p, pl_interval=args.pl_interval, r1_interval=args.r1_interval
    )
    cfg = make_config(overrides.pop("preset"), **overrides)
    images = np.random.default_rng(0).integers(
        0, 256, (64, cfg.img_channels, cfg.resolution, cfg.resolution), dtype=np.uint8
    )
    impls = [Ours(cfg, images), Official(cfg, images, modules)]
    load = os.getloadavg()
    res = compare(impls, cfg, rounds)
    row = {
        "config": name,
        "threads": threads,
        "resolution": cfg.resolution,
        "batch": cfg.batch,
        "channel_base": cfg.channel_base,
        "channel_max": cfg.channel_max,
        "z_w_dim": cfg.z_dim,
        "mapping_layers": cfg.mapping_layers,
        "rounds": rounds,
        "load_before": list(load),
        "load_after": list(os.getloadavg()),
        **res,
        "ratio_wall": res["ours"]["img_s_wall"] / res["official"]["img_s_wall"],
        "ratio_cpu": res["ours"]["img_s_cpu"] / res["official"]["img_s_cpu"],
    }
    if args.profile and threads == min(args.threads):
        row["profile"] = {impl.name: {kind: profile(impl, cfg, kind) for kind in ("plain", "both")} for impl in impls}
        for impl in impls:
            macs = macs_per_step(impl, cfg)
            row[impl.name]["macs_per_step"] = macs
            # CPU seconds sum over threads: MACs / CPU second is the rate of one busy core
            row[impl.name]["macs_per_cpu_s"] = macs * row[impl.name]["img_s_cpu"] / cfg.batch
    return row


def report(rows: list[dict], peak: dict, command: str, date: str) -> str:
    lines = [
        f"Command: `{command}` ({date}; {platform.machine()}, {os.cpu_count()} cores shared with other jobs, "
        f"torch {torch.__version__}). Official code: NVlabs/stylegan2-ada-pytorch d72cc7d, fp32, no conv "
        "clamp, its plain PyTorch ops; ours: the fused cpu backend (conv clamp 256, as trained). "
        f"ADA 'bgc' at fixed p = {rows[0]['p']}, path length every {rows[0]['pl_interval']} steps, R1 every "
        f"{rows[0]['r1_interval']}. Median of the rounds, interleaved; load average (1 min) before and "
        "after each row. Wall = img/s on the clock; CPU = img/s from process CPU time (what the "
        "threads would do with their cores to themselves).",
        "",
        "| config | res | batch | channels base/max, z/w | threads | rounds | ours img/s wall | official img/s wall "
        "| ours / official wall | ours / official CPU | load |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        lines.append(
            f"| {r['config']} | {r['resolution']}² | {r['batch']} | {r['channel_base']}/{r['channel_max']}, "
            f"{r['z_w_dim']} | {r['threads']} | {r['rounds']} | {r['ours']['img_s_wall']:.2f} | "
            f"{r['official']['img_s_wall']:.2f} | **{r['ratio_wall']:.2f}** | {r['ratio_cpu']:.2f} | "
            f"{r['load_before'][0]:.1f} → {r['load_after'][0]:.1f} |"
        )
    if peak.get("peak_macs_per_core"):
        lines += [
            "",
            f"fp32 peak assumed per core: {peak['fma_units']} FMA units x {peak['fp32_lanes']} fp32 lanes x "
            f"{peak['clock_ghz']:.2f} GHz (the clock /proc/cpuinfo reports; a boosting core may be faster) = "
            f"{peak['peak_macs_per_core'] / 1e9:.1f} G multiply-adds/s ({2 * peak['peak_macs_per_core'] / 1e9:.0f} "
            f"GFLOP/s); 2 cores: {2 * peak['peak_macs_per_core'] / 1e9:.1f} GMAC/s. Measured, 1 thread, best of 7: "
            f"a 1536² fp32 matrix product (torch.mm) {peak['mm_macs_per_core'] / 1e9:.1f} GMAC/s "
            f"({peak['mm_macs_per_core'] / peak['peak_macs_per_core']:.0%} of that), a 3x3 convolution "
            f"(256 -> 256 channels, 32², batch 8) {peak['conv_macs_per_core'] / 1e9:.1f} GMAC/s "
            f"({peak['conv_macs_per_core'] / peak['peak_macs_per_core']:.0%})."
            + (
                " (The CPU has AVX-512; with AVX2's 8 lanes the peak would be half.)"
                if peak["fp32_lanes"] == 16
                else ""
            ),
        ]
    prof_rows = [r for r in rows if "profile" in r]
    if prof_rows:
        lines += [
            "",
            "Multiply-adds of convolutions and matrix products per amortised step (forward, backward, double "
            "backward; torch.utils.flop_counter) and the rate per busy core (MACs / CPU second):",
            "",
            "| config | threads | ours GMAC/step | ours GMAC/s per core | of peak | official GMAC/step | "
            "official GMAC/s per core | of peak |",
            "|---|---|---|---|---|---|---|---|",
        ]
        for r in prof_rows:
            cells = []
            for name in ("ours", "official"):
                rate = r[name]["macs_per_cpu_s"]
                share = f"{rate / peak['peak_macs_per_core']:.0%}" if peak.get("peak_macs_per_core") else "?"
                cells += [f"{r[name]['macs_per_step'] / 1e9:.2f}", f"{rate / 1e9:.1f}", share]
            lines.append(f"| {r['config']} | {r['threads']} | " + " | ".join(cells) + " |")
        lines += roofline(prof_rows, peak)
        lines += ["", "Top operators by self CPU time (torch.profiler, one step; share of the step's self CPU time):"]
        for r in prof_rows:
            for name in ("ours", "official"):
                for kind, label in (("plain", "G main + D main"), ("both", "G main + PL + D main + R1")):
                    p = r["profile"][name][kind]
                    ops = ", ".join(f"{t['op']} {t['share']:.0%}" for t in p["top"])
                    lines.append(f"- {r['config']}, {name}, {label} ({p['self_cpu_ms']:.0f} ms): {ops}")
    return "\n".join(lines)


def roofline(rows: list[dict], peak: dict) -> list[str]:
    """The fastest step the multiply-adds allow: every MAC at the best measured GEMM rate, nothing
    else (no FIR, elementwise, augmentation or optimiser work), against the official's measured step
    (CPU time); at our MAC count and at the official's."""
    rate = max(peak["mm_macs_per_core"], peak["conv_macs_per_core"], *(r["ours"]["macs_per_cpu_s"] for r in rows))
    lines = [
        "",
        f"Roofline: the fastest possible step, all multiply-adds at {rate / 1e9:.1f} GMAC/s per core (the best "
        "rate measured here: the matrix product, the convolution above, or a whole step) and nothing else; "
        "max ours / official = the official's measured step (CPU s) / that bound.",
        "",
        "| config | threads | official step CPU s | ours bound s (ours measured) | max ours / official at our MACs "
        "| at the official's MACs | 2x attainable? |",
        "|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        official = r["batch"] / r["official"]["img_s_cpu"]
        ours_bound = r["ours"]["macs_per_step"] / rate
        at_ours, at_official = official / ours_bound, official * rate / r["official"]["macs_per_step"]
        if at_ours >= 2:
            verdict = "only in principle: all non-GEMM work would have to go"
        elif at_official >= 2:
            verdict = "only with fewer MACs (the official's count)"
        else:
            verdict = "no, not even at the official's MAC count"
        lines.append(
            f"| {r['config']} | {r['threads']} | {official:.3f} | {ours_bound:.3f} ({r['batch'] / r['ours']['img_s_cpu']:.3f}) "
            f"| {at_ours:.2f}x | {at_official:.2f}x | {verdict} |"
        )
    return lines


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--official", required=True, help="checkout of NVlabs/stylegan2-ada-pytorch (commit d72cc7d)")
    ap.add_argument("--configs", nargs="+", default=list(CONFIGS), choices=list(CONFIGS))
    ap.add_argument("--threads", nargs="+", type=int, default=[1, 2])
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--wide-rounds", type=int, default=3, help="rounds for the wide64 configuration")
    ap.add_argument("--p", type=float, default=0.2, help="ADA augmentation probability (fixed)")
    ap.add_argument("--pl-interval", type=int, default=4)
    ap.add_argument("--r1-interval", type=int, default=16)
    ap.add_argument("--profile", action="store_true", help="per-operator profile and MAC rate (at the fewest threads)")
    ap.add_argument("--no-write", action="store_true", help="print only; leave RESULTS.md and the JSON alone")
    args = ap.parse_args()
    modules = load_official(args.official)
    command = "PYTHONPATH=$PWD python benchmarks/vs_official.py " + " ".join(sys.argv[1:])
    date = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    peak = fma_peak()
    rows = []
    for threads in args.threads:  # all configurations at one thread count, then the next
        for name in args.configs:
            rounds = args.wide_rounds if name == "wide64" else args.rounds
            row = measure_config(name, threads, rounds, args, modules)
            row.update(p=args.p, pl_interval=args.pl_interval, r1_interval=args.r1_interval)
            rows.append(row)
            print(
                f"{name:9s} {threads} thread(s): ours {row['ours']['img_s_wall']:.2f} img/s, official "
                f"{row['official']['img_s_wall']:.2f} img/s, ratio {row['ratio_wall']:.2f} wall / "
                f"{row['ratio_cpu']:.2f} CPU (load {row['load_before'][0]:.1f} -> {row['load_after'][0]:.1f})",
                flush=True,
            )
            if not args.no_write:  # after every row: a long run that is stopped keeps what it measured
                write_section(f"## {SECTION}\n\n{report(rows, peak, command, date).strip()}\n")
                write_json(
                    "vs_official",
                    {
                        "command": command,
                        "date": date,
                        "machine": platform.machine(),
                        "cores": os.cpu_count(),
                        "torch": torch.__version__,
                        "peak": peak,
                        "rows": rows,
                    },
                )
    print(report(rows, peak, command, date))


if __name__ == "__main__":
    main()
