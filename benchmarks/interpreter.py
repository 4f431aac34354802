"""Benchmark of the style interpreter: fast vs reference inference, and the memory of training.

Speed: pairs/s of (a) the generator alone, (b) generator + fast interpreter, (c) generator + reference
interpreter, at several resolutions, with a randomly initialised paper-size generator (channel base
16384, max 512) and a randomly initialised 10-member interpreter. The paths are timed in interleaved
rounds (gen, fast, ref, gen, fast, ref, ...) so that load from other processes on the shared cores
hits all of them alike; the median of the rounds is reported. Multiply-adds are counted with
torch's FlopCounterMode (matmuls and convolutions) plus 4 per upsampled value (bilinear), which
gives the bound the fast/reference ratio can reach.

Memory: a child process renders 30 annotated 256x256 seeds, keeps their taps at native resolution
(float16) and trains the 10 members for a few steps; its peak resident set (ru_maxrss) is compared
with what the original design's full-resolution feature volume alone needs (30 x 256 x 256 x 4992 x 4).

    PYTHONPATH=$PWD python benchmarks/interpreter.py --threads 2 --rounds 3
"""

from __future__ import annotations

import argparse
import json
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from results import write_section  # benchmarks/results.py, next to this script
from torch.utils.flop_counter import FlopCounterMode

from datasetgan.data import default_classes
from datasetgan.interpreter import (
    Interpreter,
    InterpreterConfig,
    InterpreterInfo,
    init_member,
    member_seed,
    predict_from_logits,
)
from datasetgan.networks import Generator, GeneratorConfig
from datasetgan.render import render_one, to_uint8

SECTION = "## Interpreter and pair factory"


def paper_generator(res: int, channels: int = 1) -> Generator:
    torch.manual_seed(0)
    G = Generator(GeneratorConfig(resolution=res, img_channels=channels, channel_base=16384, channel_max=512))
    return G.eval().requires_grad_(False)


def random_interpreter(G, num_classes=4, members=10, hidden=(256, 128)) -> Interpreter:
    info = InterpreterInfo(G.feature_taps(), default_classes(num_classes), G.cfg.resolution, G.cfg.img_channels)
    interp = Interpreter(info, InterpreterConfig(members=members, hidden=hidden))
    for m, member in enumerate(interp.members):
        init_member(member, torch.Generator().manual_seed(member_seed(0, m)))
    return interp.eval().requires_grad_(False)


def upsample_macs(interp: Interpreter, fast: bool) -> int:
    """Bilinear upsampling costs ~4 multiply-adds per output value (not seen by FlopCounterMode)."""
    R = interp.info.resolution
    width = interp.cfg.hidden[0] * len(interp.members)
    if fast:
        return 4 * width * R * R * len({t.resolution for t in interp.info.taps if t.resolution != R})
    return 4 * R * R * sum(t.channels for t in interp.info.taps if t.resolution != R)


def count_macs(fn) -> int:
    with FlopCounterMode(display=False) as fc:
        fn()
    return fc.get_total_flops() // 2


