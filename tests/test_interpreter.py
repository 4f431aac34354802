"""Style interpreter: gathered features, fast vs reference inference, vote, JS, training, CLI."""

from __future__ import annotations

import json
import math
import shutil

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from click.testing import CliRunner

from datasetgan.annotations import AnnotationSet, render_items
from datasetgan.checkpoint import load_generator, save_generator
from datasetgan.cli.interpret import command as interpret_cmd
from datasetgan.data import default_classes
from datasetgan.features import FeatureError, TapFeatures, epoch_order, gather_bilinear, render_annotated
from datasetgan.interpreter import (
    Interpreter,
    InterpreterConfig,
    InterpreterInfo,
    image_score,
    js_divergence,
    load_interpreter,
    majority_vote,
    predict_from_logits,
    save_interpreter,
    train_interpreter,
)
from datasetgan.networks import FeatureTap, Generator, GeneratorConfig
from datasetgan.render import render_one

pytestmark = pytest.mark.usefixtures("one_thread")  # conftest.py: tiny tensors, one thread


# ---------------------------------------------------------------------------------------------
# Gathering equals upsample-then-index


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("r,R", [(4, 32), (8, 32), (16, 32), (32, 32), (3, 16), (5, 8)])
def test_gather_equals_upsample_then_index(r, R, dtype):
    g = torch.Generator().manual_seed(r * 100 + R)
    tap = torch.randn(3, r, r, 7, generator=g).to(torch.float16)  # stored like the features: fp16, NHWC
    img = torch.randint(0, 3, (500,), generator=g)
    y, x = torch.randint(0, R, (500,), generator=g), torch.randint(0, R, (500,), generator=g)
    ref = F.interpolate(tap.permute(0, 3, 1, 2).to(dtype), size=(R, R), mode="bilinear", align_corners=False)
    expected = ref[img, :, y, x]
    got = gather_bilinear(tap, img, y, x, R, dtype)
    tol = 1e-6 if dtype == torch.float32 else 1e-12
    torch.testing.assert_close(got, expected, rtol=tol, atol=tol)


def test_tap_features_gather_matches_full_volume():
    g = torch.Generator().manual_seed(0)
    taps = [FeatureTap("a", 4, 5), FeatureTap("b", 8, 3), FeatureTap("c", 16, 2)]
    dicts = [
        {t.name: torch.randn(1, t.channels, t.resolution, t.resolution, generator=g) for t in taps} for _ in range(2)
    ]
    feats = TapFeatures.from_tap_dicts(taps, dicts, 16)
    assert feats.channels == 10 and feats.num_images == 2
    img, y, x = torch.tensor([0, 1, 1, 0]), torch.tensor([0, 15, 7, 3]), torch.tensor([0, 15, 8, 12])
    vol = torch.stack([feats.full_volume(0), feats.full_volume(1)])
    torch.testing.assert_close(feats.gather(img, y, x), vol[img, :, y, x], rtol=1e-6, atol=1e-6)


def test_balanced_epoch_order_evens_out_classes():
    labels = torch.tensor([0] * 900 + [1] * 90 + [2] * 10)
    g = torch.Generator().manual_seed(0)
    order = epoch_order(torch.arange(1000), labels, 30000, g, balanced=True, num_classes=3)
    counts = torch.bincount(labels[order], minlength=3).float() / 30000
    assert torch.allclose(counts, torch.full((3,), 1 / 3), atol=0.02)
    plain = epoch_order(torch.arange(1000), labels, None, g)
    assert sorted(plain.tolist()) == list(range(1000))


# ---------------------------------------------------------------------------------------------
# Vote, tie-break, JS divergence, score


def logits_from_probs(p):
    return torch.log(torch.as_tensor(p, dtype=torch.float64))


