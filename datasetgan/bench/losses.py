"""Training losses of the benchmark, chosen by name with parameters: ``tversky:alpha=0.7,beta=0.3``.

Definitions follow the segmentation thesis in ``../shared/papers`` (soft TP/FP/FN from softmax
probabilities, section 5.1) and are MONAI's where MONAI has them:

    ce        cross-entropy (torch)
    dice      1 - soft Dice over the foreground classes, summed over the batch (MONAI DiceLoss,
              smooth=1 in numerator and denominator: the thesis' epsilon)
    dice_ce   ce + dice (MONAI DiceCELoss)
    focal     (1/HW) sum over pixels and classes of -(1 - p)^gamma y log p, gamma=2 (MONAI
              FocalLoss per element, summed over classes as the thesis' formula)
    jaccard   1 - (TP + e/2) / (TP + FP + FN + e/2) (MONAI DiceLoss(jaccard=True), smooth=1)
    tversky   1 - (TP + e) / (TP + alpha FN + beta FP + e), alpha=0.7, beta=0.3: here, as in the
              thesis, ALPHA WEIGHTS FALSE NEGATIVES. MONAI's TverskyLoss names them the other way
              round (its alpha weights false positives), so ours passes alpha as MONAI's beta.
    lovasz    the Lovasz-softmax loss (Berman et al. 2018): the Lovasz extension of the Jaccard loss
              of each class present in the batch, applied to the sorted per-pixel errors |y - p|;
              MONAI has none, so it is written here
    boundary  dice + alpha * boundary term (Kervadec et al. 2019, thesis 5.2.2): the mean over pixels
              and foreground classes of phi_G(x) p(x), phi_G the signed distance to the class'
              boundary (negative inside, from MONAI's distance transform; all zeros for a class absent
              from the image); alpha=0.01, constant
    gambling  cross-entropy weighted by a gambler network's bets, the gambler trained to maximise its
              winnings (gambling adversarial nets, :mod:`.gambling`); beta=0.1 is the evenly spread share

Every loss takes logits [B, K, H, W] and integer targets [B, H, W] and returns a scalar.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

import numpy as np
import torch
import torch.nn.functional as F

from ..errors import ConfigError

DEFAULTS: dict[str, dict[str, float]] = {
    "ce": {},
    "dice": {},
    "dice_ce": {},
    "focal": {"gamma": 2.0},
    "jaccard": {},
    "tversky": {"alpha": 0.7, "beta": 0.3},
    "lovasz": {},
    "boundary": {"alpha": 0.01},
    "gambling": {"beta": 0.1},
}
LOSSES = tuple(DEFAULTS)
SMOOTH = 1.0


class LossSpecError(ConfigError):
    """A --loss value that names no loss or a parameter it does not have."""


@dataclass(frozen=True)
class LossSpec:
    name: str
    params: dict = field(default_factory=dict)

    @property
    def label(self) -> str:
        """Canonical name: parameters that differ from the defaults, e.g. ``tversky(alpha=0.6,beta=0.4)``."""
        changed = {k: v for k, v in self.params.items() if DEFAULTS[self.name][k] != v}
        return self.name + ("(" + ",".join(f"{k}={v:g}" for k, v in sorted(changed.items())) + ")" if changed else "")


def parse_loss(text: str) -> LossSpec:
    """``'tversky:alpha=0.7,beta=0.3'`` -> LossSpec; unknown names or parameters are refused."""
    name, _, rest = text.strip().partition(":")
    name = name.strip().lower()
    if name not in DEFAULTS:
        raise LossSpecError(f"unknown loss {name!r}; choose from {', '.join(LOSSES)}")
    params = dict(DEFAULTS[name])
    for item in filter(None, (p.strip() for p in rest.split(","))):
        key, sep, value = item.partition("=")
        key = key.strip()
        if not sep or key not in params:
            allowed = ", ".join(params) or "none"
            raise LossSpecError(f"loss {name}: bad parameter {item!r} (parameters: {allowed})")
        try:
            params[key] = float(value)
        except ValueError:
            raise LossSpecError(f"loss {name}: {key} must be a number, got {value!r}") from None
    return LossSpec(name, params)


def parse_losses(text: str) -> list[LossSpec]:
    """Several specs separated by ';' or by ',' before a loss name (``ce,tversky:alpha=0.6,beta=0.4,focal``)."""
    parts = re.split(r"[;,](?=\s*(?:%s)\b(?!\s*=))" % "|".join(LOSSES), text)
    specs = [parse_loss(p) for p in parts if p.strip()]
    labels = [s.label for s in specs]
    if len(set(labels)) != len(labels):
        raise LossSpecError(f"a loss is listed twice: {labels}")
    return specs


def lovasz_grad(sorted_truth: torch.Tensor) -> torch.Tensor:
    """Gradient of the Lovasz extension of the Jaccard loss at errors sorted in decreasing order:
    the increments of 1 - |P n not(first i errors)| / |P u (first i errors)| (Berman et al., eq. 9)."""
    gts = sorted_truth.sum()
    intersection = gts - sorted_truth.cumsum(0)
    union = gts + (1 - sorted_truth).cumsum(0)
    jaccard = 1 - intersection / union
    return torch.cat([jaccard[:1], jaccard[1:] - jaccard[:-1]])


def lovasz_softmax(logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Mean over the classes present in the batch of the Lovasz extension of their Jaccard loss."""
    probs = logits.float().softmax(1)
    k = probs.shape[1]
    p = probs.permute(0, 2, 3, 1).reshape(-1, k)
    y = target.reshape(-1)
    losses = []
    for c in range(k):
        fg = (y == c).float()
        if not fg.any():
            continue
        errors = (fg - p[:, c]).abs()
        errors_sorted, order = torch.sort(errors, descending=True)
        losses.append(torch.dot(errors_sorted, lovasz_grad(fg[order])))
    return torch.stack(losses).mean() if losses else probs.sum() * 0


