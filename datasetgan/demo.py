"""The built-in demo: serve the bundled demo run, fetch a few pairs over HTTP, say how to go on.

Steps, all on this machine (the service listens on 127.0.0.1 only, and requests bypass any proxy):

1. copy the bundled run (``demo/run`` in the repository: a small generator + interpreter trained on
   the procedural phantom by ``demo/rebuild.sh``) to ``OUT/runs/<id>``, so that annotating in the
   demo never changes the committed files;
2. start ``datasetgan serve --runs OUT/runs`` in a child process (a real uvicorn server) and wait
   until it answers;
3. ``POST /v1/models/<id>/pairs`` for N seeds (a tar in WebDataset layout) and unpack it into the
   canonical generated-data layout: ``OUT/images``, ``OUT/masks``, ``OUT/overlays``, ``OUT/records``,
   ``OUT/labels.json``, plus ``OUT/grid.png`` (images above overlays) to look at;
4. print where the files are, the annotation page's URL and curl examples; stop the server, or keep
   it up until Ctrl+C with ``keep_serving``.
"""

from __future__ import annotations

import http.client
import io
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tarfile
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Callable

import numpy as np
from PIL import Image

import datasetgan

from .atomic import atomic_write_bytes, atomic_write_text
from .errors import DatasetganError
from .imagegrid import make_grid
from .png import png_bytes

DEMO_ID = "phantom-demo"
RUN_FILES = ("generator.safetensors", "generator.json", "interpreter.safetensors", "interpreter.json")
STARTUP_TIMEOUT_S = 180.0
REQUEST_TIMEOUT_S = 900.0
LISTENING = re.compile(r"Uvicorn running on (http://[^\s]+)")


class DemoError(DatasetganError, RuntimeError):
    """Something the user can act on (missing run, busy port, server that did not start)."""


def bundled_run() -> Path:
    """``demo/run`` next to the package in a clone (an editable install or PYTHONPATH)."""
    return Path(datasetgan.__file__).resolve().parents[1] / "demo" / "run"


def check_run(run_dir: Path) -> None:
    missing = [f for f in RUN_FILES if not (run_dir / f).is_file()]
    if missing:
        hint = (
            "rebuild it with demo/rebuild.sh, or use a clone of the repository (pip install -e .)"
            if run_dir == bundled_run()
            else "train and interpret it first, or leave --run out"
        )
        raise DemoError(f"{run_dir} is not a usable run folder: missing {', '.join(missing)}; {hint}")


def prepare_run(src: Path, runs_dir: Path, run_id: str = DEMO_ID) -> Path:
    """A working copy of the run under ``runs_dir``; an existing copy of the same weights is kept
    as it is (with any annotations made in it), a copy of other weights is replaced."""
    dst = runs_dir / run_id
    same = dst.is_dir() and all(
        (dst / f).is_file() and (dst / f).read_bytes() == (src / f).read_bytes()
        for f in ("generator.json", "interpreter.json")
    )
    if not same:
        tmp = runs_dir / f".{run_id}.copying"
        shutil.rmtree(tmp, ignore_errors=True)
        shutil.copytree(src, tmp)
        shutil.rmtree(dst, ignore_errors=True)
        os.replace(tmp, dst)  # the service never sees a half-copied run
    return dst


# ---------------------------------------------------------------------------------------------
# The server process


