"""Pixel features of annotated seeds, kept at native resolution and gathered by bilinear interpolation.

The style interpreter classifies every pixel from the concatenation of all synthesis layers' outputs,
each bilinearly upsampled to the image resolution. Materialising that volume costs R*R*C floats per
image (1.3 GB at 256x256 with 4992 channels), so instead every tap is stored at its own resolution
(float16, channels last) and a minibatch of pixel positions gathers its feature vectors directly:
bilinear interpolation at a position reads the same four neighbours with the same weights as
``F.interpolate(mode="bilinear", align_corners=False)`` followed by indexing, so the two agree.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from .errors import DatasetganError
from .networks import FeatureTap


class FeatureError(DatasetganError, ValueError):
    pass


def tap_list(G) -> list[FeatureTap]:
    return list(G.feature_taps())


def taps_to_json(taps: list[FeatureTap]) -> list[dict]:
    return [{"name": t.name, "resolution": t.resolution, "channels": t.channels} for t in taps]


def taps_from_json(items: list[dict]) -> list[FeatureTap]:
    return [FeatureTap(str(t["name"]), int(t["resolution"]), int(t["channels"])) for t in items]


# ---------------------------------------------------------------------------------------------
# Bilinear weights with PyTorch's align_corners=False convention


def source_index(out_size: int, in_size: int, device=None):
    """For each output coordinate 0..out_size-1: (i0, i1, lambda0, lambda1), as F.interpolate computes them.

    The source coordinate of output pixel d is (d + 0.5) * in/out - 0.5, clamped at 0; i1 is i0 + 1
    except at the last input pixel; the weights are float32 like PyTorch's own for float32 input.
    """
    d = torch.arange(out_size, device=device, dtype=torch.float32)
    if in_size == out_size:  # PyTorch copies in this case
        i0 = torch.arange(out_size, device=device)
        return i0, i0, torch.ones(out_size, device=device), torch.zeros(out_size, device=device)
    scale = torch.tensor(in_size / out_size, dtype=torch.float32)
    src = ((d + 0.5) * scale - 0.5).clamp_min(0)
    i0 = src.to(torch.int64)  # truncation == floor for src >= 0
    i1 = torch.where(i0 < in_size - 1, i0 + 1, i0)
    lam1 = (src - i0.to(torch.float32)).clamp(0, 1)
    return i0, i1, 1 - lam1, lam1


def gather_bilinear(
    tap: torch.Tensor, img: torch.Tensor, y: torch.Tensor, x: torch.Tensor, out_res: int, dtype=torch.float32
) -> torch.Tensor:
    """Feature vectors [P, c] of a channels-last tap [N, r, r, c] at full-resolution positions (img, y, x).

    Equals ``F.interpolate(tap_nchw.to(dtype), size=out_res, mode="bilinear")[img, :, y, x]``.
    """
    r = tap.shape[1]
    iy0, iy1, ly0, ly1 = (t[y] for t in source_index(out_res, r, tap.device))
    ix0, ix1, lx0, lx1 = (t[x] for t in source_index(out_res, r, tap.device))
    ly0, ly1, lx0, lx1 = (t.to(dtype)[:, None] for t in (ly0, ly1, lx0, lx1))
    flat = tap.reshape(-1, tap.shape[3])  # index_select on rows is much faster than 3-index gathers
    base = img * (r * r)
    a, b, c, d = (
        flat.index_select(0, base + iy * r + ix).to(dtype)
        for iy, ix in ((iy0, ix0), (iy0, ix1), (iy1, ix0), (iy1, ix1))
    )
    return ly0 * (lx0 * a + lx1 * b) + ly1 * (lx0 * c + lx1 * d)


def upsample(x: torch.Tensor, out_res: int) -> torch.Tensor:
    """The reference upsampling [N, c, r, r] -> [N, c, R, R] (bilinear, align_corners=False)."""
    if x.shape[-1] == out_res:
        return x
    return torch.nn.functional.interpolate(x, size=(out_res, out_res), mode="bilinear", align_corners=False)


# ---------------------------------------------------------------------------------------------
# A set of images' taps at native resolution


@dataclass
class TapFeatures:
    """Every tap of N images at native resolution: {name: float16 [N, r, r, c]} (channels last)."""

    taps: list[FeatureTap]
    maps: dict[str, torch.Tensor]
    resolution: int

    @property
    def channels(self) -> int:
        return sum(t.channels for t in self.taps)

    @property
    def num_images(self) -> int:
        return next(iter(self.maps.values())).shape[0] if self.maps else 0

    @property
    def device(self) -> torch.device:
        return next(iter(self.maps.values())).device

    def to(self, device) -> "TapFeatures":
        return TapFeatures(self.taps, {k: v.to(device) for k, v in self.maps.items()}, self.resolution)

    def nbytes(self) -> int:
        return sum(m.numel() * m.element_size() for m in self.maps.values())

    @classmethod
    def from_tap_dicts(
        cls, taps: list[FeatureTap], tap_dicts: list[dict], resolution: int, dtype=torch.float16
    ) -> "TapFeatures":
        """Stack per-image tap dicts {name: [1, c, r, r]} into channels-last tensors."""
        maps = {}
        for t in taps:
            maps[t.name] = torch.cat([d[t.name].to(dtype).permute(0, 2, 3, 1) for d in tap_dicts]).contiguous()
        return cls(taps, maps, resolution)

    def gather(self, img, y, x, dtype=torch.float32) -> torch.Tensor:
        """Concatenated feature vectors [P, C] (taps in order) at full-resolution pixel positions."""
        img, y, x = (v.to(self.device) for v in (img, y, x))
        return torch.cat(
            [gather_bilinear(self.maps[t.name], img, y, x, self.resolution, dtype) for t in self.taps], dim=1
        )

    def full_volume(self, i: int, dtype=torch.float32) -> torch.Tensor:
        """The reference: image i's taps upsampled to full size and concatenated, [C, R, R]."""
        return torch.cat(
            [
                upsample(self.maps[t.name][i : i + 1].permute(0, 3, 1, 2).to(dtype), self.resolution)[0]
                for t in self.taps
            ]
        )


