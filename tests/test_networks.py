import pytest
import torch

from datasetgan.networks import Discriminator, DiscriminatorConfig, Generator, GeneratorConfig, count_parameters

SMALL = dict(channel_base=512, channel_max=32, z_dim=32, w_dim=32, mapping_layers=2)


@pytest.mark.parametrize("res", [32, 64, 128, 256])
@pytest.mark.parametrize("channels", [1, 3])
def test_output_shapes(res, channels):
    torch.manual_seed(0)
    G = Generator(GeneratorConfig(resolution=res, img_channels=channels, **SMALL))
    D = Discriminator(DiscriminatorConfig(resolution=res, img_channels=channels, channel_base=512, channel_max=32))
    img = G(torch.randn(2, 32))
    assert img.shape == (2, channels, res, res)
    assert torch.isfinite(img).all()
    logits = D(img)
    assert logits.shape == (2, 1)


def test_paper_config_taps_total_4992():
    G = Generator(GeneratorConfig(resolution=256, channel_base=16384, channel_max=512))
    taps = G.feature_taps()
    assert sum(t.channels for t in taps) == 4992
    assert taps[0].name == "b4.const" and taps[0].resolution == 4
    assert [t.resolution for t in taps][-2:] == [256, 256]
    assert len(taps) == 14  # const + 1 conv at 4x4, then 2 convs at each of 8..256
    assert count_parameters(G) > 20_000_000  # config F scale


def test_taps_match_layer_outputs_and_do_not_change_forward():
    torch.manual_seed(1)
    G = Generator(GeneratorConfig(resolution=32, **SMALL)).eval()
    z = torch.randn(2, 32)
    taps = {}
    with torch.no_grad():
        a = G(z, noise_mode="const", taps=taps)
        b = G(z, noise_mode="const")
    assert torch.equal(a, b)
    assert list(taps) == [t.name for t in G.feature_taps()]
    for t in G.feature_taps():
        assert taps[t.name].shape == (2, t.channels, t.resolution, t.resolution)


def test_truncation_zero_gives_average_w_image():
    torch.manual_seed(2)
    G = Generator(GeneratorConfig(resolution=32, **SMALL)).eval()
    G.mapping.w_avg.normal_()
    with torch.no_grad():
        imgs = G(torch.randn(3, 32), truncation_psi=0.0, noise_mode="const")
    assert torch.allclose(imgs[0], imgs[1], atol=1e-5) and torch.allclose(imgs[1], imgs[2], atol=1e-5)


def test_bad_configs_are_refused():
    with pytest.raises(ValueError, match="power of two"):
        GeneratorConfig(resolution=48)
    with pytest.raises(ValueError, match="img_channels"):
        GeneratorConfig(img_channels=2)


def test_discriminator_any_batch_size():
    D = Discriminator(DiscriminatorConfig(resolution=32, channel_base=512, channel_max=32))
    for n in (1, 3, 5, 8):
        assert D(torch.randn(n, 1, 32, 32)).shape == (n, 1)
