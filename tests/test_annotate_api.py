"""The annotation API: listing, image/mask round trips, validation, path safety, crash safety; and the CLI."""

from __future__ import annotations

import http.client
import io
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
import zlib
from pathlib import Path

import numpy as np
import pytest
import torch
from click.testing import CliRunner
from fastapi import FastAPI
from fastapi.testclient import TestClient
from PIL import Image, PngImagePlugin

from datasetgan.annotate.api import create_app
from datasetgan.annotation_sources import diverse_seeds
from datasetgan.annotations import AnnotationSet, render_items
from datasetgan.checkpoint import save_generator
from datasetgan.cli.annotate import command as annotate_command
from datasetgan.data import default_classes, labels_to_json
from datasetgan.networks import Generator, GeneratorConfig
from datasetgan.png import png_bytes
from datasetgan.runfolder import RunFolder
from datasetgan.seeds import SeedError, parse_seeds, random_seeds

REPO = Path(__file__).resolve().parents[1]
RES, SEEDS, N_CLASSES = 32, [3, 7, 11], 4
SENTINEL = b"SENTINEL-do-not-serve-7d1c"


def tiny_generator() -> Generator:
    torch.manual_seed(0)
    return Generator(
        GeneratorConfig(
            resolution=RES, img_channels=1, z_dim=32, w_dim=32, mapping_layers=2, channel_base=512, channel_max=32
        )
    )


@pytest.fixture(scope="module")
def template_run(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("template") / "run"
    G = tiny_generator()
    save_generator(RunFolder(root).generator, G)
    render_items(AnnotationSet(RunFolder(root).annotations), G, SEEDS, classes=default_classes(N_CLASSES))
    return root


@pytest.fixture
def run(template_run, tmp_path) -> Path:
    root = tmp_path / "run"
    shutil.copytree(template_run, root)
    return root


@pytest.fixture
def client(run) -> TestClient:
    return TestClient(create_app(run))


def snapshot(folder: Path) -> dict:
    """Every file under folder with its bytes and modification time."""
    return {
        str(p.relative_to(folder)): (p.read_bytes(), p.stat().st_mtime_ns)
        for p in sorted(folder.rglob("*"))
        if p.is_file()
    }


def random_mask(seed: int) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, N_CLASSES, (RES, RES), dtype=np.uint8)


def encode(img: Image.Image, fmt="PNG", **kw) -> bytes:
    buf = io.BytesIO()
    img.save(buf, format=fmt, **kw)
    return buf.getvalue()


def png_with_size(w: int, h: int) -> bytes:
    """A PNG whose header declares w x h (its data is tiny and invalid): a decompression-bomb stand-in."""

    def chunk(kind, data):
        return len(data).to_bytes(4, "big") + kind + data + zlib.crc32(kind + data).to_bytes(4, "big")

    ihdr = w.to_bytes(4, "big") + h.to_bytes(4, "big") + bytes([8, 0, 0, 0, 0])
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\0" * 10)) + chunk(b"IEND", b"")


# ---------------------------------------------------------------------------------------------
# Listing and round trips


def test_items_labels_and_image(client, run):
    r = client.get("/api/items")
    assert r.status_code == 200
    doc = r.json()
    assert [it["id"] for it in doc["items"]] == [f"seed_{s:08d}" for s in SEEDS]
    assert [it["seed"] for it in doc["items"]] == SEEDS
    assert all(it["state"] == "todo" and not it["has_mask"] for it in doc["items"])
    assert (doc["done"], doc["total"], doc["resolution"], doc["channels"]) == (0, 3, RES, 1)

    labels = client.get("/api/labels").json()["classes"]
    assert [c["id"] for c in labels] == list(range(N_CLASSES))

    aset = AnnotationSet(RunFolder(run).annotations)
    img = client.get("/api/items/seed_00000007/image")
    assert img.status_code == 200 and img.headers["content-type"] == "image/png"
    np.testing.assert_array_equal(np.asarray(Image.open(io.BytesIO(img.content))), aset.image("seed_00000007"))

    assert client.get("/api/items/seed_00000007/mask").status_code == 404  # nothing saved yet
    assert client.get("/api/items/seed_00000099/image").status_code == 404
    assert client.get("/api/items/seed_00000099").status_code == 404


