"""Training a segmenter on image + mask arrays (cross-entropy or cross-entropy + soft Dice, AdamW or
SGD, polynomial lr decay)."""
from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from tqdm.auto import tqdm

from .profiles import TrainConfig
from .segmenters import Segmenter


def batches(n: int, batch_size: int, rng: np.random.Generator) -> list[np.ndarray]:
    """Shuffled index batches; a trailing batch of one image joins the previous batch, because batch
    norm (e.g. in DeepLabV3's image pooling branch) cannot normalise a single sample."""
    order = rng.permutation(n)
    out = [order[i: i + batch_size] for i in range(0, n, batch_size)]
    if len(out) > 1 and len(out[-1]) == 1:
        last = out.pop()
        out[-1] = np.concatenate([out[-1], last])
    return out


def steps_per_epoch(n: int, batch_size: int) -> int:
    """Optimiser steps in one epoch over n images (see :func:`batches`)."""
    return len(batches(n, batch_size, np.random.default_rng(0)))


def soft_dice_loss(logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """1 - mean soft Dice of the foreground classes over the batch; counters the background prior
    that plain cross-entropy settles in when structures are small."""
    k = logits.shape[1]
    p = logits.float().softmax(1)
    onehot = F.one_hot(target, k).permute(0, 3, 1, 2).float()
    inter = (p * onehot).sum((0, 2, 3))
    denom = p.sum((0, 2, 3)) + onehot.sum((0, 2, 3))
    dice = (2 * inter + 1.0) / (denom + 1.0)
    return 1 - dice[1:].mean()


def segmentation_loss(logits: torch.Tensor, target: torch.Tensor, kind: str) -> torch.Tensor:
    loss = F.cross_entropy(logits, target)
    return loss + soft_dice_loss(logits, target) if kind == "dice_ce" else loss


def train_segmenter(model: Segmenter, images: np.ndarray, masks: np.ndarray, cfg: TrainConfig,
                    progress: bool = True, desc: str = "train", should_stop=None) -> list[float]:
    """Train ``model`` in place on uint8 images [N, C, R, R] and masks [N, R, R]; returns epoch losses."""
    if len(images) != len(masks):
        raise ValueError(f"{len(images)} images but {len(masks)} masks")
    if len(images) < 2:
        raise ValueError("training needs at least 2 images (batch norm)")
    if images.shape[-1] != model.resolution:
        raise ValueError(f"images are {images.shape[-1]}px but the segmenter is for {model.resolution}px")
    torch.manual_seed(cfg.seed)
    rng = np.random.default_rng(cfg.seed)
    device = next(model.parameters()).device
    params = [p for p in model.parameters() if p.requires_grad]
    if cfg.optimizer == "sgd":
        opt = torch.optim.SGD(params, lr=cfg.lr, momentum=cfg.momentum, weight_decay=cfg.weight_decay)
    else:
        opt = torch.optim.AdamW(params, lr=cfg.lr, weight_decay=cfg.weight_decay)
    total = cfg.epochs * steps_per_epoch(len(images), cfg.batch_size)
    sched = torch.optim.lr_scheduler.LambdaLR(
        opt, lambda s: (1 - min(s, total - 1) / total) ** cfg.poly_power if cfg.poly_power else 1.0)
    model.train()
    losses = []
    bar = tqdm(total=total, desc=desc, disable=not progress, leave=False, dynamic_ncols=True)
    for _ in range(cfg.epochs):
        running, count = 0.0, 0
        for idx in batches(len(images), cfg.batch_size, rng):
            x = model.normalise(images[idx]).to(device)
            y = torch.as_tensor(masks[idx].astype(np.int64)).to(device)
            out = model(x)
            loss = segmentation_loss(out["out"], y, cfg.loss)
            if "aux" in out:
                loss = loss + cfg.aux_weight * segmentation_loss(out["aux"], y, cfg.loss)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
            running += loss.item() * len(idx)
            count += len(idx)
            bar.update(1)
            bar.set_postfix(loss=f"{loss.item():.3f}")
            if should_stop is not None and should_stop():
                break
        losses.append(running / max(count, 1))
    bar.close()
    model.eval()
    return losses
