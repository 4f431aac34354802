"""The style interpreter: an ensemble of pixel classifiers over the generator's feature taps.

Each member is Linear(C, h1)-ReLU-BN-Linear(h1, h2)-ReLU-BN-Linear(h2, K) (DatasetGAN), trained with
cross-entropy and Adam on pixels gathered from native-resolution taps (see :mod:`datasetgan.features`),
with its own seed for initialisation and shuffling, stopped early on a held-out share of pixels.

Two inference paths give the same logits:

* ``reference_logits``: upsample every tap to full size, concatenate, run each member per pixel
  (the original design; memory and time grow with R*R*C).
* ``fast_logits``: the first Linear is linear, and so is bilinear upsampling, so they commute. Each
  tap's channels are projected by that tap's slice of the first weight at the tap's own resolution
  (all members stacked, M*h1 outputs, one matmul per resolution); only those projections are
  upsampled and summed. The BatchNorms cannot move into the first Linear (a ReLU sits between them
  and BN may have negative scales), but in eval mode each BN is an affine map that folds exactly into
  the Linear *after* it, so the remaining layers are plain batched matmuls over all members.

Prediction: majority vote of the members' argmaxes, ties broken by the mean softmax; uncertainty is
the Jensen-Shannon divergence of the members' softmaxes, JS = H(mean p) - mean H(p) (nats); an
image's score is the mean of its top 10 % JS pixels.
"""

from __future__ import annotations

import copy
import math
import time
import warnings
from dataclasses import asdict, dataclass, field
from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import nn

from .checkpoint import CheckpointError, load_tensors, save_tensors
from .data import ClassInfo
from .features import (
    FeatureError,
    TapFeatures,
    epoch_order,
    source_index,
    split_pixels,
    taps_from_json,
    taps_to_json,
    unflatten,
    upsample,
)
from .networks import FeatureTap

TOP_FRACTION = 0.10  # an image's uncertainty score is the mean JS of its most uncertain 10 % pixels


@dataclass
class InterpreterConfig:
    members: int = 10
    hidden: tuple[int, ...] = (256, 128)
    lr: float = 1e-4
    batch_size: int = 1024
    epochs: int = 10
    pixels_per_epoch: int | None = None  # None: every training pixel once per epoch
    patience: int = 2  # epochs without held-out improvement before stopping
    holdout: float = 0.1  # share of annotated pixels held out for early stopping
    val_pixels: int = 50_000  # at most this many held-out pixels are evaluated
    balanced: bool = False  # class-balanced pixel sampling
    seed: int = 0

    def __post_init__(self):
        self.hidden = tuple(int(h) for h in self.hidden)
        if self.members < 1 or not self.hidden or min(self.hidden) < 1:
            raise ValueError("an interpreter needs at least one member and positive hidden widths")
        if self.batch_size < 2:
            raise ValueError("batch_size must be at least 2 (BatchNorm needs two samples)")

    def to_dict(self) -> dict:
        d = asdict(self)
        d["hidden"] = list(self.hidden)
        return d


def make_member(in_channels: int, hidden, num_classes: int) -> nn.Sequential:
    layers, prev = [], in_channels
    for h in hidden:
        layers += [nn.Linear(prev, h), nn.ReLU(), nn.BatchNorm1d(h)]
        prev = h
    layers.append(nn.Linear(prev, num_classes))
    return nn.Sequential(*layers)


def init_member(member: nn.Sequential, generator: torch.Generator) -> None:
    """Kaiming (He) normal weights, zero biases, drawn from the member's own generator."""
    for m in member:
        if isinstance(m, nn.Linear):
            nn.init.kaiming_normal_(m.weight, nonlinearity="relu", generator=generator)
            nn.init.zeros_(m.bias)


def member_seed(seed: int, m: int) -> int:
    return int(seed) * 1_000_003 + 7919 * (m + 1)


# ---------------------------------------------------------------------------------------------
# Vote, uncertainty, score (shared by both paths)


