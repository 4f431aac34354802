"""Training configuration and the named presets.

``paper256`` is the configuration of the seed paper (StyleGAN2-ADA at 256x256, channel base 16384,
channel maximum 512, 8 mapping layers, R1 gamma 1, batch 64, EMA over 20k images, as the ADA
paper's 'paper256'). The CPU presets shrink the networks so that a 2-core CPU sees enough images in
a few hours (see benchmarks/RESULTS.md, section "Training speed", for the measured speeds):

* ``cpu-tiny``  32x32, channel base 1024 / max 128 (32, 64, 128, 128 channels at 32..4), 2 mapping
  layers of width 128, batch 16.
* ``cpu-small`` 64x64, channel base 1024 / max 128 (16, 32, 64, 128, 128 channels at 64..4), 2 mapping
  layers of width 128, batch 16.
* ``cpu-demo``  32x32, channel base 512 / max 64 (16, 32, 64, 64 channels at 32..4), 2 mapping layers
  of width 64, no path-length regularisation, ADA at the paper's speed: the bundled demo run
  (demo/rebuild.sh), about 40 minutes for 40k images on one shared thread.

What that costs: far fewer channels per layer (16 at 64x64 instead of 256-512) means less capacity
for fine texture and less variety, and a 2-layer mapping network disentangles the latent space less
than 8 layers; expect visibly blurrier, less varied images and a higher FID than the paper's size.
Path-length regularisation runs every 8 steps instead of 4 (it costs a double backward pass through
G) and R1 keeps its interval of 16.

ADA's speed: the paper lets p go from 0 to 1 in 500k images, which suits runs of millions of images.
A CPU run sees 20k-100k images, in which p could rise by at most 0.1, so the CPU presets use 100k
(``ada_kimg=100``); ``--ada-kimg 500`` restores the paper's speed.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, fields

from .errors import ConfigError
from .networks import DiscriminatorConfig, GeneratorConfig, check_resolution


@dataclass
class TrainConfig:
    preset: str = "custom"
    resolution: int = 32
    img_channels: int = 1
    # networks
    z_dim: int = 512
    w_dim: int = 512
    mapping_layers: int = 8
    channel_base: int = 16384
    channel_max: int = 512
    d_channel_base: int | None = None  # the discriminator's channel base/max; None: the generator's
    d_channel_max: int | None = None
    mbstd_group: int = 4
    # optimisation (Adam as in StyleGAN2: lr 0.0025, betas (0, 0.99), eps 1e-8)
    batch: int = 32
    g_lr: float = 0.0025
    d_lr: float = 0.0025
    betas: tuple[float, float] = (0.0, 0.99)
    eps: float = 1e-8
    # regularisation (lazy: every `interval` steps, weighted by the interval)
    r1_gamma: float = 1.0
    r1_interval: int = 16
    pl_weight: float = 2.0
    pl_interval: int = 4
    pl_batch_shrink: int = 2
    pl_decay: float = 0.01
    style_mixing: float = 0.9
    # exponential moving average of G: half-life in thousands of images, ramped up early in training
    ema_kimg: float = 10.0
    ema_rampup: float | None = 0.05
    # augmentation: "ada" (adaptive p), "fixed" (constant p) or "none"
    aug: str = "ada"
    aug_p: float = 0.0
    augpipe: str = "bgc"
    ada_target: float = 0.6
    ada_interval: int = 4
    ada_kimg: float = 500.0
    mirror: bool = False
    seed: int = 0

    def __post_init__(self):
        check_resolution(self.resolution)
        self.betas = tuple(self.betas)
        if self.aug not in ("ada", "fixed", "none"):
            raise ConfigError(f"aug must be ada, fixed or none, got {self.aug!r}")
        if not 0 <= self.aug_p <= 1:
            raise ConfigError(f"aug_p must be in [0, 1], got {self.aug_p}")
        if self.batch < 1:
            raise ConfigError(f"batch must be positive, got {self.batch}")
        for name, option in (("d_channel_base", "--d-cbase"), ("d_channel_max", "--d-cmax")):
            if getattr(self, name) is not None and getattr(self, name) < 1:
                raise ConfigError(f"{option} ({name}) must be positive, got {getattr(self, name)}")
        for name, option in (("g_lr", "--glr"), ("d_lr", "--dlr")):
            if not getattr(self, name) > 0:
                raise ConfigError(f"{option} ({name}) must be positive, got {getattr(self, name)}")
        if not self.pl_weight >= 0:
            raise ConfigError(f"--pl-weight (pl_weight) must be 0 (off) or positive, got {self.pl_weight}")

    def generator_config(self) -> GeneratorConfig:
        return GeneratorConfig(
            resolution=self.resolution,
            img_channels=self.img_channels,
            z_dim=self.z_dim,
            w_dim=self.w_dim,
            mapping_layers=self.mapping_layers,
            channel_base=self.channel_base,
            channel_max=self.channel_max,
        )

    def discriminator_config(self) -> DiscriminatorConfig:
        return DiscriminatorConfig(
            resolution=self.resolution,
            img_channels=self.img_channels,
            channel_base=self.d_channel_base or self.channel_base,
            channel_max=self.d_channel_max or self.channel_max,
            mbstd_group=self.mbstd_group,
        )

    def to_dict(self) -> dict:
        d = asdict(self)
        d["betas"] = list(self.betas)
        return d

    @classmethod
    def from_dict(cls, d: dict) -> "TrainConfig":
        known = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in d.items() if k in known})

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=1)


def auto_r1_gamma(resolution: int, batch: int) -> float:
    """The ADA paper's heuristic for R1 gamma: 0.0002 * resolution^2 / batch."""
    return 0.0002 * resolution**2 / batch


