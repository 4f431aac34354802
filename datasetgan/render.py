"""Seed-exact rendering: a seed always gives the same image, alone or in a batch, in any process.

The latent z of a seed is drawn from a ``torch.Generator`` seeded with the seed (on the CPU, so the
device does not change it). Per-layer noise is either the constant noise stored with the generator
weights (``noise_mode="const"``, the default) or drawn from a generator seeded with the seed
(``noise_mode="seed"``). A real image projected into the generator renders the same way from its
stored w+ and noise maps (:func:`render_projection`). Each image is evaluated in a batch of one,
because batched kernels (BLAS, grouped convolutions) may sum in a different order and change the
last bits.
"""

from __future__ import annotations

import numpy as np
import torch

NOISE_SEED_OFFSET = 2**32  # keeps the noise stream of a seed distinct from its latent stream


def seed_latent(seed: int, z_dim: int) -> torch.Tensor:
    """The latent z [z_dim] of a seed."""
    g = torch.Generator().manual_seed(int(seed))
    return torch.randn(z_dim, generator=g)


@torch.no_grad()
def render_one(G, seed: int, truncation: float = 1.0, noise_mode: str = "const", with_taps: bool = False):
    """Render one seed: image [1, C, R, R] in [-1, 1] and, if asked, its feature taps {name: [1, c, r, r]}."""
    device = next(G.parameters()).device
    z = seed_latent(seed, G.cfg.z_dim)[None].to(device)
    kwargs = {"noise_mode": "const" if noise_mode == "const" else noise_mode}
    if noise_mode == "seed":
        kwargs = {
            "noise_mode": "random",
            "noise_generator": torch.Generator(device).manual_seed(int(seed) + NOISE_SEED_OFFSET),
        }
    elif noise_mode not in ("const", "none"):
        raise ValueError(f"noise_mode must be const, seed or none, got {noise_mode!r}")
    taps = {} if with_taps else None
    img = G(z, truncation_psi=truncation, taps=taps, **kwargs)
    return (img, taps) if with_taps else img


@torch.no_grad()
def render_projection(G, ws: torch.Tensor, noise: dict[str, torch.Tensor], with_taps: bool = False):
    """Render a projected image (see :mod:`datasetgan.projector`) like a seed: from its w+ [num_ws, w_dim]
    and noise maps {layer name: [r, r]}, evaluated alone; image [1, C, R, R] (and its taps if asked)."""
    device = next(G.parameters()).device
    maps = {name: n[None, None].to(device) for name, n in noise.items()}
    missing = sorted(set(G.synthesis.noise_layers()) - set(maps))
    if missing or ws.shape != (G.num_ws, G.cfg.w_dim):
        raise ValueError(
            f"a projection for this generator needs w+ [{G.num_ws}, {G.cfg.w_dim}] and noise maps "
            f"for every layer; got w+ {list(ws.shape)}, missing noise {missing[:3]}"
        )
    taps = {} if with_taps else None
    img = G.synthesis(ws[None].to(device), taps=taps, noise=maps)
    return (img, taps) if with_taps else img


def render(G, seeds, truncation: float = 1.0, noise_mode: str = "const", with_taps: bool = False):
    """Render several seeds, each evaluated alone; returns images [N, C, R, R] (and a list of tap dicts)."""
    outs = [render_one(G, s, truncation, noise_mode, with_taps) for s in seeds]
    if not with_taps:
        return torch.cat(outs)
    return torch.cat([o[0] for o in outs]), [o[1] for o in outs]


def to_uint8(img: torch.Tensor) -> np.ndarray:
    """[-1, 1] images [N, C, H, W] -> uint8 [N, H, W, C]."""
    x = (img.detach().float().cpu() * 127.5 + 128).clamp(0, 255).to(torch.uint8)
    return x.permute(0, 2, 3, 1).numpy()
