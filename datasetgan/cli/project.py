"""``datasetgan project RUN IMAGES... --out DIR``: find the generator input that reproduces real images."""

from __future__ import annotations

from pathlib import Path

import click

from ..projector import PERCEPTUAL, ProjectorConfig
from . import Command

DEFAULTS = ProjectorConfig()


def projector_options(f):
    """The projector's options, shared by ``project`` and ``annotate --import-real``."""
    options = [
        click.option(
            "--steps",
            type=click.IntRange(1),
            default=DEFAULTS.steps,
            show_default=True,
            help="Optimisation steps per image.",
        ),
        click.option(
            "--perceptual",
            type=click.Choice(PERCEPTUAL),
            default=DEFAULTS.perceptual,
            show_default=True,
            help="Perceptual loss features: FID's Inception network, the run's own discriminator "
            "(from its newest training snapshot), or none (pixel loss only).",
        ),
        click.option(
            "--noise/--no-noise",
            "optimize_noise",
            default=DEFAULTS.optimize_noise,
            show_default=True,
            help="Also optimise the per-layer noise maps (else the generator's constant noise).",
        ),
        click.option(
            "--project-batch",
            "batch",
            type=click.IntRange(1),
            default=DEFAULTS.batch,
            show_default=True,
            help="Images optimised together.",
        ),
        click.option(
            "--project-seed",
            "seed",
            type=int,
            default=DEFAULTS.seed,
            show_default=True,
            help="Seed of the projector's random numbers (same seed, same result).",
        ),
        click.option(
            "--fit",
            type=click.Choice(["crop", "pad"]),
            default="crop",
            show_default=True,
            help="How non-square images become square (as in training).",
        ),
    ]
    for option in reversed(options):
        f = option(f)
    return f


def make_config(steps, perceptual, optimize_noise, batch, seed) -> ProjectorConfig:
    return ProjectorConfig(steps=steps, perceptual=perceptual, optimize_noise=optimize_noise, batch=batch, seed=seed)


def perceptual_network(cfg: ProjectorConfig, run: Path, device: str):
    """The perceptual feature network the options ask for (None: the projector makes Inception's)."""
    if cfg.perceptual != "discriminator":
        return None
    from ..projector import DiscriminatorFeatures, load_discriminator

    return DiscriminatorFeatures(load_discriminator(run, device))


@click.command(name="project", context_settings={"help_option_names": ["-h", "--help"]}, cls=Command)
@click.argument("run", type=click.Path(file_okay=False, path_type=Path))
@click.argument("images", nargs=-1, required=True, type=click.Path(exists=True, path_type=Path))
@click.option(
    "--out", required=True, type=click.Path(file_okay=False, path_type=Path), help="Output folder for the projections."
)
@projector_options
@click.option("--device", default="cpu", show_default=True, help="torch device, e.g. cpu or cuda.")
@click.option("--threads", default=None, type=click.IntRange(1), help="CPU threads (default: torch's choice).")
def command(run, images, out, steps, perceptual, optimize_noise, batch, seed, fit, device, threads):
    """Project real images into RUN's generator (GAN inversion into W+ and the noise maps).

    IMAGES are image files or data folders. Each image is made square and resized like training
    data, then the generator input that reproduces it is found by optimisation. Per image, OUT gets
    NAME.safetensors (w+ and noise maps) + NAME.json (generator hash, options, PSNR, SSIM), NAME.png
    (the reconstruction, rendered exactly from the stored tensors) and NAME.compare.png (original |
    reconstruction | 4x difference); OUT/projections.json lists every image's PSNR and SSIM. Run again
    after a kill, the command keeps the batches already stored with the same options and projects the
    rest: the result is the same as one uninterrupted run's.

    \b
    Example:
      datasetgan project runs/acdc64 data/val/images/case007.png --out runs/acdc64/projected
      datasetgan project runs/acdc64 data/val --out runs/acdc64/projected --steps 500 --no-noise
    """
    import torch

    from ..checkpoint import load_generator
    from ..projector import project_batches, read_images, stored_row, write_index, write_projection
    from ..runfolder import RunFolder

    if threads:
        torch.set_num_threads(threads)
    rf = RunFolder(run)
    if not rf.generator.is_file():
        raise click.ClickException(f"{rf.generator} does not exist; run `datasetgan train DATA --out {run}` first")
    cfg = make_config(steps, perceptual, optimize_noise, batch, seed)
    G = load_generator(rf.generator, device)
    names, arrays = read_images(images, G.cfg.img_channels, G.cfg.resolution, fit)
    out.mkdir(parents=True, exist_ok=True)
    rows = {n: row for n in names if (row := stored_row(G, n, out, cfg, fit)) is not None}
    done = [i for i in range(0, len(names), cfg.batch) if all(n in rows for n in names[i : i + cfg.batch])]
    if done:
        kept = sum(len(names[i : i + cfg.batch]) for i in done)
        click.echo(f"{kept} image(s) already projected in {out} with these options: kept")
    features = perceptual_network(cfg, run, device) if len(done) < -(-len(names) // cfg.batch) else None
    for start, batch in project_batches(G, arrays, cfg, features=features, progress=True, skip=done):
        for j, p in enumerate(batch, start):
            rows[names[j]] = write_projection(G, names[j], arrays[j], p, out, cfg, fit)
    summary = [rows[n] for n in names]
    write_index(G, out, cfg, fit, summary)  # last: a folder with projections.json is complete
    for row in summary:
        click.echo(f"{row['name']}: PSNR {row['psnr']:.2f} dB, SSIM {row['ssim']:.4f}")
    click.echo(f"wrote {len(summary)} projection(s) to {out}")
