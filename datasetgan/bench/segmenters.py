"""Segmentation networks for the benchmark: builders, save/load and prediction.

Architectures (never downloaded: ``weights=None, weights_backbone=None`` always):

    deeplabv3   torchvision DeepLabV3; backbone resnet101 (the seed's), resnet50 or mobilenet_v3_large
    fcn         torchvision FCN; backbone resnet101, resnet50, or mobilenet_v3_large
                (ResNets at output stride 8 as torchvision builds them; MobileNetV3 models are assembled
                from torchvision's classes at output stride 16 as torchvision's, or 8)
    unet        MONAI's UNet (residual units, batch norm), channel widths from the config

Every network takes C input channels (the first convolution is replaced when C != 3) and predicts
K classes. A segmenter file is ``NAME.safetensors`` + ``NAME.json`` written by
``datasetgan.checkpoint.save_tensors``; the JSON holds the :class:`SegmenterConfig` and the classes,
so :func:`load_segmenter` rebuilds the network without running any stored code.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from ..checkpoint import CheckpointError, load_tensors, save_tensors
from ..data import ClassInfo
from ..errors import ConfigError

ARCHITECTURES = ("deeplabv3", "fcn", "unet")
BACKBONES = ("resnet101", "resnet50", "mobilenet_v3_large")


@dataclass
class SegmenterConfig:
    arch: str = "deeplabv3"  # deeplabv3 | fcn | unet
    backbone: str = "resnet101"  # for deeplabv3 / fcn
    in_channels: int = 1
    num_classes: int = 2
    resolution: int = 256  # training resolution; predict() resizes other sizes to it
    aux_loss: bool = False  # torchvision's auxiliary FCN head (training only)
    output_stride: int = 16  # MobileNetV3 backbones: 16 (torchvision's) or 8
    unet_channels: tuple[int, ...] = (16, 32, 64, 128, 256)
    unet_res_units: int = 2

    def __post_init__(self):
        if self.arch not in ARCHITECTURES:
            raise ConfigError(f"unknown segmenter {self.arch!r}; choose from {', '.join(ARCHITECTURES)}")
        if self.arch != "unet" and self.backbone not in BACKBONES:
            raise ConfigError(f"unknown backbone {self.backbone!r}; choose from {', '.join(BACKBONES)}")
        if self.output_stride not in (8, 16):
            raise ConfigError(f"output stride must be 8 or 16, got {self.output_stride}")
        if self.in_channels < 1 or self.num_classes < 2:
            raise ConfigError("a segmenter needs at least 1 input channel and 2 classes")
        self.unet_channels = tuple(int(c) for c in self.unet_channels)
        if self.arch == "unet" and self.resolution % (2 ** (len(self.unet_channels) - 1)):
            raise ConfigError(
                f"U-Net with {len(self.unet_channels)} levels needs a resolution divisible "
                f"by {2 ** (len(self.unet_channels) - 1)}, got {self.resolution}"
            )

    @property
    def name(self) -> str:
        return "unet" if self.arch == "unet" else f"{self.arch}_{self.backbone}"

    def to_dict(self) -> dict:
        d = asdict(self)
        d["unet_channels"] = list(self.unet_channels)
        return d


def _replace_first_conv(model: nn.Module, in_channels: int) -> None:
    """Swap the first 3-channel convolution for one with ``in_channels`` inputs (same shape otherwise)."""
    if in_channels == 3:
        return
    for parent in model.modules():
        for name, child in parent.named_children():
            if isinstance(child, nn.Conv2d) and child.in_channels == 3:
                conv = nn.Conv2d(
                    in_channels,
                    child.out_channels,
                    child.kernel_size,
                    child.stride,
                    child.padding,
                    child.dilation,
                    child.groups,
                    child.bias is not None,
                )
                setattr(parent, name, conv)
                return
    raise RuntimeError("no 3-channel input convolution found")  # a torchvision change; should not happen


def _mobilenet_model(arch: str, num_classes: int, aux_loss: bool, output_stride: int) -> nn.Module:
    """DeepLabV3 or FCN on a dilated MobileNetV3-Large, assembled from torchvision's own classes the
    way torchvision builds its DeepLabV3-MobileNetV3 (output stride 16), or at output stride 8 (the
    last two stages dilated instead of strided): at 64x64 input, stride 16 leaves a 4x4 grid, too
    coarse for small structures. torchvision ships no FCN-MobileNet builder."""
    from torchvision.models._utils import IntermediateLayerGetter
    from torchvision.models.mobilenetv3 import MobileNetV3, _mobilenet_v3_conf
    from torchvision.models.segmentation.deeplabv3 import DeepLabHead, DeepLabV3
    from torchvision.models.segmentation.fcn import FCN, FCNHead

    if output_stride not in (8, 16):
        raise ConfigError(f"output stride must be 8 or 16, got {output_stride}")
    settings, last_channel = _mobilenet_v3_conf("mobilenet_v3_large", dilated=True)
    if output_stride == 8:
        strided = [i for i, c in enumerate(settings) if c.stride > 1]
        for i, c in enumerate(settings):  # the last two strided stages: stride 1, dilation 2 and 4
            if i >= strided[-2]:
                c.dilation = 4 if i >= strided[-1] else 2
    features = MobileNetV3(settings, last_channel).features
    stages = [0] + [i for i, b in enumerate(features) if getattr(b, "_is_cn", False)] + [len(features) - 1]
    out_pos, aux_pos = stages[-1], stages[-4]
    return_layers = {str(out_pos): "out"}
    if aux_loss:
        return_layers[str(aux_pos)] = "aux"
    backbone = IntermediateLayerGetter(features, return_layers=return_layers)
    aux = FCNHead(features[aux_pos].out_channels, num_classes) if aux_loss else None
    if arch == "fcn":
        return FCN(backbone, FCNHead(features[out_pos].out_channels, num_classes), aux)
    return DeepLabV3(backbone, DeepLabHead(features[out_pos].out_channels, num_classes), aux)


def build_network(cfg: SegmenterConfig) -> nn.Module:
    """The bare network for ``cfg`` (random initialisation)."""
    if cfg.arch == "unet":
        from monai.networks.nets import UNet

        return UNet(
            spatial_dims=2,
            in_channels=cfg.in_channels,
            out_channels=cfg.num_classes,
            channels=cfg.unet_channels,
            strides=(2,) * (len(cfg.unet_channels) - 1),
            num_res_units=cfg.unet_res_units,
            norm="batch",
        )
    from torchvision.models import segmentation as S

    if cfg.backbone == "mobilenet_v3_large":
        net = _mobilenet_model(cfg.arch, cfg.num_classes, cfg.aux_loss, cfg.output_stride)
    else:
        builder = getattr(S, f"{cfg.arch}_{cfg.backbone}")
        net = builder(weights=None, weights_backbone=None, num_classes=cfg.num_classes, aux_loss=cfg.aux_loss)
    _replace_first_conv(net, cfg.in_channels)
    return net


class Segmenter(nn.Module):
    """A network with its configuration and classes; ``forward`` returns {"out": logits, ["aux": ...]}."""

    def __init__(self, cfg: SegmenterConfig, classes: list[ClassInfo] | None = None):
        super().__init__()
        self.cfg = cfg
        self.classes = (
            list(classes) if classes else [ClassInfo(i, f"class_{i}", "#000000") for i in range(cfg.num_classes)]
        )
        if len(self.classes) != cfg.num_classes:
            raise ValueError(f"{len(self.classes)} classes given for a {cfg.num_classes}-class segmenter")
        self.net = build_network(cfg)
        self.sha256 = ""

    @property
    def resolution(self) -> int:
        return self.cfg.resolution

    @property
    def name(self) -> str:
        return self.cfg.name

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        out = self.net(x)
        return out if isinstance(out, dict) else {"out": out}

    @staticmethod
    def normalise(images: np.ndarray | torch.Tensor) -> torch.Tensor:
        """uint8 [N, C, H, W] -> float [-1, 1] (the range generated images come from)."""
        x = images if torch.is_tensor(images) else torch.from_numpy(np.array(images, dtype=np.uint8))
        return x.float() / 127.5 - 1.0

    @torch.no_grad()
    def logits(self, images, batch_size: int = 32) -> torch.Tensor:
        """Class scores [N, K, H, W] at the images' own size (resized to the training size and back)."""
        images = np.asarray(images)
        if images.ndim != 4 or images.shape[1] != self.cfg.in_channels:
            raise ValueError(f"expected uint8 images [N, {self.cfg.in_channels}, H, W], got shape {images.shape}")
        was_training = self.training
        self.eval()
        device = next(self.parameters()).device
        h, w = images.shape[2:]
        outs = []
        for i in range(0, len(images), batch_size):
            x = self.normalise(images[i : i + batch_size]).to(device)
            if (h, w) != (self.resolution, self.resolution):
                x = F.interpolate(x, size=(self.resolution,) * 2, mode="bilinear", align_corners=False)
            y = self(x)["out"]
            if y.shape[-2:] != (h, w):
                y = F.interpolate(y, size=(h, w), mode="bilinear", align_corners=False)
            outs.append(y.float().cpu())
        self.train(was_training)
        return torch.cat(outs) if outs else torch.zeros(0, self.cfg.num_classes, h, w)

    def predict(self, images, batch_size: int = 32) -> np.ndarray:
        """uint8 images [N, C, H, W] -> uint8 label maps [N, H, W]."""
        return self.logits(images, batch_size).argmax(1).to(torch.uint8).numpy()


