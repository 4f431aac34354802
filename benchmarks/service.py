"""Benchmark of the data-factory service: a real `datasetgan serve` process on 127.0.0.1.

Measures time to first pair, pairs/s for 1 and 4 concurrent clients, and the server's memory while
one client streams 10,000 pairs (RSS read from /proc/<pid>/status: VmRSS after 1k and 10k pairs,
VmHWM = peak). Writes its section of benchmarks/RESULTS.md.

    PYTHONPATH=$PWD python benchmarks/service.py            # builds a tiny 16x16 run
    PYTHONPATH=$PWD python benchmarks/service.py --runs RUNS --model ID --total 10000
"""

from __future__ import annotations

import argparse
import importlib.util
import os
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import httpx
import torch
from results import write_section  # benchmarks/results.py, next to this script

ROOT = Path(__file__).resolve().parents[1]
SECTION = "## Service"


def tiny_runs(tmp: Path) -> Path:
    """A tiny run built by the test suite's recipe (tests/conftest.py), loaded from its file."""
    spec = importlib.util.spec_from_file_location("service_bench_conftest", ROOT / "tests" / "conftest.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    mod.build_tiny_run(tmp / "runs" / "tiny")
    return tmp / "runs"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def rss_kib(pid: int) -> dict[str, int]:
    out = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(("VmRSS:", "VmHWM:")):
            key, value = line.split(":")
            out[key] = int(value.split()[0])
    return out


def stream(base: str, model: str, n: int, seed_start: int, fmt: str = "tar", on_line=None) -> tuple[float, float, int]:
    """(seconds to the first complete pair, total seconds, bytes) of one streamed request."""
    body = {"n": n, "seed_start": seed_start, "format": fmt, "include": ["image", "mask", "overlay", "uncertainty"]}
    t0 = time.perf_counter()
    first, size, pending = None, 0, b""
    with httpx.Client(timeout=600) as c, c.stream("POST", f"{base}/v1/models/{model}/pairs", json=body) as r:
        r.raise_for_status()
        for chunk in r.iter_raw():
            size += len(chunk)
            if fmt == "ndjson":
                pending += chunk
                lines = pending.count(b"\n")
                if lines:
                    if first is None:
                        first = time.perf_counter() - t0
                    if on_line:
                        on_line(lines)
                    pending = pending[pending.rfind(b"\n") + 1 :]
            elif first is None and size >= 512 * 8:  # header + data of the first members
                first = time.perf_counter() - t0
    return first, time.perf_counter() - t0, size


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--runs", type=Path, help="folder of runs (default: build a tiny 16x16 run)")
    ap.add_argument("--model", default="tiny")
    ap.add_argument("--n", type=int, default=256, help="pairs per request for the throughput figures")
    ap.add_argument("--total", type=int, default=10_000, help="pairs streamed for the memory figure")
    ap.add_argument("--server-threads", type=int, default=1, help="torch threads in the server")
    ap.add_argument("--no-write", action="store_true", help="print only, leave RESULTS.md alone")
    args = ap.parse_args()
    torch.set_num_threads(1)

    tmp = Path(tempfile.mkdtemp(prefix="service_bench_"))
    runs = args.runs or tiny_runs(tmp)
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    env = {**{k: v for k, v in os.environ.items() if k != "DATASETGAN_API_KEY"}, "PYTHONPATH": str(ROOT)}
    cmd = [
        sys.executable,
        "-m",
        "datasetgan",
        "serve",
        "--runs",
        str(runs),
        "--jobs-dir",
        str(tmp / "jobs"),
        "--port",
        str(port),
        "--max-n",
        str(max(args.total, args.n)),
        "--max-concurrent",
        "4",
        "--threads",
        str(args.server_threads),
        "--log-level",
        "warning",
    ]
    server = subprocess.Popen(cmd, env=env)
    try:
        while True:
            try:
                if httpx.get(f"{base}/healthz", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                time.sleep(0.2)
            if server.poll() is not None:
                raise SystemExit("server failed to start")
        model = httpx.get(f"{base}/v1/models/{args.model}").json()
        cold_first, _, _ = stream(base, args.model, 1, 0, "ndjson")  # loads the model
        firsts = [stream(base, args.model, args.n, 10_000 * i, "ndjson")[0] for i in range(1, 4)]
        ttfp = statistics.median(firsts)

        one = [stream(base, args.model, args.n, 100_000 + args.n * i) for i in range(3)]
        rate1 = 3 * args.n / sum(t for _, t, _ in one)

        results = [None] * 4

        def client(i):
            results[i] = stream(base, args.model, args.n, 200_000 + args.n * i)

        t0 = time.perf_counter()
        threads = [threading.Thread(target=client, args=(i,)) for i in range(4)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        rate4 = 4 * args.n / (time.perf_counter() - t0)

        before = rss_kib(server.pid)["VmRSS"]
        seen, marks = [0], {}

        def on_line(k):
            seen[0] += k
            for mark in (1000, args.total):
                if seen[0] >= mark and mark not in marks:
                    marks[mark] = rss_kib(server.pid)["VmRSS"]

        peak = [0]
        stop = threading.Event()

        def sample():
            while not stop.is_set():
                peak[0] = max(peak[0], rss_kib(server.pid)["VmRSS"])
                time.sleep(0.1)

        sampler = threading.Thread(target=sample)
        sampler.start()
        _, t_total, size = stream(base, args.model, args.total, 1_000_000, "ndjson", on_line)
        stop.set()
        sampler.join()
        hwm = rss_kib(server.pid)["VmHWM"]
    finally:
        server.send_signal(signal.SIGTERM)
        server.wait(30)

    def mib(k):
        return f"{k / 1024:.0f} MiB"

    res = model["resolution"]
    lines = [
        SECTION,
        "",
        f"`PYTHONPATH=$PWD python benchmarks/service.py{' --runs ' + str(args.runs) if args.runs else ''}` "
        f"({time.strftime('%Y-%m-%d')}; model {args.model}: {res}x{res}, {model['channels']} channel(s), "
        f"{len(model['classes'])} classes; server `--threads {args.server_threads} --max-concurrent 4`, "
        f"stylegan2_ops backend {os.environ.get('STYLEGAN2_OPS_BACKEND', 'auto')}, CPU, "
        f"{os.cpu_count()} cores shared with other work, load average {os.getloadavg()[0]:.1f}). "
        "Every pair carries image, mask, overlay and uncertainty PNGs and its JSON record.",
        "",
        "| figure | value |",
        "|---|---|",
        f"| time to first pair, cold (model load + 1 pair) | {cold_first * 1000:.0f} ms |",
        f"| time to first pair, warm (median of 3, n = {args.n}) | {ttfp * 1000:.0f} ms |",
        f"| pairs/s, 1 client (3 x {args.n} pairs, tar) | {rate1:.1f} |",
        f"| pairs/s, 4 concurrent clients (4 x {args.n} pairs, total) | {rate4:.1f} |",
        f"| {args.total} pairs streamed as NDJSON in one request | {t_total:.1f} s, {size / 2**20:.1f} MiB, "
        f"{args.total / t_total:.1f} pairs/s |",
        f"| server RSS before the stream | {mib(before)} |",
        f"| server RSS after 1,000 pairs | {mib(marks.get(1000, 0))} |",
        f"| server RSS after {args.total:,} pairs | {mib(marks.get(args.total, 0))} |",
        f"| server peak RSS while streaming (sampled every 0.1 s) | {mib(peak[0])} |",
        f"| server VmHWM (lifetime peak, includes the 4-client phase) | {mib(hwm)} |",
        "",
    ]
    text = "\n".join(lines)
    print(text)
    if not args.no_write:
        write_section(text)


if __name__ == "__main__":
    main()
