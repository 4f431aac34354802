"""Reference (plain PyTorch) implementations of the StyleGAN2 operations.

These are the ground truth every other backend is tested against. They favour clarity over speed,
are differentiable to any order through autograd, and define the exact semantics documented in
:mod:`stylegan2_ops`.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

# name -> (function(x, alpha), default alpha, default gain)
ACTIVATIONS = {
    "linear": (lambda x, a: x, 0.0, 1.0),
    "relu": (lambda x, a: F.relu(x), 0.0, math.sqrt(2)),
    "lrelu": (lambda x, a: F.leaky_relu(x, a), 0.2, math.sqrt(2)),
    "tanh": (lambda x, a: torch.tanh(x), 0.0, 1.0),
    "sigmoid": (lambda x, a: torch.sigmoid(x), 0.0, 1.0),
    "elu": (lambda x, a: F.elu(x), 0.0, 1.0),
    "selu": (lambda x, a: F.selu(x), 0.0, 1.0),
    "softplus": (lambda x, a: F.softplus(x), 0.0, 1.0),
    "swish": (lambda x, a: torch.sigmoid(x) * x, 0.0, math.sqrt(2)),
}


def act_defaults(act: str, alpha: float | None, gain: float | None) -> tuple[float, float]:
    if act not in ACTIVATIONS:
        raise ValueError(f"unknown activation {act!r}; choose one of {sorted(ACTIVATIONS)}")
    _, def_alpha, def_gain = ACTIVATIONS[act]
    return (def_alpha if alpha is None else float(alpha)), (def_gain if gain is None else float(gain))


def bias_act(x, b=None, dim=1, act="linear", alpha=None, gain=None, clamp=None):
    alpha, gain = act_defaults(act, alpha, gain)
    if b is not None:
        shape = [1] * x.ndim
        shape[dim] = -1
        x = x + b.reshape(shape)
    x = ACTIVATIONS[act][0](x, alpha)
    if gain != 1:
        x = x * gain
    if clamp is not None and clamp >= 0:
        x = x.clamp(-clamp, clamp)
    return x


def parse_scaling(s) -> tuple[int, int]:
    sx, sy = (s, s) if isinstance(s, int) else s
    if sx < 1 or sy < 1:
        raise ValueError(f"scaling factors must be >= 1, got {s}")
    return int(sx), int(sy)


def parse_padding(p) -> tuple[int, int, int, int]:
    """int, (px, py) or (x0, x1, y0, y1) -> (x0, x1, y0, y1)."""
    if isinstance(p, int):
        return p, p, p, p
    if len(p) == 2:
        return p[0], p[0], p[1], p[1]
    x0, x1, y0, y1 = p
    return int(x0), int(x1), int(y0), int(y1)


def upfirdn2d(x, f, up=1, down=1, padding=0, flip_filter=False, gain=1):
    upx, upy = parse_scaling(up)
    downx, downy = parse_scaling(down)
    px0, px1, py0, py1 = parse_padding(padding)
    n, c, h, w = x.shape
    # Upsample by inserting up-1 zeros after every sample.
    if upx > 1 or upy > 1:
        x = x.reshape(n, c, h, 1, w, 1)
        x = F.pad(x, [0, upx - 1, 0, 0, 0, upy - 1])
        x = x.reshape(n, c, h * upy, w * upx)
    # Pad (positive) or crop (negative).
    x = F.pad(x, [max(px0, 0), max(px1, 0), max(py0, 0), max(py1, 0)])
    x = x[:, :, max(-py0, 0) : x.shape[2] - max(-py1, 0), max(-px0, 0) : x.shape[3] - max(-px1, 0)]
    # FIR filter. conv2d computes correlation, so a true convolution flips the filter.
    f = f.to(x.dtype) * (gain ** (f.ndim / 2))
    if not flip_filter:
        f = f.flip(list(range(f.ndim)))
    if f.ndim == 2:
        x = F.conv2d(x, f[None, None].expand(c, 1, *f.shape), groups=c)
    else:
        x = F.conv2d(x, f[None, None, None, :].expand(c, 1, 1, f.shape[0]), groups=c)
        x = F.conv2d(x, f[None, None, :, None].expand(c, 1, f.shape[0], 1), groups=c)
    return x[:, :, ::downy, ::downx]


def conv2d_resample(x, w, f=None, up=1, down=1, padding=0, groups=1):
    from .filters import down_padding, up_padding

    if up > 1:
        x = upfirdn2d(x, f, up=up, padding=up_padding(f, up), gain=up * up)
    x = F.conv2d(x, w.to(x.dtype), padding=padding, groups=groups)
    if down > 1:
        x = upfirdn2d(x, f, down=down, padding=down_padding(f, down))
    return x


def modulated_conv2d(x, weight, styles, demodulate=True, f=None, up=1, down=1, padding=0):
    n, _, h, wd = x.shape
    o, i, kh, kw = weight.shape
    w = weight[None] * styles.to(weight.dtype)[:, None, :, None, None]  # [N, O, I, kh, kw]
    if demodulate:
        w = w * torch.rsqrt(w.square().sum(dim=[2, 3, 4], keepdim=True) + 1e-8)
    x = x.reshape(1, n * i, h, wd)
    x = conv2d_resample(x, w.reshape(n * o, i, kh, kw), f=f, up=up, down=down, padding=padding, groups=n)
    return x.reshape(n, o, x.shape[2], x.shape[3])