def majority_vote(logits: torch.Tensor) -> torch.Tensor:
    """logits [N, M, K, ...] -> labels [N, ...]: the class most members pick; ties go to the highest mean softmax."""
    num_classes = logits.shape[2]
    votes = logits.argmax(2)  # [N, M, ...]
    counts = F.one_hot(votes, num_classes).sum(1).movedim(-1, 1)  # [N, K, ...]
    mean_p = logits.softmax(2).mean(1)  # [N, K, ...]
    tied = counts == counts.max(1, keepdim=True).values
    return torch.where(tied, mean_p, torch.full_like(mean_p, -1.0)).argmax(1)


def js_divergence(probs: torch.Tensor) -> torch.Tensor:
    """probs [N, M, K, ...] -> Jensen-Shannon divergence of the M distributions [N, ...] (nats)."""
    mean_p = probs.mean(1)
    h_mean = -torch.special.xlogy(mean_p, mean_p).sum(1)
    mean_h = -torch.special.xlogy(probs, probs).sum(2).mean(1)
    return (h_mean - mean_h).clamp_min(0)


def image_score(js: torch.Tensor, top: float = TOP_FRACTION) -> torch.Tensor:
    """js [N, H, W] -> [N]: mean of each image's top ``top`` share of pixels (at least one)."""
    flat = js.flatten(1)
    k = max(1, math.ceil(top * flat.shape[1]))
    return flat.topk(k, dim=1).values.mean(1)


@dataclass
class Prediction:
    mask: torch.Tensor  # uint8 [N, R, R]
    js: torch.Tensor  # float32 [N, R, R]
    score: torch.Tensor  # float32 [N]


def predict_from_logits(logits: torch.Tensor) -> Prediction:
    js = js_divergence(logits.softmax(2))
    return Prediction(majority_vote(logits).to(torch.uint8), js.float(), image_score(js).float())


# ---------------------------------------------------------------------------------------------
# The ensemble


@dataclass
class InterpreterInfo:
    """What an interpreter was trained on and for."""

    taps: list[FeatureTap]
    classes: list[ClassInfo]
    resolution: int
    img_channels: int = 1
    generator_sha256: str = ""
    noise_mode: str = "const"
    annotations: list[str] = field(default_factory=list)


class FoldedWeights(NamedTuple):
    """What the fast path precomputes once (see :meth:`Interpreter.folded`)."""

    first: dict  # tap resolution -> (tap names, first-layer weights [M*h1, c] of those taps)
    first_bias: torch.Tensor  # [M*h1]
    x_offsets: dict  # lower resolution -> its first column in the x-upsampled layout
    y_upsample: torch.Tensor | None  # sparse CSR [R, sum of lower resolutions]: upsampling along y
    upsampled_width: int  # sum of the lower resolutions
    later_layers: list  # per later layer: (W [M, out, in], b [M, out, 1]) with BatchNorm folded in


