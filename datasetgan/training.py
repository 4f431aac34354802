"""StyleGAN2-ADA training: the loop, its losses and regularisers, EMA, snapshots and resuming.

One training step (one minibatch of ``batch`` real images) runs the phases of StyleGAN2 with lazy
regularisation:

    G main   non-saturating logistic loss softplus(-D(A(G(z)))) with style mixing
    G reg    every ``pl_interval`` steps: path-length penalty, weighted by the interval
    D main   softplus(D(A(G(z)))) + softplus(-D(A(x))); the signs of D(A(x)) feed the ADA controller
    D reg    every ``r1_interval`` steps: R1 = gamma/2 * |grad_x D(A(x))|^2 on reals, weighted by the interval

where A is the augmentation pipeline (see :mod:`datasetgan.augment`). Because the regularisers take
extra optimiser steps, Adam's learning rate and betas are corrected by c = interval / (interval + 1)
(lr * c, beta ** c), as in the StyleGAN2 paper. After each step the EMA copy of G moves towards G.

Randomness comes only from explicit ``torch.Generator`` objects (data order, latents, noise, mixing,
augmentation), whose states are part of every snapshot, together with the weights, both optimisers,
ADA's state and the step count. Resuming from a snapshot therefore continues exactly where the run
was: the same weights, step count and p as an uninterrupted run (bit-identical on the same machine and
thread count).

Under torchrun (:mod:`datasetgan.distributed`) the global batch is split into one share per rank.
Every rank draws the same global minibatch of reals from the run's data stream and keeps its slice;
the other streams (latents, noise, mixing, augmentation) come from (seed, share) and every rank's are
saved in the snapshot, so a resume on the same number of ranks continues exactly. One process may
hold several shares: with two it makes the same draws, and the same weights, as two ranks.

Snapshot layout in RUN/training/:

    config.json                          the TrainConfig (also stored in every snapshot)
    snapshot-<images seen>.safetensors   G, G_ema, D, optimiser states, RNG states (+ .json sidecar)
    latest.json                          which snapshot is the newest (written last, atomically)
    log.jsonl                            one JSON line per tick: kimg, losses, p, r_t, FID, images/s, wall and
                                         CPU seconds of training (without FID and snapshots), FID's CPU seconds
    grid-<images seen>.png, reals.png    fixed-seed samples of G_ema; a grid of training images
    curves.png                           losses, p and r_t, FID against thousands of images
"""

from __future__ import annotations

import copy
import json
import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np
import torch
import torch.nn.functional as F

from . import checkpoint, jsonlog
from .atomic import atomic_write_text
from .augment import AdaController, AugmentPipe
from .distributed import Group
from .errors import DatasetganError
from .networks import Discriminator, Generator
from .presets import TrainConfig
from .runfolder import RunFolder
from .weightfiles import remove_pair, verify

SNAPSHOT_KIND = "training-snapshot"
RNG_NAMES = ("data", "latent", "noise", "mixing", "augment")


class TrainingError(DatasetganError, RuntimeError):
    """A problem with a run folder or snapshot, explained for the user."""


# ---------------------------------------------------------------------------------------------
# Optimiser states <-> flat tensors + JSON


def flatten_optimizer(opt: torch.optim.Optimizer, prefix: str) -> tuple[dict[str, torch.Tensor], dict]:
    """Split an optimiser state into tensors (``prefix.state.<param>.<key>``) and JSON metadata."""
    sd = opt.state_dict()
    tensors, scalars = {}, {}
    for pid, st in sd["state"].items():
        for key, value in st.items():
            if torch.is_tensor(value):
                tensors[f"{prefix}.state.{pid}.{key}"] = value
            else:
                scalars[f"{pid}.{key}"] = value
    groups = [{k: (list(v) if isinstance(v, tuple) else v) for k, v in g.items()} for g in sd["param_groups"]]
    return tensors, {"param_groups": groups, "scalars": scalars}


def unflatten_optimizer(opt: torch.optim.Optimizer, prefix: str, tensors: dict, meta: dict) -> None:
    state: dict[int, dict] = {}
    head = f"{prefix}.state."
    for name, value in tensors.items():
        if name.startswith(head):
            pid, key = name[len(head) :].split(".", 1)
            state.setdefault(int(pid), {})[key] = value
    for name, value in meta["scalars"].items():
        pid, key = name.split(".", 1)
        state.setdefault(int(pid), {})[key] = value
    groups = [{k: (tuple(v) if k == "betas" else v) for k, v in g.items()} for g in meta["param_groups"]]
    opt.load_state_dict({"state": state, "param_groups": groups})