def test_majority_vote_hand_built():
    # 1 image, 5 members, 3 classes, 2 pixels (as [N, M, K, P])
    p = torch.tensor(
        [
            [[0.6, 0.3, 0.1], [0.1, 0.8, 0.1]],
            [[0.1, 0.5, 0.4], [0.2, 0.7, 0.1]],
            [[0.1, 0.6, 0.3], [0.3, 0.3, 0.4]],
            [[0.2, 0.1, 0.7], [0.5, 0.4, 0.1]],
            [[0.1, 0.5, 0.4], [0.2, 0.2, 0.6]],
        ]
    ).permute(0, 2, 1)[None]  # [1, 5, 3, 2]
    # pixel 0 argmaxes: 0, 1, 1, 2, 1 -> class 1 although the mean softmax favours nothing special
    # pixel 1 argmaxes: 1, 1, 2, 0, 2 -> tie between 1 and 2 (two votes each): mean p1 = 0.48 > p2 = 0.26
    assert majority_vote(logits_from_probs(p)).tolist() == [[1, 1]]


def test_majority_vote_beats_mean_softmax_and_breaks_ties_by_it():
    # 3 members: two mildly prefer class 0, one is very sure of class 1 -> vote says 0, mean softmax says 1
    p = torch.tensor([[0.55, 0.45], [0.55, 0.45], [0.01, 0.99]])[None, :, :, None]
    assert p.mean(1).argmax(1).item() == 1
    assert majority_vote(logits_from_probs(p)).item() == 0
    # 4 members, a 2-2 tie between classes 0 and 2; class 1 has the largest mean but no votes
    p = torch.tensor([[0.5, 0.45, 0.05], [0.4, 0.35, 0.25], [0.05, 0.45, 0.5], [0.1, 0.3, 0.6]])[None, :, :, None]
    # mean p = [0.2625, 0.3875, 0.35]: the tie is between 0 and 2, and 2 wins on mean softmax
    assert majority_vote(logits_from_probs(p)).item() == 2
    p2 = p[:, :, [2, 1, 0]]  # swap classes 0 and 2: the winner follows
    assert majority_vote(logits_from_probs(p2)).item() == 0


def test_js_divergence_hand_computed():
    # p1 = [0.5, 0.5], p2 = [0.9, 0.1]; mean = [0.7, 0.3]
    # H(mean) = -(0.7 ln 0.7 + 0.3 ln 0.3) = 0.610864302
    # H(p1) = ln 2 = 0.693147181, H(p2) = -(0.9 ln 0.9 + 0.1 ln 0.1) = 0.325082973
    # JS = 0.610864302 - (0.693147181 + 0.325082973) / 2 = 0.101749225
    p = torch.tensor([[0.5, 0.5], [0.9, 0.1]], dtype=torch.float64)[None, :, :, None]
    assert js_divergence(p).item() == pytest.approx(0.101749225, abs=1e-8)
    # two members sure of different classes: ln 2; identical members: 0
    p = torch.tensor([[1.0, 0.0], [0.0, 1.0]], dtype=torch.float64)[None, :, :, None]
    assert js_divergence(p).item() == pytest.approx(math.log(2), abs=1e-12)
    p = torch.tensor([[0.2, 0.8], [0.2, 0.8]], dtype=torch.float64)[None, :, :, None]
    assert js_divergence(p).item() == pytest.approx(0.0, abs=1e-12)


def test_image_score_is_mean_of_top_ten_percent():
    js = torch.arange(100, dtype=torch.float32).reshape(1, 10, 10) / 100
    assert image_score(js).item() == pytest.approx(np.mean(np.arange(90, 100)) / 100)
    js = torch.zeros(1, 4, 4)
    js[0, 0, 0] = 1.0  # 16 pixels: top 10 % is ceil(1.6) = 2 pixels
    assert image_score(js).item() == pytest.approx(0.5)


# ---------------------------------------------------------------------------------------------
# Fast path equals the reference