class Server:
    """``datasetgan serve`` in a child process; its output goes to a log file."""

    def __init__(self, runs_dir: Path, port: int, log_path: Path):
        self.log_path = log_path
        env = dict(os.environ)
        env.pop("DATASETGAN_API_KEY", None)  # the demo server is loopback-only and open
        # the child imports the same datasetgan as this process, installed or not
        root = str(Path(datasetgan.__file__).resolve().parents[1])
        env["PYTHONPATH"] = os.pathsep.join([root] + [p for p in env.get("PYTHONPATH", "").split(os.pathsep) if p])
        env["PYTHONUNBUFFERED"] = "1"
        # The demo's 32x32 model gains nothing from the fused C++ operations, whose first use compiles
        # them (minutes on a small machine); the pure PyTorch reference starts at once. An explicit
        # STYLEGAN2_OPS_BACKEND still wins.
        env.setdefault("STYLEGAN2_OPS_BACKEND", "ref")
        cmd = [
            sys.executable,
            "-m",
            "datasetgan",
            "serve",
            "--runs",
            str(runs_dir),
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
            "--api-key-env",
            "DATASETGAN_DEMO_NO_KEY",
            "--log-level",
            "info",
        ]
        self.cmd = cmd
        log_path.parent.mkdir(parents=True, exist_ok=True)
        self._log = open(log_path, "w", encoding="utf-8")
        self.proc = subprocess.Popen(
            cmd,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            env=env,
            text=True,
            bufsize=1,
            stdin=subprocess.DEVNULL,
        )
        self.url: str | None = None
        self._found = threading.Event()
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        for line in self.proc.stdout:
            self._log.write(line)
            self._log.flush()
            m = LISTENING.search(line)
            if m and self.url is None:
                self.url = m.group(1).rstrip("/")
                self._found.set()
        self._found.set()

    def log_tail(self, n: int = 15) -> str:
        try:
            return "".join(self.log_path.read_text(errors="replace").splitlines(True)[-n:])
        except OSError:
            return ""

    def wait_ready(self, timeout: float = STARTUP_TIMEOUT_S) -> str:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self._found.wait(0.2) and self.url is None:
                break  # output ended without the listening line: the process exited
            if self.url is not None:
                try:
                    if http_json(f"{self.url}/healthz", timeout=5) is not None:
                        return self.url
                except (urllib.error.URLError, OSError, ValueError):
                    pass
                time.sleep(0.2)
            if self.proc.poll() is not None:
                break
        self.stop()
        raise DemoError(
            f"the service did not start ({' '.join(self.cmd)}); its log ({self.log_path}) ends:\n" + self.log_tail()
        )

    def stop(self, timeout: float = 15.0) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGINT)  # uvicorn's graceful shutdown
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self._reader.join(timeout=5)
        self._log.close()


# ---------------------------------------------------------------------------------------------
# HTTP on loopback (no proxies, standard library only)

_opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))


def http_json(url: str, body: dict | None = None, timeout: float = 30.0):
    data = None if body is None else json.dumps(body).encode()
    req = urllib.request.Request(url, data=data, headers={"Content-Type": "application/json"} if data else {})
    with _opener.open(req, timeout=timeout) as r:
        return json.loads(r.read())


def fetch_pairs(url: str, model_id: str, seeds: list[int], include=("image", "mask", "overlay")) -> dict[int, dict]:
    """{seed: {"image.png": bytes, "mask.png": bytes, ..., "json": bytes}} from a streamed tar."""
    body = json.dumps({"seeds": seeds, "include": list(include), "format": "tar"}).encode()
    req = urllib.request.Request(
        f"{url}/v1/models/{model_id}/pairs", data=body, headers={"Content-Type": "application/json"}
    )
    pairs: dict[int, dict] = {}
    try:
        with _opener.open(req, timeout=REQUEST_TIMEOUT_S) as r, tarfile.open(fileobj=r, mode="r|") as tar:
            for member in tar:
                seed, _, key = member.name.partition(".")
                f = tar.extractfile(member)
                if f is None or not seed.isdigit():
                    continue
                pairs.setdefault(int(seed), {})[key] = f.read()
    except urllib.error.HTTPError as e:
        raise DemoError(
            f"POST /v1/models/{model_id}/pairs failed: {e.code} {e.read().decode(errors='replace')}"
        ) from None
    except (OSError, tarfile.TarError, http.client.HTTPException) as e:
        raise DemoError(f"POST /v1/models/{model_id}/pairs broke off ({e.__class__.__name__}: {e})") from None
    return pairs


# ---------------------------------------------------------------------------------------------
# Output


def write_pairs(out: Path, pairs: dict[int, dict], classes: list[dict]) -> list[Path]:
    """The canonical generated-data layout (images/, masks/, overlays/, records/, labels.json)."""
    folders = {"image.png": "images", "mask.png": "masks", "overlay.png": "overlays", "uncertainty.png": "uncertainty"}
    written = []
    for seed, parts in sorted(pairs.items()):
        for key, data in parts.items():
            if key in folders:
                path = out / folders[key] / f"{seed:08d}.png"
            elif key == "json":
                path = out / "records" / f"{seed:08d}.json"
            else:
                continue
            atomic_write_bytes(path, data)
            written.append(path)
    atomic_write_text(out / "labels.json", json.dumps({"classes": classes}, indent=1))
    return written


def contact_sheet(pairs: dict[int, dict], columns: int = 8, scale: int = 2) -> bytes:
    """A PNG with each seed's image above its overlay, ``columns`` seeds a row."""
    tiles = []
    for _, parts in sorted(pairs.items()):
        img = np.asarray(Image.open(io.BytesIO(parts["image.png"])).convert("RGB"))
        ovl = np.asarray(Image.open(io.BytesIO(parts["overlay.png"])).convert("RGB"))
        tiles.append(np.concatenate([img, ovl], axis=0))
    grid = Image.fromarray(make_grid(np.stack(tiles), cols=min(columns, len(tiles)), pad=2))
    return png_bytes(np.asarray(grid.resize((grid.width * scale, grid.height * scale), Image.NEAREST)))


