"""Pair factory: determinism by seed, encoding, filtering, the generated-folder and shard writers."""

from __future__ import annotations

import io
import json
import tarfile

import numpy as np
import pytest
import torch
from PIL import Image

from datasetgan.data import load_image_folder
from datasetgan.encoding import EncodingError, drop_most_uncertain, encode_pair
from datasetgan.factory import FactoryError, PairFactory, generate


@pytest.fixture(scope="module")
def factory(tiny_run):
    torch.set_num_threads(1)
    return PairFactory(tiny_run)


def test_factory_properties(factory):
    assert factory.resolution == 16 and factory.img_channels == 1
    assert [c.id for c in factory.classes] == [0, 1, 2]
    assert len(factory.generator_sha256) == 64 and len(factory.interpreter_sha256) == 64


def test_same_seed_same_bytes_alone_and_in_batch(factory):
    alone = {s: encode_pair(next(factory.pairs([s], batch_size=1)), factory.classes) for s in (3, 11, 42)}
    batch = {p.seed: encode_pair(p, factory.classes) for p in factory.pairs([7, 3, 11, 5, 42], batch_size=5)}
    for s, files in alone.items():
        assert files == batch[s]
    assert alone[3]["image.png"] != alone[11]["image.png"]


def test_pairs_in_seed_order_and_lazy(factory):
    calls = []

    def stop():
        calls.append(1)
        return len(calls) > 2  # allow two batches

    got = [p.seed for p in factory.pairs([9, 1, 5, 2, 8], batch_size=2, should_stop=stop)]
    assert got == [9, 1, 5, 2]


def test_pair_contents(factory):
    p = next(factory.pairs([123]))
    assert p.image.dtype == np.uint8 and p.image.shape == (16, 16, 1)
    assert p.mask.dtype == np.uint8 and p.mask.shape == (16, 16) and p.mask.max() < 3
    assert p.uncertainty.dtype == np.float32 and p.uncertainty.shape == (16, 16)
    assert (p.uncertainty >= 0).all()
    top = np.sort(p.uncertainty.ravel())[::-1][: int(np.ceil(0.1 * 256))]
    assert p.score == pytest.approx(float(top.mean()), rel=1e-6)
    files = encode_pair(p, factory.classes)
    assert set(files) == {"image.png", "mask.png", "overlay.png", "uncertainty.png", "json"}
    assert np.array_equal(np.asarray(Image.open(io.BytesIO(files["mask.png"]))), p.mask)
    assert np.array_equal(np.asarray(Image.open(io.BytesIO(files["image.png"]))), p.image[..., 0])
    rec = json.loads(files["json"])
    assert rec["seed"] == 123 and rec["generator_sha256"] == factory.generator_sha256
    assert rec["interpreter_sha256"] == factory.interpreter_sha256
    assert rec["uncertainty_score"] == pytest.approx(p.score)
    assert set(encode_pair(p, factory.classes, include=("mask.png",))) == {"mask.png"}


def test_drop_most_uncertain_hand_built():
    scores = [0.5, 0.9, 0.1, 0.7, 0.3]
    assert drop_most_uncertain(scores, 0.4) == [0, 2, 4]  # drops 0.9 and 0.7
    assert drop_most_uncertain(scores, 0.0) == [0, 1, 2, 3, 4]
    assert drop_most_uncertain(scores, 1.0) == []
    assert drop_most_uncertain(scores, 0.2) == [0, 2, 3, 4]  # round(1.0) = 1: drops 0.9 only
    with pytest.raises(EncodingError):
        drop_most_uncertain(scores, 1.5)


def test_generate_folder_drops_exactly_the_most_uncertain(factory, tmp_path):
    seeds = list(range(20, 30))
    scores = {p.seed: p.score for p in factory.pairs(seeds)}
    out = tmp_path / "gen"
    man = generate(factory, seeds, out, drop_uncertain=0.3, batch_size=4)
    worst = sorted(seeds, key=lambda s: scores[s], reverse=True)[:3]
    assert sorted(man["seeds_dropped"]) == sorted(worst)
    assert man["seeds_kept"] == [s for s in seeds if s not in worst]
    assert sorted(p.stem for p in (out / "images").iterdir()) == [f"{s:08d}" for s in man["seeds_kept"]]
    assert not (out / ".staging").exists()
    ds = load_image_folder(out, 16, cache_dir=False)
    assert len(ds) == 7 and ds.masks is not None and [c.id for c in ds.classes] == [0, 1, 2]
    # same bytes as a fresh encoding of the same seed
    p = next(factory.pairs([man["seeds_kept"][0]]))
    files = encode_pair(p, factory.classes)
    assert (out / "masks" / f"{p.seed:08d}.png").read_bytes() == files["mask.png"]
    assert (out / "overlays" / f"{p.seed:08d}.png").read_bytes() == files["overlay.png"]
    assert (out / "uncertainty" / f"{p.seed:08d}.png").read_bytes() == files["uncertainty.png"]
    assert (out / "records" / f"{p.seed:08d}.json").read_bytes() == files["json"]


