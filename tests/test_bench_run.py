"""A tiny benchmark on ACDC (32x32, one epoch, a few images) through the command line, the
model-assisted annotator and pair grading."""

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from click.testing import CliRunner
from support import ACDC

from datasetgan.cli import main

pytestmark = pytest.mark.skipif(not ACDC.is_dir(), reason=f"ACDC data not found at {ACDC}")


def _copy(src_split: str, names: list[str], dst: Path, rename=None) -> None:
    for sub in ("images", "masks"):
        (dst / sub).mkdir(parents=True, exist_ok=True)
        for i, n in enumerate(names):
            shutil.copy(ACDC / src_split / sub / f"{n}.png", dst / sub / f"{rename(i) if rename else n}.png")
    shutil.copy(ACDC / "labels.json", dst / "labels.json")


def _names(split: str, k: int, step: int = 7) -> list[str]:
    return sorted(p.stem for p in (ACDC / split / "images").glob("*.png"))[::step][:k]


def _generated(dst: Path, names: list[str], first_seed: int, annotations: int) -> None:
    """A folder laid out as `datasetgan generate` writes it (ACDC slices standing in for pairs)."""
    _copy("val", names, dst, rename=lambda i: f"{first_seed + i:08d}")
    (dst / "records").mkdir()
    for i in range(len(names)):
        seed = first_seed + i
        (dst / "records" / f"{seed:08d}.json").write_text(json.dumps({"seed": seed, "score": (seed * 37 % 11) / 10}))
    (dst / "manifest.json").write_text(
        json.dumps({"seeds": list(range(first_seed, first_seed + len(names))), "n_annotations": annotations})
    )


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    root = tmp_path_factory.mktemp("benchdata")
    _copy("train", _names("train", 12), root / "real")
    _copy("test", _names("test", 6, 37), root / "test")
    val = _names("val", 16, 11)
    _generated(root / "synth", val[:10], 0, 30)
    _generated(root / "testg", val[10:], 100, 30)
    return root


@pytest.fixture(autouse=True)
def _env(monkeypatch, tmp_path):
    monkeypatch.setenv("DATASETGAN_CACHE", str(tmp_path / "cache"))
    torch.set_num_threads(1)


TINY = [
    "--resolution",
    "32",
    "--epochs",
    "1",
    "--batch-size",
    "4",
    "--threads",
    "1",
    "--no-progress",
    "--unet-channels",
    "8,16,32",
]


def test_tiny_run_writes_all_outputs(data, tmp_path):
    run = tmp_path / "run"
    run.mkdir()
    args = [
        "bench",
        "run",
        str(run),
        "--real",
        str(data / "real"),
        "--test-real",
        str(data / "test"),
        "--synthetic",
        str(data / "synth"),
        "--test-generated",
        str(data / "testg"),
        "--models",
        "unet,fcn",
        "--folds",
        "2",
        "--hybrid-real",
        "3",
        "--drop-uncertain",
        "0.2",
        "--fold-groups",
        r"patient\d+",
    ] + TINY
    r = CliRunner().invoke(main, args)
    assert r.exit_code == 0, r.output
    doc = json.loads((run / "bench/results.json").read_text())
    exps = doc["experiments"]
    sets = ("synthetic8", "real12", "hybrid8+3")
    assert set(exps) == {f"{s}/{m}/dice_ce" for s in sets for m in ("unet", "fcn_mobilenet_v3_large")} | {
        f"{s}/prior" for s in sets
    }
    for e in exps.values():
        assert [f["fold"] for f in e["folds"]] == [0, 1]
        for f in e["folds"]:
            assert f["n_train"] + f["n_val"] == e["n_train"]
            for split in ("val", "test_r", "test_g"):
                assert 0 <= f[split]["miou"] <= 1 and len(f[split]["dice"]) == 4
        assert e["summary"]["test_r"]["folds"] == 2
        m, s = e["summary"]["test_r"]["miou"]
        vals = [f["test_r"]["miou"] for f in e["folds"]]
        assert m == pytest.approx(np.mean(vals)) and s == pytest.approx(np.std(vals))
    # the most uncertain 20 % of the 10 synthetic pairs were dropped (scores from records/)
    assert exps["synthetic8/unet/dice_ce"]["set_info"]["annotated"] == 30
    assert exps["real12/unet/dice_ce"]["fold_groups"] == r"patient\d+"
    tables = (run / "bench/tables.md").read_text()
    for heading in ("Table I:", "Table II:", "Table III:", "Per-class Dice", "held-out fold"):
        assert heading in tables
    for png in ("bars.png", "predictions.png"):
        assert (run / "bench" / png).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"

    again = CliRunner().invoke(main, args)  # resumes: every fold is already there
    assert again.exit_code == 0 and again.output.count("already done") == 18
    bad = CliRunner().invoke(main, args[:9] + ["--test-generated", str(data / "synth")] + args[11:])
    assert args[9] == "--test-generated"
    assert bad.exit_code != 0 and "disjoint" in bad.output


