"""``datasetgan generate RUN``: write image + mask pairs by seed."""
from __future__ import annotations

import click

from . import Command


@click.command(name="generate", cls=Command)
@click.argument("run", type=click.Path(file_okay=False, path_type=str))
@click.option("--n", "n", required=True, type=click.IntRange(1), help="Number of seeds.")
@click.option("--seed-start", default=0, show_default=True, type=click.IntRange(0), help="First seed.")
@click.option("--out", required=True, type=click.Path(file_okay=False, path_type=str),
              help="Output folder (new or empty).")
@click.option("--truncation", default=1.0, show_default=True, type=click.FloatRange(0, 2),
              help="Truncation psi (1 = none).")
@click.option("--batch-size", default=8, show_default=True, type=click.IntRange(1), help="Seeds per batch.")
@click.option("--format", "fmt", default="folder", show_default=True, type=click.Choice(["folder", "wds"]),
              help="A data folder, or WebDataset tar shards.")
@click.option("--drop-uncertain", default=0.0, show_default=True, type=click.FloatRange(0, 1),
              help="Drop this fraction of the pairs with the highest uncertainty score.")
@click.option("--shard-size", default=1000, show_default=True, type=click.IntRange(1), help="Pairs per tar shard.")
@click.option("--device", default="cpu", show_default=True, help="torch device, e.g. cpu or cuda.")
@click.option("--threads", default=None, type=click.IntRange(1), help="CPU threads (default: torch's choice).")
def command(run, n, seed_start, out, truncation, batch_size, fmt, drop_uncertain, shard_size, device, threads):
    """Generate N image + mask pairs from seeds S..S+N-1 of RUN's generator and interpreter.

    Each pair is a pure function of the models, the seed and the truncation: the same command gives
    the same bytes. The folder format is a canonical data folder (images/, masks/, overlays/,
    uncertainty/, records/, labels.json, manifest.json); --format wds writes tar shards with the
    files {seed:08d}.image.png, .mask.png, .overlay.png, .uncertainty.png and .json.

    \b
    Example:
      datasetgan generate runs/acdc64 --n 1000 --seed-start 0 --out runs/acdc64/generated/set1 \\
          --drop-uncertain 0.1
    """
    import torch

    from ..factory import PairFactory, generate

    if threads:
        torch.set_num_threads(threads)
    factory = PairFactory(run, device=device)
    manifest = generate(factory, range(seed_start, seed_start + n), out, truncation=truncation,
                        batch_size=batch_size, fmt=fmt, drop_uncertain=drop_uncertain, shard_size=shard_size,
                        progress=True)
    click.echo(f"wrote {len(manifest['seeds_kept'])} pairs to {out} "
               f"(dropped {len(manifest['seeds_dropped'])} most uncertain)")
