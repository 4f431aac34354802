"""``datasetgan demo`` end to end: a real server process, pairs over HTTP, files and instructions.

Runs the bundled demo run (demo/run) when it is in the checkout, otherwise a tiny run built here.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from datasetgan.data import load_image_folder, read_labels
from datasetgan.demo import DEMO_ID, RUN_FILES, bundled_run

REPO = Path(__file__).resolve().parents[1]
NO_PROXY = urllib.request.build_opener(urllib.request.ProxyHandler({}))


@pytest.fixture(scope="module")
def demo_run(tmp_path_factory):
    """(run folder, extra CLI args): the bundled run if present, else a tiny one."""
    if all((bundled_run() / f).is_file() for f in RUN_FILES):
        return bundled_run(), []
    print("demo/run is absent: testing the demo on a tiny run built here")
    from conftest import build_tiny_run

    run = build_tiny_run(tmp_path_factory.mktemp("demo_run") / "run")
    return run, ["--run", str(run)]


def _cli(args, **kw):
    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"}
    return subprocess.Popen(
        [sys.executable, "-m", "datasetgan", "demo", *args],
        cwd=kw.pop("cwd"),
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        **kw,
    )


def test_demo_writes_pairs_and_prints_instructions(demo_run, tmp_path, monkeypatch):
    run, extra = demo_run
    proc = _cli(["--out", "out", "--n", "3", *extra], cwd=tmp_path)
    output, _ = proc.communicate(timeout=600)
    assert proc.returncode == 0, output
    out = tmp_path / "out"
    classes = read_labels(out / "labels.json")
    res = None
    for seed in range(3):
        image = np.asarray(Image.open(out / "images" / f"{seed:08d}.png"))
        mask = np.asarray(Image.open(out / "masks" / f"{seed:08d}.png"))
        overlay = Image.open(out / "overlays" / f"{seed:08d}.png")
        res = res or image.shape[0]
        assert image.shape[:2] == mask.shape == (res, res) and overlay.size == (res, res)
        assert overlay.mode == "RGB"
        assert mask.dtype == np.uint8 and int(mask.max()) < len(classes)
        record = json.loads((out / "records" / f"{seed:08d}.json").read_text())
        assert record["seed"] == seed
    assert not (out / "images" / "00000003.png").exists()
    # the written folder is a canonical data folder
    ds = load_image_folder(out, res, cache_dir=False)
    assert len(ds) == 3 and ds.masks is not None
    # the pairs are the run's own: same bytes as the pair factory makes in this process (with the
    # reference operations, which the demo's server uses)
    from datasetgan.encoding import encode_pair
    from datasetgan.factory import PairFactory

    monkeypatch.setenv("STYLEGAN2_OPS_BACKEND", "ref")
    factory = PairFactory(out / "runs" / DEMO_ID)
    pair = next(iter(factory.pairs([1])))
    files = encode_pair(pair, factory.classes)
    assert (out / "images" / "00000001.png").read_bytes() == files["image.png"]
    assert (out / "masks" / "00000001.png").read_bytes() == files["mask.png"]
    # the committed run is never modified: the demo works on a copy
    assert (out / "runs" / DEMO_ID / "generator.safetensors").read_bytes() == (
        run / "generator.safetensors"
    ).read_bytes()
    assert Image.open(out / "grid.png").size[0] > res
    # instructions: where the files are, the annotation page, curl examples
    assert f"{out}/" in output or "out/" in output
    assert re.search(r"http://127\.0\.0\.1:\d+/annotate/" + DEMO_ID + "/", output)
    assert re.search(r"curl .*http://127\.0\.0\.1:\d+/v1/models", output)
    assert f"/v1/models/{DEMO_ID}/pairs" in output
    assert "Traceback" not in output


def test_keep_serving_until_interrupted(demo_run, tmp_path):
    """With --keep-serving the printed URLs answer, and Ctrl+C (SIGINT) stops server and demo, even when
    the demo inherited SIGINT as ignored (a background job of a non-interactive shell, as CI runs it)."""
    run, extra = demo_run
    proc = _cli(
        ["--out", "out", "--n", "1", "--keep-serving", *extra],
        cwd=tmp_path,
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_IGN),
    )
    lines = []
    try:
        url = None
        deadline = time.monotonic() + 600
        while time.monotonic() < deadline:
            line = proc.stdout.readline()
            if not line:
                break
            lines.append(line)
            m = re.search(r"Serving at (http://127\.0\.0\.1:\d+) until Ctrl\+C", line)
            if m:
                url = m.group(1)
                break
        assert url, "".join(lines)
        models = json.loads(NO_PROXY.open(f"{url}/v1/models", timeout=30).read())
        assert [m["id"] for m in models["models"]] == [DEMO_ID]
        page = NO_PROXY.open(f"{url}/annotate/{DEMO_ID}/", timeout=30)
        assert page.status == 200 and "text/html" in page.headers["content-type"]
        # the printed ndjson example works as printed
        req = urllib.request.Request(
            f"{url}/v1/models/{DEMO_ID}/pairs",
            method="POST",
            data=json.dumps({"seeds": [7, 42], "format": "ndjson"}).encode(),
            headers={"Content-Type": "application/json"},
        )
        rows = [json.loads(x) for x in NO_PROXY.open(req, timeout=300).read().splitlines()]
        assert [r["seed"] for r in rows] == [7, 42] and "mask.png" in rows[0]
    finally:
        proc.send_signal(signal.SIGINT)
        rest, _ = proc.communicate(timeout=60)
    lines.append(rest)
    assert proc.returncode in (0, 1, 130), "".join(lines)
    assert "Traceback" not in "".join(lines)
    # the server is gone
    with pytest.raises(OSError):
        NO_PROXY.open(f"{url}/healthz", timeout=5)


def test_missing_run_is_a_clear_error(tmp_path):
    proc = _cli(["--run", str(tmp_path / "nothing"), "--out", "o"], cwd=tmp_path)
    output, _ = proc.communicate(timeout=120)
    assert proc.returncode != 0
    assert "missing generator.safetensors" in output and "Traceback" not in output