def random_interpreter(G, num_classes, members=4, hidden=(12, 6), seed=0):
    """An interpreter with random weights and random BatchNorm statistics (negative scales included)."""
    taps = G.feature_taps()
    info = InterpreterInfo(taps, default_classes(num_classes), G.cfg.resolution, G.cfg.img_channels)
    interp = Interpreter(info, InterpreterConfig(members=members, hidden=hidden))
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in interp.parameters():
            p.copy_(torch.randn(p.shape, generator=g) * 0.5)
        for m in interp.modules():
            if isinstance(m, torch.nn.BatchNorm1d):
                m.running_mean.copy_(torch.randn(m.num_features, generator=g))
                m.running_var.copy_(torch.rand(m.num_features, generator=g) + 0.1)
    return interp.eval()


@pytest.mark.parametrize("res,channels,classes", [(16, 1, 3), (32, 3, 5), (16, 3, 2)])
def test_fast_path_equals_reference(res, channels, classes):
    torch.manual_seed(res + channels)
    G = Generator(
        GeneratorConfig(
            resolution=res,
            img_channels=channels,
            z_dim=16,
            w_dim=16,
            mapping_layers=2,
            channel_base=256,
            channel_max=24,
        )
    )
    interp = random_interpreter(G, classes)
    taps = [render_one(G, s, with_taps=True)[1] for s in (1, 2)]
    stacked = {k: torch.cat([t[k] for t in taps]) for k in taps[0]}
    ref = interp.reference_logits(stacked)
    fast = interp.fast_logits(stacked)
    assert fast.shape == ref.shape == (2, 4, classes, res, res)
    torch.testing.assert_close(fast, ref, rtol=1e-4, atol=1e-4)
    a, b = predict_from_logits(fast), predict_from_logits(ref)
    assert torch.equal(a.mask, b.mask)
    assert len(torch.unique(a.mask)) > 1  # the test would be weak if every pixel had one class
    folded = interp.folded()  # a named type, not an unnamed 6-tuple (#18)
    assert folded.first_bias.shape[0] == next(iter(folded.first.values()))[1].shape[0]  # M * h1
    assert len(folded.later_layers) == len(interp.cfg.hidden)
    torch.testing.assert_close(a.js, b.js, rtol=1e-4, atol=1e-5)
    # in float64 both paths agree to rounding
    interp64 = interp.double()
    interp64._folded = None
    s64 = {k: v.double() for k, v in stacked.items()}
    torch.testing.assert_close(interp64.fast_logits(s64), interp64.reference_logits(s64), rtol=1e-10, atol=1e-10)


def test_trained_interpreter_fast_equals_reference_and_round_trips(tiny_run, tmp_path):
    interp = load_interpreter(tiny_run / "interpreter.safetensors")
    G = load_generator(tiny_run / "generator.safetensors")
    _, t = render_one(G, 5, with_taps=True)
    ref, fast = interp.reference_logits(t), interp.fast_logits(t)
    torch.testing.assert_close(fast, ref, rtol=1e-4, atol=1e-4)
    assert torch.equal(predict_from_logits(fast).mask, predict_from_logits(ref).mask)
    save_interpreter(tmp_path / "i.safetensors", interp)
    again = load_interpreter(tmp_path / "i.safetensors")
    assert torch.equal(again.fast_logits(t), fast)
    meta = json.loads((tmp_path / "i.json").read_text())
    assert meta["generator_sha256"] == G.sha256 and len(meta["taps"]) == len(G.feature_taps())
    assert [c["name"] for c in meta["classes"]] == ["background", "class_1", "class_2"]


# ---------------------------------------------------------------------------------------------
# Training


def small_run(tmp_path, channels=1, classes=2):
    torch.manual_seed(1)
    G = Generator(
        GeneratorConfig(
            resolution=16, img_channels=channels, z_dim=16, w_dim=16, mapping_layers=2, channel_base=256, channel_max=16
        )
    )
    save_generator(tmp_path / "generator.safetensors", G)
    G = load_generator(tmp_path / "generator.safetensors")
    aset = AnnotationSet(tmp_path / "annotations")
    ids = render_items(aset, G, range(6), classes=default_classes(classes))
    for item in ids:  # a learnable rule: class from the image's brightness
        img = aset.image(item).astype(np.float32)
        gray = img if img.ndim == 2 else img.mean(2)
        aset.save_mask(
            item, np.digitize(gray, np.quantile(gray, np.linspace(0, 1, classes + 1)[1:-1])).astype(np.uint8)
        )
    return G, aset


