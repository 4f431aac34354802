"""The annotation page in Debian's Chromium, driven by Playwright against a real server process.

The server is ``python -m datasetgan annotate RUN ...`` on a tiny random-weight generator. The test
paints with the mouse and keyboard like a person, then checks the label map the server wrote to disk
against a mask computed here independently from the stroke geometry and flood-fill semantics.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from scipy import ndimage
from support import free_port

from datasetgan.annotations import AnnotationSet
from datasetgan.checkpoint import save_generator
from datasetgan.data import ClassInfo, labels_to_json
from datasetgan.networks import Generator, GeneratorConfig
from datasetgan.runfolder import RunFolder

pytestmark = pytest.mark.browser

REPO = Path(__file__).resolve().parents[1]
CHROMIUM = Path("/usr/bin/chromium")
RES = 32
BRUSH = 5  # brush size in image pixels; radius 2.5
CLASSES = [
    ClassInfo(0, "background", "#000000"),
    ClassInfo(1, "left ventricle", "#e6194b"),
    ClassInfo(2, "myocardium", "#3cb44b"),
    ClassInfo(3, "right ventricle", "#4363d8"),
]
ARTIFACTS = REPO / "test-artifacts"


def make_run(tmp_path) -> Path:
    if not CHROMIUM.exists():
        print(f"{CHROMIUM} is absent: install it with `apt-get install -y chromium` to run the browser tests")
        pytest.skip(f"{CHROMIUM} is absent (apt-get install -y chromium)")
    run = tmp_path / "run"
    torch.manual_seed(0)
    G = Generator(
        GeneratorConfig(
            resolution=RES, img_channels=1, z_dim=32, w_dim=32, mapping_layers=2, channel_base=512, channel_max=32
        )
    )
    save_generator(RunFolder(run).generator, G)
    return run


@contextlib.contextmanager
def annotate_server(tmp_path, run, *args, items: int):
    """``datasetgan annotate RUN ARGS`` serving on a free port, once its set lists ``items`` items."""
    port = free_port()
    log = open(tmp_path / "server.log", "w+")
    proc = subprocess.Popen(
        [sys.executable, "-m", "datasetgan", "annotate", str(run), *args, "--host", "127.0.0.1", "--port", str(port)],
        env=dict(os.environ, PYTHONPATH=str(REPO)),
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    url = f"http://127.0.0.1:{port}/"
    try:
        deadline = time.time() + 600  # a first run may still be compiling the fused ops
        while True:
            try:
                with urllib.request.urlopen(url + "api/items", timeout=2) as r:
                    if json.load(r)["total"] == items:
                        break
            except OSError:
                pass
            if proc.poll() is not None or time.time() > deadline:
                log.seek(0)
                pytest.fail(f"annotation server did not start:\n{log.read()}")
            time.sleep(0.2)
        yield url
    finally:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
        log.close()


@pytest.fixture
def server(tmp_path):
    run = make_run(tmp_path)
    labels = tmp_path / "labels.json"
    labels.write_text(labels_to_json(CLASSES))
    with annotate_server(tmp_path, run, "--seeds", "5,9", "--labels", str(labels), items=2) as url:
        yield run, url


@pytest.fixture
def page(server):
    with chromium_page() as pg:
        yield pg


@contextlib.contextmanager
def chromium_page():
    """A page in Debian's Chromium; page errors and console errors fail the test."""
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        browser = p.chromium.launch(
            executable_path=str(CHROMIUM),
            args=[
                "--headless",
                "--no-sandbox",
                "--disable-gpu",
                "--disable-background-networking",
                "--disable-component-update",
                "--no-first-run",
            ],
        )
        pg = browser.new_page(viewport={"width": 1280, "height": 820}, device_scale_factor=1)
        errors = []
        pg.on("pageerror", lambda e: errors.append(str(e)))
        pg.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
        yield pg
        browser.close()
        assert not errors, errors


def wait_ready(page):
    page.wait_for_function("window.annotator && window.annotator.ready", timeout=15000)