def test_bad_input_is_a_clear_error(data, tmp_path):
    (tmp_path / "r").mkdir()
    r = CliRunner().invoke(
        main, ["bench", "run", str(tmp_path / "r"), "--synthetic", str(data / "real"), "--sets", "synthetic"] + TINY
    )
    assert r.exit_code != 0 and "not a generated folder" in r.output and "Traceback" not in r.output
    r = CliRunner().invoke(
        main, ["bench", "run", str(tmp_path / "r"), "--real", str(data / "real"), "--models", "segformer"] + TINY
    )
    assert r.exit_code != 0 and "unknown segmenter" in r.output


def test_annotator_auto_annotate_and_grading(data, tmp_path):
    from datasetgan.annotations import AnnotationSet
    from datasetgan.bench.autoannotate import auto_annotate
    from datasetgan.bench.segmenters import load_segmenter
    from datasetgan.checkpoint import save_generator
    from datasetgan.networks import Generator, GeneratorConfig

    run = tmp_path / "run"
    run.mkdir()
    model_path = tmp_path / "annotator.safetensors"
    r = CliRunner().invoke(
        main,
        [
            "bench",
            str(run),
            "--real",
            str(data / "real"),
            "--test-real",
            str(data / "test"),
            "--train-annotator",
            str(model_path),
            "--annotator-model",
            "unet",
        ]
        + TINY,
    )
    assert r.exit_code == 0, r.output  # the previous release's spelling still works, with a notice
    assert "deprecated" in r.output and "bench annotator" in r.output
    doc = json.loads((run / "bench/results.json").read_text())
    assert doc["annotator"]["n_train"] == 12 and 0 <= doc["annotator"]["test_r"]["miou"] <= 1
    assert "Model-assisted annotator" in (run / "bench/tables.md").read_text()

    torch.manual_seed(0)
    G = Generator(GeneratorConfig(resolution=32, z_dim=16, w_dim=16, mapping_layers=1, channel_base=64, channel_max=16))
    save_generator(run / "generator.safetensors", G)
    ids = auto_annotate(run, model_path, n=3)
    assert ids == ["seed_00000000", "seed_00000001", "seed_00000002"]
    aset = AnnotationSet(run / "annotations")
    model = load_segmenter(model_path)
    for i in ids:
        rec = aset.record(i)
        assert (rec.state, rec.source) == ("done", "model:unet")
        img = aset.image(i)
        assert (aset.mask(i) == model.predict(img[None, None])[0]).all()
    aset.save_mask(ids[0], np.zeros((32, 32), np.uint8), source="human")  # a person's work is kept
    assert auto_annotate(run, model_path, n=3) == ids[1:]
    assert aset.record(ids[0]).source == "human"

    # grading against the annotator, then against the folder's own masks (all pairs must be good)
    r = CliRunner().invoke(
        main,
        ["bench", str(run), "--grade", str(data / "synth"), "--grade-reference", str(model_path), "--grade-n", "5"]
        + TINY,
    )
    assert r.exit_code == 0, r.output
    g = json.loads((run / "bench/results.json").read_text())["grading"]
    assert g["n"] == 5 and sum(g["counts"].values()) == 5 and g["reference_kind"] == "model:unet"
    r = CliRunner().invoke(main, ["bench", "grade", str(run), str(data / "synth"), "--reference", str(data / "synth")])
    assert r.exit_code == 0, r.output
    g = json.loads((run / "bench/results.json").read_text())["grading"]
    assert g["counts"] == {"good": 10, "partial": 0, "bad": 0}
    assert "Pair grading" in (run / "bench/tables.md").read_text()


