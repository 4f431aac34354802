"""The image-level classifier gate of the pneumothorax pipeline: a small classifier (MONAI's
``Classifier``: strided residual convolutions with batch norm down to 4x4 or larger, one logit)
learns whether an image shows any foreground; the segmenter's prediction is kept only for images it
calls positive, the others are predicted as all background."""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

from .profiles import SegmenterTrainConfig
from .segmenters import Segmenter
from .trainer import _optimiser, batches

CHANNELS = (8, 16, 32, 64)


def positive(masks: np.ndarray) -> np.ndarray:
    """bool [N]: the image shows some foreground."""
    masks = np.asarray(masks)
    return masks.reshape(len(masks), -1).max(1) > 0


class Gate(torch.nn.Module):
    def __init__(self, in_channels: int, resolution: int):
        super().__init__()
        from monai.networks.nets import Classifier

        levels = max(1, min(len(CHANNELS), resolution.bit_length() - 3))  # stop at 4x4 or larger
        self.net = Classifier(
            in_shape=(in_channels, resolution, resolution),
            classes=1,
            channels=CHANNELS[:levels],
            strides=(2,) * levels,
            norm="batch",
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)[:, 0]

    @torch.no_grad()
    def predict(self, images: np.ndarray, batch_size: int = 64) -> np.ndarray:
        """bool [N]: the images it calls positive."""
        self.eval()
        out = [self(Segmenter.normalise(images[i : i + batch_size])) > 0 for i in range(0, len(images), batch_size)]
        return torch.cat(out).numpy() if out else np.zeros(0, bool)


def train_gate(images: np.ndarray, masks: np.ndarray, cfg: SegmenterTrainConfig) -> Gate:
    """Train a gate on uint8 images [N, C, R, R] with the segmenter's epochs, batch size and optimiser
    (binary cross-entropy, constant lr)."""
    torch.manual_seed(cfg.seed)
    rng = np.random.default_rng(cfg.seed)
    gate = Gate(images.shape[1], images.shape[-1])
    opt = _optimiser(gate.parameters(), cfg)
    target = torch.as_tensor(positive(masks), dtype=torch.float32)
    gate.train()
    for _ in range(cfg.epochs):
        for idx in batches(len(images), cfg.batch_size, rng):
            loss = F.binary_cross_entropy_with_logits(gate(Segmenter.normalise(images[idx])), target[idx])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
    gate.eval()
    return gate