def test_training_learns_and_members_differ(tmp_path):
    G, aset = small_run(tmp_path, channels=3, classes=3)
    feats, masks, records = render_annotated(G, aset)
    info = InterpreterInfo(feats.taps, aset.classes(), 16, 3, G.sha256)
    lines = []
    cfg = InterpreterConfig(members=3, hidden=(32, 16), lr=3e-3, batch_size=256, epochs=6, holdout=0.2, patience=10)
    interp = train_interpreter(feats, masks, info, cfg, log=lines.append)
    assert [(ln["member"], ln["epoch"]) for ln in lines] == [(m, e) for m in range(3) for e in range(6)]
    assert lines[-1]["val_loss"] < lines[12]["val_loss"]  # member 2 improved over its epochs
    w = [m[0].weight for m in interp.members]
    assert not torch.equal(w[0], w[1])
    _, t = render_one(G, records[0].seed, with_taps=True)
    pred = interp.predict(t)
    acc = (pred.mask[0].numpy() == masks[0]).mean()
    assert acc > 0.6, acc  # well above the 1/3 of chance on a training image


def test_early_stopping_stops(tmp_path):
    G, aset = small_run(tmp_path)
    feats, masks, _ = render_annotated(G, aset)
    info = InterpreterInfo(feats.taps, aset.classes(), 16, 1, G.sha256)
    lines = []
    cfg = InterpreterConfig(members=1, hidden=(8, 8), lr=0.5, batch_size=64, epochs=30, holdout=0.3, patience=1)
    train_interpreter(feats, masks, info, cfg, log=lines.append)
    assert 2 <= len(lines) < 30  # lr 0.5 is far too high: the held-out loss stops improving early


def test_features_refuse_other_generator(tmp_path):
    G, aset = small_run(tmp_path)
    other = Generator(G.cfg)
    other.sha256 = "f" * 64
    with pytest.raises(FeatureError, match="made with generator"):
        render_annotated(other, aset)
    aset2 = AnnotationSet(tmp_path / "empty")
    render_items(aset2, G, [1], classes=default_classes(2))
    with pytest.raises(FeatureError, match="no finished annotations"):
        render_annotated(G, aset2)


def test_pre_annotated_needs_the_flag(tmp_path):
    G, aset = small_run(tmp_path)
    ids = aset.ids()
    aset.save_mask(ids[0], aset.mask(ids[0]), state="pre-annotated", source="model:x")
    assert len(render_annotated(G, aset)[2]) == len(ids) - 1
    assert len(render_annotated(G, aset, include_pre_annotated=True)[2]) == len(ids)


def test_cli_interpret(tiny_run, tmp_path):
    run = tmp_path / "run"
    shutil.copytree(tiny_run, run)
    (run / "interpreter.safetensors").unlink()
    res = CliRunner().invoke(
        interpret_cmd,
        [
            str(run),
            "--members",
            "2",
            "--epochs",
            "1",
            "--hidden",
            "8,4",
            "--pixels-per-epoch",
            "256",
            "--batch-size",
            "64",
        ],
    )
    assert res.exit_code == 0, res.output
    interp = load_interpreter(run / "interpreter.safetensors")
    assert len(interp.members) == 2 and interp.cfg.hidden == (8, 4)
    log = [json.loads(ln) for ln in (run / "interpret" / "log.jsonl").read_text().splitlines()]
    assert [ln["event"] for ln in log] == ["start", "epoch", "epoch", "saved"]
    bad = CliRunner().invoke(interpret_cmd, [str(run), "--hidden", "8,x"])
    assert bad.exit_code == 2 and "--hidden" in bad.output
    res = CliRunner().invoke(interpret_cmd, [str(tmp_path / "nothing")])
    assert res.exit_code == 1 and "datasetgan train" in res.output