def test_on_pairs_from_the_factory(tiny_run, tmp_path):
    """The real contract: folders written by `datasetgan generate` (tiny run, 16x16, 3 classes)."""
    from datasetgan.factory import PairFactory, generate

    run = tmp_path / "run"
    shutil.copytree(tiny_run, run)
    factory = PairFactory(run)
    generate(factory, range(0, 10), run / "generated/train")
    generate(factory, range(1000, 1004), run / "generated/test")
    args = [
        "bench",
        "run",
        str(run),
        "--synthetic",
        str(run / "generated/train"),
        "--test-generated",
        str(run / "generated/test"),
        "--models",
        "unet",
        "--folds",
        "2",
        "--drop-uncertain",
        "0.2",
        "--resolution",
        "16",
        "--epochs",
        "1",
        "--batch-size",
        "4",
        "--threads",
        "1",
        "--no-progress",
        "--unet-channels",
        "4,8",
    ]
    r = CliRunner().invoke(main, args)
    assert r.exit_code == 0, r.output
    e = json.loads((run / "bench/results.json").read_text())["experiments"]["synthetic8/unet/dice_ce"]
    assert e["set_info"]["annotated"] == 4  # read from the run's interpreter.json
    assert e["summary"]["test_g"]["folds"] == 2 and len(e["folds"][0]["test_g"]["dice"]) == 3
    r = CliRunner().invoke(main, args[:6] + [str(run / "generated/train")] + args[7:])
    assert r.exit_code != 0 and "disjoint" in r.output


def _swapped_labels(src: Path, dst: Path) -> Path:
    """A copy of a labelled folder whose labels.json names classes 1 and 3 the other way round."""
    shutil.copytree(src, dst)
    doc = json.loads((dst / "labels.json").read_text())
    names = {c["id"]: c["name"] for c in doc["classes"]}
    for c in doc["classes"]:
        if c["id"] in (1, 3):
            c["name"] = names[4 - c["id"]]
    (dst / "labels.json").write_text(json.dumps(doc))
    return dst


@pytest.mark.parametrize("spelling", [["run"], []], ids=["bench-run", "previous-spelling"])
def test_sets_must_agree_on_class_names_or_be_remapped(data, tmp_path, spelling):
    """#18: a real folder naming classes 1 and 3 the other way round from the synthetic pairs was mixed in
    silently (only the class count was compared); now a one-line-per-difference error, or --class-map."""
    swapped = _swapped_labels(data / "real", tmp_path / "swapped")
    run = tmp_path / "run"
    run.mkdir()
    args = [
        "bench",
        *spelling,
        str(run),
        "--real",
        str(swapped),
        "--synthetic",
        str(data / "synth"),
        "--sets",
        "real,hybrid",
        "--hybrid-real",
        "3",
        "--models",
        "unet",
        "--folds",
        "2",
    ] + TINY
    r = CliRunner().invoke(main, args)
    assert r.exit_code != 0 and "Traceback" not in r.output
    assert "class 1 is 'left_ventricle'" in r.output and "class 3 is 'right_ventricle'" in r.output
    assert not (run / "bench" / "results.json").exists()
    r = CliRunner().invoke(main, args + ["--class-map", "1=3,3=1"])
    assert r.exit_code == 0, r.output
    doc = json.loads((run / "bench/results.json").read_text())
    assert [c["name"] for c in doc["classes"]] == [
        c["name"] for c in json.loads((data / "synth/labels.json").read_text())["classes"]
    ]
    assert set(doc["experiments"]) == {
        "real12/unet/dice_ce",
        "hybrid10+3/unet/dice_ce",
        "real12/prior",
        "hybrid10+3/prior",
    }
    r = CliRunner().invoke(main, args + ["--class-map", "1=7"])
    assert r.exit_code != 0 and "--class-map" in r.output


def test_run_folder_must_exist(data, tmp_path):
    """#18: `bench` on a RUN path that does not exist created it; now it is refused, nothing created."""
    missing = tmp_path / "no_such_run"
    for args in (["bench", str(missing)], ["bench", "run", str(missing)], ["bench", "report", str(missing)]):
        r = CliRunner().invoke(main, args + (["--real", str(data / "real")] + TINY if args[1] != "report" else []))
        assert r.exit_code != 0 and "does not exist" in r.output, r.output
    assert not missing.exists()