def geometry(page):
    """(canvas left, top, scale, ox, oy): image x = (clientX - left - ox) / scale."""
    rect = page.evaluate(
        "(() => { const r = document.getElementById('view').getBoundingClientRect(); return [r.left, r.top]; })()"
    )
    v = page.evaluate("annotator.view")
    assert v["resolution"] == RES
    return rect[0], rect[1], v["scale"], v["ox"], v["oy"]


def band_rows(y: float, radius: float) -> list[int]:
    return [j for j in range(RES) if abs(j + 0.5 - y) <= radius]


def page_mask(page) -> np.ndarray:
    return np.array(page.evaluate("annotator.mask()"), dtype=np.uint8).reshape(RES, RES)


def test_paint_fill_undo_redo_save_reload(server, page):
    run, url = server
    aset = AnnotationSet(RunFolder(run).annotations)
    page.goto(url)
    wait_ready(page)
    item = page.evaluate("annotator.currentId")
    assert item == "seed_00000005"  # the first item not done yet
    assert page.locator("#done-count").inner_text() == "0" and page.locator("#total-count").inner_text() == "2"

    left, top, scale, ox, oy = geometry(page)
    assert scale >= 4  # the tiny image is shown enlarged

    # --- a horizontal brush stroke with class 2 across the whole image, around image row y ~ 12
    page.keyboard.press("2")
    page.keyboard.press("b")
    page.evaluate(
        "(() => { const s = document.getElementById('brush-size'); s.value = %d;"
        " s.dispatchEvent(new Event('input')); })()" % BRUSH
    )
    assert page.locator("#brush-size-value").inner_text() == str(BRUSH)
    radius = BRUSH / 2
    # an integer client row whose image y keeps every pixel centre clearly in or out of the brush
    for cy in range(int(top + oy + 11 * scale), int(top + oy + 14 * scale)):
        y = (cy - top - oy) / scale
        if all(abs(abs(j + 0.5 - y) - radius) > 1e-3 for j in range(RES)):
            break
    x_start = int(left + ox - 2 * scale)  # starts and ends outside the image
    x_end = int(left + ox + (RES + 2) * scale)
    assert x_start > left and x_end < left + page.evaluate("document.getElementById('view').clientWidth")
    page.mouse.move(x_start, cy)
    page.mouse.down()
    page.mouse.move(x_end, cy, steps=25)
    page.mouse.up()

    expected_stroke = np.zeros((RES, RES), np.uint8)
    expected_stroke[band_rows(y, radius)] = 2
    assert 4 <= len(band_rows(y, radius)) <= 6
    np.testing.assert_array_equal(page_mask(page), expected_stroke)

    # --- flood fill with class 1 above the stroke
    page.keyboard.press("1")
    page.keyboard.press("f")
    fx, fy = 16.3, 2.4  # image coordinates of the click
    page.mouse.click(round(left + ox + fx * scale), round(top + oy + fy * scale))
    fx_img = (round(left + ox + fx * scale) - left - ox) / scale
    fy_img = (round(top + oy + fy * scale) - top - oy) / scale
    regions, _ = ndimage.label(expected_stroke == 0, structure=[[0, 1, 0], [1, 1, 1], [0, 1, 0]])
    expected = expected_stroke.copy()
    expected[regions == regions[int(fy_img), int(fx_img)]] = 1
    assert (expected == 1).sum() > 0 and (expected == 0).sum() > 0  # the stroke split the image in two
    np.testing.assert_array_equal(page_mask(page), expected)

    # --- undo, redo
    page.keyboard.press("Control+z")
    np.testing.assert_array_equal(page_mask(page), expected_stroke)
    page.keyboard.press("Control+y")
    np.testing.assert_array_equal(page_mask(page), expected)

    # --- save (Ctrl+S marks the item done)
    page.keyboard.press("Control+s")
    page.wait_for_function(
        "!annotator.dirty && annotator.items().find(i => i.id === annotator.currentId).state === 'done'", timeout=10000
    )
    assert page.locator("#done-count").inner_text() == "1"

    saved = Image.open(aset.path(item, "mask"))
    assert saved.mode == "L" and saved.size == (RES, RES)
    on_disk = np.asarray(saved)
    np.testing.assert_array_equal(on_disk, expected)
    assert set(np.unique(on_disk)) == {0, 1, 2}
    rec = aset.record(item)
    assert (rec.state, rec.source, rec.seed) == ("done", "human", 5)
    assert [r.id for r in aset.annotated()] == [item]  # what `datasetgan interpret` trains from

    # --- reload: the saved mask comes back and is what is drawn
    page.reload()
    wait_ready(page)
    assert page.evaluate("annotator.currentId") == item
    np.testing.assert_array_equal(page_mask(page), expected)
    page.mouse.move(5, 5)  # no cursor preview over the image
    ARTIFACTS.mkdir(exist_ok=True)
    page.wait_for_timeout(100)
    page.screenshot(path=str(ARTIFACTS / "annotate.png"))

    # with full mask opacity every pixel of class 1 or 2 shows exactly its class colour
    page.evaluate(
        "(() => { const s = document.getElementById('mask-opacity'); s.value = 100;"
        " s.dispatchEvent(new Event('input')); })()"
    )
    page.wait_for_timeout(100)
    left, top, scale, ox, oy = geometry(page)
    shot = np.asarray(Image.open(io.BytesIO(page.screenshot())).convert("RGB"))
    colours = {1: (0xE6, 0x19, 0x4B), 2: (0x3C, 0xB4, 0x4B)}
    for j in range(RES):
        for i in range(RES):
            px = shot[int(top + oy + (j + 0.5) * scale), int(left + ox + (i + 0.5) * scale)]
            if expected[j, i] in colours:
                assert tuple(px) == colours[expected[j, i]], (i, j, px)
            else:
                assert px[0] == px[1] == px[2], (i, j, px)  # the grayscale image shows through


