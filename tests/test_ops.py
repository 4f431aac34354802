"""The fused ``cpu`` backend of stylegan2_ops against the ``ref`` ground truth.

Forward results must agree within float32 tolerance over random shapes, factors, paddings (negative
ones crop) and filters; gradients are checked numerically in float64 (gradcheck, and gradgradcheck
for the double backward R1 needs); a whole generator and discriminator give the same outputs and
gradients with either backend.
"""

from __future__ import annotations

import random
import warnings

import pytest
import torch
from torch.autograd import gradcheck, gradgradcheck

import stylegan2_ops as ops
from stylegan2_ops import backend as backend_mod
from stylegan2_ops import fused
from stylegan2_ops.build import BuildError
from stylegan2_ops.fused import modulate_activations
from stylegan2_ops.ref import ACTIVATIONS

F32 = dict(rtol=1e-4, atol=1e-5)


@pytest.fixture(scope="module", autouse=True)
def cpu_backend():
    # Builds (or loads from the per-user cache) the C++ backend once; a build error fails the tests.
    # One thread: gradcheck runs thousands of tiny operations, which thread hand-offs only slow down.
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield backend_mod.compiled("cpu")
    torch.set_num_threads(threads)


def random_upfirdn_case(rng: random.Random):
    n, c = rng.randint(1, 2), rng.choice([1, 2, 3])
    h, w = rng.randint(1, 9), rng.randint(1, 9)
    up = (rng.randint(1, 3), rng.randint(1, 3))
    down = (rng.randint(1, 3), rng.randint(1, 3))
    if rng.random() < 0.5:
        f = torch.randn(rng.randint(1, 5))  # separable
    else:
        f = torch.randn(rng.randint(1, 5), rng.randint(1, 5))
    k = f.shape[-1]
    pad = [rng.randint(-2, 3) for _ in range(4)]
    # Keep the padded (upsampled) input at least as large as the filter in both directions.
    pad[1] = max(pad[1], k - w * up[0] - pad[0])
    pad[3] = max(pad[3], f.shape[0] - h * up[1] - pad[2])
    return dict(
        x=torch.randn(n, c, h, w),
        f=f,
        up=up,
        down=down,
        padding=pad,
        flip_filter=rng.random() < 0.5,
        gain=rng.choice([1, 2, 0.5]),
    )


def run_upfirdn(case, backend, x=None, f=None):
    return ops.upfirdn2d(
        case["x"] if x is None else x,
        case["f"] if f is None else f,
        case["up"],
        case["down"],
        case["padding"],
        case["flip_filter"],
        case["gain"],
        backend=backend,
    )


def test_upfirdn2d_forward_matches_ref():
    rng = random.Random(0)
    for _ in range(150):
        case = random_upfirdn_case(rng)
        expected = run_upfirdn(case, "ref")
        got = run_upfirdn(case, "cpu")
        assert got.shape == expected.shape, case
        torch.testing.assert_close(got, expected, **F32, msg=lambda m: f"{m}\ncase {case}")


def test_upfirdn2d_network_configurations_match_ref():
    f = ops.setup_filter([1, 3, 3, 1])
    f2d = ops.setup_filter([1, 3, 3, 1], separable=False)
    x = torch.randn(2, 5, 7, 9)  # odd sizes
    for filt in (f, f2d):
        for kwargs in (
            dict(up=2, padding=ops.up_padding(filt, 2), gain=4),
            dict(down=2, padding=ops.down_padding(filt, 2)),
            dict(padding=1),
            dict(up=2, down=2, padding=(2, 1, 1, 2)),
        ):
            torch.testing.assert_close(
                ops.upfirdn2d(x, filt, backend="cpu", **kwargs), ops.upfirdn2d(x, filt, backend="ref", **kwargs), **F32
            )


def test_upfirdn2d_first_order_gradient_matches_ref():
    rng = random.Random(1)
    for _ in range(30):
        case = random_upfirdn_case(rng)
        x = case["x"].clone().requires_grad_()
        y = run_upfirdn(case, "ref", x=x)
        dy = torch.randn_like(y)
        (expected,) = torch.autograd.grad(y, x, dy)
        (got,) = torch.autograd.grad(run_upfirdn(case, "cpu", x=x), x, dy)
        torch.testing.assert_close(got, expected, **F32)


def test_upfirdn2d_gradcheck_and_gradgradcheck():
    rng = random.Random(2)
    for _ in range(8):
        case = random_upfirdn_case(rng)
        x = case["x"].double().requires_grad_()
        f = case["f"].double()

        def fn(a):
            return run_upfirdn(case, "cpu", x=a, f=f)

        assert gradcheck(fn, (x,))
        assert gradgradcheck(fn, (x,))


