"""Benchmark metrics, folds and pair grading against hand-computed values."""

import json
import math

import numpy as np
import pytest

from datasetgan.bench import metrics as M
from datasetgan.bench.folds import kfold
from datasetgan.bench.grading import grade, grade_pairs, wrong_fraction
from datasetgan.bench.trainer import batches

TRUTH = np.array([[0, 0, 1, 1], [0, 0, 1, 1], [2, 2, 0, 0], [2, 2, 0, 0]], dtype=np.uint8)
PRED = np.array([[0, 0, 1, 0], [0, 0, 1, 1], [2, 0, 0, 0], [2, 2, 0, 0]], dtype=np.uint8)


def test_confusion_and_scores_by_hand():
    cm = M.confusion_matrix(PRED, TRUTH, 4)
    expected = np.zeros((4, 4), int)
    expected[0, 0] = 8
    expected[1, 1], expected[1, 0] = 3, 1
    expected[2, 2], expected[2, 0] = 3, 1
    assert (cm == expected).all()
    s = M.scores_from_confusion(cm)
    # class 0: tp 8, fp 2, fn 0; classes 1 and 2: tp 3, fp 0, fn 1; class 3 absent from both -> NaN
    assert s["iou"][:3] == pytest.approx([0.8, 0.75, 0.75])
    assert math.isnan(s["iou"][3]) and math.isnan(s["dice"][3])
    assert s["dice"][:3] == pytest.approx([16 / 18, 6 / 7, 6 / 7])
    assert s["miou"] == pytest.approx((0.8 + 0.75 + 0.75) / 3)
    assert s["miou_fg"] == pytest.approx(0.75)
    assert s["mdice_fg"] == pytest.approx(6 / 7)
    assert s["pixel_accuracy"] == pytest.approx(14 / 16)


def test_empty_prediction():
    pred = np.zeros_like(TRUTH)
    r = M.evaluate(pred[None], TRUTH[None], 3)
    assert r["iou"] == pytest.approx([8 / 16, 0.0, 0.0])
    assert r["dice"][1] == 0.0 and r["miou_fg"] == 0.0
    assert r["miou"] == pytest.approx(0.5 / 3)
    # both foreground classes missed -> HD95 is the image diagonal
    assert r["hd95_per_class"][1:] == pytest.approx([math.hypot(4, 4)] * 2)
    assert r["bf_per_class"][1:] == [0.0, 0.0]
    assert r["hd95_per_class"][0] is None  # background has no HD95 (strict JSON: None, not NaN)


def test_per_image_iou_skips_absent_classes():
    t = np.stack([TRUTH, np.zeros_like(TRUTH)])
    p = np.stack([PRED, np.zeros_like(TRUTH)])
    iou = M.per_image_iou(p, t, 3)
    assert iou[0] == pytest.approx([0.8, 0.75, 0.75])
    assert iou[1, 0] == 1.0 and np.isnan(iou[1, 1:]).all()


@pytest.mark.parametrize("shift", [1, 2])
def test_hd95_shifted_square(shift):
    truth = np.zeros((1, 12, 12), np.uint8)
    truth[0, 3:6, 3:6] = 1
    pred = np.roll(truth, shift, axis=2)
    d = M.hd95(pred, truth, 2)
    # edge pixels of the shifted square are 0..shift away from the other square's edge; the 95th
    # percentile of these eight distances is the shift itself
    assert d[0, 0] == pytest.approx(shift)


def test_hd95_absent_and_identical():
    truth = np.zeros((2, 8, 8), np.uint8)
    truth[0, 2:4, 2:4] = 1
    d = M.hd95(truth.copy(), truth, 3)
    assert d[0, 0] == 0.0
    assert np.isnan(d[0, 1]) and np.isnan(d[1]).all()  # class absent from both masks: skipped
    pred = truth.copy()
    pred[1, 0, 0] = 2  # hallucinated class 2 in an image without it
    d = M.hd95(pred, truth, 3)
    assert d[1, 1] == pytest.approx(math.hypot(8, 8))


def test_bad_class_ids_refused():
    with pytest.raises(ValueError):
        M.confusion_matrix(np.array([3]), np.array([0]), 3)


def test_mean_std_skips_missing():
    assert M.mean_std([0.5, None, 0.7]) == pytest.approx((0.6, 0.1))
    assert M.mean_std([None]) == (None, None)