def speed(res: int, rounds: int) -> dict:
    G = paper_generator(res)
    interp = random_interpreter(G)
    _, taps = render_one(G, 0, with_taps=True)
    interp.folded()  # the fold is done once per loaded interpreter, not per pair

    def gen(seed):
        to_uint8(render_one(G, seed))

    def pair(seed, fast):
        img, t = render_one(G, seed, with_taps=True)
        to_uint8(img)
        pred = predict_from_logits(interp.fast_logits(t) if fast else interp.reference_logits(t))
        pred.mask.numpy(), pred.js.numpy()

    def interp_only(fast):
        predict_from_logits(interp.fast_logits(taps) if fast else interp.reference_logits(taps))

    macs = {
        "generator": count_macs(lambda: gen(0)),
        "fast_interp": count_macs(lambda: interp_only(True)) + upsample_macs(interp, True),
        "ref_interp": count_macs(lambda: interp_only(False)) + upsample_macs(interp, False),
    }
    paths = {
        "generator": gen,
        "fast": lambda s: pair(s, True),
        "reference": lambda s: pair(s, False),
        "fast_interp_only": lambda s: interp_only(True),
        "ref_interp_only": lambda s: interp_only(False),
    }
    times = {k: [] for k in paths}
    for name in ("generator", "fast", "fast_interp_only"):  # warm-up (the reference path is too slow to repeat)
        paths[name](1000)
    for r in range(rounds):
        for name, fn in paths.items():
            t0 = time.perf_counter()
            fn(r + 1)
            times[name].append(time.perf_counter() - t0)
    med = {k: statistics.median(v) for k, v in times.items()}
    out = {
        "resolution": res,
        "channels": sum(t.channels for t in G.feature_taps()),
        "rounds": rounds,
        "seconds": med,
        "all_seconds": times,
        "macs": macs,
    }
    out["pairs_per_s"] = {k: 1 / med[k] for k in ("generator", "fast", "reference")}
    out["fast_over_ref_pairs"] = med["reference"] / med["fast"]
    out["fast_over_ref_interp"] = med["ref_interp_only"] / med["fast_interp_only"]
    out["mac_bound_pairs"] = (macs["generator"] + macs["ref_interp"]) / (macs["generator"] + macs["fast_interp"])
    out["mac_bound_interp"] = macs["ref_interp"] / macs["fast_interp"]
    out["fast_vs_generator"] = med["generator"] / med["fast"]
    return out


# ---------------------------------------------------------------------------------------------
# Training memory (child process)


