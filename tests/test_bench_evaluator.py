"""Post-processing, the prior baseline, the classifier gate, SWA, the hybrid real share, the method
comparison and the class checks of the benchmark, on small cases with known answers."""

import json

import numpy as np
import pytest
import torch

from datasetgan.bench import postprocess as P
from datasetgan.bench.compare import compare, paired, write_comparison
from datasetgan.bench.datasets import LabelledSet, check_compatible, class_differences, parse_class_map, remap_classes
from datasetgan.bench.gate import positive, train_gate
from datasetgan.bench.profiles import SegmenterTrainConfig
from datasetgan.bench.runner import postprocess
from datasetgan.bench.trainer import mixed_batches, steps_per_epoch
from datasetgan.data import ClassInfo, DataError


def test_remove_small_components_by_hand():
    pred = np.zeros((1, 8, 8), np.uint8)
    pred[0, 0:3, 0:3] = 1  # 9 px of class 1
    pred[0, 6, 6] = 1  # 1 px of class 1
    pred[0, 4:6, 0:2] = 2  # 4 px of class 2
    pred[0, 7, 0] = 2  # 1 px of class 2, two rows below the block: a component of its own
    out = P.remove_small_components(pred, 2)
    assert out[0, 6, 6] == 0 and out[0, 7, 0] == 0 and (out[0, 0:3, 0:3] == 1).all() and (out[0, 4:6, 0:2] == 2).all()
    out = P.remove_small_components(pred, 5)
    assert (out[0, 4:6, 0:2] == 0).all() and (out[0, 0:3, 0:3] == 1).all()
    diag = np.zeros((1, 4, 4), np.uint8)
    diag[0, 0, 0] = diag[0, 1, 1] = 1  # 8-connected: one component of 2 px
    assert (P.remove_small_components(diag, 2) == diag).all()
    assert (P.remove_small_components(pred, 1) == pred).all()


def test_min_area_chosen_on_held_out_data():
    truth = np.zeros((4, 16, 16), np.uint8)
    truth[:, 4:10, 4:10] = 1
    pred = truth.copy()
    pred[:, 0, 14:16] = 1  # 2-px false positives in every image
    assert P.choose_min_area(pred, truth, 2, [0, 2, 3, 40]) == 3  # 3 removes them, 40 removes the object too
    assert P.choose_min_area(truth, truth, 2, [0, 2, 3]) == 0  # nothing to gain: the smallest wins
    assert P.area_candidates(64) == [0, 2, 4, 8, 16, 32, 64] and P.area_candidates(128)[-1] == 256


def test_prior_map_is_the_per_pixel_majority():
    masks = np.array([[[0, 1], [2, 2]], [[0, 1], [1, 2]], [[1, 1], [1, 2]]], np.uint8)
    label, freq = P.prior_map(masks, 3)
    assert label.tolist() == [[0, 1], [1, 2]]
    assert freq == pytest.approx(np.array([[2 / 3, 1], [2 / 3, 1]]))


class _StubGate:
    def __init__(self, keep):
        self.keep = np.asarray(keep)

    def predict(self, images):
        return self.keep


def test_gate_zeroes_images_it_calls_negative_and_reports_accuracy():
    truth = np.zeros((3, 4, 4), np.uint8)
    truth[0, 1:3, 1:3] = 1  # only image 0 is positive
    pred = np.ones_like(truth)
    probs = torch.full((3, 2, 4, 4), 0.5)
    tests = {"test_r": (np.zeros((3, 1, 4, 4), np.uint8), truth)}
    out = postprocess("gate", {"test_r": (pred, probs)}, tests, 2, None, _StubGate([True, False, True]))
    rec = out["test_r"]
    assert rec["gate_accuracy"] == pytest.approx(2 / 3)
    # image 1 becomes background; images 0 and 2 keep the all-ones prediction: class 1 tp 4, fp 28
    assert rec["iou"][1] == pytest.approx(4 / 32)
    out = postprocess("mincomp", {"val": (pred, probs)}, {"val": tests["test_r"]}, 2, "auto", None)
    assert out["min_area"] == 0


