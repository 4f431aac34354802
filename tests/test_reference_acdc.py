"""benchmarks/reference_acdc.py: the seeded choice of labelled images spread over patients, and the report
of the labelling arms (one record per arm, model and training set; shares of the real-trained test-R)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from datasetgan.data import default_classes, labels_to_json

SCRIPT = Path(__file__).resolve().parents[1] / "benchmarks" / "reference_acdc.py"


def script(*args, ok: bool = True) -> subprocess.CompletedProcess:
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(SCRIPT.parents[1]), os.environ.get("PYTHONPATH", "")]))
    res = subprocess.run([sys.executable, str(SCRIPT), *map(str, args)], capture_output=True, text=True, env=env)
    assert (res.returncode == 0) == ok, res.stdout + res.stderr
    return res


@pytest.fixture
def labelled(tmp_path) -> Path:
    """5 patients: 1, 2, 3, 4 and 6 slices."""
    root = tmp_path / "data"
    for sub in ("images", "masks"):
        (root / sub).mkdir(parents=True)
    for p, slices in enumerate((1, 2, 3, 4, 6)):
        for s in range(slices):
            for sub in ("images", "masks"):
                Image.fromarray(np.full((8, 8), s, np.uint8)).save(root / sub / f"patient{p:03d}_slice_{s}.png")
    (root / "labels.json").write_text(labels_to_json(default_classes(7)))
    return root


def chosen(folder: Path) -> list[str]:
    return json.loads((folder / "picked.json").read_text())["names"]


def test_pick_spreads_over_patients_reproducibly(labelled, tmp_path):
    script("pick", labelled, "--n", 7, "--seed", 0, "--out", tmp_path / "a")
    names = chosen(tmp_path / "a")
    patients = [n.split("_")[0] for n in names]
    # every patient once before any twice: 5 patients, then 2 more
    assert len(set(names)) == 7 and set(patients) == {f"patient{p:03d}" for p in range(5)}
    assert max(patients.count(p) for p in set(patients)) == 2
    for name in names:
        for sub in ("images", "masks"):
            link = tmp_path / "a" / sub / name
            assert link.is_symlink() and link.resolve() == (labelled / sub / name).resolve()
    assert (tmp_path / "a" / "labels.json").resolve() == (labelled / "labels.json").resolve()
    script("pick", labelled, "--n", 7, "--seed", 0, "--out", tmp_path / "b")
    assert chosen(tmp_path / "b") == names  # the same seed, the same choice
    script("pick", labelled, "--n", 7, "--seed", 1, "--out", tmp_path / "c")
    assert chosen(tmp_path / "c") != names  # another seed, another choice
    script("pick", labelled, "--n", 7, "--seed", 0, "--out", tmp_path / "a")  # done already: kept
    res = script("pick", labelled, "--n", 3, "--seed", 0, "--out", tmp_path / "a", ok=False)
    assert "picked.json: holds another choice" in res.stderr and chosen(tmp_path / "a") == names
    script("pick", labelled, "--n", 100, "--out", tmp_path / "all")
    assert len(chosen(tmp_path / "all")) == 16


def experiment(kind: str, n: str, model: str, test_r: float, test_g: float, epochs: int, n_train: int) -> dict:
    return {
        "set": f"{kind}{n}",
        "model": {"arch": model},
        "model_name": model,
        "post": None,
        "swa": False,
        "train": {"epochs": epochs, "batch_size": 8},
        "folds_k": 2,
        "folds": [{"fold": 0, "n_train": n_train}, {"fold": 1, "n_train": n_train}],
        "summary": {"test_r": {"miou": [test_r, 0.01]}, "test_g": {"miou": [test_g, 0.02]}},
    }


def write(path: Path, doc: dict) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(doc))


def arm_test_g(run: Path, arm: str) -> str:
    return str(run / "arms" / arm / "generated/test")


def test_report_has_one_record_per_arm_model_and_set(tmp_path):
    run = tmp_path / "run"
    real = experiment("real", "500", "unet", 0.60, 0.50, 20, 400)
    # the real-trained models, trained once, scored on each arm's test-G (bench run --test-generated ARM=DIR)
    real["summary"]["test_g_sets"] = {"seeds": {"miou": [0.50, 0.02]}, "real": {"miou": [0.31, 0.03]}}
    test_sets = {
        "test_g": {"path": arm_test_g(run, "seeds")},
        "test_g_sets": {arm: {"path": arm_test_g(run, arm)} for arm in ("seeds", "real")},
    }
    write(
        run / "bench/results.json",
        {"experiments": {"real500/unet": real, "real500/prior": {**real, "model": None}}, "test_sets": test_sets},
    )
    write(run / "fid.json", {"fid": 150.0, "generated": 2000, "real": 1312})
    for arm, synth in (("seeds", 0.48), ("real", 0.54)):
        write(
            run / "arms" / arm / "bench/results.json",
            {
                "experiments": {
                    "s/unet": experiment("synthetic", "1500", "unet", synth, 0.7, 7, 1200),
                    "h/unet": experiment("hybrid", "1500+30", "unet", 0.63, 0.7, 7, 1224),
                    "h/unet+swa": {**experiment("hybrid", "1500+30", "unet", 0.9, 0.7, 7, 1224), "swa": True},
                },
                "test_sets": {"test_g": {"path": arm_test_g(run, arm)}},
                "grading": {"n": 10, "counts": {"good": 2, "partial": 7, "bad": 1}, "mean_wrong": 0.1},
                "agreement": {
                    "n": 4,
                    "classes": ["bg", "a"],
                    "iou": [0.9, 0.3],
                    "dice": [0.95, 0.4],
                    "miou": 0.6,
                    "miou_fg": 0.3,
                    "pixel_accuracy": 0.9,
                },
            },
        )
        write(run / "arms" / arm / "interpreter.json", {"annotations": ["x"] * 30})
    script("report", run, "--arms", "seeds,real", "--to", tmp_path / "out")
    doc = json.loads((tmp_path / "out/results/reference_acdc.json").read_text())
    keys = [(r["arm"], r["training_set"]) for r in doc["records"]]
    assert keys == [(a, k) for a in ("seeds", "real") for k in ("synthetic", "real", "hybrid")]
    by = {(r["arm"], r["training_set"]): r for r in doc["records"]}
    assert by["seeds", "synthetic"]["share_of_real"] == pytest.approx(0.8) and not by["seeds", "synthetic"]["goal_met"]
    assert by["real", "synthetic"]["share_of_real"] == pytest.approx(0.9) and by["real", "synthetic"]["goal_met"]
    assert by["real", "hybrid"]["share_of_real"] == pytest.approx(1.05) and by["real", "hybrid"]["goal_met"]
    assert by["seeds", "real"]["shared_across_arms"] and by["seeds", "real"]["share_of_real"] is None
    assert by["seeds", "synthetic"]["steps_per_fold"] == 7 * 150 and by["seeds", "real"]["steps_per_fold"] == 20 * 50
    assert (by["real", "hybrid"]["test_r_miou_mean"], by["real", "hybrid"]["test_r_miou_std"]) == (0.63, 0.01)
    # each arm's real rows on that arm's test-G; the arms' own rows on theirs
    for arm, g in (("seeds", (0.50, 0.02)), ("real", (0.31, 0.03))):
        r = by[arm, "real"]
        assert (r["test_g_miou_mean"], r["test_g_miou_std"], r["test_g_set"]) == (*g, arm_test_g(run, arm))
        assert by[arm, "synthetic"]["test_g_set"] == arm_test_g(run, arm)
    assert by["real", "real"]["test_r_miou_mean"] == by["seeds", "real"]["test_r_miou_mean"] == 0.60
    # results of the first version (one unnamed test-G: the first arm's): no test-G figures for another arm
    del real["summary"]["test_g_sets"], test_sets["test_g_sets"]
    write(run / "bench/results.json", {"experiments": {"real500/unet": real}, "test_sets": test_sets})
    script("report", run, "--arms", "seeds,real", "--to", tmp_path / "old")
    old = json.loads((tmp_path / "old/results/reference_acdc.json").read_text())
    by = {(r["arm"], r["training_set"]): r for r in old["records"]}
    assert (by["seeds", "real"]["test_g_miou_mean"], by["seeds", "real"]["test_g_set"]) == (
        0.50,
        arm_test_g(run, "seeds"),
    )
    assert (by["real", "real"]["test_g_miou_mean"], by["real", "real"]["test_g_set"]) == (None, None)
    arm = doc["arms"]["real"]
    assert arm["fid"] == 150.0 and arm["agreement"]["miou"] == 0.6 and arm["grading"]["good"] == 0.2
    text = (tmp_path / "out/RESULTS.md").read_text()
    assert "## Second reference run on ACDC (labelling arms)" in text
    assert "Arm `seeds`, U-Net: synthetic 0.80 of real (goal ≥ 0.85: short by 0.05)" in text
    assert "Arm `real`, U-Net: synthetic 0.90 of real (goal ≥ 0.85: met by +0.05)" in text