class Interpreter(nn.Module):
    def __init__(self, info: InterpreterInfo, cfg: InterpreterConfig):
        super().__init__()
        self.info, self.cfg = info, cfg
        self.in_channels = sum(t.channels for t in info.taps)
        self.members = nn.ModuleList(
            make_member(self.in_channels, cfg.hidden, len(info.classes)) for _ in range(cfg.members)
        )
        self.sha256 = ""
        self._folded = None

    @property
    def num_classes(self) -> int:
        return len(self.info.classes)

    def train(self, mode: bool = True):
        if mode:
            self._folded = None  # weights or BN statistics may change while training
        return super().train(mode)

    # -- reference path ----------------------------------------------------------------------
    @torch.no_grad()
    def reference_logits(self, taps: dict[str, torch.Tensor], chunk: int = 16384) -> torch.Tensor:
        """taps {name: [N, c, r, r]} -> logits [N, M, K, R, R] by upsample-all-and-concatenate."""
        self.eval()
        R, out, dtype = self.info.resolution, [], next(self.parameters()).dtype
        for i in range(next(iter(taps.values())).shape[0]):
            vol = torch.cat([upsample(taps[t.name][i : i + 1].to(dtype), R) for t in self.info.taps], 1)[0]
            rows = vol.reshape(self.in_channels, R * R).t()
            logits = torch.stack(
                [torch.cat([m(rows[s : s + chunk]) for s in range(0, R * R, chunk)]) for m in self.members]
            )  # [M, R*R, K]
            out.append(logits.permute(0, 2, 1).reshape(len(self.members), self.num_classes, R, R))
        return torch.stack(out)

    # -- fast path ---------------------------------------------------------------------------
    @torch.no_grad()
    def folded(self) -> FoldedWeights:
        """Everything the fast path precomputes once: per-resolution first-layer weights, the upsampling
        tables, and the later layers with each BatchNorm folded into the Linear after it."""
        if self._folded is not None:
            return self._folded
        self.eval()
        R = self.info.resolution
        lins = [[m for m in member if isinstance(m, nn.Linear)] for member in self.members]
        bns = [[m for m in member if isinstance(m, nn.BatchNorm1d)] for member in self.members]
        w1 = torch.cat([ls[0].weight for ls in lins])  # [M*h1, C]
        b1 = torch.cat([ls[0].bias for ls in lins])  # [M*h1]
        dtype, device = w1.dtype, w1.device
        offsets, start = {}, 0
        for t in self.info.taps:
            offsets[t.name] = (start, start + t.channels)
            start += t.channels
        by_res = {}
        for t in self.info.taps:
            by_res.setdefault(t.resolution, []).append(t.name)
        first = {
            r: (names, torch.cat([w1[:, slice(*offsets[n])] for n in names], 1).contiguous())
            for r, names in sorted(by_res.items(), reverse=True)
        }
        # Upsampling of every lower resolution at once: along x with each resolution's two taps per
        # output column, then along y with one sparse [R, sum of r] matrix whose row Y holds the two
        # weights of every resolution, so the full-size sum is written in a single pass.
        xs, rows, cols, vals, off = {}, [], [], [], 0
        for r in first:
            if r == R:
                continue
            i0, i1, l0, l1 = source_index(R, r, device)
            xs[r] = off
            rows += [torch.arange(R, device=device)] * 2
            cols += [off + i0, off + i1]
            vals += [l0.to(dtype), l1.to(dtype)]
            off += r
        ymat = None
        if xs:
            with warnings.catch_warnings():  # CSR support is marked beta; this use is covered by tests
                warnings.simplefilter("ignore", UserWarning)
                ymat = (
                    torch.sparse_coo_tensor(
                        torch.stack([torch.cat(rows), torch.cat(cols)]),
                        torch.cat(vals),
                        (R, off),
                        check_invariants=True,
                    )
                    .coalesce()
                    .to_sparse_csr()
                )
        rest = []  # per later layer: W [M, out, in], b [M, out, 1]
        for j in range(1, len(self.cfg.hidden) + 1):
            ws, bs = [], []
            for ls, bn in zip(lins, bns):
                bnj = bn[j - 1]
                a = bnj.weight / torch.sqrt(bnj.running_var + bnj.eps)  # BN(x) = a * x + c
                c = bnj.bias - a * bnj.running_mean
                ws.append(ls[j].weight * a[None, :])
                bs.append(ls[j].bias + ls[j].weight @ c)
            rest.append((torch.stack(ws), torch.stack(bs)[:, :, None]))
        self._folded = FoldedWeights(first, b1, xs, ymat, off, rest)
        return self._folded

    @torch.no_grad()
    def fast_logits(self, taps: dict[str, torch.Tensor], chunk: int = 512) -> torch.Tensor:
        """taps {name: [N, c, r, r]} -> logits [N, M, K, R, R], equal to :meth:`reference_logits`.

        Works row-major, [y, channel, x]: each tap resolution's projection is one batched matmul for all
        members; the upsampled sum is built ``chunk`` hidden channels at a time to bound memory.
        """
        first, b1, xs, ymat, rows, rest = self.folded()
        R, M = self.info.resolution, len(self.members)
        width = b1.shape[0]
        out = []
        for i in range(next(iter(taps.values())).shape[0]):
            proj, hidden = {}, None
            for r, (names, w) in first.items():
                x = torch.cat([taps[name][i] for name in names], 0).to(w.dtype)  # [c, r, r]
                if r == R:  # [y, M*h1, x]: R matmuls of [M*h1, c] x [c, R]
                    hidden = torch.matmul(w, x.permute(1, 0, 2))
                else:  # [M*h1, y, x]: one matmul
                    proj[r] = torch.matmul(w, x.reshape(x.shape[0], r * r)).reshape(-1, r, r)
            if hidden is None:
                hidden = torch.zeros(R, width, R, dtype=b1.dtype, device=b1.device)
            for c0 in range(0, width, chunk) if xs else ():
                c1 = min(width, c0 + chunk)
                # along x: 1D linear interpolation has PyTorch's bilinear weights and a fast kernel;
                # the cat puts the rows of all resolutions together, y first, in one pass
                q = torch.cat(
                    [
                        F.interpolate(proj[r][c0:c1], size=R, mode="linear", align_corners=False).permute(1, 0, 2)
                        for r in xs
                    ]
                )  # [sum r, chunk, R]
                hidden[:, c0:c1].reshape(R, -1).addmm_(ymat, q.reshape(rows, -1))
            h = hidden.add_(b1[None, :, None]).relu_().reshape(R, M, -1, R)  # [y, M, h1, x]
            for j, (w, b) in enumerate(rest):
                h = torch.matmul(w, h).add_(b)  # [y, M, out, x]
                if j < len(rest) - 1:
                    h.relu_()
            out.append(h.permute(1, 2, 0, 3))  # [M, K, y, x]
        return torch.stack(out)

    def predict(self, taps: dict[str, torch.Tensor], fast: bool = True) -> Prediction:
        return predict_from_logits(self.fast_logits(taps) if fast else self.reference_logits(taps))

    # -- persistence -------------------------------------------------------------------------
    def meta(self) -> dict:
        i = self.info
        return {
            "kind": "interpreter",
            "config": self.cfg.to_dict(),
            "taps": taps_to_json(i.taps),
            "classes": [c.__dict__ for c in i.classes],
            "resolution": i.resolution,
            "img_channels": i.img_channels,
            "generator_sha256": i.generator_sha256,
            "noise_mode": i.noise_mode,
            "annotations": list(i.annotations),
        }


