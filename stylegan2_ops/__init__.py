"""Low-level StyleGAN2 operations with interchangeable backends.

Every public function takes ``backend=None`` (automatic) or one of ``"ref"``, ``"cpu"``, ``"cuda"``;
the environment variable ``STYLEGAN2_OPS_BACKEND`` forces a choice for the whole process. The
``ref`` backend (plain PyTorch) defines the semantics below; the others must agree with it.

``cpu`` (C++ with OpenMP, csrc/cpu_ops.cpp) and ``cuda`` (CUDA kernels, csrc/cuda_kernels.cu) are
compiled on first use into ``~/.cache/datasetgan/torch_extensions`` (see :mod:`stylegan2_ops.build`).
Automatic choice: ``cuda`` for CUDA tensors, ``cpu`` for CPU tensors, and ``ref`` with one warning
if that build fails. All backends support first and second order gradients (R1 regularisation).
``tune_allocator()`` makes glibc keep freed memory, which speeds up CPU training and generation.
"""

from __future__ import annotations

from . import ref  # noqa: F401 (stylegan2_ops.ref: the reference backend, part of the API)
from .allocator import tune_allocator
from .backend import select
from .filters import down_padding, setup_filter, up_padding

__all__ = [
    "bias_act",
    "upfirdn2d",
    "conv2d_resample",
    "modulated_conv2d",
    "setup_filter",
    "up_padding",
    "down_padding",
    "tune_allocator",
]


def bias_act(x, b=None, dim=1, act="linear", alpha=None, gain=None, clamp=None, backend=None):
    """y = clamp(act(x + b, alpha) * gain, -clamp, clamp).

    ``b`` (1D, length ``x.shape[dim]``) is broadcast along ``dim``. ``act`` is one of linear, relu,
    lrelu (y = x if x >= 0 else alpha * x, default alpha 0.2), tanh, sigmoid, elu, selu, softplus,
    swish (x * sigmoid(x)). ``alpha`` and ``gain`` default per activation (gain sqrt(2) for relu,
    lrelu and swish, 1 otherwise). ``clamp=None`` disables clamping.
    """
    return select("bias_act", x, backend).bias_act(x, b, dim, act, alpha, gain, clamp)


def upfirdn2d(x, f, up=1, down=1, padding=0, flip_filter=False, gain=1, backend=None):
    """Upsample, pad, FIR-filter and downsample a batch of images [N, C, H, W].

    1. Upsample: insert ``up - 1`` zeros after every sample along x and y (``up`` int or (x, y)).
    2. Pad by ``padding`` = int, (px, py) or (x0, x1, y0, y1); negative values crop.
    3. Convolve each channel with ``f`` (2D [fh, fw], or 1D [k] applied separably along x then y),
       scaled by ``gain ** (f.ndim / 2)`` so the total gain is ``gain``. A true convolution; with
       ``flip_filter=True`` a correlation.
    4. Downsample: keep every ``down``-th sample starting with the first.
    Output size along x: (W * upx + x0 + x1 - fw + 1 + downx - 1) // downx.
    """
    return select("upfirdn2d", x, backend).upfirdn2d(x, f, up, down, padding, flip_filter, gain)


def conv2d_resample(x, w, f=None, up=1, down=1, padding=0, groups=1, backend=None):
    """2D convolution with optional FIR up- or down-sampling.

    y = D(conv2d(U(x), w, padding, groups)), where U upsamples by ``up`` with
    ``upfirdn2d(x, f, up=up, padding=up_padding(f, up), gain=up**2)`` (identity if up == 1) and D
    downsamples by ``down`` with ``upfirdn2d(x, f, down=down, padding=down_padding(f, down))``
    (identity if down == 1). ``conv2d`` is PyTorch's (a correlation).
    """
    return select("conv2d_resample", x, backend).conv2d_resample(x, w, f, up, down, padding, groups)


def modulated_conv2d(x, weight, styles, demodulate=True, f=None, up=1, down=1, padding=0, backend=None):
    """StyleGAN2 modulated convolution of x [N, I, H, W] with weight [O, I, kh, kw].

    Per sample n: w'[n, o, i] = weight[o, i] * styles[n, i]; if ``demodulate``,
    w''[n, o] = w'[n, o] / sqrt(sum_{i, kh, kw} w'[n, o]^2 + 1e-8). Then
    y[n] = conv2d_resample(x[n], w''[n], f, up, down, padding).
    """
    return select("modulated_conv2d", x, backend).modulated_conv2d(x, weight, styles, demodulate, f, up, down, padding)