@pytest.mark.parametrize("act", sorted(ACTIVATIONS))
def test_bias_act_matches_ref(act):
    torch.manual_seed(3)
    for shape, dim in (((2, 3, 4, 5), 1), ((4, 7), 1), ((3, 1, 5), 1), ((2, 3, 4), 2), ((6,), 0)):
        for clamp in (None, 0.8):
            for with_bias in (True, False):
                x = (torch.randn(shape) * 2).requires_grad_()
                b = torch.randn(shape[dim]).requires_grad_() if with_bias else None
                args = dict(b=b, dim=dim, act=act, clamp=clamp)
                expected = ops.bias_act(x, backend="ref", **args)
                got = ops.bias_act(x, backend="cpu", **args)
                torch.testing.assert_close(got, expected, **F32)
                dy = torch.randn_like(expected)
                inputs = [x] + ([b] if with_bias else [])
                g_ref = torch.autograd.grad(expected, inputs, dy)
                g_cpu = torch.autograd.grad(got, inputs, dy)
                for a, e in zip(g_cpu, g_ref):
                    torch.testing.assert_close(a, e, **F32)


def test_bias_act_alpha_gain_arguments():
    x = torch.randn(3, 4, 5)
    b = torch.randn(4)
    for kwargs in (
        dict(act="lrelu", alpha=0.1, gain=0.7),
        dict(act="relu", gain=1.0, clamp=0.3),
        dict(act="swish", gain=2.0),
        dict(act="linear", clamp=0.0),
    ):
        torch.testing.assert_close(
            ops.bias_act(x, b, backend="cpu", **kwargs), ops.bias_act(x, b, backend="ref", **kwargs), **F32
        )


@pytest.mark.parametrize("act", sorted(ACTIVATIONS))
def test_bias_act_gradcheck_and_gradgradcheck(act):
    torch.manual_seed(4)
    x = (torch.randn(2, 3, 4, dtype=torch.float64) * 2).requires_grad_()
    b = torch.randn(3, dtype=torch.float64).requires_grad_()
    for clamp in (None, 1.5):

        def fn(a, bias):
            return ops.bias_act(a, bias, act=act, clamp=clamp, backend="cpu")

        assert gradcheck(fn, (x, b))
        assert gradgradcheck(fn, (x, b))


def conv_cases():
    f = ops.setup_filter([1, 3, 3, 1])
    return [
        dict(k=3, up=1, down=1, padding=1, groups=1, f=f),
        dict(k=3, up=2, down=1, padding=1, groups=1, f=f),
        dict(k=3, up=1, down=2, padding=1, groups=1, f=f),
        dict(k=1, up=1, down=2, padding=0, groups=1, f=f),
        dict(k=1, up=2, down=1, padding=0, groups=1, f=f),
        dict(k=3, up=2, down=1, padding=1, groups=2, f=f),
        dict(k=1, up=1, down=2, padding=0, groups=2, f=ops.setup_filter([1, 2, 1], separable=False)),
    ]


@pytest.mark.parametrize("case", conv_cases())
def test_conv2d_resample_matches_ref_and_gradchecks(case):
    torch.manual_seed(5)
    g = case["groups"]
    x = torch.randn(2, 2 * g, 7, 6)
    w = torch.randn(3 * g, 2, case["k"], case["k"])
    kwargs = dict(f=case["f"], up=case["up"], down=case["down"], padding=case["padding"], groups=g)
    torch.testing.assert_close(
        ops.conv2d_resample(x, w, backend="cpu", **kwargs), ops.conv2d_resample(x, w, backend="ref", **kwargs), **F32
    )
    xd = torch.randn(1, 1 * g, 5, 4, dtype=torch.float64, requires_grad=True)
    wd = torch.randn(2 * g, 1, case["k"], case["k"], dtype=torch.float64, requires_grad=True)

    def fn(a, weight):
        return ops.conv2d_resample(a, weight, backend="cpu", **kwargs)

    assert gradcheck(fn, (xd, wd))
    assert gradgradcheck(fn, (xd, wd))


