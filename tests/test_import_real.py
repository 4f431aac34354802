"""``datasetgan annotate RUN --import-real DIR``: real labelled images projected into the generator and
stored as annotations with their expert masks; ``datasetgan interpret`` trains on them mixed with
painted seeds; bad input is refused with one line naming the file, and nothing is written."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from click.testing import CliRunner
from PIL import Image

from datasetgan.annotations import AnnotationSet, render_items
from datasetgan.checkpoint import load_generator, save_generator
from datasetgan.cli import main
from datasetgan.data import default_classes, labels_to_json
from datasetgan.features import render_annotated
from datasetgan.networks import Generator, GeneratorConfig
from datasetgan.projector import load_projection, reconstruct
from datasetgan.render import render_one, to_uint8
from datasetgan.runfolder import RunFolder

RES = 16
FAST = ["--steps", "40", "--perceptual", "none", "--no-serve"]


pytestmark = pytest.mark.usefixtures("one_thread")  # conftest.py: tiny tensors, one thread


@pytest.fixture
def run(tmp_path):
    torch.manual_seed(0)
    G = Generator(
        GeneratorConfig(
            resolution=RES, img_channels=1, z_dim=32, w_dim=32, mapping_layers=2, channel_base=256, channel_max=32
        )
    )
    rf = RunFolder(tmp_path / "run")
    save_generator(rf.generator, G)
    return rf


def intensity_mask(img: np.ndarray, k: int = 3) -> np.ndarray:
    return np.digitize(img, np.quantile(img, np.linspace(0, 1, k + 1)[1:-1])).astype(np.uint8)


def real_folder(root, G, seeds=(11, 12, 13), scale=2) -> dict:
    """Images rendered from seeds (so the generator can reproduce them) at ``scale`` times the
    generator's resolution, with masks cut from their intensity (nearest-neighbour upsampled)."""
    (root / "images").mkdir(parents=True)
    (root / "masks").mkdir()
    (root / "labels.json").write_text(labels_to_json(default_classes(3)))
    expected = {}
    for s in seeds:
        img = to_uint8(render_one(G, s))[0, ..., 0]
        mask = intensity_mask(img)
        big = lambda a: np.kron(a, np.ones((scale, scale), np.uint8))  # noqa: E731 (nearest upsampling)
        Image.fromarray(big(img)).save(root / "images" / f"case{s}.png")
        Image.fromarray(big(mask)).save(root / "masks" / f"case{s}.png")
        expected[f"case{s}.png"] = mask
    return expected


def annotate(*args):
    return CliRunner().invoke(main, ["annotate", *map(str, args)])


def test_import_real_stores_projected_items_and_interpret_trains_on_the_mix(run, tmp_path):
    G = load_generator(run.generator)
    expected = real_folder(tmp_path / "real", G)
    result = annotate(run.root, "--import-real", tmp_path / "real", *FAST)
    assert result.exit_code == 0, result.output
    aset = AnnotationSet(run.annotations)
    recs = aset.records()
    assert [r.id for r in recs] == ["real_00000000", "real_00000001", "real_00000002"]
    for rec in recs:
        assert (rec.kind, rec.state, rec.source, rec.generator_sha256) == ("real", "done", "expert", G.sha256)
        assert np.array_equal(aset.mask(rec.id), expected[rec.real_name])  # resized by nearest neighbour
        assert rec.psnr > 20 and 0 < rec.ssim <= 1
        original = np.asarray(Image.open(aset.path(rec.id, "original")))
        assert original.shape == (RES, RES)
        p, meta = load_projection(aset.path(rec.id, "projection"), G)
        assert np.array_equal(reconstruct(G, p)[..., 0], aset.image(rec.id))  # renders exactly as stored
        assert meta["psnr"] == rec.psnr
        assert f"{rec.id} <- {rec.real_name}: PSNR" in result.output
    # importing again adds nothing
    again = annotate(run.root, "--import-real", tmp_path / "real", *FAST)
    assert again.exit_code == 0 and "imported 0 real image(s)" in again.output
    assert len(aset.records()) == 3

    # painted seeds beside the real images: the interpreter's features of a real item are its projection's
    for item in render_items(aset, G, [5, 6]):
        aset.save_mask(item, intensity_mask(aset.image(item)))
    feats, masks, records = render_annotated(G, aset)
    assert sorted(r.kind for r in records) == ["real"] * 3 + ["seed"] * 2
    real_rec = next(r for r in records if r.kind == "real")
    _, taps = reconstruct(G, load_projection(aset.path(real_rec.id, "projection"), G)[0], with_taps=True)
    i = records.index(real_rec)
    tap = feats.taps[-1].name
    assert torch.equal(feats.maps[tap][i], taps[tap][0].permute(1, 2, 0).to(torch.float16))
    result = CliRunner().invoke(
        main,
        [
            "interpret",
            str(run.root),
            "--members",
            "2",
            "--epochs",
            "1",
            "--hidden",
            "8,8",
            "--pixels-per-epoch",
            "256",
            "--threads",
            "1",
        ],
    )
    assert result.exit_code == 0, result.output
    meta = json.loads(run.interpreter.with_suffix(".json").read_text())
    assert sorted(meta["annotations"]) == sorted(r.id for r in records) and meta["noise_mode"] == "const"