def save_interpreter(path, interp: Interpreter, extra: dict | None = None) -> str:
    tensors = {f"m{i}.{k}": v for i, m in enumerate(interp.members) for k, v in m.state_dict().items()}
    interp.sha256 = save_tensors(path, tensors, {**interp.meta(), **(extra or {})})
    return interp.sha256


def load_interpreter(path, device="cpu") -> Interpreter:
    tensors, meta = load_tensors(path, device)
    if meta.get("kind") != "interpreter":
        raise CheckpointError(f"{path}: holds a {meta.get('kind')!r}, not an interpreter")
    try:
        info = InterpreterInfo(
            taps_from_json(meta["taps"]),
            [ClassInfo(**c) for c in meta["classes"]],
            int(meta["resolution"]),
            int(meta.get("img_channels", 1)),
            meta.get("generator_sha256", ""),
            meta.get("noise_mode", "const"),
            list(meta.get("annotations", [])),
        )
        interp = Interpreter(info, InterpreterConfig(**meta["config"])).to(device)
        for i, m in enumerate(interp.members):
            m.load_state_dict({k[len(f"m{i}.") :]: v for k, v in tensors.items() if k.startswith(f"m{i}.")})
    except (KeyError, TypeError, ValueError, RuntimeError) as e:
        raise CheckpointError(f"{path}: not a valid interpreter ({e.__class__.__name__}: {e})") from None
    interp.eval().requires_grad_(False)
    interp.sha256 = meta["sha256"]
    return interp


# ---------------------------------------------------------------------------------------------
# Training