@pytest.mark.parametrize("n,k", [(10, 5), (11, 5), (500, 5), (7, 7), (5, 1)])
def test_folds_disjoint_and_covering(n, k):
    folds = kfold(n, k, seed=3)
    assert len(folds) == k
    held = [set(va.tolist()) for _, va in folds]
    if k > 1:
        assert set().union(*held) == set(range(n))
        assert sum(len(h) for h in held) == n  # disjoint
        assert max(map(len, held)) - min(map(len, held)) <= 1
    for tr, va in folds:
        assert not set(tr.tolist()) & set(va.tolist())
        assert set(tr.tolist()) | set(va.tolist()) == set(range(n))
    assert [v.tolist() for _, v in kfold(n, k, seed=3)] == [v.tolist() for _, v in folds]


def test_folds_errors():
    with pytest.raises(ValueError):
        kfold(3, 5)
    with pytest.raises(ValueError):
        kfold(10, 0)


@pytest.mark.parametrize("n,bs", [(2, 2), (9, 4), (17, 8), (33, 16), (5, 16)])
def test_batches_never_single(n, bs):
    b = batches(n, bs, np.random.default_rng(0))
    assert sorted(np.concatenate(b).tolist()) == list(range(n))
    assert all(len(x) >= 2 for x in b)


def test_grading_thresholds():
    ref = np.zeros((10, 10), np.uint8)
    one = ref.copy()
    one[0, 0] = 1  # 1 % wrong -> good
    two = ref.copy()
    two[0, :2] = 1  # 2 % -> partial
    quarter = ref.copy()
    quarter[:5, :5] = 1  # 25 % -> bad
    assert wrong_fraction(one, ref) == pytest.approx(0.01)
    assert [grade(wrong_fraction(m, ref)) for m in (ref, one, two, quarter)] == ["good", "good", "partial", "bad"]
    g = grade_pairs([ref, one, two, quarter], [ref] * 4)
    assert g["counts"] == {"good": 2, "partial": 1, "bad": 1}
    assert g["mean_wrong"] == pytest.approx((0 + 0.01 + 0.02 + 0.25) / 4)


def _edges(mask):
    from scipy.ndimage import binary_erosion

    return mask & ~binary_erosion(mask, border_value=0)


def _brute_force(p, t, tau):
    """Reference boundary metrics from all pairwise distances between boundary pixel centres."""
    a, b = np.argwhere(_edges(p)), np.argwhere(_edges(t))
    d = np.sqrt(((a[:, None, :] - b[None, :, :]) ** 2).sum(-1))
    d_pt, d_tp = d.min(1), d.min(0)
    prec, rec = (d_pt < tau).mean(), (d_tp < tau).mean()
    return {
        "hd95": max(np.percentile(d_pt, 95), np.percentile(d_tp, 95)),
        "assd": (d_pt.sum() + d_tp.sum()) / (len(d_pt) + len(d_tp)),
        "chamfer": (d_pt.mean() + d_tp.mean()) / 2,
        "bf": 2 * prec * rec / (prec + rec) if prec + rec else 0.0,
    }


def _blobs(seed, n=6, size=24):
    from scipy.ndimage import gaussian_filter

    rng = np.random.default_rng(seed)
    out = []
    while len(out) < n:
        a = gaussian_filter(rng.random((2, size, size)), (0, 2, 2)) > 0.5
        if a[0].any() and a[1].any():
            out.append((a[0], a[1]))
    return out


def test_boundary_metrics_match_monai_and_a_brute_force_reference():
    """HD95 and ASSD are MONAI's (HausdorffDistanceMetric / SurfaceDistanceMetric functions, also the
    scipy HD95 this benchmark used before); Chamfer (eq. 8) and BF (eq. 9-10) match all-pairs distances."""
    import torch
    from monai.metrics import compute_average_surface_distance, compute_hausdorff_distance

    for tau in (0.5, 2.0):
        for p, t in _blobs(0):
            got = M.boundary_scores(p[None].astype(np.uint8), t[None].astype(np.uint8), 2, tau=tau)
            ref = _brute_force(p, t, tau)
            for k in M.BOUNDARY_KEYS:
                assert got[k][0, 0] == pytest.approx(ref[k], abs=1e-6), k
            pt, tt = torch.as_tensor(p)[None, None], torch.as_tensor(t)[None, None]
            assert got["hd95"][0, 0] == pytest.approx(
                compute_hausdorff_distance(pt, tt, include_background=True, percentile=95).item(), abs=1e-5
            )
            assert got["assd"][0, 0] == pytest.approx(
                compute_average_surface_distance(pt, tt, include_background=True, symmetric=True).item(), abs=1e-5
            )