def test_losses_postprocessing_rows_and_report(data, tmp_path):
    run = tmp_path / "run"
    run.mkdir()
    args = [
        "bench",
        "run",
        str(run),
        "--real",
        str(data / "real"),
        "--test-real",
        str(data / "test"),
        "--models",
        "unet",
        "--folds",
        "2",
        "--loss",
        "ce,tversky:alpha=0.6,beta=0.4",
        "--loss",
        "lovasz",
        "--min-component",
        "auto",
        "--classifier-gate",
        "--swa",
    ] + TINY
    r = CliRunner().invoke(main, args)
    assert r.exit_code == 0, r.output
    exps = json.loads((run / "bench/results.json").read_text())["experiments"]
    rows = {
        "real12/prior",
        "real12/unet/ce",
        "real12/unet/tversky(alpha=0.6,beta=0.4)",
        "real12/unet/lovasz",
        "real12/unet/ce+swa",
        "real12/unet/ce+mincomp",
        "real12/unet/ce+gate",
    }
    assert set(exps) == rows
    assert exps["real12/unet/tversky(alpha=0.6,beta=0.4)"]["train"]["loss"] == "tversky:alpha=0.6,beta=0.4"
    assert exps["real12/unet/ce+swa"]["train"]["swa"] is True
    for key, e in exps.items():
        assert [f["fold"] for f in e["folds"]] == [0, 1], key
        for f in e["folds"]:
            for split in ("val", "test_r"):
                rec = f[split]
                for k in ("miou", "mdice_fg", "hd95", "assd", "chamfer", "bf", "mmcl", "ece"):
                    assert k in rec, (key, k)
                assert len(rec["bf_per_class"]) == 4 and rec["bf_tau_px"] == pytest.approx(2 * 32 / 256)
    for f in exps["real12/unet/ce+mincomp"]["folds"]:
        assert f["min_area"] in (0, 1, 2, 4, 8, 16)  # chosen on the fold's held-out part (32 px candidates)
    for f in exps["real12/unet/ce+gate"]["folds"]:
        assert 0 <= f["test_r"]["gate_accuracy"] <= 1
    # the prior row ignores the image: every test image gets the same label map
    r = CliRunner().invoke(main, ["bench", "report", str(run)])
    assert r.exit_code == 0, r.output
    comp = json.loads((run / "bench/methods.json").read_text())
    assert {m["key"] for m in comp["methods"]} == rows and comp["best"] in rows
    assert (run / "bench/methods.png").read_bytes()[:4] == b"\x89PNG"
    md = (run / "bench/methods.md").read_text()
    assert "real12/unet/ce+gate" in md and "p=" in md


@pytest.mark.slow
def test_paper_profile_runs_on_tiny_data(data, tmp_path):
    """The `paper` profile (DeepLabV3-ResNet101 with its auxiliary head, 256x256, SGD) end to end on a
    few images, so a GPU user's run does not fail after hours."""
    run = tmp_path / "run"
    run.mkdir()
    r = CliRunner().invoke(
        main,
        [
            "bench",
            "run",
            str(run),
            "--profile",
            "paper",
            "--real",
            str(data / "real"),
            "--real-limit",
            "4",
            "--test-real",
            str(data / "test"),
            "--folds",
            "2",
            "--epochs",
            "1",
            "--batch-size",
            "2",
            "--threads",
            "2",
            "--no-progress",
            "--min-component",
            "auto",
            "--classifier-gate",
        ],
    )
    assert r.exit_code == 0, r.output
    doc = json.loads((run / "bench/results.json").read_text())
    assert doc["profile"]["resolution"] == 256
    e = doc["experiments"]["real4/deeplabv3_resnet101/ce"]
    assert e["model"]["aux_loss"] is True and e["summary"]["test_r"]["folds"] == 2
    assert e["folds"][0]["test_r"]["bf_tau_px"] == pytest.approx(2.0)


FACTORY_TINY = ["--models", "unet", "--folds", "2", "--resolution", "16", "--epochs", "1", "--batch-size", "4"]
FACTORY_TINY += ["--threads", "1", "--no-progress", "--unet-channels", "4,8"]


def _bench(run: Path, *args: str) -> dict:
    run.mkdir(exist_ok=True)
    r = CliRunner().invoke(main, ["bench", "run", str(run), *args, *FACTORY_TINY])
    assert r.exit_code == 0, r.output
    return json.loads((run / "bench/results.json").read_text())


def _folds(doc: dict, key: str, split: str, name: str | None = None) -> list[dict]:
    """Per fold, the figures of one split (a test-G set by name if ``name``)."""
    folds = doc["experiments"][key]["folds"]
    return [f["test_g_sets"][name] if name else f[split] for f in folds]


