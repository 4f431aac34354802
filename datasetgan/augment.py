"""Adaptive discriminator augmentation (ADA, Karras et al. 2020): the 'bgc' pipeline and the p controller.

Every image the discriminator sees (real or generated) goes through :class:`AugmentPipe`. Each
operation is applied to each image independently with probability ``p`` (the two arbitrary
rotations with ``1 - sqrt(1 - p)`` each, so that one rotation happens with probability ~p):

    b  (pixel blitting)   x-flip, 90-degree rotations, integer translation (up to 1/8 of the size)
    g  (general geometry) isotropic scaling, arbitrary rotation, anisotropic scaling, fractional
                          translation (std 1/8 of the size)
    c  (colour)           brightness, contrast, luma flip, hue rotation, saturation

All geometric operations are composed into one affine transform per image. An image whose transform
maps pixel centres onto pixel centres (only flips, 90-degree rotations and integer shifts) is copied
pixel by pixel, exactly; any other image is upsampled 2x with a Lanczos-3 filter, sampled bilinearly
and downsampled 2x with the same filter, so that rotation and scaling do not alias. Outside the image
the content is mirrored (symmetric reflection about the border), which avoids the black corners a
discriminator would use to tell augmented images apart.

Colour operations act on values in [-1, 1], as the paper's 4x4 colour matrix does: brightness adds b,
contrast multiplies every value by c (around 0, the middle of the range, not the image's own mean),
luma flip reflects the colour along the luma axis, hue rotates around it and saturation scales the
distance from it. With one channel the luma axis is the only axis: luma flip becomes intensity
inversion (x -> -x) and hue and saturation have nothing to act on, so grayscale images get brightness,
contrast and luma flip only.

Everything is differentiable with respect to the input image to any order (bilinear sampling is written
with gathers, not ``grid_sample``), which R1 needs: it differentiates D(augment(x)) with respect to x.
Every random draw comes from the ``torch.Generator`` the caller passes in.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch

import stylegan2_ops as ops

# Op name -> (group letter, kind). The order is the order of application.
GEOMETRIC_OPS = ("xflip", "rotate90", "xint", "scale", "rotate_pre", "aniso", "rotate_post", "xfrac")
COLOUR_OPS = ("brightness", "contrast", "lumaflip", "hue", "saturation")
GROUPS = {
    "b": ("xflip", "rotate90", "xint"),
    "g": ("scale", "rotate_pre", "aniso", "rotate_post", "xfrac"),
    "c": COLOUR_OPS,
}

# Parameter distributions from the ADA paper (appendix B).
XINT_MAX = 0.125  # integer translation: uniform in [-1/8, 1/8] of the image size, rounded to pixels
SCALE_STD = 0.2  # log2 of the isotropic scale ~ N(0, 0.2^2)
ANISO_STD = 0.2  # log2 of the anisotropic scale ~ N(0, 0.2^2)
XFRAC_STD = 0.125  # fractional translation ~ N(0, (1/8 of the size)^2)
BRIGHTNESS_STD = 0.2  # added brightness ~ N(0, 0.2^2)
CONTRAST_STD = 0.5  # log2 of the contrast factor ~ N(0, 0.5^2)
SATURATION_STD = 1.0  # log2 of the saturation factor ~ N(0, 1)

MARGIN = 3  # pixels of mirrored border kept around the image while filtering


def lanczos_filter(a: int = 3) -> torch.Tensor:
    """1D Lanczos-a low-pass filter for 2x resampling (taps at half-pixel offsets, sums to 1)."""
    x = (np.arange(4 * a) - (4 * a - 1) / 2) / 2
    f = np.sinc(x) * np.sinc(x / a)
    return ops.setup_filter(f.tolist())


def reflect_index(i: torch.Tensor, size: int) -> torch.Tensor:
    """Integer pixel indices mirrored into [0, size): ..., 1, 0 | 0, 1, ..., size-1 | size-1, ..."""
    i = torch.remainder(i, 2 * size)
    return torch.where(i < size, i, 2 * size - 1 - i)


def gather_pixels(img: torch.Tensor, iy: torch.Tensor, ix: torch.Tensor) -> torch.Tensor:
    """img [N, C, H, W], integer iy/ix [N, P] (already in range) -> [N, C, P]."""
    n, c, h, w = img.shape
    idx = (iy * w + ix)[:, None, :].expand(n, c, iy.shape[1])
    return img.reshape(n, c, h * w).gather(2, idx)


def sample_bilinear(img: torch.Tensor, px: torch.Tensor, py: torch.Tensor) -> torch.Tensor:
    """Bilinear samples of img [N, C, H, W] at continuous pixel positions px/py [N, P] (pixel i spans
    [i, i+1)), mirrored outside the image -> [N, C, P]. Differentiable to any order in ``img``."""
    _, _, h, w = img.shape
    x, y = px - 0.5, py - 0.5
    x0, y0 = torch.floor(x), torch.floor(y)
    fx, fy = (x - x0)[:, None, :], (y - y0)[:, None, :]
    x0, y0 = x0.long(), y0.long()
    xa, xb = reflect_index(x0, w), reflect_index(x0 + 1, w)
    ya, yb = reflect_index(y0, h), reflect_index(y0 + 1, h)
    top = gather_pixels(img, ya, xa) * (1 - fx) + gather_pixels(img, ya, xb) * fx
    bottom = gather_pixels(img, yb, xa) * (1 - fx) + gather_pixels(img, yb, xb) * fx
    return top * (1 - fy) + bottom * fy


def rotation(theta: torch.Tensor) -> torch.Tensor:
    c, s = torch.cos(theta), torch.sin(theta)
    m = torch.zeros(theta.shape[0], 3, 3, dtype=theta.dtype)
    m[:, 0, 0], m[:, 0, 1], m[:, 1, 0], m[:, 1, 1], m[:, 2, 2] = c, -s, s, c, 1
    return m


def scaling(sx: torch.Tensor, sy: torch.Tensor) -> torch.Tensor:
    m = torch.zeros(sx.shape[0], 3, 3, dtype=sx.dtype)
    m[:, 0, 0], m[:, 1, 1], m[:, 2, 2] = sx, sy, 1
    return m


def translation(tx: torch.Tensor, ty: torch.Tensor) -> torch.Tensor:
    m = torch.eye(3, dtype=tx.dtype).repeat(tx.shape[0], 1, 1)
    m[:, 0, 2], m[:, 1, 2] = tx, ty
    return m


@dataclass
class AugmentPipe:
    """The augmentation pipeline. ``ops`` names the groups ('bgc', 'bg', 'b', 'c', ...)."""

    ops: str = "bgc"

    def __post_init__(self):
        bad = set(self.ops) - set(GROUPS)
        if bad:
            raise ValueError(f"unknown augmentation group(s) {sorted(bad)} in {self.ops!r}; use letters of 'bgc'")
        self.enabled = {name for g in self.ops for name in GROUPS[g]}

    # -- parameters --------------------------------------------------------------------------------

    def identity_params(self, n: int) -> dict[str, torch.Tensor]:
        """Parameters that leave every image unchanged (all ops off); tests edit single entries."""
        zeros, ones = torch.zeros(n), torch.ones(n)
        return {
            "xflip": zeros.clone(),
            "rotate90": zeros.clone(),
            "xint_x": zeros.clone(),
            "xint_y": zeros.clone(),
            "scale": ones.clone(),
            "rotate_pre": zeros.clone(),
            "aniso": ones.clone(),
            "rotate_post": zeros.clone(),
            "xfrac_x": zeros.clone(),
            "xfrac_y": zeros.clone(),
            "brightness": zeros.clone(),
            "contrast": ones.clone(),
            "lumaflip": zeros.clone(),
            "hue": zeros.clone(),
            "saturation": ones.clone(),
        }

    def sample_params(self, n: int, p: float, generator: torch.Generator) -> dict[str, torch.Tensor]:
        """Draw per-image parameters; an op not drawn (probability 1 - p) gets its identity value.

        Every op always consumes the same random numbers whatever p is, so the stream stays aligned.
        """
        prm = self.identity_params(n)
        p_rot = 1 - math.sqrt(max(1 - p, 0.0))

        def u(*shape):
            return torch.rand(*shape, generator=generator)

        def g(*shape):
            return torch.randn(*shape, generator=generator)

        def on(name, prob=p):
            mask = u(n) < prob
            return mask if name in self.enabled else torch.zeros(n, dtype=torch.bool)

        m = on("xflip")
        prm["xflip"] = torch.where(m, torch.randint(0, 2, (n,), generator=generator).float(), prm["xflip"])
        m = on("rotate90")
        prm["rotate90"] = torch.where(m, torch.randint(0, 4, (n,), generator=generator).float(), prm["rotate90"])
        m = on("xint")
        t = (u(n, 2) * 2 - 1) * XINT_MAX
        prm["xint_x"], prm["xint_y"] = torch.where(m, t[:, 0], 0.0), torch.where(m, t[:, 1], 0.0)
        m = on("scale")
        prm["scale"] = torch.where(m, torch.exp2(g(n) * SCALE_STD), 1.0)
        m = on("rotate_pre", p_rot)
        prm["rotate_pre"] = torch.where(m, (u(n) * 2 - 1) * math.pi, 0.0)
        m = on("aniso")
        prm["aniso"] = torch.where(m, torch.exp2(g(n) * ANISO_STD), 1.0)
        m = on("rotate_post", p_rot)
        prm["rotate_post"] = torch.where(m, (u(n) * 2 - 1) * math.pi, 0.0)
        m = on("xfrac")
        t = g(n, 2) * XFRAC_STD
        prm["xfrac_x"], prm["xfrac_y"] = torch.where(m, t[:, 0], 0.0), torch.where(m, t[:, 1], 0.0)
        m = on("brightness")
        prm["brightness"] = torch.where(m, g(n) * BRIGHTNESS_STD, 0.0)
        m = on("contrast")
        prm["contrast"] = torch.where(m, torch.exp2(g(n) * CONTRAST_STD), 1.0)
        m = on("lumaflip")
        prm["lumaflip"] = torch.where(m, torch.randint(0, 2, (n,), generator=generator).float(), 0.0)
        m = on("hue")
        prm["hue"] = torch.where(m, (u(n) * 2 - 1) * math.pi, 0.0)
        m = on("saturation")
        prm["saturation"] = torch.where(m, torch.exp2(g(n) * SATURATION_STD), 1.0)
        return prm

    # -- application -------------------------------------------------------------------------------

    def __call__(self, x: torch.Tensor, p: float, generator: torch.Generator) -> torch.Tensor:
        if p <= 0:
            return x
        return self.apply(x, self.sample_params(x.shape[0], p, generator))

    def apply(self, x: torch.Tensor, prm: dict[str, torch.Tensor]) -> torch.Tensor:
        """Augment images x [N, C, H, W] (values in [-1, 1]) with the given parameters.

        Parameters and the geometry matrix are made on the CPU (one random stream whatever the device)
        and moved to x's device to be applied."""
        x = self.apply_geometry(x, self.geometry_matrix(prm, x.shape[-1]))
        return self.apply_colour(x, {k: v.to(x.device) for k, v in prm.items()})

    @staticmethod
    def geometry_matrix(prm: dict[str, torch.Tensor], size: int) -> torch.Tensor:
        """[N, 3, 3] affine map from output to input pixel coordinates (origin at the image centre)."""
        n = prm["xflip"].shape[0]
        m = scaling(1 - 2 * prm["xflip"], torch.ones(n))
        m = m @ rotation(prm["rotate90"] * (math.pi / 2))
        m = m @ translation(torch.round(prm["xint_x"] * size), torch.round(prm["xint_y"] * size))
        m = m @ scaling(prm["scale"], prm["scale"])
        m = m @ rotation(prm["rotate_pre"])
        m = m @ scaling(prm["aniso"], 1 / prm["aniso"])
        m = m @ rotation(prm["rotate_post"])
        m = m @ translation(prm["xfrac_x"] * size, prm["xfrac_y"] * size)
        return m

    def apply_geometry(self, x: torch.Tensor, mat: torch.Tensor) -> torch.Tensor:
        n, c, h, w = x.shape
        if h != w:
            raise ValueError(f"augmentation expects square images, got {h}x{w}")
        mat = mat.to(x.device, torch.float64)
        eye = torch.eye(3, dtype=mat.dtype, device=mat.device)
        identity = (mat - eye).abs().amax(dim=(1, 2)) < 1e-9
        lin, shift = mat[:, :2, :2], mat[:, :2, 2]
        # Flips, quarter turns and whole-pixel shifts (a signed permutation matrix and an integer
        # shift) map pixel centres onto pixel centres: copy pixels.
        lin_r = lin.round()
        signed_perm = (lin_r.abs() <= 1).all(dim=(1, 2)) & ((lin_r @ lin_r.transpose(1, 2)) - eye[:2, :2]).abs().amax(
            dim=(1, 2)
        ).lt(1e-9)
        blit = (
            ((lin - lin_r).abs().amax(dim=(1, 2)) < 1e-6)
            & signed_perm
            & ((shift - shift.round()).abs().amax(dim=1) < 1e-6)
            & ~identity
        )
        general = ~identity & ~blit
        out = x
        if blit.any() or general.any():
            pieces = list(x.unbind(0))
            if blit.any():
                idx = blit.nonzero()[:, 0]
                for i, y in zip(idx.tolist(), self._blit(x[idx], mat[idx]).unbind(0)):
                    pieces[i] = y
            if general.any():
                idx = general.nonzero()[:, 0]
                for i, y in zip(idx.tolist(), self._resample(x[idx], mat[idx]).unbind(0)):
                    pieces[i] = y
            out = torch.stack(pieces)
        return out

    @staticmethod
    def _output_positions(mat: torch.Tensor, size: int, count: int, step: float, start: float):
        """Input pixel positions of output sample positions start + step * (j + 0.5), j < count."""
        q = (torch.arange(count, dtype=mat.dtype, device=mat.device) + 0.5) * step + start - size / 2
        qy, qx = torch.meshgrid(q, q, indexing="ij")
        pts = torch.stack([qx.flatten(), qy.flatten(), torch.ones_like(qx.flatten())])  # [3, P]
        src = mat @ pts  # [N, 3, P]
        return src[:, 0] + size / 2, src[:, 1] + size / 2

    def _blit(self, x: torch.Tensor, mat: torch.Tensor) -> torch.Tensor:
        n, c, h, w = x.shape
        px, py = self._output_positions(mat.round(), w, w, 1.0, 0.0)  # pixel centres land on centres
        ix = reflect_index(torch.round(px - 0.5).long(), w)
        iy = reflect_index(torch.round(py - 0.5).long(), h)
        return gather_pixels(x, iy, ix).reshape(n, c, h, w)

    def _resample(self, x: torch.Tensor, mat: torch.Tensor) -> torch.Tensor:
        n, c, h, w = x.shape
        f = lanczos_filter().to(x.device)
        # 2x upsampled copy with a mirrored border, so the filter sees no zeros at the edges.
        xp = torch.nn.functional.pad(x, [MARGIN] * 4, mode="reflect")
        up = ops.upfirdn2d(xp, f, up=2, padding=ops.up_padding(f, 2), gain=4)
        up = up[:, :, 2 * MARGIN : -2 * MARGIN, 2 * MARGIN : -2 * MARGIN]  # [N, C, 2H, 2W], same extent as x
        # Sample a 2x grid covering the output plus a margin, then low-pass, downsample and crop.
        count = 2 * (w + 2 * MARGIN)
        px, py = self._output_positions(mat, w, count, 0.5, -MARGIN)
        y = sample_bilinear(up, (px * 2).to(x.dtype), (py * 2).to(x.dtype)).reshape(n, c, count, count)
        y = ops.upfirdn2d(y, f, down=2, padding=ops.down_padding(f, 2))
        return y[:, :, MARGIN : MARGIN + h, MARGIN : MARGIN + w]

    @staticmethod
    def apply_colour(x: torch.Tensor, prm: dict[str, torch.Tensor]) -> torch.Tensor:
        n, c = x.shape[:2]

        def per_image(v):
            return v.to(x.dtype).reshape(n, 1, 1, 1)

        def where(mask, y, x):
            return torch.where(mask.reshape(n, 1, 1, 1), y, x)

        b = prm["brightness"]
        x = where(b != 0, x + per_image(b), x)
        k = prm["contrast"]
        x = where(k != 1, x * per_image(k), x)
        flip = prm["lumaflip"] != 0
        if c == 1:
            return where(flip, -x, x)
        # RGB: luma flip, hue rotation and saturation as one 3x3 matrix per image around the luma axis.
        f64 = dict(dtype=torch.float64, device=x.device)
        a = 1 / math.sqrt(3)
        v = torch.full((3,), a, **f64)
        vv = torch.outer(v, v)
        eye = torch.eye(3, **f64)
        mats = (eye - 2 * vv).repeat(n, 1, 1)
        mats = torch.where(flip.reshape(n, 1, 1), mats, eye)
        theta = prm["hue"].to(torch.float64).reshape(n, 1, 1)
        cross = torch.tensor([[0, -a, a], [a, 0, -a], [-a, a, 0]], **f64)  # [v]x
        hue = vv + torch.cos(theta) * (eye - vv) + torch.sin(theta) * cross  # Rodrigues rotation about v
        mats = hue @ mats
        s = prm["saturation"].to(torch.float64).reshape(n, 1, 1)
        mats = (vv + s * (eye - vv)) @ mats
        active = flip | (prm["hue"] != 0) | (prm["saturation"] != 1)
        y = torch.einsum("nij,njhw->nihw", mats.to(x.dtype), x)
        return where(active, y, x)


