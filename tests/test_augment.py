"""ADA: each augmentation does what it is defined to do, p=0 is the identity, gradients flow, p adapts."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from datasetgan.augment import AdaController, AugmentPipe, lanczos_filter, reflect_index, sample_bilinear


def images(n=4, c=1, size=16, seed=0):
    return torch.randn(n, c, size, size, generator=torch.Generator().manual_seed(seed))


def smooth_images(n=2, c=1, size=32):
    yy, xx = torch.meshgrid(torch.linspace(-1, 1, size), torch.linspace(-1, 1, size), indexing="ij")
    img = torch.sin(2.5 * xx + 0.5) * torch.cos(1.5 * yy) * 0.8
    return img[None, None].repeat(n, c, 1, 1)


def with_param(n, **values):
    pipe = AugmentPipe("bgc")
    prm = pipe.identity_params(n)
    for k, v in values.items():
        prm[k][:] = v
    return pipe, prm


@pytest.mark.parametrize("c", [1, 3])
def test_p0_is_identity(c):
    x = images(c=c)
    pipe = AugmentPipe("bgc")
    assert torch.equal(pipe(x, 0.0, torch.Generator().manual_seed(1)), x)
    # Parameters drawn with p = 0 are all identities too, and applying them changes nothing.
    prm = pipe.sample_params(len(x), 0.0, torch.Generator().manual_seed(1))
    assert torch.equal(pipe.apply(x, prm), x)


def test_p1_changes_every_image():
    x = images(n=8, c=3)
    y = AugmentPipe("bgc")(x, 1.0, torch.Generator().manual_seed(3))
    assert y.shape == x.shape
    assert all((y[i] - x[i]).abs().max() > 1e-3 for i in range(len(x)))


def test_xflip_is_flip():
    x = images()
    pipe, prm = with_param(4, xflip=1.0)
    assert torch.equal(pipe.apply(x, prm), x.flip(-1))


@pytest.mark.parametrize("k", [1, 2, 3])
def test_rotate90_is_rot90(k):
    x = images()
    pipe, prm = with_param(4, rotate90=float(k))
    assert torch.equal(pipe.apply(x, prm), torch.rot90(x, k, dims=(2, 3)))


def test_integer_translation_shifts_whole_pixels_with_mirrored_border():
    x = images(size=16)
    pipe, prm = with_param(4, xint_x=2 / 16, xint_y=-1 / 16)  # output(x, y) = input(x + 2, y - 1)
    y = pipe.apply(x, prm)
    assert torch.equal(y[:, :, 1:, :-2], x[:, :, :-1, 2:])
    # Beyond the right edge the image is mirrored: columns 14, 15 come from columns 15, 14.
    assert torch.equal(y[:, :, 1:, -2:], x[:, :, :-1, [15, 14]])


def test_fractional_translation_interpolates():
    # A half-pixel shift of a smooth image lies between the image and its one-pixel shift.
    x = smooth_images()
    pipe, prm = with_param(2, xfrac_x=0.5 / 32)
    y = pipe.apply(x, prm)
    ref = (x + x.roll(-1, dims=-1)) / 2
    assert (y - ref)[..., 4:-4, 4:-4].abs().max() < 0.02
    assert (y - x)[..., 4:-4, 4:-4].abs().max() > 0.05


def test_general_path_is_close_to_identity_for_tiny_scaling():
    # Upsample, resample and downsample with the Lanczos filter: a smooth image passes unchanged.
    x = smooth_images()
    pipe, prm = with_param(2, scale=1.001)
    y = pipe.apply(x, prm)
    assert not torch.equal(y, x)  # took the filtered path
    assert (y - x).abs().max() < 0.02


def test_scaling_magnifies_about_the_centre():
    # A radial ramp r(x) scaled by s=2 (output samples the input at 2x the distance) becomes r(2x).
    size = 32
    c = (torch.arange(size) + 0.5 - size / 2) / size
    yy, xx = torch.meshgrid(c, c, indexing="ij")
    x = (xx**2 + yy**2)[None, None]
    pipe, prm = with_param(1, scale=2.0)
    y = pipe.apply(x, prm)
    inner = slice(8, 24)
    assert torch.allclose(y[..., inner, inner], 4 * x[..., inner, inner], atol=0.01)


def test_rotation_by_quarter_turn_matches_rot90_on_smooth_image():
    # A general rotation of exactly 90 degrees (pre + post rotation = 45 + 45) goes through the filtered
    # path, but must agree with rot90 on a smooth image.
    x = smooth_images()
    pipe, prm = with_param(2, rotate_pre=math.pi / 4, rotate_post=math.pi / 4 + 1e-3)
    y = pipe.apply(x, prm)
    assert (y - torch.rot90(x, 1, dims=(2, 3)))[..., 4:-4, 4:-4].abs().max() < 0.05


def test_aniso_scaling_stretches_one_axis():
    size = 32
    c = (torch.arange(size) + 0.5 - size / 2) / size
    yy, xx = torch.meshgrid(c, c, indexing="ij")
    x = (xx + 2 * yy)[None, None]
    pipe, prm = with_param(1, aniso=1.5)  # input x at 1.5 x_out, input y at y_out / 1.5
    y = pipe.apply(x, prm)
    inner = slice(8, 24)
    assert torch.allclose(y[..., inner, inner], (1.5 * xx + 2 * yy / 1.5)[None, None][..., inner, inner], atol=0.01)


def test_brightness_adds():
    x = images()
    pipe, prm = with_param(4, brightness=0.3)
    assert torch.allclose(pipe.apply(x, prm), x + 0.3)


@pytest.mark.parametrize("c", [1, 3])
def test_contrast_multiplies_values_around_zero(c):
    """The ADA paper scales all colour values by c (values in [-1, 1]), not around the image's mean:
    a dark image (mean below 0) gets darker with c > 1."""
    x = images(c=c) * 0.3 - 0.5
    pipe, prm = with_param(4, contrast=1.7)
    assert torch.allclose(pipe.apply(x, prm), 1.7 * x, atol=1e-6)


@pytest.mark.parametrize("c", [1, 3])
def test_colour_ops_apply_in_the_papers_order(c):
    """brightness, then contrast, then luma flip: y = -(c * (x + b))."""
    x = images(c=c) * 0.3
    pipe, prm = with_param(4, brightness=0.2, contrast=1.5, lumaflip=1.0)
    y = pipe.apply(x, prm)
    if c == 1:
        expected = -(1.5 * (x + 0.2))
    else:  # luma flip negates the luma (channel mean) and keeps the chroma
        z = 1.5 * (x + 0.2)
        expected = z - 2 * z.mean(dim=1, keepdim=True)
    assert torch.allclose(y, expected, atol=1e-5)


def test_lumaflip_inverts_grayscale():
    x = images()
    pipe, prm = with_param(4, lumaflip=1.0)
    assert torch.equal(pipe.apply(x, prm), -x)


def test_lumaflip_rgb_reflects_luma_keeps_chroma():
    x = images(c=3)
    pipe, prm = with_param(4, lumaflip=1.0)
    y = pipe.apply(x, prm)
    assert torch.allclose(y.mean(dim=1), -x.mean(dim=1), atol=1e-5)  # luma negated
    assert torch.allclose(y - y.mean(dim=1, keepdim=True), x - x.mean(dim=1, keepdim=True), atol=1e-5)


def test_hue_rotation_keeps_luma_and_chroma_length():
    x = images(c=3)
    pipe, prm = with_param(4, hue=2 * math.pi / 3)
    y = pipe.apply(x, prm)
    assert torch.allclose(y.mean(dim=1), x.mean(dim=1), atol=1e-5)
    chroma = lambda t: (t - t.mean(dim=1, keepdim=True)).norm(dim=1)  # noqa: E731
    assert torch.allclose(chroma(y), chroma(x), atol=1e-5)
    # 120 degrees about the grey axis permutes the channels cyclically.
    assert torch.allclose(y, x.roll(1, dims=1), atol=1e-5) or torch.allclose(y, x.roll(-1, dims=1), atol=1e-5)


def test_saturation_scales_chroma():
    x = images(c=3)
    pipe, prm = with_param(4, saturation=0.5)
    y = pipe.apply(x, prm)
    m = x.mean(dim=1, keepdim=True)
    assert torch.allclose(y, m + 0.5 * (x - m), atol=1e-5)


def test_hue_and_saturation_do_nothing_to_grayscale():
    x = images()
    pipe, prm = with_param(4, hue=1.0, saturation=3.0)
    assert torch.equal(pipe.apply(x, prm), x)


def test_only_enabled_groups_are_drawn():
    prm = AugmentPipe("c").sample_params(64, 1.0, torch.Generator().manual_seed(0))
    assert (prm["xflip"] == 0).all() and (prm["scale"] == 1).all() and (prm["brightness"] != 0).all()
    with pytest.raises(ValueError, match="unknown augmentation group"):
        AugmentPipe("bgx")


def test_probability_of_each_op_is_p():
    prm = AugmentPipe("bgc").sample_params(20000, 0.3, torch.Generator().manual_seed(0))
    assert abs((prm["brightness"] != 0).float().mean().item() - 0.3) < 0.02
    assert abs((prm["scale"] != 1).float().mean().item() - 0.3) < 0.02
    # Two rotations with 1 - sqrt(1 - p) each: at least one rotation with probability p.
    rotated = (prm["rotate_pre"] != 0) | (prm["rotate_post"] != 0)
    assert abs(rotated.float().mean().item() - 0.3) < 0.02


def test_parameter_distributions_match_the_paper():
    """ADA paper, appendix B: log2 of scale/aniso ~ N(0, 0.2^2), of contrast ~ N(0, 0.5^2), of saturation
    ~ N(0, 1); brightness ~ N(0, 0.2^2); fractional shift ~ N(0, 0.125^2); integer shift ~ U(-0.125, 0.125);
    rotations ~ U(-pi, pi); x-flip ~ U{0, 1}, quarter turns ~ U{0..3}."""
    prm = AugmentPipe("bgc").sample_params(40000, 1.0, torch.Generator().manual_seed(0))

    def std(v):
        return v.std().item()

    for name, expected in [("scale", 0.2), ("aniso", 0.2), ("contrast", 0.5), ("saturation", 1.0)]:
        assert std(torch.log2(prm[name])) == pytest.approx(expected, rel=0.03), name
        assert abs(torch.log2(prm[name]).mean().item()) < 0.02, name
    for name, expected in [("brightness", 0.2), ("xfrac_x", 0.125), ("xfrac_y", 0.125)]:
        assert std(prm[name]) == pytest.approx(expected, rel=0.03), name
    for name, bound in [("xint_x", 0.125), ("xint_y", 0.125), ("hue", math.pi)]:
        assert prm[name].abs().max().item() <= bound and std(prm[name]) == pytest.approx(bound / math.sqrt(3), rel=0.03)
    rot = prm["rotate_pre"][prm["rotate_pre"] != 0]  # drawn with 1 - sqrt(1 - p) = 1 at p = 1
    assert len(rot) == 40000 and std(rot) == pytest.approx(math.pi / math.sqrt(3), rel=0.03)
    assert set(prm["xflip"].unique().tolist()) == {0.0, 1.0} and prm["xflip"].mean().item() == pytest.approx(
        0.5, abs=0.02
    )
    assert set(prm["rotate90"].unique().tolist()) == {0.0, 1.0, 2.0, 3.0}
    assert set(prm["lumaflip"].unique().tolist()) == {0.0, 1.0}


@pytest.mark.parametrize("c", [1, 3])
def test_gradients_reach_the_input_to_second_order(c):
    x = images(n=6, c=c, size=16).requires_grad_(True)
    y = AugmentPipe("bgc")(x, 1.0, torch.Generator().manual_seed(2))
    w = torch.randn_like(y)
    (g,) = torch.autograd.grad((y * w).sum(), x, create_graph=True)
    assert g.abs().sum() > 0
    (g2,) = torch.autograd.grad(g.square().sum(), x)  # what R1 through the augmentation needs
    assert torch.isfinite(g2).all()


def test_gradient_of_xflip_is_flipped_upstream_gradient():
    x = images().requires_grad_(True)
    pipe, prm = with_param(4, xflip=1.0)
    w = torch.randn(4, 1, 16, 16)
    (pipe.apply(x, prm) * w).sum().backward()
    assert torch.equal(x.grad, w.flip(-1))


def test_bilinear_sampler_matches_grid_sample_inside():
    x = images(n=2, c=3, size=8)
    px = torch.rand(2, 50, generator=torch.Generator().manual_seed(0)) * 7 + 0.5
    py = torch.rand(2, 50, generator=torch.Generator().manual_seed(1)) * 7 + 0.5
    ours = sample_bilinear(x, px, py)
    grid = torch.stack([px / 8 * 2 - 1, py / 8 * 2 - 1], dim=-1)[:, None]  # [N, 1, P, 2]
    ref = torch.nn.functional.grid_sample(x, grid, mode="bilinear", align_corners=False)[:, :, 0]
    assert torch.allclose(ours, ref, atol=1e-5)


def test_reflect_index_is_symmetric():
    i = torch.arange(-5, 11)
    assert reflect_index(i, 4).tolist() == [3, 3, 2, 1, 0, 0, 1, 2, 3, 3, 2, 1, 0, 0, 1, 2]


def test_lanczos_filter_is_a_normalised_lowpass():
    f = lanczos_filter()
    assert f.shape == (12,) and torch.allclose(f.sum(), torch.tensor(1.0)) and torch.equal(f, f.flip(0))


def test_controller_moves_p_towards_target():
    batch, interval, speed = 8, 4, 10  # p can go 0 -> 1 in 10k images
    step = batch * interval / (speed * 1000)
    ada = AdaController(batch, target=0.6, interval=interval, speed_kimg=speed, p=0.0)
    overfit = torch.ones(batch)  # D says "real" for every real image: r_t = 1 > 0.6
    for _ in range(40):
        ada.accumulate(overfit)
        ada.step()
    assert ada.last_rt == 1.0
    assert ada.p == pytest.approx(10 * step)  # updated every 4 steps
    # A synthetic sign sequence with r_t = 0.2 < 0.6 brings p down again, and p never goes below 0.
    mixed = torch.tensor([1.0] * 6 + [-1.0] * 4 * 1)[:batch]  # 6 +, 2 - per batch: r_t = 0.5
    mixed = torch.tensor([1, 1, 1, 1, 1, -1, -1, -1], dtype=torch.float32)  # r_t = 0.25
    for _ in range(4 * 15):
        ada.accumulate(mixed)
        ada.step()
    assert ada.last_rt == pytest.approx(0.25)
    assert ada.p == 0.0


def test_controller_speed_goes_0_to_1_in_speed_kimg():
    ada = AdaController(batch=16, target=0.6, interval=4, speed_kimg=500, p=0.0)
    images = 0
    while ada.p < 1.0:
        ada.accumulate(torch.ones(16))
        ada.step()
        images += 16
    assert images == pytest.approx(500_000, rel=1e-3)


def test_controller_measures_without_adjusting():
    ada = AdaController(batch=4, p=0.3)
    for _ in range(4):
        ada.accumulate(torch.ones(4))
        ada.step(adjust=False)
    assert ada.last_rt == 1.0 and ada.p == 0.3


def test_controller_state_round_trip():
    ada = AdaController(batch=4, p=0.1)
    ada.accumulate(torch.tensor([1.0, -1.0, 1.0, 1.0]))
    ada.step()
    other = AdaController(batch=4)
    other.load_state(ada.state())
    assert other.state() == ada.state()


def test_same_generator_state_gives_same_augmentation():
    x = images(n=8, c=1, size=16)
    pipe = AugmentPipe("bgc")
    a = pipe(x, 0.7, torch.Generator().manual_seed(5))
    b = pipe(x, 0.7, torch.Generator().manual_seed(5))
    assert torch.equal(a, b)
    assert np.isfinite(a.numpy()).all()