# ---------------------------------------------------------------------------------------------


@dataclass
class StepStats:
    """Running sums of the losses between two log lines."""

    sums: dict[str, float] = field(default_factory=dict)
    counts: dict[str, int] = field(default_factory=dict)

    def add(self, name: str, value: float) -> None:
        self.sums[name] = self.sums.get(name, 0.0) + float(value)
        self.counts[name] = self.counts.get(name, 0) + 1

    def means(self) -> dict[str, float]:
        return {k: self.sums[k] / self.counts[k] for k in self.sums}


def lazy_adam(params, lr: float, betas, eps: float, interval: int) -> torch.optim.Adam:
    """Adam with StyleGAN2's correction for lazy regularisation (interval 0 = not lazy)."""
    c = interval / (interval + 1) if interval else 1.0
    return torch.optim.Adam(params, lr=lr * c, betas=tuple(b**c for b in betas), eps=eps)


def stream_seed(seed: int, stream: int, share: int) -> int:
    """The seed of random stream ``stream`` of ``share`` (share 0: a one-process run's streams)."""
    return seed * 1000 + stream + 1 + share * 2**32


def rng_key(name: str, share: int) -> str:
    return f"rng.{name}" if share == 0 else f"rng.{name}.{share}"


def share_batch(cfg: TrainConfig, shares: int) -> int:
    """The batch of each rank (share): --batch is the global batch, split evenly."""
    if cfg.batch % shares:
        raise TrainingError(f"--batch {cfg.batch} does not split evenly over {shares} ranks")
    k = cfg.batch // shares
    if shares > 1 and k < cfg.mbstd_group:
        raise TrainingError(
            f"--batch {cfg.batch} over {shares} ranks leaves {k} images per rank, fewer than "
            f"the minibatch-stddev group of {cfg.mbstd_group}; raise --batch"
        )
    return k