def test_pre_annotated_polygon_eraser_autosave_and_view(server, page):
    from matplotlib.path import Path as Polygon

    run, url = server
    aset = AnnotationSet(RunFolder(run).annotations)
    item = "seed_00000009"
    pre = np.zeros((RES, RES), np.uint8)
    pre[4:12, 6:20] = 1
    aset.save_mask(item, pre, state="pre-annotated", source="model:unet")

    page.goto(url + "#" + item)
    wait_ready(page)
    assert page.evaluate("annotator.currentId") == item
    np.testing.assert_array_equal(page_mask(page), pre)
    assert page.locator("#item-state").inner_text().lower() == "pre-annotated"
    assert "model:unet" in page.locator("#item-note").inner_text()
    left, top, scale, ox, oy = geometry(page)

    def client(x, y):
        return round(left + ox + x * scale), round(top + oy + y * scale)

    def image(cx, cy):
        return (cx - left - ox) / scale, (cy - top - oy) / scale

    # --- polygon with class 3: click five vertices, close with Enter
    page.keyboard.press("3")
    page.keyboard.press("p")
    vertices = [client(x, y) for x, y in [(3.3, 16.2), (20.6, 14.1), (27.4, 24.8), (15.2, 29.3), (5.1, 26.7)]]
    for cx, cy in vertices:
        page.mouse.click(cx, cy)
    page.keyboard.press("Enter")
    poly = [image(cx, cy) for cx, cy in vertices]
    centres = np.array([(i + 0.5, j + 0.5) for j in range(RES) for i in range(RES)])
    inside = Polygon(poly).contains_points(centres).reshape(RES, RES)
    expected = pre.copy()
    expected[inside] = 3
    assert 100 < inside.sum() < 400
    np.testing.assert_array_equal(page_mask(page), expected)
    assert "pre-annotated" not in page.locator("#item-state").inner_text().lower()  # edited now
    assert page.locator("#item-note").is_hidden()

    assert geometry(page) == (left, top, scale, ox, oy)  # the layout did not move under the cursor

    # --- eraser (size 3, radius 1.5): one click clears the pixels whose centre is within 1.5
    page.keyboard.press("e")
    page.evaluate(
        "(() => { const s = document.getElementById('brush-size'); s.value = 3;"
        " s.dispatchEvent(new Event('input')); })()"
    )
    ecx, ecy = client(10.2, 8.3)
    page.mouse.click(ecx, ecy)
    ex, ey = image(ecx, ecy)
    near = (centres[:, 0] - ex) ** 2 + (centres[:, 1] - ey) ** 2 <= 1.5**2
    expected[near.reshape(RES, RES)] = 0
    assert near.sum() >= 5
    np.testing.assert_array_equal(page_mask(page), expected)

    # --- fill limited to similar image intensity: class 2 into background pixels within ±T of the clicked one
    page.keyboard.press("2")
    page.keyboard.press("f")
    assert page.locator("#fill-options").is_visible() and page.locator("#brush-options").is_hidden()
    intensity = np.asarray(Image.open(aset.path(item, "image"))).astype(np.int32)
    four = [[0, 1, 0], [1, 1, 1], [0, 1, 0]]
    fcx, fcy = client(24.4, 6.3)
    fx, fy = (int(v) for v in image(fcx, fcy))
    assert expected[fy, fx] == 0
    whole, _ = ndimage.label(expected == 0, structure=four)
    for tol in (12, 20, 30, 45, 60, 80):
        similar, _ = ndimage.label((expected == 0) & (np.abs(intensity - intensity[fy, fx]) <= tol), structure=four)
        region = similar == similar[fy, fx]
        if 3 <= region.sum() < (whole == whole[fy, fx]).sum():
            break
    else:
        pytest.fail("no tolerance gives a partial region on this image")
    page.evaluate(
        "(() => { const s = document.getElementById('fill-tolerance'); s.value = %d;"
        " s.dispatchEvent(new Event('input')); })()" % tol
    )
    assert page.locator("#fill-tolerance-value").inner_text() == str(tol)
    page.mouse.click(fcx, fcy)
    expected[region] = 2
    np.testing.assert_array_equal(page_mask(page), expected)

    # --- view: wheel zoom, space-drag pan, right-drag contrast (display only, the mask is unchanged)
    scale_before = page.evaluate("annotator.view.scale")
    page.mouse.move(*client(16, 16))
    page.mouse.wheel(0, -300)
    page.wait_for_function(f"annotator.view.scale > {scale_before}")
    ox_before = page.evaluate("annotator.view.ox")
    page.keyboard.down(" ")
    page.mouse.down()
    page.mouse.move(client(16, 16)[0] + 40, client(16, 16)[1], steps=4)
    page.mouse.up()
    page.keyboard.up(" ")
    assert abs(page.evaluate("annotator.view.ox") - (ox_before + 40)) < 1e-6
    page.mouse.move(600, 400)
    page.mouse.down(button="right")
    page.mouse.move(560, 380, steps=4)
    page.mouse.up(button="right")
    assert page.locator("#window-width-value").inner_text() == "215"
    assert page.locator("#window-level-value").inner_text() == "148"
    np.testing.assert_array_equal(page_mask(page), expected)

    # --- leaving the image autosaves it as a draft (not done: not used for training)
    page.keyboard.press("ArrowLeft")
    page.wait_for_function("annotator.ready && annotator.currentId === 'seed_00000005'")
    np.testing.assert_array_equal(aset.mask(item), expected)
    rec = aset.record(item)
    assert (rec.state, rec.source) == ("todo", "human")
    assert aset.annotated() == [] and [r.id for r in aset.annotated(include_pre_annotated=True)] == []
    assert "draft" in page.locator(".thumb[data-index='1']").get_attribute("class")
    assert page.locator("#done-count").inner_text() == "0"