CPU_TINY = dict(
    resolution=32,
    z_dim=128,
    w_dim=128,
    mapping_layers=2,
    channel_base=1024,
    channel_max=128,
    batch=16,
    pl_interval=8,
    ema_kimg=16 * 10 / 32,
    ada_kimg=100,
)

PRESETS: dict[str, dict] = {
    "cpu-tiny": CPU_TINY,
    "cpu-small": dict(CPU_TINY, resolution=64),  # the same network one resolution up
    # the bundled demo run (demo/rebuild.sh): 32x32, 8..64 channels, no path-length regularisation
    "cpu-demo": dict(
        resolution=32,
        z_dim=64,
        w_dim=64,
        mapping_layers=2,
        channel_base=512,
        channel_max=64,
        batch=16,
        pl_weight=0.0,
        ema_kimg=16 * 10 / 32,
    ),
    "paper256": dict(
        resolution=256,
        z_dim=512,
        w_dim=512,
        mapping_layers=8,
        channel_base=16384,
        channel_max=512,
        batch=64,
        mbstd_group=8,
        r1_gamma=1.0,
        ema_kimg=20.0,
        ema_rampup=None,
    ),
}


def gamma_is_automatic(preset: str, overrides: dict) -> bool:
    """Whether R1's gamma comes from :func:`auto_r1_gamma` (neither the preset nor the user set it)."""
    return "r1_gamma" not in PRESETS[preset] and overrides.get("r1_gamma") is None


def make_config(preset: str, **overrides) -> TrainConfig:
    """The named preset with ``overrides`` (None values are ignored) applied."""
    if preset not in PRESETS:
        raise ConfigError(f"unknown preset {preset!r}; choose one of {', '.join(PRESETS)}")
    values = dict(PRESETS[preset], preset=preset)
    values.update({k: v for k, v in overrides.items() if v is not None})
    if gamma_is_automatic(preset, overrides):
        values["r1_gamma"] = auto_r1_gamma(values["resolution"], values["batch"])
    return TrainConfig(**values)