class AdaController:
    """Adjusts p from the overfitting heuristic r_t = E[sign(D(real))].

    Signs are accumulated over ``interval`` steps; then p moves by ``sign(r_t - target) * batch *
    interval / (speed_kimg * 1000)``, so that p can go from 0 to 1 in ``speed_kimg`` thousand images.
    """

    def __init__(self, batch: int, target: float = 0.6, interval: int = 4, speed_kimg: float = 500, p: float = 0.0):
        self.batch, self.target, self.interval, self.speed_kimg = batch, target, interval, speed_kimg
        self.p = float(p)
        self.sign_sum = 0.0
        self.count = 0
        self.steps = 0
        self.last_rt: float | None = None

    def accumulate(self, real_logits: torch.Tensor) -> None:
        self.sign_sum += float(torch.sign(real_logits.detach()).sum())
        self.count += real_logits.numel()

    def step(self, adjust: bool = True) -> None:
        """Call once per training step, after :meth:`accumulate`. ``adjust=False`` only measures r_t
        (fixed-p and no-augmentation runs still log it)."""
        self.steps += 1
        if self.steps % self.interval or not self.count:
            return
        self.last_rt = self.sign_sum / self.count
        if adjust:
            delta = np.sign(self.last_rt - self.target) * self.batch * self.interval / (self.speed_kimg * 1000)
            self.p = float(min(max(self.p + delta, 0.0), 1.0))
        self.sign_sum, self.count = 0.0, 0

    def state(self) -> dict:
        return {
            "p": self.p,
            "sign_sum": self.sign_sum,
            "count": self.count,
            "steps": self.steps,
            "last_rt": self.last_rt,
        }

    def load_state(self, s: dict) -> None:
        self.p, self.sign_sum, self.count = float(s["p"]), float(s["sign_sum"]), int(s["count"])
        self.steps, self.last_rt = int(s["steps"]), s["last_rt"]