def instructions(url: str, model_id: str, out: Path, n: int, info: dict) -> str:
    classes = ", ".join(f"{c['id']} {c['name']}" for c in info["classes"])
    pairs = f"{url}/v1/models/{model_id}/pairs"
    return f"""
Demo model {model_id}: {info["resolution"]}x{info["resolution"]}, {info["channels"]} channel(s), classes {classes}
Wrote {n} image + mask pairs (seeds 0..{n - 1}) to {out}/
  images/     generated images                      e.g. {out}/images/00000000.png
  masks/      label maps (pixel value = class id)   e.g. {out}/masks/00000000.png
  overlays/   masks drawn over the images           e.g. {out}/overlays/00000000.png
  records/    per-pair JSON (seed, model hashes, uncertainty score)
  labels.json the classes; grid.png shows every image above its overlay

Annotation page of the demo run: {url}/annotate/{model_id}/
API documentation (OpenAPI):     {url}/docs

Try the API with curl:
  curl {url}/v1/models
  curl -X POST {pairs} -H 'Content-Type: application/json' \\
       -d '{{"n": 16, "seed_start": 100, "include": ["image", "mask", "overlay"]}}' -o pairs.tar
  curl -X POST {pairs} -H 'Content-Type: application/json' \\
       -d '{{"seeds": [7, 42], "format": "ndjson", "drop_uncertain": 0.0}}'
  curl -X POST {url}/v1/models/{model_id}/jobs -H 'Content-Type: application/json' -d '{{"n": 1000}}'
"""


def _interrupt(signum, frame):
    raise KeyboardInterrupt


def interruptible() -> Callable[[], None]:
    """Make SIGINT (Ctrl+C) and SIGTERM raise KeyboardInterrupt; returns a function restoring the old handlers.

    A process started in the background by a non-interactive shell inherits SIGINT as ignored, and
    Python then never raises KeyboardInterrupt: the demo would keep serving through Ctrl+C or kill -INT.
    Signal handlers can only be set from the main thread; elsewhere this does nothing."""
    if threading.current_thread() is not threading.main_thread():
        return lambda: None
    previous = {s: signal.signal(s, _interrupt) for s in (signal.SIGINT, signal.SIGTERM)}

    def restore() -> None:
        for s, h in previous.items():
            signal.signal(s, h)

    return restore


def run_demo(
    out: Path,
    run_dir: Path | None = None,
    port: int = 0,
    n: int = 8,
    keep_serving: bool = False,
    echo: Callable[[str], None] = print,
) -> dict[int, dict]:
    out = Path(out)
    src = Path(run_dir) if run_dir is not None else bundled_run()
    check_run(src)
    if out.exists() and not out.is_dir():
        raise DemoError(f"--out {out} exists and is not a folder")
    runs_dir = out / "runs"
    prepare_run(src, runs_dir)
    echo(f"Starting the service on 127.0.0.1 (datasetgan serve --runs {runs_dir}) ...")
    server = Server(runs_dir, port, out / "server.log")
    try:
        url = server.wait_ready()
        try:
            info = http_json(f"{url}/v1/models/{DEMO_ID}")
        except urllib.error.HTTPError as e:
            raise DemoError(
                f"the service does not list the demo run: {e.code} {e.read().decode(errors='replace')}"
            ) from None
        echo(f"Service up at {url}; requesting {n} pairs ...")
        t0 = time.monotonic()
        try:
            pairs = fetch_pairs(url, DEMO_ID, list(range(n)))
        except DemoError as e:
            raise DemoError(f"{e}; the service log ({server.log_path}) ends:\n{server.log_tail()}") from None
        if sorted(pairs) != list(range(n)):
            raise DemoError(f"asked for seeds 0..{n - 1} but received {sorted(pairs)}; see {server.log_path}")
        write_pairs(out, pairs, info["classes"])
        atomic_write_bytes(out / "grid.png", contact_sheet(pairs))
        echo(f"Received {n} pairs in {time.monotonic() - t0:.1f} s.")
        echo(instructions(url, DEMO_ID, out, n, info))
        if keep_serving:
            echo(f"Serving at {url} until Ctrl+C (server log: {server.log_path}) ...")
            restore = interruptible()
            try:
                while server.proc.poll() is None:
                    time.sleep(0.5)
                echo(f"The service stopped by itself; see {server.log_path}")
            except KeyboardInterrupt:
                echo("\nStopping the service ...")
            finally:
                restore()
    finally:
        server.stop()
    if not keep_serving:
        echo(
            "The service has been stopped; run `datasetgan demo --keep-serving` to keep it up and try the "
            "curl commands and the annotation page."
        )
    return pairs
