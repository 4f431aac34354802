"""StyleGAN2 (config F) generator and discriminator, built on :mod:`stylegan2_ops`.

Every layer uses the equalized learning rate: weights are stored with unit variance (divided by
``lr_multiplier``) and scaled at run time by ``lr_multiplier / sqrt(fan_in)``.

The synthesis network exposes each layer's output as a named *feature tap* (the 4x4 constant and
every convolution layer). Taps are recorded only when asked for, so they never change what the
forward pass computes.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import numpy as np
import torch
from torch import nn

import stylegan2_ops as ops

from .errors import ConfigError


@dataclass
class GeneratorConfig:
    resolution: int = 64
    img_channels: int = 1
    z_dim: int = 512
    w_dim: int = 512
    mapping_layers: int = 8
    channel_base: int = 4096
    channel_max: int = 256
    conv_clamp: float | None = 256.0
    mapping_lr: float = 0.01
    w_avg_beta: float = 0.995

    def __post_init__(self):
        check_resolution(self.resolution)
        if self.img_channels not in (1, 3):
            raise ConfigError(f"img_channels must be 1 or 3, got {self.img_channels}")

    def channels(self, res: int) -> int:
        return min(self.channel_base // res, self.channel_max)

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass
class DiscriminatorConfig:
    resolution: int = 64
    img_channels: int = 1
    channel_base: int = 4096
    channel_max: int = 256
    mbstd_group: int = 4
    mbstd_channels: int = 1
    conv_clamp: float | None = 256.0

    def __post_init__(self):
        check_resolution(self.resolution)

    def channels(self, res: int) -> int:
        return min(self.channel_base // res, self.channel_max)

    def to_dict(self) -> dict:
        return asdict(self)


def check_resolution(res: int) -> None:
    if res < 16 or res > 1024 or res & (res - 1):
        raise ConfigError(f"resolution must be a power of two from 16 to 1024, got {res}")


def block_resolutions(res: int) -> list[int]:
    return [2**i for i in range(2, int(math.log2(res)) + 1)]


# ---------------------------------------------------------------------------------------------
# Layers with equalized learning rate


class FullyConnected(nn.Module):
    def __init__(self, in_features, out_features, bias=True, act="linear", lr_multiplier=1.0, bias_init=0.0):
        super().__init__()
        self.act = act
        self.weight = nn.Parameter(torch.randn(out_features, in_features) / lr_multiplier)
        self.bias = nn.Parameter(torch.full([out_features], float(bias_init))) if bias else None
        self.weight_gain = lr_multiplier / math.sqrt(in_features)
        self.bias_gain = lr_multiplier

    def forward(self, x):
        w = self.weight.to(x.dtype) * self.weight_gain
        b = self.bias.to(x.dtype) * self.bias_gain if self.bias is not None else None
        if self.act == "linear":
            return torch.nn.functional.linear(x, w, b)
        return ops.bias_act(x.matmul(w.t()), b, act=self.act)


class Conv2d(nn.Module):
    """Equalized-LR convolution with optional FIR up/down-sampling (used by the discriminator)."""

    def __init__(
        self,
        in_channels,
        out_channels,
        kernel_size,
        bias=True,
        act="linear",
        up=1,
        down=1,
        resample_filter=(1, 3, 3, 1),
        conv_clamp=None,
    ):
        super().__init__()
        self.act, self.up, self.down, self.conv_clamp = act, up, down, conv_clamp
        self.register_buffer("resample_filter", ops.setup_filter(resample_filter), persistent=False)
        self.padding = kernel_size // 2
        self.weight_gain = 1 / math.sqrt(in_channels * kernel_size**2)
        self.weight = nn.Parameter(torch.randn(out_channels, in_channels, kernel_size, kernel_size))
        self.bias = nn.Parameter(torch.zeros(out_channels)) if bias else None

    def forward(self, x, gain=1.0):
        w = self.weight * self.weight_gain
        x = ops.conv2d_resample(
            x, w.to(x.dtype), f=self.resample_filter, up=self.up, down=self.down, padding=self.padding
        )
        clamp = self.conv_clamp * gain if self.conv_clamp is not None else None
        b = self.bias.to(x.dtype) if self.bias is not None else None
        return ops.bias_act(x, b, act=self.act, gain=ops.ref.act_defaults(self.act, None, None)[1] * gain, clamp=clamp)


# ---------------------------------------------------------------------------------------------
# Mapping network


class MappingNetwork(nn.Module):
    def __init__(self, cfg: GeneratorConfig, num_ws: int):
        super().__init__()
        self.z_dim, self.w_dim, self.num_ws, self.w_avg_beta = cfg.z_dim, cfg.w_dim, num_ws, cfg.w_avg_beta
        dims = [cfg.z_dim] + [cfg.w_dim] * cfg.mapping_layers
        self.layers = nn.ModuleList(
            FullyConnected(dims[i], dims[i + 1], act="lrelu", lr_multiplier=cfg.mapping_lr)
            for i in range(cfg.mapping_layers)
        )
        self.register_buffer("w_avg", torch.zeros(cfg.w_dim))

    def forward(self, z, truncation_psi=1.0, truncation_cutoff=None, update_w_avg=False):
        x = z * (z.square().mean(dim=1, keepdim=True) + 1e-8).rsqrt()  # normalize 2nd moment
        for layer in self.layers:
            x = layer(x)
        if update_w_avg:
            self.w_avg.copy_(x.detach().mean(dim=0).lerp(self.w_avg, self.w_avg_beta))
        ws = x[:, None, :].repeat(1, self.num_ws, 1)
        if truncation_psi != 1:
            cutoff = self.num_ws if truncation_cutoff is None else truncation_cutoff
            ws[:, :cutoff] = self.w_avg.lerp(ws[:, :cutoff], truncation_psi)
        return ws


# ---------------------------------------------------------------------------------------------
# Synthesis network


class SynthesisLayer(nn.Module):
    """Modulated 3x3 convolution + noise + bias + leaky ReLU."""

    def __init__(
        self, in_channels, out_channels, w_dim, resolution, up=1, conv_clamp=None, resample_filter=(1, 3, 3, 1)
    ):
        super().__init__()
        self.up, self.resolution, self.conv_clamp = up, resolution, conv_clamp
        self.affine = FullyConnected(w_dim, in_channels, bias_init=1.0)
        self.register_buffer("resample_filter", ops.setup_filter(resample_filter), persistent=False)
        self.weight = nn.Parameter(torch.randn(out_channels, in_channels, 3, 3))
        self.bias = nn.Parameter(torch.zeros(out_channels))
        self.noise_strength = nn.Parameter(torch.zeros([]))
        # Constant noise, stored with the weights: rendering with noise_mode="const" is reproducible.
        self.register_buffer("noise_const", torch.randn(resolution, resolution))
        self.out_channels = out_channels

    def forward(self, x, w, noise_mode="random", noise_generator=None, gain=1.0, noise=None):
        """``noise``: an explicit noise map [N, 1, r, r] (a projected image's), used instead of noise_mode."""
        styles = self.affine(w)
        x = ops.modulated_conv2d(x, self.weight, styles, demodulate=True, f=self.resample_filter, up=self.up, padding=1)
        if noise is not None:
            x = x + noise.to(x.dtype) * self.noise_strength
        elif noise_mode == "random":
            # drawn where the generator lives (a training run keeps its random streams on the CPU)
            noise = torch.randn(
                x.shape[0],
                1,
                self.resolution,
                self.resolution,
                dtype=x.dtype,
                device=noise_generator.device if noise_generator is not None else x.device,
                generator=noise_generator,
            ).to(x.device)
            x = x + noise * self.noise_strength
        elif noise_mode == "const":
            x = x + self.noise_const.to(x.dtype) * self.noise_strength
        elif noise_mode != "none":
            raise ValueError(f"noise_mode must be random, const or none, got {noise_mode!r}")
        clamp = self.conv_clamp * gain if self.conv_clamp is not None else None
        return ops.bias_act(x, self.bias.to(x.dtype), act="lrelu", gain=math.sqrt(2) * gain, clamp=clamp)


class ToRGB(nn.Module):
    def __init__(self, in_channels, img_channels, w_dim, conv_clamp=None):
        super().__init__()
        self.conv_clamp = conv_clamp
        self.affine = FullyConnected(w_dim, in_channels, bias_init=1.0)
        self.weight = nn.Parameter(torch.randn(img_channels, in_channels, 1, 1))
        self.bias = nn.Parameter(torch.zeros(img_channels))
        self.weight_gain = 1 / math.sqrt(in_channels)

    def forward(self, x, w):
        styles = self.affine(w) * self.weight_gain
        x = ops.modulated_conv2d(x, self.weight, styles, demodulate=False)
        return ops.bias_act(x, self.bias.to(x.dtype), clamp=self.conv_clamp)


class SynthesisBlock(nn.Module):
    """One resolution of the skip-architecture synthesis network."""

    def __init__(self, in_channels, out_channels, w_dim, resolution, img_channels, conv_clamp=None):
        super().__init__()
        self.resolution = resolution
        self.is_first = in_channels == 0
        if self.is_first:
            self.const = nn.Parameter(torch.randn(out_channels, resolution, resolution))
        else:
            self.conv0 = SynthesisLayer(in_channels, out_channels, w_dim, resolution, up=2, conv_clamp=conv_clamp)
        self.conv1 = SynthesisLayer(out_channels, out_channels, w_dim, resolution, conv_clamp=conv_clamp)
        self.torgb = ToRGB(out_channels, img_channels, w_dim, conv_clamp=conv_clamp)
        self.register_buffer("resample_filter", ops.setup_filter((1, 3, 3, 1)), persistent=False)
        self.num_conv = 1 if self.is_first else 2

    def tap_names(self) -> list[str]:
        first = "const" if self.is_first else "conv0"
        return [f"b{self.resolution}.{first}", f"b{self.resolution}.conv1"]

    def noise_layers(self) -> dict[str, SynthesisLayer]:
        """{name: layer} of the layers that add noise (their names are also their taps' names)."""
        layers = {} if self.is_first else {f"b{self.resolution}.conv0": self.conv0}
        return {**layers, f"b{self.resolution}.conv1": self.conv1}

    def forward(self, x, img, ws, taps=None, noise=None, **layer_kwargs):
        """ws: [N, num_conv + 1, w_dim] (the last one feeds toRGB); noise: optional {layer name: [N, 1, r, r]}."""
        names = self.tap_names()
        given = noise or {}
        if self.is_first:
            x = self.const.to(ws.dtype)[None].repeat(ws.shape[0], 1, 1, 1)
            w_iter = iter(ws.unbind(1))
        else:
            w_iter = iter(ws.unbind(1))
            x = self.conv0(x, next(w_iter), noise=given.get(names[0]), **layer_kwargs)
        if taps is not None:
            taps[names[0]] = x
        x = self.conv1(x, next(w_iter), noise=given.get(names[1]), **layer_kwargs)
        if taps is not None:
            taps[names[1]] = x
        if img is not None:
            img = ops.upfirdn2d(
                img, self.resample_filter, up=2, padding=ops.up_padding(self.resample_filter, 2), gain=4
            )
        y = self.torgb(x, next(w_iter))
        img = y if img is None else img + y
        return x, img


@dataclass(frozen=True)
class FeatureTap:
    name: str
    resolution: int
    channels: int


class SynthesisNetwork(nn.Module):
    def __init__(self, cfg: GeneratorConfig):
        super().__init__()
        self.resolutions = block_resolutions(cfg.resolution)
        self.blocks = nn.ModuleList()
        self.num_ws = 0
        for res in self.resolutions:
            in_ch = 0 if res == 4 else cfg.channels(res // 2)
            block = SynthesisBlock(
                in_ch, cfg.channels(res), cfg.w_dim, res, cfg.img_channels, conv_clamp=cfg.conv_clamp
            )
            self.blocks.append(block)
            self.num_ws += block.num_conv
        self.num_ws += 1  # the last toRGB
        self._channels = {res: cfg.channels(res) for res in self.resolutions}

    def feature_taps(self) -> list[FeatureTap]:
        return [
            FeatureTap(name, block.resolution, self._channels[block.resolution])
            for block in self.blocks
            for name in block.tap_names()
        ]

    def noise_layers(self) -> dict[str, SynthesisLayer]:
        return {name: layer for block in self.blocks for name, layer in block.noise_layers().items()}

    def forward(self, ws, taps=None, **layer_kwargs):
        x = img = None
        w_idx = 0
        for block in self.blocks:
            x, img = block(x, img, ws[:, w_idx : w_idx + block.num_conv + 1], taps=taps, **layer_kwargs)
            w_idx += block.num_conv
        return img


class Generator(nn.Module):
    """z -> image in [-1, 1] of shape [N, img_channels, resolution, resolution]."""

    def __init__(self, cfg: GeneratorConfig):
        super().__init__()
        self.cfg = cfg
        self.synthesis = SynthesisNetwork(cfg)
        self.num_ws = self.synthesis.num_ws
        self.mapping = MappingNetwork(cfg, self.num_ws)

    def feature_taps(self) -> list[FeatureTap]:
        return self.synthesis.feature_taps()

    def forward(self, z, truncation_psi=1.0, truncation_cutoff=None, update_w_avg=False, taps=None, **layer_kwargs):
        ws = self.mapping(z, truncation_psi, truncation_cutoff, update_w_avg=update_w_avg)
        return self.synthesis(ws, taps=taps, **layer_kwargs)


# ---------------------------------------------------------------------------------------------
# Discriminator (residual architecture)


class DiscriminatorBlock(nn.Module):
    def __init__(self, in_channels, tmp_channels, out_channels, img_channels, conv_clamp=None):
        super().__init__()
        self.fromrgb = (
            Conv2d(img_channels, tmp_channels, 1, act="lrelu", conv_clamp=conv_clamp) if in_channels == 0 else None
        )
        self.conv0 = Conv2d(tmp_channels, tmp_channels, 3, act="lrelu", conv_clamp=conv_clamp)
        self.conv1 = Conv2d(tmp_channels, out_channels, 3, act="lrelu", down=2, conv_clamp=conv_clamp)
        self.skip = Conv2d(tmp_channels, out_channels, 1, bias=False, down=2)

    def forward(self, x, img):
        if self.fromrgb is not None:
            x = self.fromrgb(img)
        y = self.skip(x, gain=math.sqrt(0.5))
        x = self.conv0(x)
        x = self.conv1(x, gain=math.sqrt(0.5))
        return y + x


class MinibatchStd(nn.Module):
    """Appends the average standard deviation over groups of samples as extra feature maps."""

    def __init__(self, group_size, num_channels=1):
        super().__init__()
        self.group_size, self.num_channels = group_size, num_channels

    def forward(self, x):
        n, c, h, w = x.shape
        g = min(self.group_size, n)
        while n % g:  # a group size that divides the batch, so any batch size works
            g -= 1
        f = self.num_channels
        y = x.reshape(g, -1, f, c // f, h, w)
        y = (y - y.mean(dim=0)).square().mean(dim=0)
        y = (y + 1e-8).sqrt().mean(dim=[2, 3, 4])  # [n/g, f]
        y = y.reshape(-1, f, 1, 1).repeat(g, 1, h, w)
        return torch.cat([x, y], dim=1)


class DiscriminatorEpilogue(nn.Module):
    def __init__(self, in_channels, cfg: DiscriminatorConfig):
        super().__init__()
        self.mbstd = MinibatchStd(cfg.mbstd_group, cfg.mbstd_channels)
        self.conv = Conv2d(in_channels + cfg.mbstd_channels, in_channels, 3, act="lrelu", conv_clamp=cfg.conv_clamp)
        self.fc = FullyConnected(in_channels * 16, in_channels, act="lrelu")
        self.out = FullyConnected(in_channels, 1)

    def forward(self, x):
        x = self.conv(self.mbstd(x))
        return self.out(self.fc(x.flatten(1)))


class Discriminator(nn.Module):
    """image [N, C, R, R] in [-1, 1] -> logit [N, 1]."""

    def __init__(self, cfg: DiscriminatorConfig):
        super().__init__()
        self.cfg = cfg
        resolutions = block_resolutions(cfg.resolution)[::-1][:-1]  # R, R/2, ..., 8
        self.blocks = nn.ModuleList()
        for i, res in enumerate(resolutions):
            in_ch = 0 if i == 0 else cfg.channels(res)
            self.blocks.append(
                DiscriminatorBlock(
                    in_ch, cfg.channels(res), cfg.channels(res // 2), cfg.img_channels, conv_clamp=cfg.conv_clamp
                )
            )
        self.epilogue = DiscriminatorEpilogue(cfg.channels(4), cfg)

    def forward(self, img):
        x = None
        for block in self.blocks:
            x = block(x, img)
        return self.epilogue(x)


def count_parameters(module: nn.Module) -> int:
    return int(sum(np.prod(p.shape) for p in module.parameters()))