def test_put_mask_round_trip_history_and_training_set(client, run):
    aset = AnnotationSet(RunFolder(run).annotations)
    first, second = random_mask(1), random_mask(2)
    r = client.put("/api/items/seed_00000003/mask", content=png_bytes(first), headers={"content-type": "image/png"})
    assert r.status_code == 200, r.text
    assert (r.json()["state"], r.json()["source"]) == ("done", "human")

    got = client.get("/api/items/seed_00000003/mask")
    np.testing.assert_array_equal(np.asarray(Image.open(io.BytesIO(got.content))), first)
    raw = client.get("/api/items/seed_00000003/mask?format=raw").content
    np.testing.assert_array_equal(np.frombuffer(raw, np.uint8).reshape(RES, RES), first)

    # a second save keeps the first in history/
    assert client.put("/api/items/seed_00000003/mask", content=png_bytes(second)).status_code == 200
    history = list((aset.dir / "history").glob("seed_00000003.*.mask.png"))
    assert len(history) == 1
    np.testing.assert_array_equal(np.asarray(Image.open(history[0])), first)
    np.testing.assert_array_equal(aset.mask("seed_00000003"), second)

    # an autosaved draft is stored but not offered for training
    r = client.put("/api/items/seed_00000007/mask?state=todo", content=png_bytes(first))
    assert r.status_code == 200 and r.json()["state"] == "draft"
    listing = client.get("/api/items").json()
    assert listing["done"] == 1 and [it["state"] for it in listing["items"]] == ["done", "draft", "todo"]

    # what the interpreter trains from: AnnotationSet.annotated(), with masks and seeds as saved
    done = aset.annotated()
    assert [(rec.id, rec.seed, rec.resolution) for rec in done] == [("seed_00000003", 3, RES)]
    np.testing.assert_array_equal(aset.mask(done[0].id), second)


def test_palette_png_accepted(client, run):
    mask = random_mask(3)
    im = Image.fromarray(mask, mode="L").convert("P")
    im.putpalette([v for c in range(256) for v in (c, 255 - c, 0)])
    assert client.put("/api/items/seed_00000011/mask", content=encode(im)).status_code == 200
    np.testing.assert_array_equal(AnnotationSet(RunFolder(run).annotations).mask("seed_00000011"), mask)


# ---------------------------------------------------------------------------------------------
# Bad input: 413/422 with a message, and nothing on disk changes