def vm_hwm() -> int:
    """Peak resident set of this process image (VmHWM, reset by exec, unlike ru_maxrss which Linux
    carries over from the parent at fork + exec)."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) * 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def train_memory_child(n: int, res: int, steps: int) -> dict:
    from datasetgan.annotations import AnnotationSet, render_items
    from datasetgan.features import render_annotated
    from datasetgan.interpreter import train_interpreter

    t0 = time.time()
    G = paper_generator(res)
    G.sha256 = "benchmark"
    rss_model = vm_hwm()
    with tempfile.TemporaryDirectory() as d:
        aset = AnnotationSet(Path(d))
        ids = render_items(aset, G, range(n), classes=default_classes(4))
        rng = np.random.default_rng(0)
        yy, xx = np.mgrid[:res, :res]
        for item in ids:  # a few random discs per image, like hand-painted structures
            mask = np.zeros((res, res), np.uint8)
            for k in (1, 2, 3):
                cy, cx, rad = rng.uniform(0.2, 0.8) * res, rng.uniform(0.2, 0.8) * res, rng.uniform(0.05, 0.2) * res
                mask[(yy - cy) ** 2 + (xx - cx) ** 2 < rad**2] = k
            aset.save_mask(item, mask)
        t1 = time.time()
        feats, masks, records = render_annotated(G, aset)
        t2 = time.time()
        info = InterpreterInfo(feats.taps, aset.classes(), res, 1, G.sha256)
        cfg = InterpreterConfig(members=10, batch_size=1024, epochs=1, pixels_per_epoch=steps * 1024, val_pixels=8192)
        train_interpreter(feats, masks, info, cfg)
        t3 = time.time()
    return {
        "images": n,
        "resolution": res,
        "feature_bytes": feats.nbytes(),
        "channels": feats.channels,
        "steps_per_member": steps,
        "peak_rss_bytes": vm_hwm(),
        "ru_maxrss_bytes": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024,
        "rss_after_generator_bytes": rss_model,
        "render_annotations_s": t1 - t0,
        "features_s": t2 - t1,
        "train_s": t3 - t2,
        "train_s_per_step": (t3 - t2) / (10 * steps),
    }


def train_memory(n: int, res: int, steps: int, threads: int) -> dict:
    cmd = [
        sys.executable,
        __file__,
        "--child",
        "--train-images",
        str(n),
        "--train-res",
        str(res),
        "--train-steps",
        str(steps),
        "--threads",
        str(threads),
    ]
    out = subprocess.run(cmd, check=True, capture_output=True, text=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


# ---------------------------------------------------------------------------------------------


def fmt_bytes(b: float) -> str:
    return f"{b / 2**30:.2f} GiB" if b >= 2**30 else f"{b / 2**20:.0f} MiB"


def report(speeds: list[dict], mem: dict | None, args) -> str:
    def cmd(argv):
        return f"`PYTHONPATH=$PWD python benchmarks/interpreter.py {' '.join(argv)}`"

    speed_cmd = cmd(speeds[0].get("argv", sys.argv[1:])) if speeds else ""
    mem_cmd = cmd(mem.get("argv", sys.argv[1:])) if mem else ""
    lines = [
        SECTION,
        "",
        f"Commands: speed {speed_cmd}; training memory {mem_cmd} (torch {torch.__version__}, "
        f"{args.threads} thread(s), a 2-core machine shared with other jobs{args.note}; medians of {speeds[0]['rounds'] if speeds else args.rounds} interleaved rounds). "
        "Random-weight paper generator (channel base 16384, max 512, 1 channel) and a random 10-member "
        "interpreter (hidden 256, 128; 4 classes).",
        "",
        "| res | feature ch | generator pairs/s | fast pairs/s | reference pairs/s | fast/ref (pairs) "
        "| MAC bound (pairs) | fast/ref (interpreter only) | MAC bound (interpreter) | fast / generator-only |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for s in speeds:
        p = s["pairs_per_s"]
        lines.append(
            f"| {s['resolution']} | {s['channels']} | {p['generator']:.3f} | {p['fast']:.3f} | "
            f"{p['reference']:.4f} | {s['fast_over_ref_pairs']:.1f}x | {s['mac_bound_pairs']:.1f}x | "
            f"{s['fast_over_ref_interp']:.1f}x | {s['mac_bound_interp']:.1f}x | {s['fast_vs_generator']:.2f} |"
        )
    lines += [
        "",
        "Multiply-adds per pair (G = 10^9):",
        "",
        "| res | generator | fast interpreter | reference interpreter |",
        "|---|---|---|---|",
    ]
    for s in speeds:
        m = s["macs"]
        lines.append(
            f"| {s['resolution']} | {m['generator'] / 1e9:.1f} G | {m['fast_interp'] / 1e9:.1f} G | "
            f"{m['ref_interp'] / 1e9:.1f} G |"
        )
    for s in speeds:
        m, sec = s["macs"], s["seconds"]
        eff = {
            k: m[km] / sec[ks] / 1e9
            for k, km, ks in (
                ("generator", "generator", "generator"),
                ("fast", "fast_interp", "fast_interp_only"),
                ("reference", "ref_interp", "ref_interp_only"),
            )
        }
        ceiling = m["generator"] / (m["generator"] + m["fast_interp"])
        lines += [
            "",
            f"At {s['resolution']}: fast/reference reaches {s['fast_over_ref_interp'] / s['mac_bound_interp']:.0%} "
            f"of the multiply-add bound for the interpreter alone ({s['fast_over_ref_pairs'] / s['mac_bound_pairs']:.0%} "
            f"for whole pairs). Achieved rates: generator {eff['generator']:.1f}, fast interpreter "
            f"{eff['fast']:.1f}, reference interpreter {eff['reference']:.1f} G multiply-adds/s. At equal rates "
            f"the exact fast path could reach at most {ceiling:.2f}x the generator-only pairs/s "
            f"(measured {s['fast_vs_generator']:.2f}x).",
        ]
    if mem:
        ref_bytes = mem["images"] * mem["resolution"] ** 2 * mem["channels"] * 4
        lines += [
            "",
            f"Training memory ({mem['images']} annotated {mem['resolution']}x{mem['resolution']} images, "
            f"{mem['channels']} channels, 10 members, {mem['steps_per_member']} steps of 1024 pixels each, "
            "measured in a child process):",
            "",
            f"- peak RSS of the child (VmHWM): **{fmt_bytes(mem['peak_rss_bytes'])}** "
            f"({mem['peak_rss_bytes'] / 1e9:.2f} GB), of which {fmt_bytes(mem['rss_after_generator_bytes'])} "
            f"after importing torch and building the generator; its ru_maxrss "
            f"{fmt_bytes(mem.get('ru_maxrss_bytes', 0))} (Linux carries ru_maxrss over from the parent at "
            "fork + exec, so it is only an upper bound when the parent is larger)",
            f"- native-resolution float16 taps of all {mem['images']} images: {fmt_bytes(mem['feature_bytes'])}",
            f"- the original design's full-resolution concatenated volume alone: {mem['images']} x "
            f"{mem['resolution']} x {mem['resolution']} x {mem['channels']} x 4 B = **{fmt_bytes(ref_bytes)}** "
            f"({ref_bytes / mem['peak_rss_bytes']:.0f}x our whole peak)",
            f"- time: rendering features {mem['features_s']:.0f} s, training "
            f"{mem['train_s_per_step'] * 1000:.0f} ms per step of 1024 pixels per member",
        ]
    top = max(speeds, key=lambda s: s["resolution"]) if speeds else None
    lines += ["", "Goals:"]
    if top:
        lines += [
            f"- fast >= 10x reference at {top['resolution']}: **not met** for whole pairs "
            f"({top['fast_over_ref_pairs']:.1f}x; the multiply-add bound itself is {top['mac_bound_pairs']:.1f}x "
            f"because the generator's work is common to both paths); interpreter alone "
            f"{top['fast_over_ref_interp']:.1f}x of a {top['mac_bound_interp']:.1f}x bound. The gap to the bound is "
            "memory traffic the count does not show: the 2560 projected channels are upsampled and summed "
            "at full size (more than 1 GB written per 256x256 image), while the reference is one large matrix product.",
            "- fast >= 0.5x generator-only pairs/s: "
            + ", ".join(f"{s['fast_vs_generator']:.2f}x at {s['resolution']}" for s in speeds)
            + " (met at: "
            + (", ".join(str(s["resolution"]) for s in speeds if s["fast_vs_generator"] >= 0.5) or "none")
            + "; where the exact interpreter needs more multiply-adds than "
            "the generator, 0.5x is out of reach at equal arithmetic rates).",
        ]
    if mem:
        lines.append(
            f"- training peak RSS <= 2 GB: {fmt_bytes(mem['peak_rss_bytes'])} = "
            f"{mem['peak_rss_bytes'] / 1e9:.2f} GB: "
            + (
                "met"
                if mem["peak_rss_bytes"] <= 2e9
                else "met if GB means GiB, just over in decimal GB"
                if mem["peak_rss_bytes"] <= 2**31
                else "not met"
            )
        )
    return "\n".join(lines) + "\n"


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--resolutions", type=int, nargs="+", default=[64, 128, 256])
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--train-images", type=int, default=30)
    ap.add_argument("--train-res", type=int, default=256)
    ap.add_argument("--train-steps", type=int, default=20, help="steps per member in the memory run")
    ap.add_argument("--skip-memory", action="store_true")
    ap.add_argument("--skip-speed", action="store_true")
    ap.add_argument("--no-write", action="store_true", help="print only; leave RESULTS.md alone")
    ap.add_argument(
        "--reuse",
        type=Path,
        default=None,
        help="stdout of an earlier run: its JSON lines fill in the parts skipped now",
    )
    ap.add_argument("--note", default="", help="text added after the machine description, e.g. the load seen")
    ap.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    if args.child:
        print(json.dumps(train_memory_child(args.train_images, args.train_res, args.train_steps)))
        return
    speeds, mem = [], None
    if args.reuse:
        for line in args.reuse.read_text().splitlines():
            if line.startswith("{"):
                d = json.loads(line)
                if "pairs_per_s" in d and args.skip_speed:
                    speeds.append(d)
                elif "peak_rss_bytes" in d and args.skip_memory:
                    mem = d
    if not args.skip_speed:
        for res in args.resolutions:
            s = speed(res, args.rounds)
            s["argv"] = sys.argv[1:]
            print(json.dumps(s), flush=True)
            speeds.append(s)
    if not args.skip_memory:
        mem = train_memory(args.train_images, args.train_res, args.train_steps, args.threads)
        mem["argv"] = sys.argv[1:]
        print(json.dumps(mem), flush=True)
    text = report(speeds, mem, args)
    print(text)
    if not args.no_write:
        write_section(text)


if __name__ == "__main__":
    main()
