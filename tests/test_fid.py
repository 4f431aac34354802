"""FID: Inception features, the Fréchet distance, cached real statistics."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from datasetgan import fid
from datasetgan.networks import Generator, GeneratorConfig


@pytest.fixture(scope="module")
def inception():
    torch.set_num_threads(1)
    return fid.load_inception()


def smooth_set(n=24, size=32, seed=0) -> np.ndarray:
    """Images with structure (blurred blobs), uint8 [n, 1, size, size]."""
    g = torch.Generator().manual_seed(seed)
    x = torch.rand(n, 1, size // 4, size // 4, generator=g)
    x = torch.nn.functional.interpolate(x, size=(size, size), mode="bicubic", align_corners=False)
    return (x.clamp(0, 1) * 255).round().to(torch.uint8).numpy()


def test_inception_gives_2048_features_and_treats_gray_as_rgb(inception):
    imgs = smooth_set(n=4)
    f1 = fid.inception_features(inception, imgs)
    f3 = fid.inception_features(inception, np.repeat(imgs, 3, axis=1))
    assert f1.shape == (4, 2048) and np.isfinite(f1).all()
    np.testing.assert_allclose(f1, f3, rtol=1e-5, atol=1e-5)
    assert np.abs(f1[0] - f1[1]).max() > 1e-3  # different images, different features


def test_fid_of_a_set_with_itself_is_zero_and_grows_with_noise(inception):
    imgs = smooth_set(n=12)
    feats = fid.inception_features(inception, imgs)
    mu, sigma = fid.feature_stats(feats)
    assert abs(fid.frechet_distance(mu, sigma, mu, sigma)) < 1e-2
    g = torch.Generator().manual_seed(1)
    scores = []
    for level in (16, 64):
        noisy = torch.from_numpy(imgs).float() + torch.randn(imgs.shape, generator=g) * level
        noisy = noisy.clamp(0, 255).round().to(torch.uint8).numpy()
        scores.append(fid.frechet_distance(mu, sigma, *fid.feature_stats(fid.inception_features(inception, noisy))))
    assert 0 < scores[0] < scores[1], scores


@pytest.mark.parametrize("reference", [False, True])
def test_frechet_distance_matches_closed_form_for_diagonal_covariances(reference):
    rng = np.random.default_rng(0)
    mu1, mu2 = rng.normal(size=5), rng.normal(size=5)
    s1, s2 = rng.uniform(0.5, 2, 5), rng.uniform(0.5, 2, 5)
    expected = np.sum((mu1 - mu2) ** 2) + np.sum(s1 + s2 - 2 * np.sqrt(s1 * s2))
    got = fid.frechet_distance(mu1, np.diag(s1), mu2, np.diag(s2), reference=reference)
    assert got == pytest.approx(expected, rel=1e-6)


@pytest.mark.parametrize("n", [20, 600])  # fewer samples than dimensions (singular covariances), and more
def test_fast_frechet_distance_equals_pytorch_fid(n):
    rng = np.random.default_rng(n)
    a = rng.normal(size=(n, 256)) @ rng.normal(size=(256, 256)) * 0.1
    b = rng.normal(size=(n, 256)) * 1.3 + 0.2
    sa, sb = fid.feature_stats(a), fid.feature_stats(b)
    ref = fid.frechet_distance(*sa, *sb, reference=True)
    assert fid.frechet_distance(*sa, *sb) == pytest.approx(ref, rel=1e-6)


def test_real_stats_are_cached_without_pickles(inception, tmp_path):
    imgs = smooth_set(n=6)
    mu, sigma = fid.real_stats(inception, imgs, cache_dir=tmp_path)
    key = fid.images_key(imgs)
    files = sorted(p.name for p in tmp_path.iterdir() if not p.name.endswith(".lock"))
    assert files == [f"{key}.json", f"{key}.mu.npy", f"{key}.sigma.npy"]
    assert json.loads((tmp_path / f"{key}.json").read_text())["images"] == 6
    np.testing.assert_array_equal(np.load(tmp_path / f"{key}.mu.npy", allow_pickle=False), mu)
    # The second call reads the cache: prove it by planting different numbers there.
    np.save(tmp_path / f"{key}.mu.npy", mu + 1, allow_pickle=False)
    mu2, _ = fid.real_stats(inception, imgs, cache_dir=tmp_path)
    np.testing.assert_array_equal(mu2, mu + 1)
    # Another resolution (or content) is another entry.
    assert fid.images_key(smooth_set(n=6, size=16)) != key


def test_evaluator_scores_a_generator(inception, tmp_path):
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        G = Generator(
            GeneratorConfig(resolution=16, z_dim=16, w_dim=16, mapping_layers=1, channel_base=64, channel_max=16)
        ).eval()
    ev = fid.FIDEvaluator(smooth_set(n=8, size=16), n_generated=8, cache_dir=tmp_path, batch=8, model=inception)
    a = ev(G)
    assert np.isfinite(a) and a > 0
    # The same latents every time, so scores of successive snapshots are comparable.
    np.testing.assert_array_equal(fid.generated_images(G, 3, seed=0), fid.generated_images(G, 3, seed=0))


def test_rejects_wrong_input(inception):
    with pytest.raises(fid.FIDError, match="uint8"):
        fid.inception_features(inception, np.zeros((2, 1, 8, 8), np.float32))


def test_fid_command(tmp_path, monkeypatch, inception):
    from click.testing import CliRunner
    from PIL import Image

    from datasetgan.checkpoint import save_generator
    from datasetgan.cli import main

    monkeypatch.setenv("DATASETGAN_CACHE", str(tmp_path / "cache"))
    data = tmp_path / "data"
    data.mkdir()
    for i, img in enumerate(smooth_set(n=4, size=16)):
        Image.fromarray(img[0]).save(data / f"{i}.png")
    run = tmp_path / "run"
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        G = Generator(
            GeneratorConfig(resolution=16, z_dim=16, w_dim=16, mapping_layers=1, channel_base=64, channel_max=16)
        )
    save_generator(run / "generator.safetensors", G)
    res = CliRunner().invoke(main, ["fid", str(run), str(data), "--n", "4", "--json"])
    assert res.exit_code == 0, res.output
    out = json.loads(res.output.strip().splitlines()[-1])
    assert out["generated"] == 4 and out["real"] == 4 and out["fid"] > 0 and out["distance"] == "pytorch_fid"
    res = CliRunner().invoke(main, ["fid", str(run), str(data), "--n", "4", "--json", "--fast"])
    fast = json.loads(res.output.strip().splitlines()[-1])
    assert fast["distance"] == "eigenvalues" and fast["fid"] == pytest.approx(out["fid"], rel=1e-6, abs=1e-6)
    res = CliRunner().invoke(main, ["fid", str(tmp_path / "data"), str(data)])  # a folder without a generator
    assert res.exit_code != 0 and "run `datasetgan train` first" in res.output and "Traceback" not in res.output
    res = CliRunner().invoke(main, ["fid", str(data / "0.png"), str(data)])  # an image, not weights
    assert res.exit_code != 0 and "0.png: not a run folder, a generator or a training snapshot" in res.output
