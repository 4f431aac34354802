"""Each benchmark loss against a small case computed by hand (one 2x2 image, classes 0 and 1)."""

import math

import numpy as np
import pytest
import torch

from datasetgan.bench.losses import (
    Loss,
    LossSpecError,
    boundary_term,
    lovasz_softmax,
    parse_loss,
    parse_losses,
    signed_distance,
)

TARGET = torch.tensor([[[1, 0], [0, 0]]])  # one foreground pixel
P1 = torch.tensor([0.8, 0.3, 0.1, 0.25])  # probability of class 1 per pixel (row-major)
LOGITS = torch.stack([torch.log(1 - P1), torch.log(P1)]).reshape(1, 2, 2, 2)  # softmax gives back P1
PT = torch.tensor([0.8, 0.7, 0.9, 0.75])  # probability of the true class per pixel
TP, FN, FP = 0.8, 0.2, 0.3 + 0.1 + 0.25  # soft counts of class 1 (thesis section 5.1)


def value(spec, logits=LOGITS, target=TARGET):
    return Loss(parse_loss(spec))(logits, target).item()


def test_cross_entropy():
    assert value("ce") == pytest.approx(-torch.log(PT).mean().item(), abs=1e-6)


def test_dice_and_dice_ce():
    dice = 1 - (2 * TP + 1) / (2 * TP + FN + FP + 1)  # smooth 1 = the thesis' epsilon
    assert value("dice") == pytest.approx(dice, abs=1e-6)
    assert value("dice_ce") == pytest.approx(dice - torch.log(PT).mean().item(), abs=1e-6)


def test_jaccard_is_the_thesis_jaccard_with_half_epsilon():
    # MONAI's DiceLoss(jaccard=True): 1 - (2 TP + e) / (2 (TP + FP + FN) + e) = 1 - (TP + e/2) / (union + e/2)
    assert value("jaccard") == pytest.approx(1 - (TP + 0.5) / (TP + FP + FN + 0.5), abs=1e-6)


def test_tversky_alpha_weights_false_negatives():
    expected = 1 - (TP + 1) / (TP + 0.7 * FN + 0.3 * FP + 1)
    assert value("tversky:alpha=0.7,beta=0.3") == pytest.approx(expected, abs=1e-6)
    swapped = 1 - (TP + 1) / (TP + 0.3 * FN + 0.7 * FP + 1)  # MONAI's own naming would give this
    assert value("tversky:alpha=0.3,beta=0.7") == pytest.approx(swapped, abs=1e-6)
    assert value("tversky:alpha=1,beta=1") == pytest.approx(1 - (TP + 1) / (TP + FN + FP + 1), abs=1e-6)


@pytest.mark.parametrize("gamma", [0.0, 2.0])
def test_focal(gamma):
    expected = (-((1 - PT) ** gamma) * torch.log(PT)).mean().item()  # (1/HW) sum over pixels of the true class
    assert value(f"focal:gamma={gamma}") == pytest.approx(expected, abs=1e-6)


def test_lovasz_softmax_by_hand():
    # class 1: errors |y - p| = .2 .3 .1 .25, P = {pixel 0}; sorted pixels 1, 3, 0, 2; Jaccard loss
    # |M| / |M u P| of the growing sets: 1/2, 2/3, 1, 1
    class1 = 0.3 * 0.5 + 0.25 * (2 / 3 - 0.5) + 0.2 * (1 - 2 / 3) + 0.1 * 0
    # class 0: same errors, P = {1, 2, 3}: 1/3, 2/3, 3/4, 1
    class0 = 0.3 / 3 + 0.25 / 3 + 0.2 * (0.75 - 2 / 3) + 0.1 * 0.25
    assert lovasz_softmax(LOGITS, TARGET).item() == pytest.approx((class0 + class1) / 2, abs=1e-6)
    assert value("lovasz") == pytest.approx((class0 + class1) / 2, abs=1e-6)
    perfect = torch.stack([1 - TARGET[0], TARGET[0]]).float()[None] * 40
    assert lovasz_softmax(perfect, TARGET).item() == pytest.approx(0, abs=1e-6)