def test_several_test_g_sets_score_as_runs_with_each_alone(tiny_run, tmp_path):
    """#16: every model, trained once, is scored on each named test-G set; each set's figures are those of
    a run given that set alone (same seeds: same models), and a bare folder still works as before."""
    from datasetgan.factory import PairFactory, generate

    factory = PairFactory(tiny_run)
    gen = tmp_path / "generated"
    generate(factory, range(0, 10), gen / "train")
    generate(factory, range(1000, 1004), gen / "a")
    generate(factory, range(2000, 2006), gen / "b")
    train = ["--synthetic", str(gen / "train"), "--sets", "synthetic"]
    both = _bench(tmp_path / "both", *train, "--test-generated", f"a={gen / 'a'}", "--test-generated", f"b={gen / 'b'}")
    alone_a = _bench(tmp_path / "a", *train, "--test-generated", str(gen / "a"))  # a bare folder, as before
    alone_b = _bench(tmp_path / "b", *train, "--test-generated", f"b={gen / 'b'}")
    assert both["test_sets"]["test_g_sets"]["b"]["path"] == str(gen / "b")
    assert both["test_sets"]["test_g"] == both["test_sets"]["test_g_sets"]["a"]
    assert alone_a["test_sets"]["test_g"]["path"] == str(gen / "a")
    for key in ("synthetic10/unet/dice_ce", "synthetic10/prior"):
        e = both["experiments"][key]
        assert (
            e["summary"]["test_g_sets"]["b"]["folds"] == 2
            and e["summary"]["test_g"] == e["summary"]["test_g_sets"]["a"]
        )
        for split, name, alone in (("test_g", "a", alone_a), ("test_g", "b", alone_b), ("val", None, alone_a)):
            got, want = _folds(both, key, split, name), _folds(alone, key, split)
            assert [f["miou"] for f in got] == pytest.approx([f["miou"] for f in want], abs=1e-6), (key, name)
            assert [f["dice"] for f in got] == [pytest.approx(f["dice"], abs=1e-6, nan_ok=True) for f in want]
        assert _folds(both, key, "test_g") == _folds(both, key, "", "a")  # test_g: the first set's figures
    unet = "synthetic10/unet/dice_ce"
    assert [f["miou"] for f in _folds(both, unet, "", "a")] != [f["miou"] for f in _folds(both, unet, "", "b")]
    # an older single-set run given one more set: its folds are trained again (same seeds), scored on both
    r = CliRunner().invoke(
        main,
        ["bench", "run", str(tmp_path / "a"), *train, "--test-generated", str(gen / "a")]
        + ["--test-generated", f"b={gen / 'b'}", *FACTORY_TINY],
    )
    assert r.exit_code == 0 and r.output.count("has no figures on test_g:b; trained again") == 4, r.output
    again = json.loads((tmp_path / "a/bench/results.json").read_text())
    for key in ("synthetic10/unet/dice_ce", "synthetic10/prior"):
        assert [f["miou"] for f in _folds(again, key, "", "test-G")] == pytest.approx(
            [f["miou"] for f in _folds(alone_a, key, "test_g")], abs=1e-6
        )
        assert [f["miou"] for f in _folds(again, key, "", "b")] == pytest.approx(
            [f["miou"] for f in _folds(alone_b, key, "test_g")], abs=1e-6
        )
    tables = (tmp_path / "a/bench/tables.md").read_text()
    assert "mIoU on each test-G set" in tables and "| mIoU test-G b |" in tables


def test_bad_test_generated_is_a_one_line_error(data, tmp_path):
    """#16: a missing folder, an empty or repeated name, a set whose classes differ or whose seeds overlap
    the training pairs: one error naming the option or the set; nothing written."""
    swapped = _swapped_labels(data / "testg", tmp_path / "swapped")
    run = tmp_path / "run"
    run.mkdir()
    base = ["bench", "run", str(run), "--synthetic", str(data / "synth"), "--sets", "synthetic", "--models", "unet"]
    good = f"a={data / 'testg'}"
    cases = [
        ([good, f"b={tmp_path / 'nowhere'}"], f"--test-generated: 'b={tmp_path / 'nowhere'}': no folder"),
        ([str(tmp_path / "nowhere")], "no folder"),
        ([good, f"a={data / 'testg'}"], "--test-generated: the name 'a' is given twice"),
        ([str(data / "testg"), str(swapped)], "name each set: --test-generated NAME=DIR"),
        ([f"={data / 'testg'}"], "the NAME of NAME=DIR is empty"),
        ([f"a b={data / 'testg'}"], "may hold only letters"),
        ([good, f"b={swapped}"], f"test-G b ({swapped}): class 1 is 'left_ventricle'"),
        ([good, f"b={data / 'synth'}"], f"test-G b ({data / 'synth'}) shares 10 seed(s)"),
        ([good, f"b={data / 'real'}"], "--test-generated b: "),  # not a generated folder
    ]
    for values, message in cases:
        args = base + [a for v in values for a in ("--test-generated", v)] + TINY
        r = CliRunner().invoke(main, args)
        assert r.exit_code != 0 and message in r.output and "Traceback" not in r.output, (values, r.output)
        assert r.output.count("Error:") == 1 and not (run / "bench").exists(), r.output
        if "class 1" not in message:
            assert len(r.output.strip().splitlines()) == 1, r.output