@pytest.mark.parametrize(
    "case",
    [
        dict(k=3, groups=1, hw=(7, 6), f=[1, 3, 3, 1]),
        dict(k=3, groups=2, hw=(9, 11), f=[1, 3, 3, 1]),
        dict(k=5, groups=1, hw=(8, 8), f=[1, 3, 3, 1]),
        dict(k=3, groups=1, hw=(6, 7), f=[1, 4, 6, 4, 1]),
        dict(k=3, groups=1, hw=(8, 7), f=[[1, 2, 1, 1], [2, 4, 2, 1], [1, 2, 3, 1], [0, 1, 1, 1]]),
    ],
)
def test_conv_down_matches_ref_to_second_order(case, monkeypatch):
    """The low-resolution downsampling convolution (FIR, strided convolution, border correction) is
    the reference's convolve-then-downsample: outputs, gradients and double-backward gradients."""
    monkeypatch.setattr(fused, "MIN_DOWN_SIDE", 1)  # the default takes it only for large images
    torch.manual_seed(9)
    g, k = case["groups"], case["k"]
    f = ops.setup_filter(case["f"]).double()
    x = torch.randn(2, 2 * g, *case["hw"], dtype=torch.float64, requires_grad=True)
    w = torch.randn(3 * g, 2, k, k, dtype=torch.float64, requires_grad=True)
    kwargs = dict(f=f, down=2, padding=k // 2, groups=g)
    assert fused.down_at_low_resolution(w, x, f, 2, k // 2)

    assert_same_to_second_order(x, w, kwargs, x[:1, :, :6, :5])


def assert_same_to_second_order(x, w, kwargs, small_x):
    """conv2d_resample's cpu backend gives ref's outputs, gradients and double-backward gradients
    (float64), and passes gradgradcheck on ``small_x``."""

    def outputs(backend):
        y = ops.conv2d_resample(x, w, backend=backend, **kwargs)
        dy = torch.linspace(-1, 1, y.numel(), dtype=y.dtype).reshape(y.shape)
        gx, gw = torch.autograd.grad((y * dy).sum(), (x, w), create_graph=True)
        return [y, gx, gw, *torch.autograd.grad(gx.square().sum() + (gw * gw.detach()).sum(), (x, w))]

    for got, expected in zip(outputs("cpu"), outputs("ref")):
        torch.testing.assert_close(got, expected, rtol=1e-10, atol=1e-10)
    small = (small_x.detach().clone().requires_grad_(), w)
    assert gradgradcheck(lambda a, b: ops.conv2d_resample(a, b, backend="cpu", **kwargs), small)


@pytest.mark.parametrize(
    "case",
    [
        dict(k=3, groups=1, hw=(7, 6), f=[1, 3, 3, 1], up=2),
        dict(k=3, groups=2, hw=(9, 11), f=[1, 3, 3, 1], up=2),
        dict(k=5, groups=1, hw=(8, 8), f=[1, 3, 3, 1], up=2),
        dict(k=7, groups=1, hw=(3, 4), f=[1, 3, 3, 1], up=2),  # kernel wider than the image
        dict(k=3, groups=1, hw=(6, 7), f=[1, 4, 6, 4, 1], up=2),
        dict(k=5, groups=1, hw=(4, 6), f=[1, 3, 3, 1], up=3),
        dict(k=3, groups=1, hw=(8, 7), f=[[1, 2, 1, 1], [2, 4, 2, 1], [1, 2, 3, 1], [0, 1, 1, 1]], up=2),
    ],
)
def test_conv_up_matches_ref_to_second_order(case, monkeypatch):
    """The low-resolution upsampling convolution (sub-pixel convolution, pixel_shuffle, FIR, border
    strips) is the reference's upsample-then-convolve: outputs, gradients and double backward."""
    monkeypatch.setattr(fused, "up_at_low_resolution", lambda *args: True)  # by default only large layers
    torch.manual_seed(10)
    g, k = case["groups"], case["k"]
    f = ops.setup_filter(case["f"]).double()
    x = torch.randn(2, 2 * g, *case["hw"], dtype=torch.float64, requires_grad=True)
    w = torch.randn(3 * g, 2, k, k, dtype=torch.float64, requires_grad=True)
    kwargs = dict(f=f, up=case["up"], padding=k // 2, groups=g)
    monkeypatch.setattr(fused.FusedBackend, "conv_up", counted(fused.FusedBackend.conv_up))
    assert_same_to_second_order(x, w, kwargs, x[:1, :, :4, :3])
    assert fused.FusedBackend.conv_up.calls > 0


def counted(method):
    def wrapper(*args, **kwargs):
        wrapper.calls += 1
        return method(*args, **kwargs)

    wrapper.calls = 0
    return wrapper


@pytest.mark.parametrize(
    "shape",
    [
        dict(n=2, i=4, o=4, hw=4, k=3, up=1, act_mod=True),  # many weights, few pixels
        dict(n=2, i=4, o=3, hw=2, k=3, up=2, act_mod=True),
        dict(n=3, i=2, o=3, hw=11, k=3, up=1, act_mod=False),  # many pixels: grouped convolution
        dict(n=2, i=2, o=2, hw=9, k=3, up=2, act_mod=False),
        dict(n=2, i=5, o=1, hw=6, k=1, up=1, act_mod=False),  # toRGB
    ],
)
@pytest.mark.parametrize("demodulate", [True, False])
def test_modulated_conv2d_matches_ref_and_gradchecks(shape, demodulate):
    torch.manual_seed(6)
    f = ops.setup_filter([1, 3, 3, 1])
    kwargs = dict(demodulate=demodulate, f=f, up=shape["up"], padding=shape["k"] // 2)

    def inputs(dtype):
        x = torch.randn(shape["n"], shape["i"], shape["hw"], shape["hw"], dtype=dtype, requires_grad=True)
        w = torch.randn(shape["o"], shape["i"], shape["k"], shape["k"], dtype=dtype, requires_grad=True)
        s = (torch.randn(shape["n"], shape["i"], dtype=dtype) + 1).requires_grad_()
        return x, w, s

    x, w, s = inputs(torch.float32)
    assert modulate_activations(w.shape, x.shape, shape["up"]) == shape["act_mod"]  # both paths are covered
    xs = x[:, :, :5, :5]
    assert modulate_activations(w.shape, xs.shape, shape["up"]) == shape["act_mod"]  # also in gradcheck
    expected = ops.modulated_conv2d(x, w, s, backend="ref", **kwargs)
    got = ops.modulated_conv2d(x, w, s, backend="cpu", **kwargs)
    torch.testing.assert_close(got, expected, **F32)
    dy = torch.randn_like(expected)
    for a, e in zip(torch.autograd.grad(got, (x, w, s), dy), torch.autograd.grad(expected, (x, w, s), dy)):
        torch.testing.assert_close(a, e, rtol=1e-4, atol=1e-4)
    xd, wd, sd = inputs(torch.float64)
    small = (xd[:, :, :5, :5].detach().clone().requires_grad_(), wd, sd)

    def fn(a, weight, styles):
        return ops.modulated_conv2d(a, weight, styles, backend="cpu", **kwargs)

    assert gradcheck(fn, small)
    assert gradgradcheck(fn, small)


def test_modulated_conv2d_up_at_low_resolution(monkeypatch):
    """Where the upsampling convolution runs at the low resolution, modulated_conv2d scales the
    activations (one shared weight) instead of the grouped convolution; same results as ref."""
    monkeypatch.setattr(fused, "MIN_UP_SIDE", 1)
    monkeypatch.setattr(fused, "MIN_UP_CHANNELS", 1)
    monkeypatch.setattr(fused, "MIN_UP_PIXELS", 1)
    monkeypatch.setattr(fused.FusedBackend, "conv_up", counted(fused.FusedBackend.conv_up))
    torch.manual_seed(11)
    f = ops.setup_filter([1, 3, 3, 1]).double()
    x = torch.randn(2, 2, 9, 9, dtype=torch.float64, requires_grad=True)
    w = torch.randn(2, 2, 3, 3, dtype=torch.float64, requires_grad=True)
    s = (torch.randn(2, 2, dtype=torch.float64) + 1).requires_grad_()
    assert not modulate_activations(w.shape, x.shape, 2)  # grouped before conv_up
    kwargs = dict(f=f, up=2, padding=1)
    got = ops.modulated_conv2d(x, w, s, backend="cpu", **kwargs)
    expected = ops.modulated_conv2d(x, w, s, backend="ref", **kwargs)
    torch.testing.assert_close(got, expected, rtol=1e-10, atol=1e-10)
    dy = torch.randn_like(expected)
    for a, e in zip(torch.autograd.grad(got, (x, w, s), dy), torch.autograd.grad(expected, (x, w, s), dy)):
        torch.testing.assert_close(a, e, rtol=1e-10, atol=1e-10)
    small = (x[:, :, :4, :4].detach().clone().requires_grad_(), w, s)
    assert gradgradcheck(lambda a, b, c: ops.modulated_conv2d(a, b, c, backend="cpu", **kwargs), small)
    assert fused.FusedBackend.conv_up.calls > 0


def small_networks():
    from datasetgan.networks import Discriminator, DiscriminatorConfig, Generator, GeneratorConfig

    torch.manual_seed(7)
    g = Generator(
        GeneratorConfig(
            resolution=16, img_channels=3, z_dim=16, w_dim=16, mapping_layers=2, channel_base=128, channel_max=16
        )
    )
    d = Discriminator(DiscriminatorConfig(resolution=16, img_channels=3, channel_base=128, channel_max=16))
    for p in list(g.parameters()) + list(d.parameters()):  # non-zero biases and noise strengths
        with torch.no_grad():
            p.add_(torch.randn_like(p) * 0.1)
    return g, d


def training_step(g, d, z, real, backend, monkeypatch):
    """G + D losses and an R1 penalty (double backward through D); returns outputs and gradients."""
    monkeypatch.setenv(backend_mod.ENV_VAR, backend)
    params = list(g.parameters()) + list(d.parameters())
    img = g(z, noise_mode="const")
    fake_logits = d(img)
    real = real.clone().requires_grad_()
    real_logits = d(real)
    (r1_grad,) = torch.autograd.grad(real_logits.sum(), real, create_graph=True)
    loss = (
        torch.nn.functional.softplus(fake_logits).mean()
        + torch.nn.functional.softplus(-real_logits).mean()
        + r1_grad.square().sum() * 0.5
    )
    grads = torch.autograd.grad(loss, params)
    return [img, fake_logits, real_logits, r1_grad] + list(grads)


@pytest.mark.parametrize("low_res_down", [False, True])
def test_generator_and_discriminator_match_ref(monkeypatch, low_res_down):
    if low_res_down:  # the discriminator's downsampling convolutions at the low resolution
        monkeypatch.setattr(fused, "MIN_DOWN_SIDE", 1)
    g, d = small_networks()
    torch.manual_seed(8)
    z = torch.randn(4, 16)
    real = torch.randn(4, 3, 16, 16)
    expected = training_step(g, d, z, real, "ref", monkeypatch)
    got = training_step(g, d, z, real, "cpu", monkeypatch)
    assert len(got) == len(expected)
    for a, e in zip(got, expected):
        torch.testing.assert_close(a, e, rtol=1e-3, atol=1e-4)


def test_auto_backend_uses_cpu_for_cpu_tensors(monkeypatch):
    monkeypatch.delenv(backend_mod.ENV_VAR, raising=False)
    x = torch.randn(2, 3)
    assert backend_mod.select("bias_act", x) is backend_mod.compiled("cpu")
    monkeypatch.setenv(backend_mod.ENV_VAR, "ref")
    assert backend_mod.select("bias_act", x) is ops.ref
    assert backend_mod.select("bias_act", x, "cpu") is backend_mod.compiled("cpu")  # argument beats env
    with pytest.raises(ValueError, match="unknown stylegan2_ops backend"):
        ops.bias_act(x, backend="gpu")
    with pytest.raises(ValueError, match="cannot run"):
        ops.bias_act(x, backend="cuda")


def test_failed_build_falls_back_to_ref_with_one_warning(monkeypatch):
    def broken(name):
        raise BuildError("compiler exploded")

    monkeypatch.delenv(backend_mod.ENV_VAR, raising=False)
    monkeypatch.setattr(backend_mod, "compiled", broken)
    backend_mod.compiled_or_none.cache_clear()
    try:
        x = torch.randn(2, 3)
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            y1 = ops.bias_act(x, act="lrelu")
            y2 = ops.bias_act(x, act="lrelu")
        messages = [str(w.message) for w in caught if "stylegan2_ops" in str(w.message)]
        assert len(messages) == 1 and "compiler exploded" in messages[0]
        torch.testing.assert_close(y1, ops.bias_act(x, act="lrelu", backend="ref"))
        torch.testing.assert_close(y2, y1)
        with pytest.raises(BuildError):  # a forced backend fails loudly
            ops.bias_act(x, backend="cpu")
    finally:
        backend_mod.compiled_or_none.cache_clear()


def test_unsupported_dtype_uses_reference_path():
    x = torch.randn(2, 3, 4, 4, dtype=torch.bfloat16)
    f = ops.setup_filter([1, 3, 3, 1])
    torch.testing.assert_close(
        ops.upfirdn2d(x, f, up=2, padding=ops.up_padding(f, 2), backend="cpu"),
        ops.upfirdn2d(x, f, up=2, padding=ops.up_padding(f, 2), backend="ref"),
    )


def test_tune_allocator_runs():
    import platform

    result = ops.tune_allocator()
    if platform.system() == "Linux" and platform.libc_ver()[0] == "glibc":
        assert result is True
    else:
        assert result is False
