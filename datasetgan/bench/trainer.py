"""Training a segmenter on image + mask arrays: any loss of :mod:`.losses`, AdamW or SGD, polynomial lr
decay, or a cosine schedule followed by stochastic weight averaging (``swa``: the last quarter of the
epochs at a constant lr, the weights averaged at the end of each of those epochs, batch-norm
statistics recomputed for the average; torch.optim.swa_utils)."""

from __future__ import annotations

import numpy as np
import torch
from tqdm.auto import tqdm

from ..errors import ConfigError
from .losses import make_loss, parse_loss
from .profiles import SegmenterTrainConfig
from .segmenters import Segmenter

SWA_LR_FRACTION = 0.1  # the SWA phase runs at lr / 10, the floor of the cosine before it


def batches(n: int, batch_size: int, rng: np.random.Generator) -> list[np.ndarray]:
    """Shuffled index batches; a trailing batch of one image joins the previous batch, because batch
    norm (e.g. in DeepLabV3's image pooling branch) cannot normalise a single sample."""
    order = rng.permutation(n)
    out = [order[i : i + batch_size] for i in range(0, n, batch_size)]
    if len(out) > 1 and len(out[-1]) == 1:
        last = out.pop()
        out[-1] = np.concatenate([out[-1], last])
    return out


def steps_per_epoch(n: int, batch_size: int) -> int:
    """Optimiser steps in one epoch over n images (see :func:`batches`)."""
    return len(batches(n, batch_size, np.random.default_rng(0)))


def mixed_batches(
    is_real: np.ndarray, batch_size: int, real_weight: float, rng: np.random.Generator
) -> list[np.ndarray]:
    """One epoch of batches (as many as :func:`batches` makes) in which round(real_weight * size) images
    of each batch are real and the rest synthetic; each part is drawn from its own reshuffled stream,
    so the rarer part repeats within an epoch and the other is not exhausted."""
    is_real = np.asarray(is_real, dtype=bool)
    real, synth = np.flatnonzero(is_real), np.flatnonzero(~is_real)
    if not 0 <= real_weight <= 1:
        raise ConfigError(f"the real share of a batch must be in [0, 1], got {real_weight}")
    if (real_weight > 0 and not len(real)) or (real_weight < 1 and not len(synth)):
        raise ConfigError("a real share needs both real and synthetic images in the training set")
    streams = {True: _stream(real, rng), False: _stream(synth, rng)}
    out = []
    for size in map(len, batches(len(is_real), batch_size, rng)):
        k = int(round(real_weight * size))
        out.append(
            np.array(
                [next(streams[True]) for _ in range(k)] + [next(streams[False]) for _ in range(size - k)],
                dtype=np.int64,
            )
        )
    return out


def _stream(idx: np.ndarray, rng: np.random.Generator):
    while len(idx):
        yield from rng.permutation(idx)


def _optimiser(params, cfg: SegmenterTrainConfig) -> torch.optim.Optimizer:
    if cfg.optimizer == "sgd":
        return torch.optim.SGD(params, lr=cfg.lr, momentum=cfg.momentum, weight_decay=cfg.weight_decay)
    return torch.optim.AdamW(params, lr=cfg.lr, weight_decay=cfg.weight_decay)


def swa_epochs(epochs: int) -> int:
    """Epochs at the end of an SWA run whose weights are averaged: the last quarter (at least one)."""
    return max(1, epochs // 4)


def train_segmenter(
    model: Segmenter,
    images: np.ndarray,
    masks: np.ndarray,
    cfg: SegmenterTrainConfig,
    progress: bool = True,
    desc: str = "train",
    should_stop=None,
    is_real: np.ndarray | None = None,
) -> list[float]:
    """Train ``model`` in place on uint8 images [N, C, R, R] and masks [N, R, R]; returns epoch losses.
    ``is_real`` flags the real images of a hybrid set, for ``cfg.hybrid_real_weight``."""
    if len(images) != len(masks):
        raise ConfigError(f"{len(images)} images but {len(masks)} masks")
    if len(images) < 2:
        raise ConfigError("training needs at least 2 images (batch norm)")
    if images.shape[-1] != model.resolution:
        raise ConfigError(f"images are {images.shape[-1]}px but the segmenter is for {model.resolution}px")
    torch.manual_seed(cfg.seed)
    rng = np.random.default_rng(cfg.seed)
    device = next(model.parameters()).device
    opt = _optimiser([p for p in model.parameters() if p.requires_grad], cfg)
    per_epoch = steps_per_epoch(len(images), cfg.batch_size)
    total = cfg.epochs * per_epoch
    if cfg.swa:
        from torch.optim.swa_utils import SWALR, AveragedModel, update_bn

        swa_from = cfg.epochs - swa_epochs(cfg.epochs)
        swa_lr = cfg.lr * SWA_LR_FRACTION
        averaged = AveragedModel(model)
        # cosine from lr down to the SWA lr over the epochs before averaging (at least one step)
        sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, max(swa_from * per_epoch, 1), eta_min=swa_lr)
        swa_sched = SWALR(opt, swa_lr=swa_lr, anneal_epochs=1)
    else:
        swa_from = cfg.epochs
        sched = torch.optim.lr_scheduler.LambdaLR(
            opt, lambda s: (1 - min(s, total - 1) / total) ** cfg.poly_power if cfg.poly_power else 1.0
        )
    mixed = cfg.hybrid_real_weight is not None and is_real is not None and np.any(is_real)
    loss_fn = make_loss(parse_loss(cfg.loss), cfg.lr)
    model.train()
    losses = []
    bar = tqdm(total=total, desc=desc, disable=not progress, leave=False, dynamic_ncols=True)
    for epoch in range(cfg.epochs):
        running, count = 0.0, 0
        order = (
            mixed_batches(is_real, cfg.batch_size, cfg.hybrid_real_weight, rng)
            if mixed
            else batches(len(images), cfg.batch_size, rng)
        )
        for idx in order:
            x = model.normalise(images[idx]).to(device)
            y = torch.as_tensor(masks[idx].astype(np.int64)).to(device)
            out = model(x)
            loss = loss_fn(out["out"], y, x)
            if "aux" in out:
                loss = loss + cfg.aux_weight * loss_fn(out["aux"], y, x)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            if hasattr(loss_fn, "update"):  # an adversarial loss trains its own network after each step
                loss_fn.update(out["out"], y, x)
            if epoch < swa_from:
                sched.step()
            running += loss.item() * len(idx)
            count += len(idx)
            bar.update(1)
            bar.set_postfix(loss=f"{loss.item():.3f}")
            if should_stop is not None and should_stop():
                break
        if epoch >= swa_from:
            averaged.update_parameters(model)
            swa_sched.step()
        losses.append(running / max(count, 1))
    bar.close()
    if cfg.swa:
        loader = [model.normalise(images[idx]).to(device) for idx in batches(len(images), cfg.batch_size, rng)]
        update_bn(loader, averaged)
        model.load_state_dict(averaged.module.state_dict())
    model.eval()
    return losses