def test_gate_learns_an_easy_task():
    rng = np.random.default_rng(0)
    images = (rng.random((24, 1, 16, 16)) * 40).astype(np.uint8)
    masks = np.zeros((24, 16, 16), np.uint8)
    masks[::2, 4:12, 4:12] = 1
    images[::2, :, 4:12, 4:12] += 200  # positives show a bright square
    gate = train_gate(images, masks, SegmenterTrainConfig(epochs=15, batch_size=8, lr=3e-3))
    assert (gate.predict(images) == positive(masks)).mean() >= 0.9


@pytest.mark.parametrize("weight", [0.0, 0.25, 0.5, 0.75, 1.0])
def test_mixed_batches_give_the_real_share(weight):
    is_real = np.zeros(100, bool)
    is_real[-5:] = True  # 5 real among 100: natural share 5 %
    batches = mixed_batches(is_real, 8, weight, np.random.default_rng(1))
    assert len(batches) == steps_per_epoch(100, 8)
    for b in batches:
        assert is_real[b].sum() == round(weight * len(b))
    drawn = np.concatenate(batches)
    assert is_real[drawn].mean() == pytest.approx(weight, abs=0.02)
    if 0 < weight:
        assert set(drawn[is_real[drawn]]) == set(np.flatnonzero(is_real))  # every real image is used


def test_hybrid_real_weight_reaches_the_trainer(monkeypatch):
    from datasetgan.bench import trainer
    from datasetgan.bench.segmenters import Segmenter, SegmenterConfig

    seen = []
    real_mixed = trainer.mixed_batches

    def spy(is_real, batch_size, weight, rng):
        out = real_mixed(is_real, batch_size, weight, rng)
        seen.append([int(np.asarray(is_real)[b].sum()) for b in out])
        return out

    monkeypatch.setattr(trainer, "mixed_batches", spy)
    images = np.zeros((12, 1, 16, 16), np.uint8)
    masks = np.zeros((12, 16, 16), np.uint8)
    is_real = np.arange(12) >= 10
    model = Segmenter(SegmenterConfig(arch="unet", resolution=16, unet_channels=(4, 8)))
    cfg = SegmenterTrainConfig(epochs=2, batch_size=4, hybrid_real_weight=0.5)
    trainer.train_segmenter(model, images, masks, cfg, progress=False, is_real=is_real)
    assert seen == [[2, 2, 2]] * 2
    seen.clear()
    trainer.train_segmenter(
        model, images, masks, SegmenterTrainConfig(epochs=1, batch_size=4), progress=False, is_real=is_real
    )
    assert seen == []  # default: plain shuffling, the natural share


def test_swa_averages_the_last_epochs(monkeypatch):
    """The SWA row's weights are the mean of the weights at the end of each of the last quarter of the
    epochs (batch-norm statistics recomputed), after a cosine schedule down to lr / 10."""
    from torch.optim import swa_utils

    from datasetgan.bench import trainer
    from datasetgan.bench.segmenters import Segmenter, SegmenterConfig

    snapshots, lrs = [], []

    class Recording(swa_utils.AveragedModel):
        def update_parameters(self, model):
            snapshots.append({k: v.detach().clone() for k, v in model.named_parameters()})
            return super().update_parameters(model)

    monkeypatch.setattr(swa_utils, "AveragedModel", Recording)
    rng = np.random.default_rng(0)
    images = (rng.random((8, 1, 16, 16)) * 255).astype(np.uint8)
    masks = (rng.random((8, 16, 16)) > 0.5).astype(np.uint8)
    torch.manual_seed(0)
    model = Segmenter(SegmenterConfig(arch="unet", resolution=16, unet_channels=(4, 8)))
    cfg = SegmenterTrainConfig(epochs=8, batch_size=4, lr=1e-2, swa=True)
    trainer.train_segmenter(model, images, masks, cfg, progress=False, should_stop=lambda: lrs.append(None) or False)
    assert len(snapshots) == trainer.swa_epochs(8) == 2 and len(lrs) == 16
    for name, p in model.named_parameters():
        assert torch.allclose(p, (snapshots[0][name] + snapshots[1][name]) / 2, atol=1e-6), name


