"""The compiled backends (``cpu`` and ``cuda``): autograd wrappers around the fused kernels.

One :class:`FusedBackend` serves both devices; only the loaded extension differs. The gradients are
written with the same fused kernels, so they are differentiable again:

* ``upfirdn2d`` is linear in x; its gradient is another upfirdn2d (flipped filter, up and down
  swapped, padding mirrored), so every order of derivative comes for free.
* ``bias_act``'s gradient dy * f'(x + b) * gain * mask is linear in dy (the same kernel again) and
  its x-derivative needs f'' (a second kernel). That covers R1's double backward; piecewise-linear
  activations (linear, relu, lrelu) are exact to every order.
* The convolutions are ATen's (MKL-DNN / cuDNN), which have their own double backward; around them
  the fused resampling does the FIR work without touching inserted zeros.

The filters ``f`` are constants: they get no gradient.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

from . import ref
from .filters import down_padding, up_padding

ACT_IDS = {name: i for i, name in enumerate(
    ["linear", "relu", "lrelu", "tanh", "sigmoid", "elu", "selu", "softplus", "swish"])}
LINEAR_ACTS = ("linear", "relu", "lrelu")  # f'' = 0


# ------------------------------------------------------------------------------------------------
# bias_act


class _BiasAct(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, b, lib, spec):
        y = lib.bias_act_forward(x, none_to_empty(b, x), *spec)
        ctx.save_for_backward(x, b)
        ctx.lib, ctx.spec = lib, spec
        return y

    @staticmethod
    def backward(ctx, dy):
        x, b = ctx.saved_tensors
        dx = _BiasActGrad.apply(dy, x, b, ctx.lib, ctx.spec)
        return dx, reduce_bias_grad(dx, b, ctx.spec[0], ctx.needs_input_grad[1]), None, None


class _BiasActGrad(torch.autograd.Function):
    """dx = dy * d/dx act(x + b): linear in dy, and f''-weighted in x."""

    @staticmethod
    def forward(ctx, dy, x, b, lib, spec):
        ctx.save_for_backward(dy, x, b)
        ctx.lib, ctx.spec = lib, spec
        return lib.bias_act_backward(dy, x, none_to_empty(b, x), none_to_empty(None, x), *spec, 1)

    @staticmethod
    def backward(ctx, ddx):
        dy, x, b = ctx.saved_tensors
        lib, spec = ctx.lib, ctx.spec
        d_dy = _BiasActGrad.apply(ddx, x, b, lib, spec) if ctx.needs_input_grad[0] else None
        d_x = d_b = None
        if (ctx.needs_input_grad[1] or ctx.needs_input_grad[2]) and spec[1] not in [ACT_IDS[a] for a in LINEAR_ACTS]:
            # Third derivatives are not provided: this result is not differentiable again.
            d_x = lib.bias_act_backward(dy, x, none_to_empty(b, x), ddx, *spec, 2)
            d_b = reduce_bias_grad(d_x, b, spec[0], ctx.needs_input_grad[2])
        return d_dy, d_x, d_b, None, None


def none_to_empty(t, like):
    return like.new_empty(0) if t is None else t


def reduce_bias_grad(dx, b, dim, needed):
    if not needed or b is None or b.numel() == 0:
        return None
    others = [d for d in range(dx.ndim) if d != dim]
    return (dx.sum(dim=others) if others else dx).to(b.dtype)  # sum(dim=[]) would sum everything


# ------------------------------------------------------------------------------------------------
# upfirdn2d


class _Upfirdn2d(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, kernel, lib, up, down, pad):
        ctx.lib, ctx.up, ctx.down, ctx.pad = lib, up, down, pad
        ctx.in_hw = x.shape[2:]
        ctx.save_for_backward(kernel)
        return lib.upfirdn2d(x, kernel, up[0], up[1], down[0], down[1], *pad)

    @staticmethod
    def backward(ctx, dy):
        (kernel,) = ctx.saved_tensors
        return (upfirdn2d_grad(dy, kernel, ctx.lib, ctx.up, ctx.down, ctx.pad, ctx.in_hw),
                None, None, None, None, None)


def upfirdn2d_grad(dy, kernel, lib, up, down, pad, in_hw):
    """The adjoint of upfirdn2d: correlate the (down-)upsampled gradient with the flipped kernel."""
    (upx, upy), (downx, downy) = up, down
    px0, px1, py0, py1 = pad
    kh, kw = kernel.shape
    h, w = in_hw
    oh, ow = dy.shape[2:]
    gpad = (kw - 1 - px0, w * upx - ow * downx + px0 - upx + 1,
            kh - 1 - py0, h * upy - oh * downy + py0 - upy + 1)
    return _Upfirdn2d.apply(dy.contiguous(), kernel.flip([0, 1]), lib, down, up, gpad)


def correlation_kernel(f, flip_filter, gain, dtype):
    """The 2D kernel the kernels correlate with: flipped unless flip_filter, times the gain; a 1D
    (separable) filter becomes its outer product."""
    f = f.to(dtype)
    if f.ndim == 1:
        f = torch.outer(f, f) * gain
    else:
        f = f * gain
    if not flip_filter:
        f = f.flip([0, 1])
    return f.contiguous()


# ------------------------------------------------------------------------------------------------


def modulate_activations(weight_shape, x_shape, up=1, down=1) -> bool:
    """Whether modulated_conv2d scales activations (shared weight) rather than building per-sample
    weights (grouped convolution): measured on a CPU, the first wins when a sample's weight tensor is
    at least as large as its input and output feature maps together."""
    o, i, kh, kw = weight_shape
    h, w = x_shape[2], x_shape[3]
    return o * i * kh * kw >= i * h * w + o * (h * up // down) * (w * up // down)


class FusedBackend:
    """The ``cpu`` or ``cuda`` backend: same interface as :mod:`stylegan2_ops.ref`."""

    def __init__(self, name: str, lib, dtypes):
        self.name, self.lib, self.dtypes = name, lib, dtypes

    def supports(self, x) -> bool:
        return x.dtype in self.dtypes

    def bias_act(self, x, b=None, dim=1, act="linear", alpha=None, gain=None, clamp=None):
        if not self.supports(x):
            return ref.bias_act(x, b, dim, act, alpha, gain, clamp)
        alpha, gain = ref.act_defaults(act, alpha, gain)
        dim = dim % x.ndim
        if b is not None:
            if b.ndim != 1 or b.shape[0] != x.shape[dim]:
                raise ValueError(f"bias must be 1D of length {x.shape[dim]}, got shape {tuple(b.shape)}")
            b = b.to(x.dtype)
        clamp = -1.0 if clamp is None or clamp < 0 else float(clamp)
        spec = (dim, ACT_IDS[act], alpha, gain, clamp)
        return _BiasAct.apply(x.contiguous(), b, self.lib, spec)

    def upfirdn2d(self, x, f, up=1, down=1, padding=0, flip_filter=False, gain=1):
        if not self.supports(x):
            return ref.upfirdn2d(x, f, up, down, padding, flip_filter, gain)
        if x.ndim != 4:
            raise ValueError(f"upfirdn2d expects x of shape [N, C, H, W], got {tuple(x.shape)}")
        if f.ndim not in (1, 2):
            raise ValueError(f"a filter must be 1D or 2D, got shape {tuple(f.shape)}")
        up, down, pad = ref.parse_scaling(up), ref.parse_scaling(down), ref.parse_padding(padding)
        kernel = correlation_kernel(f.to(x.device), flip_filter, float(gain), x.dtype)
        return _Upfirdn2d.apply(x.contiguous(), kernel, self.lib, up, down, tuple(int(p) for p in pad))

    def conv2d_resample(self, x, w, f=None, up=1, down=1, padding=0, groups=1):
        if not self.supports(x):
            return ref.conv2d_resample(x, w, f, up, down, padding, groups)
        w = w.to(x.dtype)
        pointwise = w.shape[2] == 1 and w.shape[3] == 1 and padding == 0
        if up > 1:
            if pointwise:  # a 1x1 convolution commutes with the per-channel FIR: convolve first
                x = F.conv2d(x, w, groups=groups)
                return self.upfirdn2d(x, f, up=up, padding=up_padding(f, up), gain=up * up)
            x = self.upfirdn2d(x, f, up=up, padding=up_padding(f, up), gain=up * up)
        if down > 1 and pointwise:  # downsample first: the convolution then sees 1/down^2 pixels
            x = self.upfirdn2d(x, f, down=down, padding=down_padding(f, down))
            return F.conv2d(x, w, groups=groups)
        x = F.conv2d(x, w, padding=padding, groups=groups)
        if down > 1:
            x = self.upfirdn2d(x, f, down=down, padding=down_padding(f, down))
        return x

    def modulated_conv2d(self, x, weight, styles, demodulate=True, f=None, up=1, down=1, padding=0):
        if not self.supports(x):
            return ref.modulated_conv2d(x, weight, styles, demodulate, f, up, down, padding)
        n, i, h, wd = x.shape
        o, _, kh, kw = weight.shape
        weight, styles = weight.to(x.dtype), styles.to(x.dtype)
        if modulate_activations(weight.shape, x.shape, up, down):
            # Few pixels, many weights (the low resolutions): scale the activations instead of making
            # N weight tensors, and convolve the whole batch with the shared weight. Exact, because
            # the resampling is linear per channel and the demodulation is a per-output-channel factor.
            y = self.conv2d_resample(x * styles[:, :, None, None], weight, f=f, up=up, down=down,
                                     padding=padding)
            if demodulate:
                d = torch.rsqrt(styles.square() @ weight.square().sum(dim=[2, 3]).t() + 1e-8)  # [N, O]
                y = y * d[:, :, None, None]
            return y
        # Many pixels (the high resolutions): one grouped convolution with per-sample weights.
        w = weight[None] * styles[:, None, :, None, None]  # [N, O, I, kh, kw]
        if demodulate:
            w = w * torch.rsqrt(w.square().sum(dim=[2, 3, 4], keepdim=True) + 1e-8)
        y = self.conv2d_resample(x.reshape(1, n * i, h, wd), w.reshape(n * o, i, kh, kw), f=f, up=up,
                                 down=down, padding=padding, groups=n)
        return y.reshape(n, o, y.shape[2], y.shape[3])
