"""``datasetgan bench agreement``: an interpreter's masks of real images projected into its generator,
scored against their expert masks; bad input is refused with one line naming the file."""

from __future__ import annotations

import json
import math
import shutil

import numpy as np
import pytest
from click.testing import CliRunner
from conftest import build_tiny_run
from PIL import Image

from datasetgan.bench.agreement import agreement, predict_masks
from datasetgan.bench.metrics import confusion_matrix
from datasetgan.checkpoint import load_generator, save_generator
from datasetgan.cli import main
from datasetgan.data import default_classes, labels_to_json
from datasetgan.demo import bundled_run
from datasetgan.interpreter import load_interpreter
from datasetgan.networks import Generator, GeneratorConfig
from datasetgan.projector import load_projections
from datasetgan.render import render_one, to_uint8
from datasetgan.runfolder import RunFolder

SEEDS = (11, 12, 13)
SCALE = 2  # the real images are twice the generator's size: masks must be resized like their images
PROJECT = ["--perceptual", "none", "--project-batch", "3"]

pytestmark = pytest.mark.usefixtures("one_thread")  # conftest.py: tiny tensors, one thread


def invoke(*args):
    return CliRunner().invoke(main, [str(a) for a in args])


@pytest.fixture
def run(tmp_path):
    return RunFolder(build_tiny_run(tmp_path / "run"))


def real_folder(root, run: RunFolder) -> dict[str, np.ndarray]:
    """Seed renderings (so the generator can reproduce them) at twice the size, each with the run
    interpreter's own mask of that seed as its expert mask (a perfect projection scores 1.0)."""
    G, interp = load_generator(run.generator), load_interpreter(run.interpreter)
    (root / "images").mkdir(parents=True)
    (root / "masks").mkdir()
    (root / "labels.json").write_text(labels_to_json(interp.info.classes))
    big = lambda a: np.kron(a, np.ones((SCALE, SCALE), np.uint8))  # noqa: E731 (nearest upsampling)
    masks = {}
    for s in SEEDS:
        img, taps = render_one(G, s, with_taps=True)
        masks[f"case{s}"] = interp.predict(taps).mask[0].numpy()
        Image.fromarray(big(to_uint8(img)[0, ..., 0])).save(root / "images" / f"case{s}.png")
        Image.fromarray(big(masks[f"case{s}"])).save(root / "masks" / f"case{s}.png")
    return masks


def test_agreement_counts_every_pixel_of_every_image_once():
    truth = np.array([[[0, 0], [1, 2]], [[2, 2], [1, 0]]], np.uint8)
    pred = np.array([[[0, 1], [1, 2]], [[2, 0], [1, 0]]], np.uint8)
    a = agreement(pred, truth, ["bg", "a", "b", "absent"])
    # class 0: 3 agree, 1 predicted elsewhere, 1 missed -> 2/4; class 1: 2 of 3; class 2: 2 of 3
    assert a["iou"][:3] == pytest.approx([2 / 4, 2 / 3, 2 / 3]) and math.isnan(a["iou"][3])
    assert a["miou"] == pytest.approx((2 / 4 + 2 / 3 + 2 / 3) / 3)
    assert a["pixel_accuracy"] == pytest.approx(6 / 8) and a["n"] == 2
    assert np.array(a["confusion"]).sum() == 8


