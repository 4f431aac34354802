"""Segmenter builders (any channel and class count), save/load round trip, local initial weights."""

import numpy as np
import pytest
import torch

from datasetgan.bench.profiles import SegmenterTrainConfig as TrainConfig
from datasetgan.bench.segmenters import Segmenter, SegmenterConfig, load_init_weights, load_segmenter, save_segmenter
from datasetgan.bench.trainer import train_segmenter
from datasetgan.checkpoint import CheckpointError, save_tensors

SMALL = [("deeplabv3", "mobilenet_v3_large"), ("fcn", "mobilenet_v3_large"), ("unet", "resnet101")]


def cfg(arch, backbone, c=1, k=3, res=32, **kw):
    return SegmenterConfig(
        arch=arch, backbone=backbone, in_channels=c, num_classes=k, resolution=res, unet_channels=(8, 16, 32), **kw
    )


@pytest.fixture(autouse=True)
def _threads():
    torch.set_num_threads(1)


@pytest.mark.parametrize("arch,backbone", SMALL)
@pytest.mark.parametrize("c,k", [(1, 3), (3, 5)])
def test_shapes_any_channels_and_classes(arch, backbone, c, k):
    torch.manual_seed(0)
    m = Segmenter(cfg(arch, backbone, c, k))
    out = m(torch.zeros(2, c, 32, 32))["out"]
    assert out.shape == (2, k, 32, 32)
    imgs = np.random.default_rng(0).integers(0, 256, (3, c, 48, 48), dtype=np.uint8)
    pred = m.predict(imgs)  # another size: resized to 32 and back
    assert pred.shape == (3, 48, 48) and pred.dtype == np.uint8 and pred.max() < k


def test_resnet_backbone_with_aux_head_one_channel():
    m = Segmenter(SegmenterConfig("deeplabv3", "resnet50", 1, 2, 32, aux_loss=True))
    m.train()
    out = m(torch.zeros(2, 1, 32, 32))
    assert set(out) == {"out", "aux"} and out["aux"].shape == (2, 2, 32, 32)
    assert m.predict(np.zeros((1, 1, 32, 32), np.uint8)).shape == (1, 32, 32)  # eval with batch 1


def test_bad_config():
    with pytest.raises(ValueError):
        SegmenterConfig(arch="segformer")
    with pytest.raises(ValueError):
        SegmenterConfig(arch="fcn", backbone="vgg")
    with pytest.raises(ValueError):
        SegmenterConfig(arch="unet", resolution=20, unet_channels=(8, 16, 32, 64))


@pytest.mark.parametrize("arch,backbone", SMALL)
def test_save_load_round_trip(tmp_path, arch, backbone):
    torch.manual_seed(1)
    rng = np.random.default_rng(1)
    images = rng.integers(0, 256, (6, 1, 32, 32), dtype=np.uint8)
    masks = (images[:, 0] > 128).astype(np.uint8) + (images[:, 0] > 200)
    m = Segmenter(cfg(arch, backbone))
    train_segmenter(m, images, masks, TrainConfig(epochs=1, batch_size=3), progress=False)
    path = tmp_path / "seg.safetensors"
    sha = save_segmenter(path, m)
    loaded = load_segmenter(path)
    assert loaded.sha256 == sha and loaded.cfg == m.cfg and loaded.classes == m.classes
    assert torch.equal(loaded.logits(images), m.logits(images))
    assert (loaded.predict(images) == m.predict(images)).all()


def test_load_refuses_other_kinds_and_tampering(tmp_path):
    p = tmp_path / "x.safetensors"
    save_tensors(p, {"a": torch.zeros(1)}, {"kind": "generator"})
    with pytest.raises(CheckpointError, match="not a segmenter"):
        load_segmenter(p)
    m = Segmenter(cfg("unet", "resnet101"))
    q = tmp_path / "u.safetensors"
    save_segmenter(q, m)
    data = bytearray(q.read_bytes())
    data[-1] ^= 1
    q.write_bytes(bytes(data))
    with pytest.raises(CheckpointError, match="SHA-256"):
        load_segmenter(q)


def test_init_weights_from_rgb_state_dict(tmp_path):
    from safetensors.torch import save_file

    rgb = Segmenter(cfg("fcn", "mobilenet_v3_large", c=3, k=4))
    path = tmp_path / "rgb.safetensors"
    save_file({k: v.contiguous() for k, v in rgb.net.state_dict().items()}, str(path))
    gray = Segmenter(cfg("fcn", "mobilenet_v3_large", c=1, k=4))
    loaded = load_init_weights(gray, path)
    first = "backbone.0.0.weight"
    assert first in loaded
    assert torch.allclose(gray.net.state_dict()[first], rgb.net.state_dict()[first].mean(1, keepdim=True))
    key = "classifier.4.weight"
    assert torch.equal(gray.net.state_dict()[key], rgb.net.state_dict()[key])
    other = Segmenter(cfg("unet", "resnet101"))
    with pytest.raises(ValueError, match="no tensor"):
        load_init_weights(other, path)


def test_profiles_and_model_specs():
    from datasetgan.bench.profiles import get_profile
    from datasetgan.bench.runner import parse_models

    paper = get_profile("paper")
    (dl,) = parse_models(list(paper.models), paper, 1, 4)
    assert (dl.arch, dl.backbone, dl.resolution, dl.aux_loss) == ("deeplabv3", "resnet101", 256, True)
    assert paper.folds == 5 and paper.hybrid_real == 30 and 1500 in paper.synthetic_sizes
    cpu = get_profile("cpu", resolution=32, epochs=2)
    cfgs = parse_models(["deeplabv3", "fcn:resnet50", "unet"], cpu, 3, 7)
    assert [c.name for c in cfgs] == ["deeplabv3_mobilenet_v3_large", "fcn_resnet50", "unet"]
    assert all(c.resolution == 32 and c.in_channels == 3 and c.num_classes == 7 for c in cfgs)
    assert cpu.train.epochs == 2 and not cfgs[2].aux_loss
    with pytest.raises(ValueError):
        parse_models(["unet", "unet"], cpu, 1, 2)
    with pytest.raises(ValueError):
        get_profile("gpu")


@pytest.mark.parametrize("arch", ["deeplabv3", "fcn"])
def test_mobilenet_output_stride(arch):
    grids = {}
    for os_ in (16, 8):
        m = Segmenter(SegmenterConfig(arch, "mobilenet_v3_large", 1, 3, 64, output_stride=os_)).eval()
        with torch.no_grad():
            grids[os_] = m.net.backbone(torch.zeros(1, 1, 64, 64))["out"].shape[-1]
            assert m(torch.zeros(1, 1, 64, 64))["out"].shape == (1, 3, 64, 64)
    assert grids == {16: 4, 8: 8}
    with pytest.raises(ValueError):
        SegmenterConfig(arch, "mobilenet_v3_large", output_stride=4)


def test_mobilenet_deeplab_matches_torchvision_layout():
    from torchvision.models.segmentation import deeplabv3_mobilenet_v3_large

    ref = deeplabv3_mobilenet_v3_large(weights=None, weights_backbone=None, num_classes=4, aux_loss=True)
    mine = Segmenter(SegmenterConfig("deeplabv3", "mobilenet_v3_large", 3, 4, 64, aux_loss=True))
    assert {k: v.shape for k, v in ref.state_dict().items()} == {k: v.shape for k, v in mine.net.state_dict().items()}