# ---------------------------------------------------------------------------------------------
# Pixel sampling


def split_pixels(num_images: int, resolution: int, holdout: float, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Flat pixel indices (image * R * R + y * R + x) split into (train, held-out) by a seeded coin."""
    if not 0 <= holdout < 1:
        raise FeatureError(f"holdout must be in [0, 1), got {holdout}")
    n = num_images * resolution * resolution
    g = torch.Generator().manual_seed(int(seed))
    held = torch.rand(n, generator=g) < holdout
    idx = torch.arange(n)
    return idx[~held], idx[held]


def unflatten(flat: torch.Tensor, resolution: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    rr = resolution * resolution
    return flat // rr, (flat % rr) // resolution, flat % resolution


def epoch_order(
    pixels: torch.Tensor,
    labels: torch.Tensor,
    count: int | None,
    generator: torch.Generator,
    balanced: bool = False,
    num_classes: int | None = None,
) -> torch.Tensor:
    """The pixel indices of one epoch, in a fresh random order.

    Plain: a permutation of ``pixels`` (its first ``count`` entries if given). Class-balanced: ``count``
    (default len(pixels)) draws with replacement, each class equally likely overall.
    """
    if not balanced:
        n = len(pixels) if count is None else min(int(count), len(pixels))
        return pixels[torch.randperm(len(pixels), generator=generator)[:n]]
    n = len(pixels) if count is None else int(count)
    lab = labels[pixels.to(labels.device)].long().cpu()
    freq = torch.bincount(lab, minlength=num_classes or int(lab.max()) + 1).double()
    w = 1.0 / freq[lab]
    draws = torch.multinomial(w, n, replacement=True, generator=generator)
    return pixels[draws]


def render_record(G, aset, rec):
    """An annotation's image [1, C, R, R] and taps: a seed rendered with its truncation and noise mode,
    a real image from its stored projection (w+ and noise maps)."""
    from .render import render_one, render_projection

    if rec.kind != "real":
        return render_one(G, rec.seed, rec.truncation, rec.noise_mode, with_taps=True)
    from .projector import ProjectionError, load_projection

    try:
        p, _ = load_projection(aset.path(rec.id, "projection"), G)
    except ProjectionError as e:
        raise FeatureError(f"{rec.id}: {e}") from None
    return render_projection(G, p.ws, p.noise, with_taps=True)


def render_annotated(G, aset, include_pre_annotated: bool = False, progress: bool = False):
    """Render every finished annotation of ``aset`` with taps.

    Returns (TapFeatures, masks uint8 [N, R, R], records). Each item is rendered as it was annotated
    (:func:`render_record`); records made with another generator are refused, and the re-rendered
    image must match the stored one (the mask was painted on it).
    """
    from .render import to_uint8

    records = aset.annotated(include_pre_annotated)
    if not records:
        extra = "" if include_pre_annotated else " (pre-annotated items are counted only with the flag to include them)"
        raise FeatureError(f"{aset.dir}: no finished annotations (state 'done' with a mask){extra}")
    sha = getattr(G, "sha256", "")
    res = G.cfg.resolution
    taps = tap_list(G)
    bad = [r for r in records if r.generator_sha256 != sha]
    if bad:
        ids = ", ".join(r.id for r in bad[:3]) + (" ..." if len(bad) > 3 else "")
        raise FeatureError(
            f"{len(bad)} annotation(s) ({ids}) were made with generator "
            f"{bad[0].generator_sha256[:12] or '(unknown)'}..., not this run's generator "
            f"{sha[:12] or '(unknown)'}...; annotate seeds rendered by this generator"
        )
    wrong_res = [r.id for r in records if r.resolution != res]
    if wrong_res:
        raise FeatureError(f"annotation(s) {wrong_res[:3]} are not {res}x{res}")
    items = records
    if progress:
        from tqdm import tqdm

        items = tqdm(records, desc="rendering annotated images", unit="img")
    maps, masks = {}, []
    for i, rec in enumerate(items):
        img, t = render_record(G, aset, rec)
        stored = aset.image(rec.id)
        got = to_uint8(img)[0]
        got = got[..., 0] if stored.ndim == 2 else got
        if got.shape != stored.shape or np.abs(got.astype(np.int16) - stored.astype(np.int16)).mean() > 1.0:
            raise FeatureError(
                f"{rec.id}: re-rendering it does not give the annotated image; "
                "the generator or the renderer changed since it was annotated"
            )
        for tap in taps:  # filled in place: the peak stays at the float16 maps plus one image's taps
            if i == 0:
                maps[tap.name] = torch.empty(
                    len(records), tap.resolution, tap.resolution, tap.channels, dtype=torch.float16
                )
            maps[tap.name][i] = t[tap.name][0].permute(1, 2, 0)
        del t
        masks.append(aset.mask(rec.id))
    return TapFeatures(taps, maps, res), np.stack(masks), records