def test_boundary_loss_by_hand():
    strip = torch.tensor([[[1, 1, 0, 0]]])  # class 1 in the first two columns
    phi = signed_distance(strip.numpy(), 2)
    assert phi[0, 1, 0].tolist() == [-2, -1, 1, 2]  # negative inside, distance to the region outside
    assert phi[0, 0, 0].tolist() == [2, 1, -1, -2]
    assert (signed_distance(np.zeros((1, 1, 4), np.uint8), 2)[0, 1] == 0).all()  # absent class: zeros
    p = torch.tensor([0.9, 0.6, 0.3, 0.1])
    logits = torch.stack([torch.log(1 - p), torch.log(p)]).reshape(1, 2, 1, 4)
    term = (-2 * 0.9 - 0.6 + 0.3 + 2 * 0.1) / 4
    assert boundary_term(logits, strip).item() == pytest.approx(term, abs=1e-6)
    dice = 1 - (2 * 1.5 + 1) / (1.9 + 2 + 1)
    assert value("boundary:alpha=0.5", logits, strip) == pytest.approx(dice + 0.5 * term, abs=1e-6)


def test_losses_train_a_gradient():
    for name in ("ce", "dice", "dice_ce", "focal", "jaccard", "tversky", "lovasz", "boundary"):
        logits = LOGITS.clone().requires_grad_()
        Loss(parse_loss(name))(logits, TARGET).backward()
        assert torch.isfinite(logits.grad).all() and logits.grad.abs().sum() > 0, name


def test_parse_specs():
    assert parse_loss("tversky").params == {"alpha": 0.7, "beta": 0.3}
    assert parse_loss("tversky:alpha=0.6,beta=0.4").label == "tversky(alpha=0.6,beta=0.4)"
    assert parse_loss("focal:gamma=2").label == "focal"
    specs = parse_losses("ce,tversky:alpha=0.6,beta=0.4,dice_ce;lovasz")
    assert [s.name for s in specs] == ["ce", "tversky", "dice_ce", "lovasz"]
    for bad in ("hinge", "focal:alpha=1", "tversky:alpha=x", "ce:gamma=2"):
        with pytest.raises(LossSpecError):
            parse_loss(bad)
    with pytest.raises(LossSpecError):
        parse_losses("ce,ce")
    assert math.isfinite(value("boundary"))


def test_gambling_bets_and_weighted_cross_entropy():
    from datasetgan.bench.gambling import betting_map, weighted_ce

    g = torch.tensor([[[0.0, 1.0], [2.0, 3.0]]])
    bets = betting_map(g, 0.2)
    soft = torch.softmax(g.reshape(-1), 0).reshape(1, 2, 2)
    assert bets.sum().item() == pytest.approx(1.0) and torch.allclose(bets, 0.8 * soft + 0.05)
    assert torch.allclose(betting_map(g, 1.0), torch.full((1, 2, 2), 0.25))
    even = betting_map(torch.zeros(1, 2, 2), 0.1)  # even bets: plain cross-entropy
    assert weighted_ce(LOGITS, TARGET, even).item() == pytest.approx(value("ce"), abs=1e-6)
    ce = -torch.log(PT).reshape(1, 2, 2)
    assert weighted_ce(LOGITS, TARGET, bets).item() == pytest.approx((bets * ce).sum().item(), abs=1e-6)


def test_gambler_learns_to_bet_on_wrong_pixels():
    """A fixed prediction wrong in one corner: the gambler's winnings grow and its bets move there."""
    from datasetgan.bench.gambling import GamblingLoss, betting_map

    torch.manual_seed(0)
    target = torch.zeros(4, 16, 16, dtype=torch.long)
    target[:, 2:8, 2:8] = 1
    logits = torch.zeros(4, 2, 16, 16)
    logits[:, 0] = 3.0  # says background everywhere: wrong on the 6x6 square
    images = torch.rand(4, 1, 16, 16)
    g = GamblingLoss(beta=0.1, lr=1e-2)
    first = g.update(logits, target, images)
    for _ in range(60):
        last = g.update(logits, target, images)
    assert last > 2 * first
    g.gambler.eval()
    bets = betting_map(g.gambler(images, logits.softmax(1)), 0.1)
    assert bets[:, 2:8, 2:8].sum((1, 2)).mean().item() > 0.5  # 36 of 256 pixels (14 %) hold most of the bets


def test_gambling_trains_a_segmenter_and_its_gambler():
    from datasetgan.bench.profiles import SegmenterTrainConfig
    from datasetgan.bench.segmenters import Segmenter, SegmenterConfig
    from datasetgan.bench.trainer import train_segmenter

    rng = np.random.default_rng(0)
    images = (rng.random((8, 1, 16, 16)) * 255).astype(np.uint8)
    masks = (rng.random((8, 16, 16)) > 0.7).astype(np.uint8)
    torch.manual_seed(0)
    model = Segmenter(SegmenterConfig(arch="unet", resolution=16, unet_channels=(4, 8)))
    losses = train_segmenter(
        model, images, masks, SegmenterTrainConfig(epochs=2, batch_size=4, loss="gambling"), progress=False
    )
    assert len(losses) == 2 and all(np.isfinite(losses))