class Trainer:
    """Holds the networks, optimisers, random generators and counters of one training run."""

    def __init__(
        self,
        cfg: TrainConfig,
        images: np.ndarray,
        device: str = "cpu",
        group: Group | None = None,
        local_shares: int = 1,
    ):
        if images.ndim != 4 or images.shape[1] != cfg.img_channels or images.shape[-1] != cfg.resolution:
            raise TrainingError(
                f"data of shape {tuple(images.shape)} does not fit the configuration "
                f"({cfg.img_channels} channel(s), {cfg.resolution}x{cfg.resolution})"
            )
        self.group = group or Group(device=device)
        self.cfg, self.device = cfg, torch.device(self.group.device if group else device)
        # The global batch is split into shares, one per rank (a single process may hold several, as the
        # reference for a multi-rank run); each share has its own random streams.
        self.num_shares = self.group.world_size * local_shares
        self.shares = [self.group.rank * local_shares + j for j in range(local_shares)]
        self.share_batch = share_batch(cfg, self.num_shares)
        self.images = torch.from_numpy(np.ascontiguousarray(images))
        # Network initialisation draws from a forked global RNG seeded with cfg.seed, leaving the
        # process-wide generator untouched.
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(cfg.seed)
            self.G = Generator(cfg.generator_config()).to(self.device)
            self.D = Discriminator(cfg.discriminator_config()).to(self.device)
        self.group.broadcast_([*self.G.state_dict().values(), *self.D.state_dict().values()])
        self.G_ema = copy.deepcopy(self.G).eval().requires_grad_(False)
        self.opt_G = lazy_adam(self.G.parameters(), cfg.g_lr, cfg.betas, cfg.eps, cfg.pl_interval)
        self.opt_D = lazy_adam(self.D.parameters(), cfg.d_lr, cfg.betas, cfg.eps, cfg.r1_interval)
        # The data order is one stream for the whole run (every rank draws the same global minibatch
        # and keeps its share); the others come from (seed, share). Share 0's are those of a
        # one-process run, so a single process trains exactly as before ranks existed.
        self.rng_data = torch.Generator().manual_seed(stream_seed(cfg.seed, 0, 0))
        self.rngs = {
            s: {
                name: torch.Generator().manual_seed(stream_seed(cfg.seed, i, s))
                for i, name in enumerate(RNG_NAMES)
                if name != "data"
            }
            for s in self.shares
        }
        self.augment = AugmentPipe(cfg.augpipe)
        self.ada = AdaController(
            cfg.batch, cfg.ada_target, cfg.ada_interval, cfg.ada_kimg, p=cfg.aug_p if cfg.aug != "none" else 0.0
        )
        self.pl_mean = torch.zeros([])
        self.step_count = 0
        self.nimg = 0
        self.train_seconds = 0.0  # time spent training, summed over resumes
        self.train_cpu_seconds = 0.0  # CPU time of this process spent training (no FID, snapshots), summed
        self.stats = StepStats()

    # -- helpers ----------------------------------------------------------------------------------

    @property
    def p(self) -> float:
        return 0.0 if self.cfg.aug == "none" else self.ada.p

    def real_batches(self) -> dict[int, torch.Tensor]:
        """This process's shares of one global minibatch of reals (disjoint slices of the same draw)."""
        n, k = self.cfg.batch, self.share_batch
        idx = torch.randint(len(self.images), (n,), generator=self.rng_data)
        flip = torch.rand(n, generator=self.rng_data) < 0.5 if self.cfg.mirror else None
        out = {}
        for s in self.shares:
            part = slice(s * k, (s + 1) * k)
            x = self.images[idx[part]].to(self.device, torch.float32) / 127.5 - 1
            if flip is not None:
                x = torch.where(flip[part].reshape(k, 1, 1, 1).to(self.device), x.flip(-1), x)
            out[s] = x
        return out

    def latents(self, n: int, share: int) -> torch.Tensor:
        return torch.randn(n, self.cfg.z_dim, generator=self.rngs[share]["latent"]).to(self.device)

    def mapped(self, G: Generator, n: int, share: int) -> torch.Tensor:
        """w+ [n, num_ws, w_dim] for fresh latents, with style mixing (one cutoff per batch)."""
        ws = G.mapping(self.latents(n, share))
        u = torch.rand(2, generator=self.rngs[share]["mixing"])
        if self.cfg.style_mixing > 0 and float(u[0]) < self.cfg.style_mixing:
            cutoff = 1 + int(float(u[1]) * (ws.shape[1] - 1))
            ws2 = G.mapping(self.latents(n, share))
            ws = torch.cat([ws[:, :cutoff], ws2[:, cutoff:]], dim=1)
        return ws

    def synthesize(self, G: Generator, ws: torch.Tensor, share: int) -> torch.Tensor:
        return G.synthesis(ws, noise_mode="random", noise_generator=self.rngs[share]["noise"])

    def run_D(self, img: torch.Tensor, share: int) -> torch.Tensor:
        if self.p > 0:
            img = self.augment(img, self.p, self.rngs[share]["augment"])
        return self.D(img)

    def mean_over_shares(self, local_sum: torch.Tensor) -> torch.Tensor:
        """The mean over all shares of the run, given the sum over this process's shares."""
        return self.group.sum_(local_sum.detach().clone()) / self.num_shares

    def step(self, opt: torch.optim.Optimizer, module: torch.nn.Module) -> None:
        """Sum the shares' gradients (each already divided by the share count) over ranks; step."""
        self.group.sum_grads(module.parameters())
        opt.step()

    # -- one step ---------------------------------------------------------------------------------

    def train_step(self) -> None:
        """One global minibatch: every phase runs on each of this process's shares, the gradients
        of all shares are averaged, then the optimiser steps."""
        cfg, G, D = self.cfg, self.G, self.D
        k, S = self.share_batch, self.num_shares

        # G main: non-saturating logistic loss; G's running w average follows the global batch.
        G.requires_grad_(True)
        D.requires_grad_(False)
        self.opt_G.zero_grad(set_to_none=True)
        w_sum = torch.zeros_like(G.mapping.w_avg)
        for s in self.shares:
            ws = self.mapped(G, k, s)
            w_sum += ws[:, 0].detach().mean(0)  # before mixing's cutoff: the first latent's w
            loss_G = F.softplus(-self.run_D(self.synthesize(G, ws, s), s)).mean()
            (loss_G / S).backward()
            self.stats.add("loss_G", loss_G.item())
        with torch.no_grad():
            G.mapping.w_avg.copy_(self.mean_over_shares(w_sum).lerp(G.mapping.w_avg, G.mapping.w_avg_beta))
        self.step(self.opt_G, G)

        # G reg: path length, a smaller batch; the running mean length is the all-shares mean.
        if cfg.pl_interval and cfg.pl_weight and self.step_count % cfg.pl_interval == 0:
            m = max(k // cfg.pl_batch_shrink, 1)
            lengths = {}
            for s in self.shares:
                ws = self.mapped(G, m, s)
                img = self.synthesize(G, ws, s)
                noise = torch.randn(img.shape, generator=self.rngs[s]["noise"]).to(img.device) / math.sqrt(
                    img.shape[2] * img.shape[3]
                )
                (grads,) = torch.autograd.grad((img * noise).sum(), ws, create_graph=True)
                lengths[s] = grads.square().sum(2).mean(1).sqrt()
            batch_mean = self.mean_over_shares(sum(v.detach().mean() for v in lengths.values()))
            self.pl_mean = self.pl_mean.lerp(batch_mean.cpu(), cfg.pl_decay)
            self.opt_G.zero_grad(set_to_none=True)
            for s in self.shares:
                penalty = (lengths[s] - self.pl_mean.to(lengths[s].device)).square().mean()
                (penalty * cfg.pl_weight * cfg.pl_interval / S).backward()
                self.stats.add("pl_penalty", penalty.item())
            self.step(self.opt_G, G)

        # D main: logistic loss on fakes and reals.
        G.requires_grad_(False)
        D.requires_grad_(True)
        reals = self.real_batches()
        self.opt_D.zero_grad(set_to_none=True)
        ada_before = self.ada.sign_sum, self.ada.count
        for s in self.shares:
            with torch.no_grad():
                fake = self.synthesize(G, self.mapped(G, k, s), s)
            logits_fake = self.run_D(fake, s)
            logits_real = self.run_D(reals[s], s)
            loss_D = F.softplus(logits_fake).mean() + F.softplus(-logits_real).mean()
            (loss_D / S).backward()
            self.ada.accumulate(logits_real)
            self.stats.add("loss_D", loss_D.item())
            self.stats.add("D_real", logits_real.mean().item())
            self.stats.add("D_fake", logits_fake.mean().item())
        if self.group.active:  # every rank keeps the sums of all ranks' signs, so p and snapshots agree
            signs, count = self.group.sum_values(self.ada.sign_sum - ada_before[0], self.ada.count - ada_before[1])
            self.ada.sign_sum, self.ada.count = ada_before[0] + signs, ada_before[1] + int(count)
        self.step(self.opt_D, D)

        # D reg: R1 on reals, differentiated through the augmentation.
        if cfg.r1_interval and cfg.r1_gamma and self.step_count % cfg.r1_interval == 0:
            self.opt_D.zero_grad(set_to_none=True)
            for s in self.shares:
                real = reals[s].detach().requires_grad_(True)  # the same reals as D main
                logits = self.run_D(real, s)
                (grads,) = torch.autograd.grad(logits.sum(), real, create_graph=True)
                penalty = grads.square().sum(dim=(1, 2, 3)).mean()
                (penalty * (cfg.r1_gamma / 2) * cfg.r1_interval / S).backward()
                self.stats.add("r1_penalty", penalty.item())
            self.step(self.opt_D, D)

        self.ada.step(adjust=cfg.aug == "ada")
        self.step_count += 1
        self.nimg += cfg.batch
        self.update_ema()

    def all_stats(self) -> StepStats:
        """The running loss sums of every rank (collective: all ranks call it at the same step)."""
        if not self.group.active:
            return self.stats
        names = sorted(self.stats.sums)
        totals = self.group.sum_values(*(self.stats.sums[k] for k in names), *(self.stats.counts[k] for k in names))
        return StepStats(
            dict(zip(names, totals[: len(names)])), {k: int(c) for k, c in zip(names, totals[len(names) :])}
        )

    @torch.no_grad()
    def update_ema(self) -> None:
        ema_nimg = self.cfg.ema_kimg * 1000
        if self.cfg.ema_rampup is not None:
            ema_nimg = min(ema_nimg, self.nimg * self.cfg.ema_rampup)
        beta = 0.5 ** (self.cfg.batch / max(ema_nimg, 1e-8))
        for p_ema, p in zip(self.G_ema.parameters(), self.G.parameters()):
            p_ema.copy_(p.detach().lerp(p_ema, beta))
        for b_ema, b in zip(self.G_ema.buffers(), self.G.buffers()):
            b_ema.copy_(b)

    # -- snapshots --------------------------------------------------------------------------------

    def state_tensors(self) -> tuple[dict[str, torch.Tensor], dict]:
        tensors: dict[str, torch.Tensor] = {}
        for name, module in (("G", self.G), ("G_ema", self.G_ema), ("D", self.D)):
            tensors.update({f"{name}.{k}": v for k, v in module.state_dict().items()})
        t_g, m_g = flatten_optimizer(self.opt_G, "opt_G")
        t_d, m_d = flatten_optimizer(self.opt_D, "opt_D")
        tensors.update(t_g)
        tensors.update(t_d)
        tensors["rng.data"] = self.rng_data.get_state()
        for s in self.shares:  # every rank's streams, gathered: rank 0 writes them all
            for name, gen in self.rngs[s].items():
                for rank, state in enumerate(self.group.gather(gen.get_state())):
                    tensors[rng_key(name, s + (rank - self.group.rank) * len(self.shares))] = state
        tensors["rng.torch_global"] = torch.get_rng_state()
        tensors["pl_mean"] = self.pl_mean.clone()
        meta = {
            "kind": SNAPSHOT_KIND,
            "config": self.cfg.to_dict(),
            "opt_G": m_g,
            "opt_D": m_d,
            "state": {
                "step": self.step_count,
                "nimg": self.nimg,
                "train_seconds": self.train_seconds,
                "train_cpu_seconds": self.train_cpu_seconds,
                "ada": self.ada.state(),
                "shares": self.num_shares,
            },
        }
        return tensors, meta

    def load_state(self, tensors: dict[str, torch.Tensor], meta: dict) -> None:
        for name, module in (("G", self.G), ("G_ema", self.G_ema), ("D", self.D)):
            head = f"{name}."
            sd = {k[len(head) :]: v for k, v in tensors.items() if k.startswith(head)}
            module.load_state_dict(sd)
        unflatten_optimizer(self.opt_G, "opt_G", tensors, meta["opt_G"])
        unflatten_optimizer(self.opt_D, "opt_D", tensors, meta["opt_D"])
        self.rng_data.set_state(tensors["rng.data"])
        for s in self.shares:  # a share the snapshot lacks (another world size) keeps fresh streams
            for name, gen in self.rngs[s].items():
                if rng_key(name, s) in tensors:
                    gen.set_state(tensors[rng_key(name, s)])
        torch.set_rng_state(tensors["rng.torch_global"])
        self.pl_mean = tensors["pl_mean"].clone()
        state = meta["state"]
        self.step_count, self.nimg = int(state["step"]), int(state["nimg"])
        self.train_seconds = float(state["train_seconds"])
        self.train_cpu_seconds = float(state.get("train_cpu_seconds", 0.0))  # 0: a snapshot older than the field
        self.ada.load_state(state["ada"])


# ---------------------------------------------------------------------------------------------
# Run folders


def snapshot_name(nimg: int) -> str:
    return f"snapshot-{nimg:09d}.safetensors"


def latest_snapshot(training_dir: Path) -> Path | None:
    pointer = Path(training_dir) / "latest.json"
    if not pointer.is_file():
        return None
    try:
        return Path(training_dir) / json.loads(pointer.read_text())["snapshot"]
    except (json.JSONDecodeError, KeyError) as e:
        raise TrainingError(f"{pointer}: not a valid snapshot pointer ({e})") from None


def save_snapshot(trainer: Trainer, training_dir: Path, keep: int = 2, state=None) -> Path:
    """Write a snapshot, then point latest.json at it, then delete all but the ``keep`` newest.
    ``state``: the (tensors, meta) of ``trainer.state_tensors()`` when already gathered."""
    training_dir = Path(training_dir)
    path = training_dir / snapshot_name(trainer.nimg)
    tensors, meta = state or trainer.state_tensors()
    checkpoint.save_tensors(path, tensors, meta)
    atomic_write_text(training_dir / "latest.json", json.dumps({"snapshot": path.name, "nimg": trainer.nimg}))
    older = sorted(training_dir.glob("snapshot-*.safetensors"))
    for old in older[:-keep] if keep > 0 else []:
        if old != path:
            remove_pair(old)
    return path


def load_snapshot(path: Path) -> tuple[dict, dict]:
    try:
        tensors, meta = checkpoint.load_tensors(path)
    except checkpoint.CheckpointError as e:
        raise TrainingError(str(e)) from None
    if meta.get("kind") != SNAPSHOT_KIND:
        raise TrainingError(f"{path}: holds a {meta.get('kind')!r}, not a training snapshot")
    return tensors, meta


def snapshot_generator(path: Path) -> tuple[Generator, dict]:
    """The EMA generator a training snapshot holds (what the run exported at that snapshot), and the
    snapshot's metadata: FID, rendering or a generator file at any snapshot kept on disk."""
    tensors, meta = load_snapshot(path)
    G = Generator(TrainConfig.from_dict(meta["config"]).generator_config())
    G.load_state_dict({k[len("G_ema.") :]: v for k, v in tensors.items() if k.startswith("G_ema.")})
    return G.eval().requires_grad_(False), meta


def export_snapshot(path: Path, out: Path, data: str | None = None) -> None:
    """Write a snapshot's EMA generator to ``out`` exactly as training exports it (same tensors and metadata)."""
    G, meta = snapshot_generator(path)
    state = meta["state"]
    extra = {"training": {"nimg": state["nimg"], "step": state["step"], "config": meta["config"]}}
    checkpoint.save_generator(out, G, {**extra, **({"data": data} if data else {})})


def read_log(path: Path) -> list[dict]:
    return jsonlog.read(path)[0]


def truncate_log(path: Path, nimg: int) -> list[int]:
    """Drop log lines written after the snapshot we resume from, so the curve continues cleanly, and
    lines torn by a crash; returns the numbers of the torn lines dropped."""
    rows, torn = jsonlog.read(path)
    kept = [r for r in rows if r.get("nimg", 0) <= nimg]
    if len(kept) != len(rows) or torn:
        atomic_write_text(path, "".join(json.dumps(r) + "\n" for r in kept))
    return torn


def append_log(path: Path, row: dict) -> None:
    jsonlog.append(path, row)


@dataclass
class LoopOptions:
    kimg: float  # train until this many thousand images have been seen in total
    snap_kimg: float  # snapshot every this many thousand images
    log_kimg: float | None = None  # a log line every this many thousand images (default: snap / 4)
    grid_seeds: int = 32  # fixed seeds of the sample grid
    keep_snapshots: int = 2
    progress: bool = True
    fid: Callable[[Generator], float] | None = None  # computes FID of G_ema at each snapshot
    data: str | None = None  # the training data folder, recorded in generator.json


def export_generator(trainer: Trainer, path: Path, data: str | None) -> None:
    """The EMA generator for the later stages, with the data folder (whose labels.json annotate reads)."""
    extra = {"training": {"nimg": trainer.nimg, "step": trainer.step_count, "config": trainer.cfg.to_dict()}}
    checkpoint.save_generator(path, trainer.G_ema, {**extra, **({"data": data} if data else {})})


def export_is_current(path: Path, nimg: int) -> bool:
    """Whether ``path`` is a complete generator export of the snapshot at ``nimg`` images."""
    try:
        return verify(path).get("training", {}).get("nimg") == nimg
    except (checkpoint.CheckpointError, OSError, AttributeError):
        return False


def train(trainer: Trainer, run_dir, opts: LoopOptions, reals_grid: np.ndarray | None = None) -> None:
    """Train until ``opts.kimg``, writing snapshots, grids, log lines and curves into RUN/training."""
    from tqdm import tqdm

    from .curves import plot_curves
    from .imagegrid import save_grid
    from .render import render, to_uint8

    run = RunFolder(run_dir)
    tdir = run.training
    main = trainer.group.main  # only rank 0 writes into the run folder
    fresh = trainer.nimg == 0 and not (tdir / "latest.json").exists()
    trainer.group.barrier()  # every rank has looked before rank 0 writes
    if main:
        tdir.mkdir(parents=True, exist_ok=True)
        atomic_write_text(tdir / "config.json", trainer.cfg.to_json())
        if reals_grid is not None and not (tdir / "reals.png").exists():
            save_grid(tdir / "reals.png", reals_grid)
    log_path = tdir / "log.jsonl"
    total = int(round(opts.kimg * 1000))
    snap = max(int(round(opts.snap_kimg * 1000)), 1)
    log_every = max(int(round((opts.log_kimg or opts.snap_kimg / 4) * 1000)), 1)
    grid_seeds = list(range(opts.grid_seeds))

    def write_outputs(fid: float | None):
        state = trainer.state_tensors()  # on every rank: it gathers their random streams
        if not main:
            return
        save_snapshot(trainer, tdir, opts.keep_snapshots, state)
        export_generator(trainer, run.generator, opts.data)
        grid = to_uint8(render(trainer.G_ema, grid_seeds, noise_mode="const"))
        save_grid(tdir / f"grid-{trainer.nimg:09d}.png", grid)
        plot_curves(log_path, tdir / "curves.png")

    if fresh:
        if main:
            append_log(log_path, log_row(trainer, StepStats(), 0.0, fid=None))
        write_outputs(None)
    elif main and not export_is_current(run.generator, trainer.nimg):  # stopped between snapshot and export
        export_generator(trainer, run.generator, opts.data)

    bar = tqdm(
        total=total,
        initial=min(trainer.nimg, total),
        unit="img",
        disable=not (opts.progress and main),
        dynamic_ncols=True,
        smoothing=0.1,
    )
    tick_start, tick_nimg = time.perf_counter(), trainer.nimg
    try:
        while trainer.nimg < total:
            t0, c0 = time.perf_counter(), time.process_time()
            before = trainer.nimg
            trainer.train_step()
            trainer.train_seconds += time.perf_counter() - t0
            trainer.train_cpu_seconds += time.process_time() - c0
            bar.update(trainer.nimg - before)
            means = trainer.stats.means()
            bar.set_postfix(
                {k: f"{means[k]:.3f}" for k in ("loss_G", "loss_D") if k in means} | {"p": f"{trainer.p:.3f}"},
                refresh=False,
            )
            crossed_snap = trainer.nimg // snap != before // snap or trainer.nimg >= total
            crossed_log = trainer.nimg // log_every != before // log_every
            if crossed_log or crossed_snap:
                now = time.perf_counter()
                speed = (trainer.nimg - tick_nimg) / max(now - tick_start, 1e-9)
                stats = trainer.all_stats()  # every rank's losses
                fid, fid_cpu = None, None
                if crossed_snap and opts.fid is not None and main:
                    c0 = time.process_time()
                    fid = opts.fid(trainer.G_ema)
                    fid_cpu = time.process_time() - c0
                if main:
                    append_log(log_path, log_row(trainer, stats, speed, fid, fid_cpu))
                trainer.stats = StepStats()
                if crossed_snap:
                    write_outputs(fid)
                    if fid is not None:
                        bar.write(f"kimg {trainer.nimg / 1000:.2f}: FID {fid:.2f}")
                tick_start, tick_nimg = time.perf_counter(), trainer.nimg
    finally:
        bar.close()


def log_row(trainer: Trainer, stats: StepStats, speed: float, fid: float | None, fid_cpu: float | None = None) -> dict:
    """One line of log.jsonl. ``train_seconds``/``train_cpu_seconds``: wall and CPU time of the training
    steps so far (over resumes), excluding FID, snapshots and grids; ``fid_cpu_seconds``: this FID's."""
    return {
        "kimg": trainer.nimg / 1000,
        "nimg": trainer.nimg,
        "step": trainer.step_count,
        **{k: round(v, 6) for k, v in stats.means().items()},
        "p": trainer.p,
        "r_t": trainer.ada.last_rt,
        "fid": fid,
        "images_per_s": round(speed, 3),
        "train_seconds": round(trainer.train_seconds, 1),
        "train_cpu_seconds": round(trainer.train_cpu_seconds, 1),
        **({"fid_cpu_seconds": round(fid_cpu, 1)} if fid_cpu is not None else {}),
        "time": time.time(),
    }
