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

ACT_IDS = {
    name: i for i, name in enumerate(["linear", "relu", "lrelu", "tanh", "sigmoid", "elu", "selu", "softplus", "swish"])
}
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
        return (upfirdn2d_grad(dy, kernel, ctx.lib, ctx.up, ctx.down, ctx.pad, ctx.in_hw), None, None, None, None, None)


def upfirdn2d_grad(dy, kernel, lib, up, down, pad, in_hw):
    """The adjoint of upfirdn2d: correlate the (down-)upsampled gradient with the flipped kernel."""
    (upx, upy), (downx, downy) = up, down
    px0, px1, py0, py1 = pad
    kh, kw = kernel.shape
    h, w = in_hw
    oh, ow = dy.shape[2:]
    gpad = (kw - 1 - px0, w * upx - ow * downx + px0 - upx + 1, kh - 1 - py0, h * upy - oh * downy + py0 - upy + 1)
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


def down_at_low_resolution(w, x, f, down, padding) -> bool:
    """Whether conv2d_resample convolves at the low resolution (:meth:`FusedBackend.conv_down`): for
    square odd kernels with 'same' padding, a filter at least ``down + 2`` taps long (so the border
    ring exists on both sides) and images of at least MIN_DOWN_SIDE pixels, below which the border
    strips cost more than the low resolution saves. Measured on the project's CPU (forward + backward
    and double backward, batch 8-16): 1.4-1.9x faster with 64-256 channels at 32-64 pixels, about
    even with 16-64 channels, 0.5-0.9x at 8-16 pixels."""
    kh, kw = w.shape[2:]
    k = f.shape[-1] if f is not None else 0
    return (
        kh == kw
        and kh % 2 == 1
        and padding == kh // 2
        and padding > 0
        and k >= down + 2
        and min(x.shape[2], x.shape[3]) >= MIN_DOWN_SIDE
    )


MIN_DOWN_SIDE = 32


def up_at_low_resolution(w, x, padding, groups=1) -> bool:
    """Whether conv2d_resample convolves before upsampling (:meth:`FusedBackend.conv_up`): for square
    odd kernels with 'same' padding, one group of at least MIN_UP_CHANNELS input channels, images of
    at least MIN_UP_SIDE pixels and batches of at least MIN_UP_PIXELS pixels (N * H * W); below, the
    FIR at the output's channels, the border strips and the rearranged weight cost more than the
    convolution saves. Measured on the project's CPU (forward + backward, and double backward, against
    the reference order with the separable FIR; benchmarks/resample_layers.py): 1.4x with 512 channels
    at 32 px (batch 4), 1.0-1.1x with 128 channels at 32 px (batch 8); 0.9-1.0x at 16 px, 0.3-0.7x
    at 4-8 px; 0.92x rendering one image at a time (512 channels at 32 px, batch 1)."""
    kh, kw = w.shape[2:]
    return (
        kh == kw
        and kh % 2 == 1
        and padding == kh // 2 > 0
        and groups == 1
        and w.shape[1] >= MIN_UP_CHANNELS
        and min(x.shape[2], x.shape[3]) >= MIN_UP_SIDE
        and x.shape[0] * x.shape[2] * x.shape[3] >= MIN_UP_PIXELS
    )


SEPARABLE_FIR = True  # 1D filters as two 1D passes (False: through the 2D kernel, for comparison)
MIN_UP_SIDE = 32
MIN_UP_CHANNELS = 128
MIN_UP_PIXELS = 2048


