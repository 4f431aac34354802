"""The projector (GAN inversion): a generated image is recovered, a stored projection renders exactly
and repeatably, and bad input is refused with a message naming the file."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from click.testing import CliRunner
from PIL import Image

from datasetgan.checkpoint import load_generator, save_generator
from datasetgan.cli import main
from datasetgan.demo import bundled_run
from datasetgan.interpreter import load_interpreter
from datasetgan.networks import Discriminator, DiscriminatorConfig, Generator, GeneratorConfig
from datasetgan.projector import (
    DiscriminatorFeatures,
    ProjectionError,
    ProjectorConfig,
    load_discriminator,
    load_projection,
    noise_regularization,
    project,
    quality,
    read_images,
    reconstruct,
    save_projection,
)
from datasetgan.render import render_one, to_uint8
from datasetgan.runfolder import RunFolder

TINY = dict(z_dim=32, w_dim=32, mapping_layers=2, channel_base=256, channel_max=32)
PIXEL_ONLY = dict(perceptual="none")


pytestmark = pytest.mark.usefixtures("one_thread")  # conftest.py: tiny tensors, one thread


def tiny_generator(resolution=16, channels=1, seed=0):
    torch.manual_seed(seed)
    G = Generator(GeneratorConfig(resolution=resolution, img_channels=channels, **TINY))
    with torch.no_grad():
        for name, p in G.named_parameters():
            if name.endswith("noise_strength"):
                p.fill_(0.1)
    G.eval().requires_grad_(False)
    G.sha256 = f"test-{resolution}-{channels}"
    return G


def seed_images(G, seeds, truncation=0.7) -> np.ndarray:
    """uint8 [N, C, R, R] renderings of seeds (truncated, so they lie well inside the generator's range)."""
    return np.stack([to_uint8(render_one(G, s, truncation))[0].transpose(2, 0, 1) for s in seeds])


def mean_psnr(G, images, projections) -> float:
    return float(
        np.mean([quality(img.transpose(1, 2, 0), reconstruct(G, p))["psnr"] for img, p in zip(images, projections)])
    )


@pytest.mark.parametrize("resolution,channels", [(16, 1), (16, 3), (32, 1)])
def test_generated_images_are_recovered(resolution, channels):
    G = tiny_generator(resolution, channels)
    images = seed_images(G, [3, 4])
    start = mean_psnr(G, images, project(G, images, ProjectorConfig(steps=1, lr=1e-9, **PIXEL_ONLY)))
    projections = project(G, images, ProjectorConfig(steps=300, **PIXEL_ONLY))
    psnr = mean_psnr(G, images, projections)
    # 37, 28 and 40 dB here; the mean w (where it starts) gives 11, 13 and 9 dB
    assert psnr > 27 and psnr > start + 12, (start, psnr)
    assert projections[0].ws.shape == (G.num_ws, G.cfg.w_dim)
    assert set(projections[0].noise) == set(G.synthesis.noise_layers())


def test_projection_recovers_the_interpreter_mask():
    """A rendered seed of the bundled demo run (a trained generator and interpreter), projected, gives
    the interpreter the features of the seed: the same mask."""
    run = RunFolder(bundled_run())
    G = load_generator(run.generator)
    interp = load_interpreter(run.interpreter)
    seeds = [3, 4]
    images = seed_images(G, seeds, truncation=1.0)
    start = project(G, images, ProjectorConfig(steps=1, lr=1e-9, **PIXEL_ONLY))  # the mean w
    projections = project(G, images, ProjectorConfig(steps=300, **PIXEL_ONLY))
    assert mean_psnr(G, images, projections) > 35  # 41 dB here
    for seed, p, p0 in zip(seeds, projections, start):
        masks = [
            interp.predict(taps).mask[0].numpy()
            for taps in (
                render_one(G, seed, with_taps=True)[1],
                reconstruct(G, p, with_taps=True)[1],
                reconstruct(G, p0, with_taps=True)[1],
            )
        ]
        agree, agree_at_start = (float((masks[0] == m).mean()) for m in masks[1:])
        # 0.99 here; the mean w already gives 0.95 (phantoms are mostly background): errors must shrink 3x
        assert agree > 0.95 and 1 - agree < (1 - agree_at_start) / 3, (agree, agree_at_start)


def test_stored_projection_renders_exactly_and_repeatably(tmp_path):
    G = tiny_generator()
    path = tmp_path / "g.safetensors"
    save_generator(path, G)
    G = load_generator(path)
    images = seed_images(G, [5, 6])
    cfg = ProjectorConfig(steps=20, **PIXEL_ONLY)
    first = project(G, images, cfg)
    again = project(G, images, cfg)
    for a, b in zip(first, again):  # same seed, same result
        assert torch.equal(a.ws, b.ws) and all(torch.equal(a.noise[k], b.noise[k]) for k in a.noise)
    save_projection(tmp_path / "p.safetensors", first[0], G.sha256, {"name": "x"})
    loaded, meta = load_projection(tmp_path / "p.safetensors", G)
    assert meta["generator_sha256"] == G.sha256
    expected = G.synthesis(first[0].ws[None], noise={k: v[None, None] for k, v in first[0].noise.items()})
    one, two = reconstruct(G, loaded), reconstruct(G, loaded)
    assert np.array_equal(one, two) and np.array_equal(one, to_uint8(expected)[0])
    # the noise maps are part of the result: other noise renders another image
    other = type(loaded)(loaded.ws, {k: torch.zeros_like(v) for k, v in loaded.noise.items()})
    assert not np.array_equal(reconstruct(G, other), one)
    with pytest.raises(ProjectionError, match="projected with generator"):
        load_projection(tmp_path / "p.safetensors", tiny_generator(seed=1))


def test_noise_optimisation_and_perceptual_losses_run():
    G = tiny_generator()
    images = seed_images(G, [1])
    fixed = project(G, images, ProjectorConfig(steps=10, optimize_noise=False, **PIXEL_ONLY))[0]
    for name, layer in G.synthesis.noise_layers().items():  # not optimised: the generator's own noise
        assert torch.equal(fixed.noise[name], layer.noise_const)
    moved = project(G, images, ProjectorConfig(steps=10, **PIXEL_ONLY))[0]
    assert any(not torch.equal(moved.noise[k], fixed.noise[k]) for k in moved.noise)
    for n in moved.noise.values():  # renormalised after every step
        assert abs(float(n.mean())) < 1e-4 and abs(float(n.std(unbiased=False)) - 1) < 1e-3
    D = Discriminator(DiscriminatorConfig(resolution=16, img_channels=1, channel_base=256, channel_max=32))
    cfg = ProjectorConfig(steps=30, perceptual="discriminator")
    with_d = project(G, images, cfg, features=DiscriminatorFeatures(D))
    assert mean_psnr(G, images, with_d) > 20
    with_inception = project(G, images, ProjectorConfig(steps=30, perceptual="inception"))
    assert mean_psnr(G, images, with_inception) > 20


@pytest.mark.parametrize("resolution,channels", [(64, 3), (256, 1)])
def test_larger_preset_resolutions_run_with_the_perceptual_loss(resolution, channels):
    """cpu-small's 64 and paper256's 256 (16 and 32 are above): shapes and the Inception path hold."""
    G = tiny_generator(resolution, channels)
    images = seed_images(G, [1, 2])
    projections = project(G, images, ProjectorConfig(steps=3, batch=2))
    recon = reconstruct(G, projections[1])
    assert recon.shape == (resolution, resolution, channels) and recon.dtype == np.uint8
    assert {k: tuple(v.shape) for k, v in projections[1].noise.items()} == {
        k: (layer.resolution, layer.resolution) for k, layer in G.synthesis.noise_layers().items()
    }


def test_noise_regularization_sees_spatial_structure():
    g = torch.Generator().manual_seed(0)
    white = torch.randn(1, 1, 32, 32, generator=g)
    smooth = torch.nn.functional.interpolate(torch.randn(1, 1, 8, 8, generator=g), size=32, mode="bilinear")
    smooth = (smooth - smooth.mean()) / smooth.std()
    assert float(noise_regularization([smooth])) > 50 * float(noise_regularization([white]))


def write_png(path, array):
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(array).save(path)


def test_read_images_refuses_bad_files(tmp_path):
    write_png(tmp_path / "gray.png", np.zeros((20, 24), np.uint8))
    write_png(tmp_path / "rgb.png", np.zeros((20, 24, 3), np.uint8))
    (tmp_path / "broken.png").write_bytes(b"\x89PNG not really")
    names, arrays = read_images([tmp_path / "gray.png"], 1, 16)
    assert names == ["gray"] and arrays.shape == (1, 1, 16, 16)
    with pytest.raises(ProjectionError, match="rgb.png: has 3 channel"):
        read_images([tmp_path / "gray.png", tmp_path / "rgb.png"], 1, 16)
    with pytest.raises(ProjectionError, match="broken.png"):
        read_images([tmp_path / "broken.png"], 1, 16)
    write_png(tmp_path / "sub" / "gray.png", np.zeros((8, 8), np.uint8))
    with pytest.raises(ProjectionError, match="same name"):
        read_images([tmp_path / "gray.png", tmp_path / "sub" / "gray.png"], 1, 16)


def test_project_command(tmp_path):
    G = tiny_generator()
    run = RunFolder(tmp_path / "run")
    save_generator(run.generator, G)
    G = load_generator(run.generator)
    images = seed_images(G, [2, 3])
    for seed, img in zip((2, 3), images):
        write_png(tmp_path / "real" / "images" / f"s{seed}.png", img[0])
    out = tmp_path / "out"
    result = CliRunner().invoke(
        main,
        [
            "project",
            str(run.root),
            str(tmp_path / "real"),
            "--out",
            str(out),
            "--steps",
            "60",
            "--perceptual",
            "none",
            "--threads",
            "1",
        ],
    )
    assert result.exit_code == 0, result.output
    summary = json.loads((out / "projections.json").read_text())
    assert [r["name"] for r in summary["images"]] == ["s2", "s3"] and summary["generator_sha256"] == G.sha256
    for row, img in zip(summary["images"], images):
        p, meta = load_projection(out / f"{row['name']}.safetensors", G)
        recon = reconstruct(G, p)
        assert np.array_equal(np.asarray(Image.open(out / f"{row['name']}.png")), recon[..., 0])
        assert meta["psnr"] == row["psnr"] == quality(img.transpose(1, 2, 0), recon)["psnr"] > 15
        compare = np.asarray(Image.open(out / f"{row['name']}.compare.png"))
        assert compare.shape[:2] == (16, 3 * 16 + 2)
    write_png(tmp_path / "rgb" / "c.png", np.zeros((16, 16, 3), np.uint8))
    bad = CliRunner().invoke(
        main,
        ["project", str(run.root), str(tmp_path / "rgb" / "c.png"), "--out", str(tmp_path / "out2"), "--steps", "2"],
    )
    assert bad.exit_code == 1 and "c.png: has 3 channel(s), the generator makes 1" in bad.output
    assert not (tmp_path / "out2").exists()


def test_project_command_resumes_after_a_kill(tmp_path):
    """Run again after a kill, `project` keeps the batches stored with the same options and projects the
    rest, with the result of one uninterrupted run (each batch has random numbers of its own)."""
    G = tiny_generator()
    run = RunFolder(tmp_path / "run")
    save_generator(run.generator, G)
    G = load_generator(run.generator)
    for seed, img in zip((2, 3, 4), seed_images(G, [2, 3, 4])):
        write_png(tmp_path / "real" / "images" / f"s{seed}.png", img[0])

    def project_into(out, *extra):
        args = ["project", run.root, tmp_path / "real", "--out", out, "--steps", 8, "--perceptual", "none", *extra]
        result = CliRunner().invoke(main, [str(a) for a in [*args, "--project-batch", 1, "--threads", 1]])
        assert result.exit_code == 0, result.output
        return result.output

    assert "already projected" not in project_into(tmp_path / "whole")
    out = tmp_path / "killed"
    project_into(out)
    for name in ("s3.safetensors", "s3.json", "projections.json"):  # killed while writing s3
        (out / name).unlink()
    kept = {f: (out / f).stat().st_mtime_ns for f in ("s2.safetensors", "s4.safetensors")}
    assert "2 image(s) already projected" in project_into(out)
    assert {f: (out / f).stat().st_mtime_ns for f in kept} == kept
    for name in ("s2", "s3", "s4"):
        a, b = (load_projection(d / f"{name}.safetensors", G)[0] for d in (tmp_path / "whole", out))
        assert torch.equal(a.ws, b.ws) and all(torch.equal(a.noise[k], b.noise[k]) for k in a.noise), name
    index = json.loads((out / "projections.json").read_text())
    assert index == json.loads((tmp_path / "whole" / "projections.json").read_text())
    assert "already projected" not in project_into(out, "--project-seed", 1)  # other options: all again


def test_discriminator_features_come_from_the_runs_newest_snapshot(tmp_path):
    from datasetgan.presets import make_config
    from datasetgan.training import Trainer, save_snapshot

    run = RunFolder(tmp_path / "run")
    cfg = make_config("cpu-tiny", channel_base=128, channel_max=16, mapping_layers=1, batch=4, resolution=16)
    trainer = Trainer(cfg, np.zeros((4, 1, 16, 16), np.uint8))
    save_snapshot(trainer, run.training)
    save_generator(run.generator, trainer.G_ema)
    D = load_discriminator(run.root)
    for (name, a), b in zip(trainer.D.state_dict().items(), D.state_dict().values()):
        assert torch.equal(a, b), name
    G = load_generator(run.generator)
    write_png(tmp_path / "real" / "a.png", seed_images(G, [1])[0, 0])
    args = ["project", str(run.root), str(tmp_path / "real"), "--steps", "3", "--perceptual", "discriminator"]
    result = CliRunner().invoke(main, args + ["--out", str(tmp_path / "out")])
    assert result.exit_code == 0, result.output
    assert json.loads((tmp_path / "out" / "a.json").read_text())["config"]["perceptual"] == "discriminator"
    # a run without training snapshots (like the bundled demo run) has no discriminator: one line says so
    run.training.joinpath("latest.json").unlink()
    result = CliRunner().invoke(main, args + ["--out", str(tmp_path / "out2")])
    assert result.exit_code == 1 and "no training snapshot, so no discriminator" in result.output
    assert len(result.output.strip().splitlines()) == 1