def _entry(method, values):
    return {
        "set": "real10",
        "method": method,
        "model_name": method.split("/")[0],
        "folds": [{"fold": i, "test_r": {"mdice_fg": v, "miou": v, "hd95": 10 - v}} for i, v in enumerate(values)],
    }


def test_comparison_is_paired_over_folds_and_reads_only_results(tmp_path):
    from scipy.stats import ttest_rel

    a, b, c = [0.70, 0.72, 0.69, 0.71, 0.73], [0.60, 0.65, 0.61, 0.62, 0.64], [0.70, 0.71, 0.69, 0.72]
    doc = {
        "experiments": {
            "real10/unet/ce": _entry("unet/ce", a),
            "real10/unet/dice": _entry("unet/dice", b),
            "real10/unet/ce+gate": _entry("unet/ce+gate", c),
        },
        "metric_notes": "notes",
    }
    comp = compare(doc)
    assert comp["best"] == "real10/unet/ce"
    rows = {r["key"]: r for r in comp["methods"]}
    assert rows["real10/unet/dice"]["metrics"]["mdice_fg"] == pytest.approx([np.mean(b), np.std(b)])
    v = rows["real10/unet/dice"]["vs_best"]
    assert v["p"] == pytest.approx(ttest_rel(b, a).pvalue) and v["n"] == 5 and v["losses"] == 5
    assert rows["real10/unet/ce+gate"]["vs_best"]["n"] == 4  # only the folds both rows have
    assert paired({0: 1.0}, {0: 2.0}) is None
    (tmp_path / "results.json").write_text(json.dumps(doc))
    written = write_comparison(tmp_path)
    md = (tmp_path / "methods.md").read_text()
    assert (
        "real10/unet/dice" in md
        and " *" in md
        and {p.name for p in written} == {"methods.md", "methods.json", "methods.png"}
    )


def _set(names, kind="real"):
    classes = [ClassInfo(i, n, "#000000") for i, n in enumerate(names)]
    masks = np.array([[[0, 1], [2, 3]]], np.uint8)[:, :, :] % len(names)
    return LabelledSet(kind, np.zeros((1, 1, 2, 2), np.uint8), masks, ["a"], classes, info={"path": kind})


def test_class_differences_one_line_each():
    acdc = ["background", "right_ventricle", "myocardium", "left_ventricle"]
    swapped = ["background", "left_ventricle", "myocardium", "right_ventricle"]
    lines = class_differences("real", _set(swapped).classes, "synthetic", _set(acdc).classes)
    assert lines == [
        "real: class 1 is 'left_ventricle' but synthetic calls it 'right_ventricle'",
        "real: class 3 is 'right_ventricle' but synthetic calls it 'left_ventricle'",
    ]
    with pytest.raises(DataError) as e:
        check_compatible({"synthetic": _set(acdc), "real": _set(swapped)})
    assert str(e.value).count("\n") == 2
    assert class_differences("a", _set(acdc[:3]).classes, "b", _set(acdc).classes) == [
        "a: has no class 3 (b calls it 'left_ventricle')"
    ]
    fixed = remap_classes(_set(swapped), parse_class_map("1=3,3=1"))
    assert [c.name for c in fixed.classes] == acdc and fixed.masks.tolist() == [[[0, 3], [2, 1]]]
    assert check_compatible({"synthetic": _set(acdc), "real": fixed}) == _set(acdc).classes
    for bad in ("1=9,3=1", "1=2"):
        with pytest.raises(DataError):
            remap_classes(_set(swapped), parse_class_map(bad))
    with pytest.raises(ValueError):
        parse_class_map("1:3")


def test_bench_names():
    """#18: the bench training config is not a second `TrainConfig`, and no module is aliased `D`."""
    import datasetgan.bench.profiles as profiles
    import datasetgan.bench.runner as runner

    assert not hasattr(profiles, "TrainConfig") and not hasattr(runner, "D")
