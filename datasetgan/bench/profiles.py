"""Benchmark profiles: the settings a run starts from (every field can be overridden on the command line).

``paper``: the seed paper's protocol for a GPU: 256x256, DeepLabV3-ResNet101 (FCN-ResNet101 and a
full-width U-Net for Table III), 1.5k synthetic pairs, 500 real images, 30 real images added for the
hybrid set, 5 folds. The seed gives no optimiser settings for the segmenters; we use the usual
DeepLabV3 recipe (SGD, momentum 0.9, lr 0.01 with polynomial decay, weight decay 1e-4, auxiliary
head weighted 0.5).

``cpu``: the same protocol scaled to a 2-core CPU: 64x64, MobileNetV3-Large backbones at output
stride 8 (stride 16 leaves a 4x4 grid at 64x64, too coarse for a ventricle) and a narrow U-Net, AdamW
lr 1e-3, batch 8, 20 epochs, cross-entropy + soft Dice. Measured on ACDC (500 real slices): with
random initialisation (nothing can be downloaded) the MobileNetV3 DeepLabV3 and FCN stay on the
all-background solution for the first few hundred steps whatever the stride or loss; they left
it with the Dice term and about a thousand steps (5 epochs: test-R mIoU 0.24, background only; 20
epochs: 0.45 +- 0.02 over 5 folds, U-Net 0.65 +- 0.01; benchmarks/RESULTS.md). A fold costs about 355
(DeepLabV3), 207 (FCN) and 42 (U-Net) CPU-seconds, so the 3-model, 5-fold comparison on 500 real
slices needs about 50 CPU-minutes (measured with 1 thread); the default of 2 threads is meant to bring
it near 30 minutes on an idle 2-core machine. On a machine shared with other jobs use ``--threads 1``:
OpenMP threads spin-waiting for each other made a 2-thread step cost up to 17x the CPU time of a
1-thread step (measured here under load).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, replace

from ..errors import ConfigError


@dataclass
class SegmenterTrainConfig:
    """How a benchmark segmenter is trained (the GAN's is :class:`datasetgan.presets.TrainConfig`)."""

    epochs: int = 4
    batch_size: int = 16
    optimizer: str = "adam"  # adam | sgd
    lr: float = 1e-3
    momentum: float = 0.9
    weight_decay: float = 1e-4
    poly_power: float = 0.9  # lr * (1 - step/steps) ** power; 0 keeps lr constant
    aux_weight: float = 0.5  # weight of torchvision's auxiliary head loss, when present
    loss: str = "ce"  # a loss spec of .losses, e.g. dice_ce or tversky:alpha=0.7,beta=0.3
    swa: bool = False  # cosine lr, then stochastic weight averaging over the last epochs
    hybrid_real_weight: float | None = None  # share of each batch drawn from a hybrid set's real images
    seed: int = 0

    def __post_init__(self):
        from .losses import parse_loss

        parse_loss(self.loss)
        if self.hybrid_real_weight is not None and not 0 <= self.hybrid_real_weight <= 1:
            raise ConfigError(f"the real share of a batch must be in [0, 1], got {self.hybrid_real_weight}")
        if self.optimizer not in ("adam", "sgd"):
            raise ConfigError(f"optimizer must be adam or sgd, got {self.optimizer!r}")
        if self.epochs < 1 or self.batch_size < 2:
            raise ConfigError(
                "training needs at least 1 epoch and a batch size of at least 2 "
                "(batch norm cannot normalise a single image)"
            )


@dataclass
class Profile:
    name: str
    resolution: int
    models: tuple[str, ...]  # names from MODEL_SPECS, or arch:backbone
    backbones: dict = field(default_factory=dict)  # arch -> backbone
    unet_channels: tuple[int, ...] = (16, 32, 64, 128, 256)
    aux_loss: bool = False
    output_stride: int = 16  # MobileNetV3 backbones
    train: SegmenterTrainConfig = field(default_factory=SegmenterTrainConfig)
    folds: int = 5
    real_limit: int | None = 500
    hybrid_real: int = 30
    synthetic_sizes: tuple[int, ...] = (1500,)
    threads: int = 2
    eval_batch: int = 32

    def to_dict(self) -> dict:
        return asdict(self)


PROFILES = {
    "paper": Profile(
        name="paper",
        resolution=256,
        models=("deeplabv3",),
        backbones={"deeplabv3": "resnet101", "fcn": "resnet101"},
        unet_channels=(64, 128, 256, 512, 1024),
        aux_loss=True,
        train=SegmenterTrainConfig(epochs=30, batch_size=8, optimizer="sgd", lr=0.01, weight_decay=1e-4),
        folds=5,
        real_limit=500,
        hybrid_real=30,
        synthetic_sizes=(1500, 5000, 10000, 15000),
        threads=8,
        eval_batch=16,
    ),
    "cpu": Profile(
        name="cpu",
        resolution=64,
        models=("deeplabv3", "fcn", "unet"),
        backbones={"deeplabv3": "mobilenet_v3_large", "fcn": "mobilenet_v3_large"},
        unet_channels=(16, 32, 64, 128, 256),
        aux_loss=False,
        output_stride=8,
        train=SegmenterTrainConfig(
            epochs=20, batch_size=8, optimizer="adam", lr=1e-3, weight_decay=1e-4, loss="dice_ce"
        ),
        folds=5,
        real_limit=500,
        hybrid_real=30,
        synthetic_sizes=(1500,),
        threads=2,
        eval_batch=64,
    ),
}


def get_profile(name: str, **overrides) -> Profile:
    if name not in PROFILES:
        raise ConfigError(f"unknown profile {name!r}; choose from {', '.join(PROFILES)}")
    p = PROFILES[name]
    train_fields = {k: overrides.pop(k) for k in list(overrides) if k in SegmenterTrainConfig.__dataclass_fields__}
    p = replace(p, train=replace(p.train, **train_fields), **overrides)
    return p