def test_real_projected_items_show_original_beside_the_editable_reconstruction(tmp_path):
    from datasetgan.annotation_sources import import_real
    from datasetgan.checkpoint import load_generator
    from datasetgan.projector import ProjectorConfig
    from datasetgan.render import render_one, to_uint8

    run = make_run(tmp_path)
    G = load_generator(RunFolder(run).generator)
    real = tmp_path / "real"
    for sub in ("images", "masks"):
        (real / sub).mkdir(parents=True)
    (real / "labels.json").write_text(labels_to_json(CLASSES))
    img = to_uint8(render_one(G, 21))[0, ..., 0]
    expert = np.zeros((RES, RES), np.uint8)
    expert[8:20, 10:24] = 3
    Image.fromarray(img).save(real / "images" / "case21.png")
    Image.fromarray(expert).save(real / "masks" / "case21.png")
    aset = AnnotationSet(RunFolder(run).annotations)
    torch.set_num_threads(1)
    assert import_real(aset, G, real, ProjectorConfig(steps=30, perceptual="none")) == ["real_00000000"]
    item = "real_00000000"
    psnr = aset.record(item).psnr

    with annotate_server(tmp_path, run, "--seeds", "5", items=2) as url, chromium_page() as page:
        page.goto(url + "#" + item)
        wait_ready(page)
        assert page.evaluate("annotator.currentId") == item
        np.testing.assert_array_equal(page_mask(page), expert)  # the expert mask, editable
        assert page.locator("#item-name").inner_text() == "Real image case21.png"
        assert page.locator("#item-state").inner_text().lower() == "done"
        panel = page.locator("#original-panel")
        assert panel.is_visible()
        page.wait_for_function(
            "document.getElementById('original-image').complete && "
            f"document.getElementById('original-image').naturalWidth === {RES}"
        )
        assert f"PSNR {psnr:.2f} dB" in page.locator("#original-quality").inner_text()
        canvas, side = (page.locator(sel).bounding_box() for sel in ("#view", "#original-panel"))
        assert side["x"] >= canvas["x"] + canvas["width"] - 1 and side["width"] > 100  # side by side
        assert page.locator(".thumb[data-index='0'] .label").inner_text() == "real 0"

        # the canvas shows the reconstruction (the item's image), the panel the original
        shown = page.evaluate("""(() => { const im = document.getElementById('original-image');
            const c = document.createElement('canvas'); c.width = im.naturalWidth; c.height = im.naturalHeight;
            const g = c.getContext('2d'); g.drawImage(im, 0, 0);
            return Array.from(g.getImageData(0, 0, c.width, c.height).data.filter((_, i) => i % 4 === 0)); })()""")
        np.testing.assert_array_equal(np.array(shown, np.uint8).reshape(RES, RES), img)

        # paint a class-1 dot and save: the expert mask is edited like any other
        left, top, scale, ox, oy = geometry(page)
        page.keyboard.press("1")
        page.keyboard.press("b")
        page.mouse.click(round(left + ox + 4.5 * scale), round(top + oy + 4.5 * scale))
        edited = page_mask(page)
        assert edited[4, 4] == 1 and (edited == 3).sum() == (expert == 3).sum()
        page.keyboard.press("Control+s")
        page.wait_for_function("!annotator.dirty && annotator.saveCount > 0")
        np.testing.assert_array_equal(aset.mask(item), edited)
        rec = aset.record(item)
        assert (rec.kind, rec.state, rec.source, rec.psnr, rec.real_name) == (
            "real",
            "done",
            "human",
            psnr,
            "case21.png",
        )
        ARTIFACTS.mkdir(exist_ok=True)
        page.screenshot(path=str(ARTIFACTS / "annotate-real.png"))

        # a seed item has no original: the panel goes and the canvas takes the room again
        page.keyboard.press("ArrowRight")
        page.wait_for_function("annotator.ready && annotator.currentId === 'seed_00000005'")
        assert panel.is_hidden()
        assert page.locator("#view").bounding_box()["width"] > canvas["width"] + 100