def phase_weight(w, up, p):
    """The sub-pixel form of a convolution (padding p) of an image upsampled by zero insertion.

    Output pixel up * m + s reads taps a of w with s + a - p = up * u, i.e. sample m + u of the
    input, for u in [lo, hi]. Returns the weight [O * up^2, I, hi - lo + 1, ...] of one ordinary
    convolution (output channel o * up^2 + sy * up + sx, pixel_shuffle's order; zeros where a
    phase has fewer taps), and lo, hi.
    """
    kh = w.shape[2]
    lo, hi = -(p // up), (up - 1 + kh - 1 - p) // up
    n = hi - lo + 1
    wz = F.pad(w, [up - 1] * 4)  # out-of-range taps read zeros
    first = [up * lo + p - s + up - 1 for s in range(up)]  # phase s reads taps first[s] + up * v of wz
    phases = [wz[:, :, a : a + up * (n - 1) + 1 : up, b : b + up * (n - 1) + 1 : up] for a in first for b in first]
    o, i = w.shape[:2]
    return torch.stack(phases, dim=1).reshape(o * up * up, i, n, n), lo, hi


def window_padding(pad, h, w, r0, r1, c0, c1):
    """The padding (x0, x1, y0, y1) that yields rows [r0, r1) and columns [c0, c1) of an image padded
    by ``pad`` to h x w (negative values crop)."""
    x0, x1, y0, y1 = pad
    return x0 - c0, x1 - (w - c1), y0 - r0, y1 - (h - r1)


def subtract_border(y, top, bottom, left, right):
    """y minus corrections on its border (in place): ``top`` / ``bottom`` on its first / last rows,
    ``left`` / ``right`` on its first / last columns (None: nothing)."""
    h, w = y.shape[2:]
    if top is not None:
        y[:, :, : top.shape[2]] -= top
    if bottom is not None:
        y[:, :, h - bottom.shape[2] :] -= bottom
    if left is not None:
        y[:, :, :, : left.shape[3]] -= left
    if right is not None:
        y[:, :, :, w - right.shape[3] :] -= right
    return y


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
        pad = tuple(int(p) for p in pad)
        f = f.to(x.device)
        if f.ndim == 1 and SEPARABLE_FIR and self.name == "cpu":
            # Two passes (along x, then along y) of k taps each instead of one of k^2: measured on
            # the CPU 1.25-1.6x faster (forward + backward) than the 2D kernel for 4-tap filters.
            kx = correlation_kernel(f[None, :], flip_filter, float(gain), x.dtype)
            ky = correlation_kernel(f[:, None], flip_filter, 1.0, x.dtype)
            x = _Upfirdn2d.apply(x.contiguous(), kx, self.lib, (up[0], 1), (down[0], 1), (*pad[:2], 0, 0))
            return _Upfirdn2d.apply(x, ky, self.lib, (1, up[1]), (1, down[1]), (0, 0, *pad[2:]))
        kernel = correlation_kernel(f, flip_filter, float(gain), x.dtype)
        return _Upfirdn2d.apply(x.contiguous(), kernel, self.lib, up, down, pad)

    def conv2d_resample(self, x, w, f=None, up=1, down=1, padding=0, groups=1):
        if not self.supports(x):
            return ref.conv2d_resample(x, w, f, up, down, padding, groups)
        w = w.to(x.dtype)
        pointwise = w.shape[2] == 1 and w.shape[3] == 1 and padding == 0
        if up > 1:
            if pointwise:  # a 1x1 convolution commutes with the per-channel FIR: convolve first
                x = F.conv2d(x, w, groups=groups)
                return self.upfirdn2d(x, f, up=up, padding=up_padding(f, up), gain=up * up)
            if self.name == "cpu" and up_at_low_resolution(w, x, padding, groups):  # measured on CPUs only
                return self.conv_up(x, w, f, up, padding, groups)
            x = self.upfirdn2d(x, f, up=up, padding=up_padding(f, up), gain=up * up)
        if down > 1 and pointwise:  # downsample first: the convolution then sees 1/down^2 pixels
            x = self.upfirdn2d(x, f, down=down, padding=down_padding(f, down))
            return F.conv2d(x, w, groups=groups)
        if down > 1 and down_at_low_resolution(w, x, f, down, padding):
            return self.conv_down(x, w, f, down, padding, groups)
        x = F.conv2d(x, w, padding=padding, groups=groups)
        if down > 1:
            x = self.upfirdn2d(x, f, down=down, padding=down_padding(f, down))
        return x

    def conv_down(self, x, w, f, down, p, groups):
        """conv2d_resample's convolve-then-downsample, with the convolution at the low resolution.

        The reference convolves (zero padding) and then FIR-filters and subsamples; both steps are
        linear and shift invariant, so on an unbounded image they commute: FIR first, then a strided
        convolution (1/down^2 of the multiply-adds). Only the border differs: the reference's FIR
        sees zeros outside the convolution's output, where the swapped order sees the convolution's
        spill-over on a ring b0 / b1 pixels wide. We compute that ring alone (thin strips) and
        subtract its FIR, which reaches only the outermost output rows and columns; the result is
        the reference's, to rounding, and differentiable to any order like its parts.
        """
        h, wd = x.shape[2:]
        kh, kw = w.shape[2:]
        b0, b1, _, _ = down_padding(f, down)
        # Main term: FIR over x (extended by the convolution's and the FIR's padding), then a
        # strided convolution.
        ext = (p + b0, p + b1, p + b0, p + b1)
        y = F.conv2d(self.upfirdn2d(x, f, padding=ext), w, stride=down, groups=groups)
        # Border: the convolution's output on the ring outside the image (b0 / b1 wide), which the
        # reference treats as zero: computed from windows of the padded x; subtract its FIR.
        ph, pw = h + ext[2] + ext[3], wd + ext[0] + ext[1]

        def conv(r0, r1, c0, c1):
            return F.conv2d(F.pad(x, window_padding(ext, ph, pw, r0, r1, c0, c1)), w, groups=groups)

        # Each strip's FIR reaches only the outputs whose filter window overlaps it.
        k = f.shape[-1]
        nt, nl = -(-b0 // down), -(-b0 // down)  # output rows / columns reached by the top / left
        ib, jb = (b0 + h - k + down) // down, (b0 + wd - k + down) // down  # first reached by bottom / right

        def fir(t, pad):  # None where the strip reaches no output
            x0, x1, y0, y1 = pad
            if t.shape[2] + y0 + y1 < k or t.shape[3] + x0 + x1 < k:
                return None
            return self.upfirdn2d(t, f, down=down, padding=pad)

        return subtract_border(
            y,
            fir(conv(0, b0 + kh - 1, 0, pw), (0, 0, 0, down * (nt - 1) + k - b0)),
            fir(conv(b0 + h, ph, 0, pw), (0, 0, b0 + h - down * ib, 0)),
            fir(conv(b0, b0 + h + kh - 1, 0, b0 + kw - 1), (0, down * (nl - 1) + k - b0, b0, b1)),
            fir(conv(b0, b0 + h + kh - 1, b0 + wd, pw), (b0 + wd - down * jb, 0, b0, b1)),
        )

    def conv_up(self, x, w, f, up, p, groups):
        """conv2d_resample's upsample-then-convolve, with the convolution at the low resolution.

        The reference FIR-upsamples (zero insertion, FIR) and then convolves (zero padding p). On an
        unbounded image the FIR and the convolution commute, and a convolution of the zero-inserted
        image is a sub-pixel convolution: per output phase only every up-th tap meets a sample, so
        one ordinary convolution of x with up^2 groups of output channels (:func:`phase_weight`),
        then pixel_shuffle, gives it; the FIR follows. Only the border differs: the reference's
        convolution sees zeros where the FIR-upsampled image spills over its edge (a ring p pixels
        wide), the swapped order sees the spill-over. We compute that ring alone (thin strips of the
        FIR-upsampled x), convolve it and subtract it from the outermost p rows and columns.
        """
        h, wd = x.shape[2:]
        w2, lo, hi = phase_weight(w, up, p)
        # Main term: the sub-pixel convolution covers every phase where it is not zero (x padded by
        # the kernel's reach on both sides), then the FIR crops / pads it to the output window.
        c = F.pixel_shuffle(F.conv2d(x, w2, padding=hi - lo, groups=groups), up)
        px0, px1, py0, py1 = up_padding(f, up)
        c0 = -up * hi  # where c starts, in output pixels
        k = f.shape[-1]
        pad = (px0 + c0, up * wd + k - 1 - c.shape[3] - px0 - c0, py0 + c0, up * h + k - 1 - c.shape[2] - py0 - c0)
        y = self.upfirdn2d(c, f, padding=pad, gain=up * up)
        # Border: the FIR-upsampled image on the ring outside the output window, which the
        # reference's convolution treats as zero: windows of it, padded with zeros where the
        # interior or the other strips lie, convolved; subtract.
        ext = (px0 + p, px1 + p, py0 + p, py1 + p)
        eh, ew = up * h + 2 * p, up * wd + 2 * p

        def ring(*windows):  # one convolution for strips of equal padded shape, stacked on the batch
            e = [
                F.pad(self.upfirdn2d(x, f, up=up, padding=window_padding(ext, eh, ew, *rc), gain=up * up), zeros)
                for *rc, zeros in windows
            ]
            return F.conv2d(torch.cat(e), w, groups=groups).chunk(len(windows))

        top, bottom = ring((0, p, 0, ew, (0, 0, 0, 2 * p)), (eh - p, eh, 0, ew, (0, 0, 2 * p, 0)))
        left, right = ring((p, eh - p, 0, p, (0, 2 * p, p, p)), (p, eh - p, ew - p, ew, (2 * p, 0, p, p)))
        return subtract_border(y, top, bottom, left, right)

    def modulated_conv2d(self, x, weight, styles, demodulate=True, f=None, up=1, down=1, padding=0):
        if not self.supports(x):
            return ref.modulated_conv2d(x, weight, styles, demodulate, f, up, down, padding)
        n, i, h, wd = x.shape
        o, _, kh, kw = weight.shape
        weight, styles = weight.to(x.dtype), styles.to(x.dtype)
        if modulate_activations(weight.shape, x.shape, up, down) or (
            up > 1 and self.name == "cpu" and up_at_low_resolution(weight, x, padding)
        ):
            # Few pixels, many weights (the low resolutions), or an upsampling convolution that runs
            # at the low resolution with one shared weight (conv_up): scale the activations instead
            # of making N weight tensors, and convolve the whole batch with the shared weight. Exact,
            # because the resampling is linear per channel and the demodulation is a per-output-channel
            # factor.
            y = self.conv2d_resample(x * styles[:, :, None, None], weight, f=f, up=up, down=down, padding=padding)
            if demodulate:
                d = torch.rsqrt(styles.square() @ weight.square().sum(dim=[2, 3]).t() + 1e-8)  # [N, O]
                y = y * d[:, :, None, None]
            return y
        # Many pixels (the high resolutions): one grouped convolution with per-sample weights.
        w = weight[None] * styles[:, None, :, None, None]  # [N, O, I, kh, kw]
        if demodulate:
            w = w * torch.rsqrt(w.square().sum(dim=[2, 3, 4], keepdim=True) + 1e-8)
        y = self.conv2d_resample(
            x.reshape(1, n * i, h, wd), w.reshape(n * o, i, kh, kw), f=f, up=up, down=down, padding=padding, groups=n
        )
        return y.reshape(n, o, y.shape[2], y.shape[3])