def test_chamfer_and_bf_by_hand():
    truth = np.zeros((1, 12, 12), np.uint8)
    truth[0, 3:6, 3:6] = 1
    pred = np.roll(truth, 1, axis=2)  # shifted one pixel right
    s = M.boundary_scores(pred, truth, 2, tau=0.5)
    # 8 boundary pixels each; in both directions 4 lie on the other boundary (distance 0), 4 at 1
    assert s["chamfer"][0, 0] == pytest.approx(0.5) and s["assd"][0, 0] == pytest.approx(0.5)
    assert s["bf"][0, 0] == pytest.approx(0.5)  # precision = recall = 4/8 below 0.5 px
    assert M.boundary_scores(pred, truth, 2, tau=2)["bf"][0, 0] == pytest.approx(1.0)
    assert M.bf_tau(256) == 2.0 and M.bf_tau(64) == 0.5  # 2 px at 256x256, scaled


def test_empty_mask_convention():
    """Absent from both: skipped (NaN); absent from exactly one: the image diagonal, BF 0; IoU/Dice of
    a class absent from the whole set: NaN, left out of the means."""
    truth = np.zeros((2, 8, 8), np.uint8)
    truth[0, 2:5, 2:5] = 1
    pred = np.zeros_like(truth)
    pred[1, 0:2, 0:2] = 1  # image 0: missed; image 1: hallucinated
    s = M.boundary_scores(pred, truth, 3)
    for k in ("hd95", "assd", "chamfer"):
        assert s[k][:, 0] == pytest.approx([math.hypot(8, 8)] * 2)
        assert np.isnan(s[k][:, 1]).all()  # class 2 in no mask at all
    assert s["bf"][:, 0].tolist() == [0.0, 0.0] and np.isnan(s["bf"][:, 1]).all()
    r = M.evaluate(pred, truth, 3)
    assert r["dice"][2] is None and r["iou"][2] is None and r["dice"][1] == 0.0
    assert r["mdice_fg"] == 0.0 and r["hd95"] == pytest.approx(math.hypot(8, 8)) and r["bf"] == 0.0


def test_calibration_by_hand():
    conf = np.array([0.95, 0.95, 0.55, 0.55])
    correct = np.array([True, False, True, True])
    mmcl, ece = M.calibration(conf, correct)
    assert mmcl == pytest.approx(0.75)
    # bin (0.933, 1]: accuracy 0.5, confidence 0.95; bin (0.533, 0.6]: accuracy 1, confidence 0.55
    assert ece == pytest.approx(0.5 * 0.45 + 0.5 * 0.45)
    assert M.calibration(np.array([1.0, 0.0]), np.array([True, False]))[1] == pytest.approx(0.0)
    assert M.calibration(np.array([0.7] * 10), np.array([True] * 7 + [False] * 3))[1] == pytest.approx(0.0)
    r = M.evaluate(PRED[None], TRUTH[None], 3, confidence=np.full((1, 4, 4), 0.875))
    assert r["mmcl"] == pytest.approx(0.875) and r["ece"] == pytest.approx(0.0)  # 14 of 16 pixels right


def test_group_folds_keep_groups_together():
    from datasetgan.bench.folds import group_kfold

    groups = [f"patient{i % 13:03d}" for i in range(100)]
    folds = group_kfold(groups, 5, seed=1)
    held = [va.tolist() for _, va in folds]
    assert sorted(sum(held, [])) == list(range(100))
    for tr, va in folds:
        assert not {groups[i] for i in tr} & {groups[i] for i in va}
    with pytest.raises(ValueError):
        group_kfold(["a", "b"], 3)


def test_results_of_concurrent_commands_are_merged_not_lost(tmp_path):
    """A benchmark, the annotator and grading may write one run's results.json at the same time."""
    from datasetgan.bench.runner import Results

    bench, annot, grading = Results(tmp_path), Results(tmp_path), Results(tmp_path)  # all read the empty file
    entry = {"folds": []}
    bench.set(command="datasetgan bench run")
    bench.set_experiment("real500/unet", entry)
    bench.save()
    annot.set(annotator={"model_name": "unet"})
    annot.save()
    entry["folds"].append({"fold": 0})  # the benchmark goes on changing its entry in place
    bench.save()
    grading.set(grading={"n": 3})
    grading.save()
    doc = json.loads((tmp_path / "results.json").read_text())
    assert doc["command"] == "datasetgan bench run" and doc["annotator"] == {"model_name": "unet"}
    assert doc["grading"] == {"n": 3} and doc["experiments"]["real500/unet"]["folds"] == [{"fold": 0}]
    assert bench.doc["annotator"] == {"model_name": "unet"}  # each process sees the others' results