def signed_distance(masks: np.ndarray, num_classes: int) -> np.ndarray:
    """float32 [B, K, H, W]: for each class, the distance to the class' region outside it and minus the
    distance to the outside inside it (pixel centres; zero everywhere for a class absent from an image)."""
    from monai.transforms.utils import distance_transform_edt

    out = np.zeros((len(masks), num_classes) + masks.shape[1:], np.float32)
    for i, m in enumerate(masks):
        for c in range(num_classes):
            g = m == c
            if g.any() and not g.all():
                outside = np.asarray(distance_transform_edt((~g)[None]))[0]
                inside = np.asarray(distance_transform_edt(g[None]))[0]
                out[i, c] = outside - inside
    return out


def boundary_term(logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Mean over pixels and foreground classes of phi_G * p (Kervadec et al.'s boundary loss)."""
    k = logits.shape[1]
    phi = torch.from_numpy(signed_distance(target.cpu().numpy(), k)).to(logits.device)
    return (logits.float().softmax(1)[:, 1:] * phi[:, 1:]).mean()


def make_loss(spec: LossSpec, lr: float):
    """The loss object of a spec: :class:`Loss`, or for ``gambling`` the adversarial pair (its gambler
    trains with Adam at ``lr``)."""
    if spec.name == "gambling":
        from .gambling import GamblingLoss

        return GamblingLoss(spec.params["beta"], lr)
    return Loss(spec)


class Loss:
    """A callable loss built from a :class:`LossSpec` (``images`` is accepted and unused)."""

    def __init__(self, spec: LossSpec):
        from monai.losses import DiceCELoss, DiceLoss, FocalLoss, TverskyLoss

        self.spec = spec
        p = spec.params
        common = dict(
            include_background=False, to_onehot_y=True, softmax=True, batch=True, smooth_nr=SMOOTH, smooth_dr=SMOOTH
        )
        self._monai = {
            "dice": lambda: DiceLoss(**common),
            "boundary": lambda: DiceLoss(**common),
            "dice_ce": lambda: DiceCELoss(**common),
            "jaccard": lambda: DiceLoss(jaccard=True, **common),
            "tversky": lambda: TverskyLoss(alpha=p.get("beta", 0), beta=p.get("alpha", 0), **common),
            "focal": lambda: FocalLoss(
                include_background=True, to_onehot_y=True, use_softmax=True, gamma=p.get("gamma", 0), reduction="none"
            ),
        }.get(spec.name, lambda: None)()

    def __call__(self, logits: torch.Tensor, target: torch.Tensor, images: torch.Tensor | None = None) -> torch.Tensor:
        name = self.spec.name
        if name == "ce":
            return F.cross_entropy(logits, target)
        if name == "lovasz":
            return lovasz_softmax(logits, target)
        loss = self._monai(logits.float(), target[:, None])
        if name == "focal":
            return loss.sum(1).mean()  # summed over classes, averaged over pixels (the thesis' form)
        if name == "boundary":
            loss = loss + self.spec.params["alpha"] * boundary_term(logits, target)
        return loss
