"""``datasetgan fid``: the Fréchet Inception Distance of a generator against a folder of real images."""

from __future__ import annotations

from pathlib import Path

import click

from . import Command


@click.command("fid", cls=Command)
@click.argument("source", type=click.Path(exists=True, path_type=Path))
@click.argument("data", type=click.Path(file_okay=False, path_type=str))
@click.option(
    "--n",
    "n_images",
    type=int,
    default=5000,
    show_default=True,
    help="Generated images (the papers use 50000; fewer bias FID upwards, so compare equal n).",
)
@click.option("--truncation", type=float, default=1.0, show_default=True, help="Truncation psi.")
@click.option("--seed", type=int, default=0, show_default=True, help="Seed of the generated latents.")
@click.option("--batch", type=int, default=32, show_default=True, help="Images per Inception batch.")
@click.option("--threads", type=int, default=None, help="CPU threads for PyTorch.")
@click.option(
    "--fast",
    is_flag=True,
    help="Compute the Fréchet distance from eigenvalues (~20 CPU-s; equal to pytorch-fid's to 1e-6, "
    "what training snapshots use) instead of pytorch-fid's calculate_frechet_distance (~95 CPU-s).",
)
@click.option("--json", "as_json", is_flag=True, help="Print a JSON object instead of a sentence.")
def command(source, data, n_images, truncation, seed, batch, threads, fast, as_json):
    """FID of a generator against the real images in DATA.

    SOURCE is a run folder (its generator.safetensors is used), a generator .safetensors file, or a
    training snapshot (RUN/training/snapshot-*.safetensors: its EMA generator, to score any snapshot
    kept on disk, e.g. with `train --keep 0`).
    DATA is loaded at the generator's resolution; its Inception statistics are cached per data set
    and resolution, so the second call only pays for the generated images.

    \b
    Example:
      datasetgan fid runs/acdc64 ../shared/data/acdc/train --n 2000
    """
    import json

    import torch

    from ..checkpoint import load_generator, load_meta
    from ..data import load_image_folder
    from ..fid import FIDEvaluator
    from ..runfolder import RunFolder
    from ..training import SNAPSHOT_KIND, snapshot_generator

    if threads:
        torch.set_num_threads(threads)
    if n_images < 2:
        raise click.UsageError("--n must be at least 2")
    path = RunFolder(source).generator if source.is_dir() else source
    if not path.is_file():
        raise click.ClickException(f"{path} does not exist; run `datasetgan train` first")
    if path.suffix != ".safetensors":
        raise click.ClickException(f"{path}: not a run folder, a generator or a training snapshot (.safetensors)")
    snapshot = load_meta(path).get("kind") == SNAPSHOT_KIND
    G = snapshot_generator(path)[0] if snapshot else load_generator(path)
    ds = load_image_folder(data, G.cfg.resolution, masks="ignore")
    if ds.channels != G.cfg.img_channels:
        raise click.ClickException(
            f"{data} has {ds.channels}-channel images, the generator makes {G.cfg.img_channels}-channel images"
        )
    score = FIDEvaluator(ds.images, n_images, seed=seed, batch=batch, reference=not fast)(G, truncation=truncation)
    if as_json:
        click.echo(
            json.dumps(
                {
                    "fid": score,
                    "generated": n_images,
                    "real": len(ds),
                    "generator": str(path),
                    "data": data,
                    "resolution": G.cfg.resolution,
                    "truncation": truncation,
                    "distance": "eigenvalues" if fast else "pytorch_fid",
                }
            )
        )
    else:
        click.echo(
            f"FID {score:.2f} ({n_images} generated vs {len(ds)} real images at {G.cfg.resolution}x{G.cfg.resolution})"
        )