def test_generate_wds_shards_are_deterministic(factory, tmp_path):
    a = generate(factory, range(5), tmp_path / "a", fmt="wds", shard_size=2)
    generate(factory, range(5), tmp_path / "b", fmt="wds", shard_size=2, batch_size=1)
    assert a["shards"] == ["shard-000000.tar", "shard-000001.tar", "shard-000002.tar"]
    for name in a["shards"]:
        assert (tmp_path / "a" / name).read_bytes() == (tmp_path / "b" / name).read_bytes()
    with tarfile.open(tmp_path / "a" / "shard-000001.tar") as tar:
        names = tar.getnames()
        assert names[:5] == [
            f"00000002.{k}" for k in ("image.png", "mask.png", "overlay.png", "uncertainty.png", "json")
        ]
        assert all(m.mtime == 0 and m.uid == 0 and m.uname == "" for m in tar.getmembers())
        rec = json.loads(tar.extractfile("00000003.json").read())
        assert rec["seed"] == 3


def test_generate_refuses_non_empty_output(factory, tmp_path):
    (tmp_path / "x").mkdir()
    (tmp_path / "x" / "f").write_text("keep me")
    with pytest.raises(FactoryError, match="not an empty folder"):
        generate(factory, range(2), tmp_path / "x")


def test_factory_refuses_mismatched_interpreter(tiny_run, tmp_path):
    import shutil

    run = tmp_path / "run"
    shutil.copytree(tiny_run, run)
    meta = json.loads((run / "interpreter.json").read_text())
    meta["generator_sha256"] = "0" * 64
    (run / "interpreter.json").write_text(json.dumps(meta))
    with pytest.raises(FactoryError, match="trained on generator"):
        PairFactory(run)
    with pytest.raises(FactoryError, match="datasetgan train"):
        PairFactory(tmp_path / "missing")


def test_cli_generate(tiny_run, tmp_path):
    from click.testing import CliRunner

    from datasetgan.cli.generate import command

    out = tmp_path / "wds"
    res = CliRunner().invoke(
        command,
        [
            str(tiny_run),
            "--n",
            "6",
            "--seed-start",
            "10",
            "--out",
            str(out),
            "--format",
            "wds",
            "--shard-size",
            "4",
            "--drop-uncertain",
            "0.5",
            "--batch-size",
            "4",
        ],
    )
    assert res.exit_code == 0, res.output
    man = json.loads((out / "manifest.json").read_text())
    assert len(man["seeds_kept"]) == 3 and len(man["seeds_dropped"]) == 3
    assert man["shards"] == ["shard-000000.tar"]
    with tarfile.open(out / "shard-000000.tar") as tar:
        assert sorted({n.split(".")[0] for n in tar.getnames()}) == [f"{s:08d}" for s in man["seeds_kept"]]
    scores = man["scores"]
    assert max(scores[f"{s:08d}"] for s in man["seeds_kept"]) <= min(scores[f"{s:08d}"] for s in man["seeds_dropped"])
    res = CliRunner().invoke(command, [str(tmp_path / "norun"), "--n", "2", "--out", str(tmp_path / "o")])
    assert res.exit_code == 1 and "does not exist" in res.output
    res = CliRunner().invoke(command, [str(tiny_run), "--n", "2", "--out", str(out)])
    assert res.exit_code == 1 and "not an empty folder" in res.output
    assert "Example" in CliRunner().invoke(command, ["--help"]).output


def test_rgb_run_with_five_classes(tmp_path):
    from conftest import build_tiny_run

    run = build_tiny_run(tmp_path / "rgb", resolution=32, img_channels=3, num_classes=5, annotated=3, members=2)
    f = PairFactory(run)
    assert f.img_channels == 3 and f.resolution == 32 and len(f.classes) == 5
    man = generate(f, [4, 8, 15], tmp_path / "out", batch_size=2)
    assert man["seeds_kept"] == [4, 8, 15] and man["seeds_dropped"] == []
    ds = load_image_folder(tmp_path / "out", 32, cache_dir=False)
    assert ds.images.shape == (3, 3, 32, 32) and ds.masks.max() < 5 and len(ds.classes) == 5
    p = next(f.pairs([8]))
    ov = np.asarray(Image.open(tmp_path / "out" / "overlays" / "00000008.png"))
    assert ov.shape == (32, 32, 3)
    assert np.array_equal(ov[p.mask == 0], p.image[p.mask == 0])  # class 0 is not tinted
    if (p.mask > 0).any():
        assert not np.array_equal(ov[p.mask > 0], p.image[p.mask > 0])