def test_projected_images_agree_with_their_masks(tmp_path):
    """With a trained generator and interpreter (the bundled demo run), a recovered image gives the
    interpreter its seed's features, hence its seed's mask."""
    run = RunFolder(shutil.copytree(bundled_run(), tmp_path / "run"))
    masks = real_folder(tmp_path / "real", run)
    start = invoke("project", run.root, tmp_path / "real", "--out", tmp_path / "start", "--steps", 1, *PROJECT)
    done = invoke("project", run.root, tmp_path / "real", "--out", tmp_path / "proj", "--steps", 100, *PROJECT)
    assert start.exit_code == 0 and done.exit_code == 0, start.output + done.output
    scores = {}
    for name in ("start", "proj"):
        result = invoke("bench", "agreement", run.root, tmp_path / name, "--real", tmp_path / "real", "--threads", 1)
        assert result.exit_code == 0, result.output
        scores[name] = json.loads((run.bench / "results.json").read_text())["agreement"]
        assert f"agreement on 3 projected real image(s): mIoU {scores[name]['miou']:.3f}" in result.output
    a = scores["proj"]
    assert a["n"] == 3 and a["names"] == [f"case{s}" for s in SEEDS]
    assert a["projections"] == str(tmp_path / "proj") and a["generator_sha256"] == load_generator(run.generator).sha256
    # the scores are those of the masks the interpreter reads from the stored projections
    G, interp = load_generator(run.generator), load_interpreter(run.interpreter)
    names, projections, _ = load_projections(tmp_path / "proj", G)
    pred = predict_masks(G, interp, projections)
    truth = np.stack([masks[n] for n in names])
    assert np.array_equal(a["confusion"], confusion_matrix(pred, truth, len(interp.info.classes)))
    # 0.86 here, against 0.36 from the mean w (where the projector starts)
    assert a["miou"] > 0.75 and a["miou"] > scores["start"]["miou"] + 0.3, (a["miou"], scores["start"]["miou"])


def other_generator(run: RunFolder, tmp_path):
    g = RunFolder(tmp_path / "other")
    G = Generator(GeneratorConfig(**{**load_generator(run.generator).cfg.to_dict(), "z_dim": 16}))
    save_generator(g.generator, G)
    return g


def break_index(run, real, proj, tmp_path):
    (proj / "projections.json").unlink()
    return "proj/projections.json: not found"


def break_index_json(run, real, proj, tmp_path):
    (proj / "projections.json").write_text("{")
    return "proj/projections.json: not a projections index"


def break_projection(run, real, proj, tmp_path):
    (proj / "case12.safetensors").write_bytes(b"not tensors")
    return "proj/case12.safetensors"


def break_generator(run, real, proj, tmp_path):
    other = other_generator(run, tmp_path)
    assert invoke("project", other.root, real, "--out", proj, "--steps", 1, *PROJECT).exit_code == 0
    return "proj/case11.safetensors: projected with generator"


def break_missing_image(run, real, proj, tmp_path):
    for sub in ("images", "masks"):
        (real / sub / "case12.png").unlink()
    return "real: has no image named 'case12' (1 of the 3 projected image(s) missing)"


def break_mask(run, real, proj, tmp_path):
    (real / "masks" / "case12.png").write_bytes(b"\x89PNG\r\n\x1a\n truncated")
    return "masks/case12.png"


def break_classes(run, real, proj, tmp_path):
    (real / "labels.json").write_text(labels_to_json(default_classes(4)))
    return "real: class 3"


def break_interpreter(run, real, proj, tmp_path):
    run.interpreter.unlink()
    return "interpreter.safetensors does not exist"


@pytest.mark.parametrize(
    "breaker",
    [
        break_index,
        break_index_json,
        break_projection,
        break_generator,
        break_missing_image,
        break_mask,
        break_classes,
        break_interpreter,
    ],
)
def test_bad_input_is_one_line_naming_the_file_and_writes_nothing(run, tmp_path, breaker):
    real_folder(tmp_path / "real", run)
    proj = tmp_path / "proj"
    assert invoke("project", run.root, tmp_path / "real", "--out", proj, "--steps", 1, *PROJECT).exit_code == 0
    message = breaker(run, tmp_path / "real", proj, tmp_path)
    result = invoke("bench", "agreement", run.root, proj, "--real", tmp_path / "real")
    assert result.exit_code == 1, result.output
    lines = result.output.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("Error: ") and message in lines[0], result.output
    assert not run.bench.exists()