@torch.no_grad()
def evaluate(
    member: nn.Module, feats: TapFeatures, pixels: torch.Tensor, labels: torch.Tensor, chunk: int = 2048
) -> tuple[float, float]:
    """Mean cross-entropy and accuracy of one member on the given flat pixel indices (eval mode)."""
    member.eval()
    loss, correct = 0.0, 0
    for s in range(0, len(pixels), chunk):
        p = pixels[s : s + chunk]
        logits = member(feats.gather(*unflatten(p, feats.resolution)))
        target = labels[p.to(labels.device)]
        loss += F.cross_entropy(logits, target, reduction="sum").item()
        correct += int((logits.argmax(1) == target).sum())
    return loss / max(1, len(pixels)), correct / max(1, len(pixels))


def train_interpreter(
    feats: TapFeatures, masks, info: InterpreterInfo, cfg: InterpreterConfig, log=None, progress: bool = False
) -> Interpreter:
    """Train the ensemble on ``feats`` (N images' taps) and ``masks`` (uint8 [N, R, R] class ids).

    ``log(dict)`` receives one line per member and epoch (losses, accuracy, time).
    """
    K, R, N = len(info.classes), feats.resolution, feats.num_images
    labels = torch.as_tensor(masks).reshape(-1).long().to(feats.device)
    if labels.numel() != N * R * R:
        raise FeatureError(f"masks have shape {tuple(masks.shape)}, expected ({N}, {R}, {R})")
    if int(labels.max()) >= K:
        raise FeatureError(f"masks contain class id {int(labels.max())} but there are only {K} classes")
    train_px, val_px = split_pixels(N, R, cfg.holdout, cfg.seed)
    if len(val_px) > cfg.val_pixels:
        g = torch.Generator().manual_seed(cfg.seed + 1)
        val_px = val_px[torch.randperm(len(val_px), generator=g)[: cfg.val_pixels]].sort().values
    interp = Interpreter(info, cfg).to(feats.device)
    per_epoch = len(train_px) if cfg.pixels_per_epoch is None else int(cfg.pixels_per_epoch)
    steps = -(-per_epoch // cfg.batch_size)
    bar = None
    if progress:
        from tqdm import tqdm

        bar = tqdm(total=cfg.members * cfg.epochs * steps, desc="training interpreter", unit="step")
    try:
        for m, member in enumerate(interp.members):
            g = torch.Generator().manual_seed(member_seed(cfg.seed, m))
            init_member(member, g)
            opt = torch.optim.Adam(member.parameters(), lr=cfg.lr)
            best, best_state, stale = math.inf, None, 0
            for epoch in range(cfg.epochs):
                t0, member = time.time(), member.train()
                order = epoch_order(train_px, labels, cfg.pixels_per_epoch, g, cfg.balanced, K)
                total, count = 0.0, 0
                for s in range(0, len(order), cfg.batch_size):
                    batch = order[s : s + cfg.batch_size]
                    if len(batch) < 2:  # BatchNorm cannot normalise a single sample
                        continue
                    target = labels[batch.to(labels.device)]
                    loss = F.cross_entropy(member(feats.gather(*unflatten(batch, R))), target)
                    opt.zero_grad(set_to_none=True)
                    loss.backward()
                    opt.step()
                    total, count = total + loss.item() * len(batch), count + len(batch)
                    if bar is not None:
                        bar.update()
                        bar.set_postfix(member=m, epoch=epoch, loss=f"{loss.item():.4f}")
                line = {
                    "event": "epoch",
                    "member": m,
                    "epoch": epoch,
                    "train_loss": total / max(1, count),
                    "pixels": count,
                }
                if len(val_px):
                    line["val_loss"], line["val_acc"] = evaluate(member, feats, val_px, labels)
                line["seconds"] = time.time() - t0
                if log is not None:
                    log(line)
                if not len(val_px):
                    continue
                if line["val_loss"] < best:
                    best, best_state, stale = line["val_loss"], copy.deepcopy(member.state_dict()), 0
                else:
                    stale += 1
                    if stale >= cfg.patience:
                        if bar is not None:
                            bar.update((cfg.epochs - epoch - 1) * steps)
                        break
            if best_state is not None:
                member.load_state_dict(best_state)
            member.eval()
    finally:
        if bar is not None:
            bar.close()
    interp.eval().requires_grad_(False)
    return interp