def save_segmenter(path, model: Segmenter, extra: dict | None = None) -> str:
    meta = {
        "kind": "segmenter",
        "config": model.cfg.to_dict(),
        "classes": [c.__dict__ for c in model.classes],
        **(extra or {}),
    }
    model.sha256 = save_tensors(path, model.state_dict(), meta)
    return model.sha256


def load_segmenter(path, device="cpu") -> Segmenter:
    """Rebuild a segmenter saved by :func:`save_segmenter` (hash verified, nothing unpickled)."""
    tensors, meta = load_tensors(path, device)
    if meta.get("kind") != "segmenter":
        raise CheckpointError(f"{path}: holds a {meta.get('kind')!r}, not a segmenter")
    cfg = SegmenterConfig(**meta["config"])
    classes = [ClassInfo(int(c["id"]), str(c["name"]), str(c["color"])) for c in meta["classes"]]
    model = Segmenter(cfg, classes).to(device)
    missing, unexpected = model.load_state_dict(tensors, strict=False)
    if missing or unexpected:
        raise CheckpointError(
            f"{path}: weights do not match the configuration (missing {missing[:3]}, unexpected {unexpected[:3]})"
        )
    model.eval()
    model.sha256 = meta["sha256"]
    return model


def load_init_weights(model: Segmenter, path) -> list[str]:
    """Start from local weights (a torchvision-style state dict as .safetensors, or .pth/.pt read with
    ``weights_only=True``). Keys may be given with or without the ``net.`` prefix; tensors whose shape
    does not fit are skipped (e.g. a classifier with another class count); a 3-channel first
    convolution is averaged to the model's channel count. Returns the keys that were loaded."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path}: weights file not found")
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        state = load_file(str(path))
    else:
        state = torch.load(path, map_location="cpu", weights_only=True)
        state = state.get("state_dict", state.get("model", state)) if isinstance(state, dict) else state
    own = model.net.state_dict()
    loaded = {}
    for k, v in state.items():
        k = k[4:] if k.startswith("net.") else k
        if k not in own or not torch.is_tensor(v):
            continue
        if (
            v.shape != own[k].shape
            and v.ndim == 4
            and v.shape[1] == 3
            and own[k].shape[1] != 3
            and v.shape[0] == own[k].shape[0]
            and v.shape[2:] == own[k].shape[2:]
        ):
            v = v.mean(1, keepdim=True).expand_as(own[k]).clone()  # RGB filters -> C identical channels
        if v.shape == own[k].shape:
            loaded[k] = v
    if not loaded:
        raise ConfigError(f"{path}: no tensor in this file matches the {model.name} network")
    model.net.load_state_dict(loaded, strict=False)
    return sorted(loaded)