def test_the_page_api_serves_real_items(run, tmp_path):
    from fastapi.testclient import TestClient

    from datasetgan.annotate.api import create_app

    real_folder(tmp_path / "real", load_generator(run.generator), seeds=(3,))
    assert annotate(run.root, "--import-real", tmp_path / "real", *FAST).exit_code == 0
    client = TestClient(create_app(run.root))
    item = client.get("api/items").json()["items"][0]
    assert (item["id"], item["kind"], item["real_name"], item["state"]) == (
        "real_00000000",
        "real",
        "case3.png",
        "done",
    )
    assert item["psnr"] > 0 and item["ssim"] > 0
    original = client.get("api/items/real_00000000/original")
    assert original.status_code == 200 and original.headers["content-type"] == "image/png"
    assert (
        client.get("api/items/real_00000000/mask?format=raw").content
        == AnnotationSet(run.annotations).mask("real_00000000").tobytes()
    )
    assert client.get("api/items/real_0000000x/original").status_code == 422


def break_rgb(root):
    Image.fromarray(np.zeros((32, 32, 3), np.uint8)).save(root / "images" / "case12.png")


def break_size(root):
    Image.fromarray(np.zeros((30, 32), np.uint8)).save(root / "masks" / "case12.png")


def break_class(root):
    Image.fromarray(np.full((32, 32), 7, np.uint8)).save(root / "masks" / "case12.png")


def break_file(root):
    (root / "images" / "case12.png").write_bytes(b"\x89PNG\r\n\x1a\n truncated")


def break_missing_mask(root):
    (root / "masks" / "case12.png").unlink()


@pytest.mark.parametrize(
    "breaker,message",
    [
        (break_rgb, "images/case12.png: has 3 channel(s), the generator makes 1"),
        (break_size, "masks/case12.png: mask is 32x30, its image 32x32"),
        (break_class, "masks/case12.png: class id(s) [7] are not in labels.json"),
        (break_file, "images/case12.png: cannot read image"),
        (break_missing_mask, "images/case12.png: no mask with the same name"),
    ],
)
def test_bad_input_is_refused_and_nothing_is_written(run, tmp_path, breaker, message):
    real_folder(tmp_path / "real", load_generator(run.generator))
    breaker(tmp_path / "real")
    result = annotate(run.root, "--import-real", tmp_path / "real", *FAST)
    assert result.exit_code == 1
    lines = result.output.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("Error: ") and message in lines[0], result.output
    assert "Traceback" not in result.output
    assert not run.annotations.exists() or not any(run.annotations.iterdir())


def test_classes_must_match_the_set(run, tmp_path):
    real_folder(tmp_path / "real", load_generator(run.generator))
    aset = AnnotationSet(run.annotations)
    aset.set_classes(default_classes(4))
    result = annotate(run.root, "--import-real", tmp_path / "real", *FAST)
    assert result.exit_code == 1 and "labels.json: its classes differ" in result.output
    assert [p.name for p in run.annotations.iterdir()] == ["labels.json"]


def test_import_takes_stored_projections(run, tmp_path):
    """--projections: the projections `datasetgan project` stored are imported as they are, not recomputed."""
    G = load_generator(run.generator)
    expected = real_folder(tmp_path / "real", G)
    project = ["project", run.root, tmp_path / "real", "--out", tmp_path / "proj", "--steps", 5, "--perceptual", "none"]
    assert CliRunner().invoke(main, [str(a) for a in project]).exit_code == 0
    result = annotate(run.root, "--import-real", tmp_path / "real", "--projections", tmp_path / "proj", "--no-serve")
    assert result.exit_code == 0 and "imported 3 real image(s)" in result.output, result.output
    aset = AnnotationSet(run.annotations)
    for rec in aset.records():
        stored, meta = load_projection(tmp_path / "proj" / f"{rec.real_name[:-4]}.safetensors", G)
        imported, imported_meta = load_projection(aset.path(rec.id, "projection"), G)
        assert torch.equal(stored.ws, imported.ws) and stored.noise.keys() == imported.noise.keys()
        assert all(torch.equal(stored.noise[k], imported.noise[k]) for k in stored.noise)
        assert imported_meta["config"]["steps"] == 5 and rec.psnr == meta["psnr"]
        assert np.array_equal(aset.mask(rec.id), expected[rec.real_name])


@pytest.mark.parametrize(
    "change,message",
    [
        (lambda proj: (proj / "projections.json").unlink(), "proj/projections.json: not found"),
        (
            lambda proj: (proj / "projections.json").write_text(
                json.dumps({**json.loads((proj / "projections.json").read_text()), "fit": "pad"})
            ),
            "proj/projections.json: images were made square by 'pad', not 'crop'",
        ),
        (
            lambda proj: (proj / "projections.json").write_text(
                json.dumps({"images": [{"name": "case11"}, {"name": "case13"}]})
            ),
            "proj/projections.json: has no projection of 'case12'",
        ),
    ],
)
def test_bad_stored_projections_are_refused_and_nothing_is_written(run, tmp_path, change, message):
    real_folder(tmp_path / "real", load_generator(run.generator))
    project = ["project", run.root, tmp_path / "real", "--out", tmp_path / "proj", "--steps", 1, "--perceptual", "none"]
    assert CliRunner().invoke(main, [str(a) for a in project]).exit_code == 0
    change(tmp_path / "proj")
    result = annotate(run.root, "--import-real", tmp_path / "real", "--projections", tmp_path / "proj", "--no-serve")
    lines = result.output.strip().splitlines()
    assert result.exit_code == 1 and len(lines) == 1 and message in lines[0], result.output
    assert not run.annotations.exists() or not any(run.annotations.iterdir())
