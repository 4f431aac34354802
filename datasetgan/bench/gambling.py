"""Gambling adversarial nets (Samson et al. 2019; the thyroid-ultrasound paper, eq. 5-7): a gambler
network sees the image and the segmenter's class probabilities and spreads a fixed budget of bets over
the pixels where it expects the prediction to be wrong; the segmenter minimises its cross-entropy
weighted by the bets, the gambler maximises the same sum (its winnings).

The budget: the paper's eq. 6 normalises exp(G + beta) over the image, in which beta cancels; we read
beta as the smoothing it is meant to be, the share of the budget spread evenly:
w = (1 - beta) softmax(G) + beta / (H W), so every pixel keeps some weight. Weights sum to 1 per image,
so with even bets the segmenter's loss is plain cross-entropy.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class Gambler(nn.Module):
    """A small MONAI U-Net from image + class probabilities to one betting logit per pixel."""

    def __init__(self, in_channels: int, num_classes: int):
        super().__init__()
        from monai.networks.nets import UNet

        self.net = UNet(
            spatial_dims=2,
            in_channels=in_channels + num_classes,
            out_channels=1,
            channels=(8, 16, 32),
            strides=(2, 2),
            num_res_units=1,
            norm="batch",
        )

    def forward(self, images: torch.Tensor, probs: torch.Tensor) -> torch.Tensor:
        return self.net(torch.cat([images, probs], 1))[:, 0]


def betting_map(logits: torch.Tensor, beta: float) -> torch.Tensor:
    """Gambler logits [N, H, W] -> bets [N, H, W] summing to 1 per image (see the module doc)."""
    n, h, w = logits.shape
    spread = logits.reshape(n, -1).float().softmax(1).reshape(n, h, w)
    return (1 - beta) * spread + beta / (h * w)


def weighted_ce(logits: torch.Tensor, target: torch.Tensor, bets: torch.Tensor) -> torch.Tensor:
    """Mean over images of the sum over pixels of bets * cross-entropy (plain cross-entropy for even bets)."""
    ce = F.cross_entropy(logits.float(), target, reduction="none")
    return (bets * ce).sum((1, 2)).mean()


class GamblingLoss:
    """The segmenter's loss (bets from the gambler, gradients through both the weights and the gambler's
    view of the prediction) and the gambler's update (:meth:`update`, after each segmenter step)."""

    def __init__(self, beta: float, lr: float):
        self.beta, self.lr = beta, lr
        self.gambler: Gambler | None = None
        self.opt = None

    def _ensure(self, images: torch.Tensor, num_classes: int) -> Gambler:
        if self.gambler is None:
            self.gambler = Gambler(images.shape[1], num_classes).to(images.device)
            self.opt = torch.optim.Adam(self.gambler.parameters(), lr=self.lr)
        return self.gambler

    def __call__(self, logits: torch.Tensor, target: torch.Tensor, images: torch.Tensor) -> torch.Tensor:
        gambler = self._ensure(images, logits.shape[1])
        bets = betting_map(gambler(images, logits.float().softmax(1)), self.beta)
        return weighted_ce(logits, target, bets)

    def update(self, logits: torch.Tensor, target: torch.Tensor, images: torch.Tensor) -> float:
        """One gambler step on the segmenter's (detached) prediction; returns its winnings."""
        gambler = self._ensure(images, logits.shape[1])
        logits = logits.detach()
        bets = betting_map(gambler(images, logits.float().softmax(1)), self.beta)
        winnings = weighted_ce(logits, target, bets)
        self.opt.zero_grad(set_to_none=True)
        (-winnings).backward()
        self.opt.step()
        return float(winnings.detach())