def bad_bodies() -> dict[str, bytes]:
    good = png_bytes(random_mask(4))
    wrong_class = random_mask(5)
    wrong_class[3, 4] = N_CLASSES
    return {
        "empty": b"",
        "not a png": b"hello, this is not an image",
        "truncated png": good[: len(good) // 2],
        "jpeg": encode(Image.fromarray(random_mask(6)), "JPEG"),
        "rgb png": encode(Image.fromarray(np.stack([random_mask(7)] * 3, -1))),
        "16-bit png": encode(Image.fromarray(random_mask(8).astype(np.uint16)).convert("I;16")),
        "too small": png_bytes(random_mask(9)[:16, :16]),
        "not square": png_bytes(np.zeros((RES, RES + 1), np.uint8)),
        "unknown class": png_bytes(wrong_class),
        "class 255": png_bytes(np.full((RES, RES), 255, np.uint8)),
        "huge declared size": png_with_size(100_000, 100_000),
        "too many bytes": good + b"\0" * (4 * RES * RES + 200_000),
    }


@pytest.mark.parametrize("name", list(bad_bodies()))
def test_bad_masks_refused_without_touching_files(client, run, name):
    # a good mask first, so there is something that must survive
    assert client.put("/api/items/seed_00000003/mask", content=png_bytes(random_mask(10))).status_code == 200
    before = snapshot(run)
    r = client.put("/api/items/seed_00000003/mask", content=bad_bodies()[name])
    assert r.status_code in (413, 422), (name, r.status_code, r.text)
    assert isinstance(r.json()["detail"], str) and len(r.json()["detail"]) > 10
    assert snapshot(run) == before


def test_bad_state_and_format_refused(client, run):
    before = snapshot(run)
    r = client.put("/api/items/seed_00000003/mask?state=pre-annotated", content=png_bytes(random_mask(1)))
    assert r.status_code == 422 and "state" in r.json()["detail"]
    assert client.get("/api/items/seed_00000003/mask?format=exe").status_code == 422
    assert client.put("/api/items/seed_00000099/mask", content=png_bytes(random_mask(1))).status_code == 404
    assert snapshot(run) == before


# ---------------------------------------------------------------------------------------------
# Path safety against a real server (raw request targets: no client-side URL normalisation)


@pytest.fixture
def live_server(run):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    import uvicorn

    server = uvicorn.Server(uvicorn.Config(create_app(run), host="127.0.0.1", port=port, log_level="error"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.time() + 20
    while not server.started:
        assert time.time() < deadline and thread.is_alive(), "server did not start"
        time.sleep(0.05)
    yield port
    server.should_exit = True
    thread.join(10)


def traversal_ids(outside: Path) -> list[str]:
    abs_path = str(outside)
    return [
        "..",
        "../secret.png",
        "../../secret.png",
        "..%2fsecret.png",
        "..%2Fsecret.png",
        "%2e%2e%2fsecret.png",
        "%2e%2e%2f%2e%2e%2fsecret.png",
        "%252e%252e%252fsecret.png",
        "..%252fsecret.png",
        "%2e%2e",
        "%252e%252e",
        "..%5csecret.png",
        "..\\secret.png",
        abs_path,
        abs_path.replace("/", "%2f"),
        abs_path.replace("/", "%252f"),
        "%2fetc%2fpasswd",
        "/etc/passwd",
        "seed_00000003/../../secret.png",
        "seed_00000003%2f..%2f..%2fsecret.png",
        "seed_00000003%00",
        "seed_00000003%0a",
        "seed_00000003.json",
        "seed_000000030",
        "seed_0000003",
        "SEED_00000003",
        "seed_%d9%a0%d9%a0%d9%a0%d9%a0%d9%a0%d9%a0%d9%a0%d9%a3",
        "history",
        "labels.json",
        "%2e%2e%2f%2e%2e%2fgenerator.json",
        "~",
        "%7e%2fsecret.png",
    ]


def test_traversal_refused_without_touching_files(run, live_server, tmp_path):
    secret = PngImagePlugin.PngInfo()
    secret.add_text("note", SENTINEL.decode())
    sentinel_png = encode(Image.fromarray(np.zeros((RES, RES), np.uint8)), pnginfo=secret)
    (run / "secret.png").write_bytes(sentinel_png)  # next to the annotation set
    outside = tmp_path / "outside.png"  # outside the run folder
    outside.write_bytes(sentinel_png)
    (run / "seed_00000003.mask.png").write_bytes(sentinel_png)  # a valid name in the wrong folder
    watched = tmp_path
    before = snapshot(watched)
    body = png_bytes(random_mask(11))
    conn = http.client.HTTPConnection("127.0.0.1", live_server, timeout=10)
    seen = []
    for ident in traversal_ids(outside):
        for method, suffix in (("GET", "/image"), ("GET", "/mask"), ("PUT", "/mask"), ("GET", "")):
            target = f"/api/items/{ident}{suffix}"
            conn.request(method, target, body=body if method == "PUT" else None)
            resp = conn.getresponse()
            data = resp.read()
            seen.append((method, target, resp.status))
            assert resp.status in (400, 404, 405, 422), (method, target, resp.status, data[:200])
            assert SENTINEL not in data, (method, target)
    # raw paths with dot segments outside /api/items as well
    for target in (
        "/static/../api/items",
        "/static/../../secret.png",
        "/static/%2e%2e/%2e%2e/secret.png",
        "/static/..%2f..%2fsecret.png",
        "/../secret.png",
        "/%2e%2e/secret.png",
    ):
        conn.request("GET", target)
        resp = conn.getresponse()
        data = resp.read()
        assert SENTINEL not in data and resp.status != 500, (target, resp.status)
    conn.close()
    assert snapshot(watched) == before
    assert len(seen) > 100


# ---------------------------------------------------------------------------------------------
# Crash safety


KILL_SCRIPT = r"""
import os, sys, time
import numpy as np
import datasetgan.atomic as atomic
from datasetgan.annotations import AnnotationSet

folder, item, ready = sys.argv[1], sys.argv[2], sys.argv[3]
real_fsync = os.fsync

def stalled_fsync(fd):
    # Stall while the new mask's temporary file is written but not yet renamed over the old one.
    name = os.readlink(f"/proc/self/fd/{fd}")
    if os.path.basename(name).startswith(f".{item}.mask.png.") and "/history/" not in name:
        real_fsync(fd)
        open(ready, "w").write(name)
        time.sleep(60)
    real_fsync(fd)

atomic.os.fsync = stalled_fsync
mask = np.full((32, 32), 3, np.uint8)
AnnotationSet(folder).save_mask(item, mask)
"""


def test_kill_during_save_keeps_last_good_mask(run, tmp_path):
    aset = AnnotationSet(RunFolder(run).annotations)
    good = random_mask(12)
    aset.save_mask("seed_00000007", good)
    ready = tmp_path / "ready"
    env = dict(os.environ, PYTHONPATH=str(REPO))
    proc = subprocess.Popen([sys.executable, "-c", KILL_SCRIPT, str(aset.dir), "seed_00000007", str(ready)], env=env)
    try:
        deadline = time.time() + 60
        while not ready.exists():
            assert proc.poll() is None, "the saving process ended before the stall"
            assert time.time() < deadline, "the saving process never reached the write"
            time.sleep(0.05)
        temp = Path(ready.read_text())
        assert temp.is_file() and np.asarray(Image.open(temp)).max() == 3  # the new mask was mid-save
        proc.send_signal(signal.SIGKILL)
        proc.wait(10)
    finally:
        if proc.poll() is None:
            proc.kill()
    np.testing.assert_array_equal(aset.mask("seed_00000007"), good)
    rec = aset.record("seed_00000007")
    assert rec.state == "done"
    client = TestClient(create_app(run))
    got = client.get("/api/items/seed_00000007/mask")
    assert got.status_code == 200
    np.testing.assert_array_equal(np.asarray(Image.open(io.BytesIO(got.content))), good)
    assert [r.id for r in aset.annotated()] == ["seed_00000007"]


def test_failed_write_answers_with_message_and_keeps_previous(client, run, monkeypatch):
    import datasetgan.atomic as atomic

    good = random_mask(13)
    assert client.put("/api/items/seed_00000011/mask", content=png_bytes(good)).status_code == 200
    real_replace = os.replace

    def failing_replace(src, dst):
        if str(dst).endswith("seed_00000011.mask.png"):
            raise OSError(28, "No space left on device", str(dst))  # as the kernel's would, with the path
        return real_replace(src, dst)

    monkeypatch.setattr(atomic.os, "replace", failing_replace)
    r = client.put("/api/items/seed_00000011/mask", content=png_bytes(random_mask(14)))
    assert r.status_code == 500 and "previous version is unchanged" in r.json()["detail"]
    assert "No space left on device" in r.json()["detail"] and str(run) not in r.json()["detail"]  # no server paths
    monkeypatch.undo()
    np.testing.assert_array_equal(AnnotationSet(RunFolder(run).annotations).mask("seed_00000011"), good)
    assert not list(RunFolder(run).annotations.glob(".*.tmp"))


class Killed(BaseException):
    pass


def test_save_killed_at_any_point_leaves_mask_and_state_of_one_save(run, monkeypatch):
    """A save killed between any two of its file writes: a reader sees the previous (mask, state,
    source) or the new one, never the new mask with the previous record; the next save goes on."""
    import datasetgan.atomic as atomic

    folder, item = RunFolder(run).annotations, "seed_00000007"
    old, new = random_mask(21), random_mask(22)
    real_replace, finished = os.replace, False
    for kill_at in range(10):
        AnnotationSet(folder).save_mask(item, old, state="pre-annotated", source="model:x")
        renames = []

        def replace(src, dst):
            if len(renames) == kill_at:
                raise Killed()
            renames.append(dst)
            return real_replace(src, dst)

        monkeypatch.setattr(atomic.os, "replace", replace)
        try:
            AnnotationSet(folder).save_mask(item, new, state="done", source="human")
            finished = True
        except Killed:
            pass
        monkeypatch.undo()
        aset = AnnotationSet(folder)  # a reader after the kill
        rec, mask = aset.record(item), aset.mask(item)
        seen = (
            rec.state,
            rec.source,
            "old" if np.array_equal(mask, old) else "new" if np.array_equal(mask, new) else "?",
        )
        assert seen in {("pre-annotated", "model:x", "old"), ("done", "human", "new")}, f"killed at {kill_at}: {seen}"
        assert (item in [r.id for r in aset.annotated()]) == (seen[0] == "done")
        client = TestClient(create_app(run))
        assert client.get(f"/api/items/{item}").json()["state"] == rec.state
        if finished:
            break
    assert finished and kill_at >= 3  # the history copy, the mask and the record were each interrupted


# ---------------------------------------------------------------------------------------------
# Mounting under a prefix (as the service does) and relative URLs


def test_mounted_under_prefix(run):
    outer = FastAPI()
    outer.mount("/annotate/run1", create_app(run))
    c = TestClient(outer)
    r = c.get("/annotate/run1", follow_redirects=False)
    assert r.status_code in (301, 307, 308) and r.headers["location"].endswith("/annotate/run1/")
    page = c.get("/annotate/run1/")
    assert page.status_code == 200 and "<canvas" in page.text
    for asset in ("static/app.js", "static/mask.js", "static/app.css"):
        assert c.get(f"/annotate/run1/{asset}").status_code == 200
    assert c.get("/annotate/run1/api/items").json()["total"] == 3
    # mounted the way the service does it: full path with root_path set to the prefix
    app = create_app(run)

    async def prefixed(scope, receive, send):
        await app({**scope, "root_path": "/annotate/run1"} if scope["type"] == "http" else scope, receive, send)

    c = TestClient(prefixed)
    assert c.get("/annotate/run1/").status_code == 200
    assert c.get("/annotate/run1/static/mask.js").status_code == 200
    assert c.get("/annotate/run1/api/items").json()["total"] == 3
    assert c.get("/annotate/run1/api/items/..%2fsecret/mask").status_code in (404, 422)
    # the page and its scripts use relative URLs only
    import re

    static = REPO / "annotate" / "static"
    text = "".join((static / f).read_text() for f in ("index.html", "app.js", "app.css"))
    assert not re.search(r"""(src|href)="/|fetch\(\s*["'`]/|api\(\s*["'`]/|url\(/""", text)


def test_run_without_annotation_set(tmp_path):
    c = TestClient(create_app(tmp_path))
    assert c.get("/api/items").json() == {
        "items": [],
        "done": 0,
        "total": 0,
        "resolution": 0,
        "channels": 0,
        "run": tmp_path.name,
    }
    r = c.get("/api/labels")
    assert r.status_code == 404 and "datasetgan annotate" in r.json()["detail"]
    assert c.get("/").status_code == 200
    assert list(tmp_path.iterdir()) == []


# ---------------------------------------------------------------------------------------------
# CLI


def test_parse_and_pick_seeds():
    assert parse_seeds("1,2,5-9") == [1, 2, 5, 6, 7, 8, 9]
    assert parse_seeds("3, 3 ,1") == [3, 1]
    for bad in ("x", "5-2", "-3", "1,,a", "100000000"):
        with pytest.raises(SeedError):
            parse_seeds(bad)
    a, b = random_seeds(5, 0), random_seeds(12, 0)
    assert len(set(b)) == 12 and b[:5] == a and random_seeds(5, 1) != a


def test_diverse_seeds_spread_more_than_random():
    from datasetgan.render import seed_latent

    G = tiny_generator()
    pool = random_seeds(300, 0)
    picked = diverse_seeds(G, 8, 0, pool=300)
    assert len(set(picked)) == 8 and set(picked) <= set(pool)

    def min_dist(seeds):
        with torch.no_grad():
            w = G.mapping(torch.stack([seed_latent(s, G.cfg.z_dim) for s in seeds]))[:, 0].double()
        d = torch.cdist(w, w) + torch.eye(len(seeds), dtype=torch.float64) * 1e9
        return float(d.min())

    # farthest-point sampling spreads the picks: their closest pair is farther apart than in the
    # first 8 random candidates of the same pool
    assert min_dist(picked) > min_dist(pool[:8])


@pytest.fixture
def bare_run(tmp_path) -> Path:
    root = tmp_path / "bare"
    save_generator(RunFolder(root).generator, tiny_generator())
    (tmp_path / "labels.json").write_text(labels_to_json(default_classes(N_CLASSES)))
    return root


def test_cli_render_import_and_errors(bare_run, tmp_path):
    cli = CliRunner()
    labels = str(tmp_path / "labels.json")
    r = cli.invoke(annotate_command, [str(bare_run), "--seeds", "4,2-3", "--no-serve"])
    assert r.exit_code != 0 and "--labels" in r.output and "Traceback" not in r.output

    r = cli.invoke(annotate_command, [str(bare_run), "--seeds", "4,2-3", "--labels", labels, "--no-serve"])
    assert r.exit_code == 0, r.output
    aset = AnnotationSet(RunFolder(bare_run).annotations)
    assert aset.ids() == ["seed_00000002", "seed_00000003", "seed_00000004"]
    rec = aset.record("seed_00000004")
    assert (rec.seed, rec.truncation, rec.noise_mode, rec.resolution) == (4, 1.0, "const", RES)
    # the stored image is exactly what the generator renders for that seed
    from datasetgan.checkpoint import load_generator
    from datasetgan.render import render_one, to_uint8

    G = load_generator(RunFolder(bare_run).generator)
    assert rec.generator_sha256 == G.sha256
    np.testing.assert_array_equal(aset.image("seed_00000004"), to_uint8(render_one(G, 4))[0, ..., 0])

    # run again without seeds: the existing set is kept as is
    r = cli.invoke(annotate_command, [str(bare_run), "--no-serve"])
    assert r.exit_code == 0 and len(aset.ids()) == 3

    # import: one bad file means nothing is imported
    painted = tmp_path / "painted"
    painted.mkdir()
    m2, m4 = random_mask(20), random_mask(21)
    Image.fromarray(m2).save(painted / "2.png")
    Image.fromarray(m4).save(painted / "seed_00000004.png")
    Image.fromarray(np.zeros((16, 16), np.uint8)).save(painted / "3.png")
    before = snapshot(aset.dir)
    r = cli.invoke(annotate_command, [str(bare_run), "--import", str(painted), "--no-serve"])
    assert r.exit_code != 0 and "3.png" in r.output and "expected 32x32" in r.output
    assert snapshot(aset.dir) == before
    (painted / "3.png").unlink()
    (painted / "99.png").write_bytes(png_bytes(m2))
    r = cli.invoke(annotate_command, [str(bare_run), "--import", str(painted), "--no-serve"])
    assert r.exit_code != 0 and "no item seed_00000099" in r.output
    (painted / "99.png").unlink()
    r = cli.invoke(annotate_command, [str(bare_run), "--import", str(painted), "--no-serve"])
    assert r.exit_code == 0, r.output
    np.testing.assert_array_equal(aset.mask("seed_00000002"), m2)
    np.testing.assert_array_equal(aset.mask("seed_00000004"), m4)
    assert {(r.id, r.source) for r in aset.annotated()} == {("seed_00000002", "import"), ("seed_00000004", "import")}

    # changing the classes under saved masks is refused
    other = tmp_path / "other.json"
    other.write_text(labels_to_json(default_classes(3)))
    r = cli.invoke(annotate_command, [str(bare_run), "--labels", str(other), "--no-serve"])
    assert r.exit_code != 0 and "Omit --labels" in r.output

    # helpers of other stages: clear messages, no traceback
    r = cli.invoke(annotate_command, [str(bare_run), "--pre-annotate", "interpreter", "--no-serve"])
    assert r.exit_code != 0 and "interpret" in r.output and "Traceback" not in r.output
    r = cli.invoke(
        annotate_command, [str(bare_run), "--pre-annotate", str(tmp_path / "none.safetensors"), "--no-serve"]
    )
    assert r.exit_code != 0 and "no such file" in r.output
    r = cli.invoke(annotate_command, [str(bare_run), "--n", "2", "--seeds", "1", "--no-serve"])
    assert r.exit_code != 0 and "either --n or --seeds" in r.output


def test_cli_training_labels_and_busy_port(tmp_path):
    data = tmp_path / "data"
    (data / "images").mkdir(parents=True)
    (data / "labels.json").write_text(labels_to_json(default_classes(5)))
    root = tmp_path / "run"
    save_generator(RunFolder(root).generator, tiny_generator(), extra={"data": str(data)})
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen(1)
        port = busy.getsockname()[1]
        r = CliRunner().invoke(annotate_command, [str(root), "--n", "2", "--port", str(port)])
    assert r.exit_code != 0 and f"127.0.0.1:{port}" in r.output and "--port" in r.output
    aset = AnnotationSet(RunFolder(root).annotations)
    assert len(aset.classes()) == 5 and len(aset.ids()) == 2


def fake_module(name: str, **attrs):
    import types

    mod = types.ModuleType(name)
    mod.__dict__.update(attrs)
    return mod


def test_cli_pre_annotate_and_auto_use_the_agreed_interfaces(run, tmp_path, monkeypatch):
    """The other stages' entry points are stubbed here: this checks our side of the contracts."""
    aset = AnnotationSet(RunFolder(run).annotations)
    aset.save_mask("seed_00000003", random_mask(30))  # a person's mask is never overwritten
    model = tmp_path / "unet.safetensors"
    model.write_bytes(b"stub")
    calls = []

    class Segmenter:
        classes = default_classes(N_CLASSES)
        resolution = 16  # differs from the set: resized both ways

        def predict(self, images):
            calls.append(images.shape)
            assert images.dtype == np.uint8
            return (images[:, 0] // 64).astype(np.uint8)

    monkeypatch.setitem(sys.modules, "datasetgan.bench", fake_module("datasetgan.bench"))
    monkeypatch.setitem(
        sys.modules,
        "datasetgan.bench.segmenters",
        fake_module("datasetgan.bench.segmenters", load_segmenter=lambda path: Segmenter()),
    )
    r = CliRunner().invoke(annotate_command, [str(run), "--pre-annotate", str(model), "--no-serve"])
    assert r.exit_code == 0, r.output
    assert calls == [(2, 1, 16, 16)]  # both empty items in one batch
    for item in ("seed_00000007", "seed_00000011"):
        rec = aset.record(item)
        assert (rec.state, rec.source) == ("pre-annotated", "model:unet")
        small = np.asarray(Image.fromarray(aset.image(item)).resize((16, 16), Image.BILINEAR)) // 64
        np.testing.assert_array_equal(aset.mask(item), np.repeat(np.repeat(small, 2, 0), 2, 1))
    assert aset.record("seed_00000003").state == "done"
    assert [r.id for r in aset.annotated()] == ["seed_00000003"]
    assert len(aset.annotated(include_pre_annotated=True)) == 3
    listing = TestClient(create_app(run)).get("/api/items").json()
    assert [it["state"] for it in listing["items"]] == ["done", "pre-annotated", "pre-annotated"]

    # the interpreter: pairs for the seeds of empty items; an image that differs is skipped
    for item in ("seed_00000007", "seed_00000011"):
        aset.path(item, "mask").unlink()
        rec = aset.record(item)
        rec.state, rec.source = "todo", ""
        aset.write_record(rec)
    (RunFolder(run).interpreter).write_bytes(b"stub")

    class Pair:
        def __init__(self, seed, image, mask):
            self.seed, self.image, self.mask = seed, image, mask

    class PairFactory:
        def __init__(self, run_dir, device="cpu"):
            self.classes = default_classes(N_CLASSES)

        def pairs(self, seeds, truncation=1.0, batch_size=8, should_stop=None):
            for s in seeds:
                img = aset.image(f"seed_{s:08d}")[..., None].copy()
                if s == 11:
                    img[0, 0, 0] ^= 1  # not the annotated image
                yield Pair(s, img, np.full((RES, RES), 2, np.uint8))

    monkeypatch.setitem(sys.modules, "datasetgan.factory", fake_module("datasetgan.factory", PairFactory=PairFactory))
    r = CliRunner().invoke(annotate_command, [str(run), "--pre-annotate", "interpreter", "--no-serve"])
    assert r.exit_code == 0, r.output
    assert (aset.record("seed_00000007").state, aset.record("seed_00000007").source) == ("pre-annotated", "interpreter")
    assert (aset.mask("seed_00000007") == 2).all()
    assert aset.record("seed_00000011").state == "todo" and aset.mask("seed_00000011") is None
    assert "seed_00000011" in r.output and "differs" in r.output

    # --auto hands the chosen seeds to the benchmark's auto-annotator
    auto_calls = []
    monkeypatch.setitem(
        sys.modules,
        "datasetgan.bench.autoannotate",
        fake_module("datasetgan.bench.autoannotate", auto_annotate=lambda *a, **k: auto_calls.append((a, k))),
    )
    r = CliRunner().invoke(annotate_command, [str(run), "--seeds", "3,20-21", "--auto", str(model), "--no-serve"])
    assert r.exit_code == 0, r.output
    assert auto_calls == [((RunFolder(run).root, str(model), 3), {"seeds": [3, 20, 21]})]


def test_masks_saved_through_the_api_train_the_interpreter(bare_run, tmp_path):
    """`datasetgan interpret` reads the set exactly as the page wrote it: no conversion step."""
    import importlib.util

    if importlib.util.find_spec("datasetgan.cli.interpret") is None:
        print("datasetgan interpret is not in this tree yet (interpreter stage); skipping the end-to-end check")
        pytest.skip("datasetgan.cli.interpret is not available in this tree")
    from datasetgan.cli import main

    cli = CliRunner()
    r = cli.invoke(
        annotate_command, [str(bare_run), "--seeds", "1-3", "--labels", str(tmp_path / "labels.json"), "--no-serve"]
    )
    assert r.exit_code == 0, r.output
    client = TestClient(create_app(bare_run))
    for k, item in enumerate(["seed_00000001", "seed_00000002"]):
        mask = np.zeros((RES, RES), np.uint8)
        mask[4 + k : 20 + k, 6:26] = 1 + k
        mask[22:, :] = 3
        assert client.put(f"/api/items/{item}/mask", content=png_bytes(mask)).status_code == 200
    assert client.put("/api/items/seed_00000003/mask?state=todo", content=png_bytes(mask)).status_code == 200
    r = cli.invoke(main, ["interpret", str(bare_run), "--members", "2", "--epochs", "1", "--threads", "1"])
    assert r.exit_code == 0, r.output
    assert RunFolder(bare_run).interpreter.is_file()
    meta = json.loads(RunFolder(bare_run).interpreter.with_suffix(".json").read_text())
    assert "seed_00000001" in json.dumps(meta) and "seed_00000003" not in json.dumps(meta)  # drafts are not used


def test_random_requests_never_answer_500(client, run):
    """Random ids, query strings and bodies: always a 2xx/4xx answer with JSON or PNG, never a 500."""
    from urllib.parse import quote

    rng = np.random.default_rng(0)
    alphabet = list("seed_0123456789./\\%~:?#&=+ -") + ["٣", "\u202e", "\x00", "é", "seed_00000003"]
    good = png_bytes(random_mask(40))
    before = snapshot(run)
    for _ in range(300):
        ident = "".join(rng.choice(alphabet, size=int(rng.integers(1, 16))))
        suffix = str(rng.choice(["", "/image", "/mask", "/mask?format=raw", "/mask?state=x", "/mask?format="]))
        url = "/api/items/" + quote(ident, safe=str(rng.choice(["", "/", "/%"]))) + suffix
        method = str(rng.choice(["GET", "PUT", "DELETE", "POST"]))
        n = int(rng.integers(0, 300))
        body = bytes(rng.integers(0, 256, n, dtype=np.uint8)) if rng.random() < 0.5 else good[:n]
        r = client.request(method, url, content=body if method in ("PUT", "POST") else None)
        assert r.status_code < 500, (method, url, r.status_code, r.text[:200])
    # only valid ids with a valid body can have saved anything: seed_00000003 with the good mask
    after = snapshot(run)
    changed = {k for k in set(before) | set(after) if before.get(k) != after.get(k)}
    assert changed <= {"annotations/seed_00000003.mask.png", "annotations/seed_00000003.json"} | {
        k for k in after if k.startswith("annotations/history/seed_00000003.")
    }


SLOW_SAVE = """
import sys, time
from pathlib import Path
import numpy as np
import datasetgan.annotations as A
import datasetgan.weightfiles as W

write, ready = W.atomic_write_bytes, Path(sys.argv[2])
def slow_write(path, data):  # pause between the mask and the record, as a slow disk or a busy CPU would
    write(path, data)
    if str(path).endswith(".mask.png"):
        ready.touch()
        time.sleep(2)
W.atomic_write_bytes = slow_write
aset = A.AnnotationSet(sys.argv[1])
aset.save_mask("seed_00000007", np.ones((aset.record("seed_00000007").resolution,) * 2, np.uint8), state="done")
"""


def test_saves_from_two_processes_never_mix_mask_and_state(run, tmp_path):
    """`datasetgan serve` and `datasetgan annotate` on one run: a save by another process that starts
    while one is between its mask and its record waits, so mask and state come from the same save."""
    aset = AnnotationSet(RunFolder(run).annotations)
    ready = tmp_path / "ready"
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")])}
    other = subprocess.Popen([sys.executable, "-c", SLOW_SAVE, str(aset.dir), str(ready)], env=env)
    try:
        deadline = time.monotonic() + 60
        while not ready.exists():
            assert other.poll() is None and time.monotonic() < deadline, "the other process did not start saving"
            time.sleep(0.01)
        aset.save_mask("seed_00000007", np.full((RES, RES), 2, np.uint8), state="todo")  # a draft, meanwhile
    finally:
        assert other.wait(60) == 0
    mask, state = aset.mask("seed_00000007"), aset.record("seed_00000007").state
    assert (int(mask[0, 0]), state) in {(1, "done"), (2, "todo")}, f"mask of one save, state {state!r} of the other"
