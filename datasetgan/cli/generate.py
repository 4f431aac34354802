"""``datasetgan generate RUN``: write image + mask pairs by seed."""
from __future__ import annotations

import contextlib

import click

from . import SEEDS, Command


@click.command(name="generate", cls=Command)
@click.argument("run", type=click.Path(file_okay=False, path_type=str))
@click.option("--n", "n", type=click.IntRange(1), help="Number of seeds (from --seed-start).")
@click.option("--seed-start", default=0, show_default=True, type=click.IntRange(0), help="First seed.")
@click.option("--seeds", "seed_list", type=SEEDS, default=None, help="Explicit seeds instead of --n, e.g. 1,5-9.")
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
@click.option("--prefix", default="shard", show_default=True, help="Shard file names: PREFIX-000000.tar, ...")
@click.option("--ray", "ray_address", default=None, is_flag=False, flag_value="auto",
              help="Make the shards on a Ray cluster (--format wds): `--ray` or `--ray auto` joins the cluster "
                   "of `ray start`, `--ray local` starts one on 127.0.0.1 for this command, or give its address.")
@click.option("--workers", default=None, type=click.IntRange(1),
              help="Ray workers, each holding the models once (default: one per CPU of the cluster, "
                   "one per GPU with --device cuda).")
@click.option("--device", default="cpu", show_default=True, help="torch device, e.g. cpu or cuda.")
@click.option("--threads", default=None, type=click.IntRange(1), help="CPU threads (default: torch's choice).")
def command(run, n, seed_start, seed_list, out, truncation, batch_size, fmt, drop_uncertain, shard_size, prefix,
            ray_address, workers, device, threads):
    """Generate N image + mask pairs from seeds S..S+N-1 (or --seeds) of RUN's generator and interpreter.

    Each pair is a pure function of the models, the seed and the truncation: the same command gives
    the same bytes. The folder format is a canonical data folder (images/, masks/, overlays/,
    uncertainty/, records/, labels.json, manifest.json); --format wds writes tar shards
    PREFIX-000000.tar, ... with the files {seed:08d}.image.png, .mask.png, .overlay.png,
    .uncertainty.png and .json, and a manifest listing every shard with its seeds and SHA-256.
    Shards are written atomically; rerunning the same command continues after the finished shards.
    With --ray the shards are made by a pool of Ray workers (pip install 'datasetgan[ray]'),
    byte-identical to a local run; OUT must be a path every worker sees.

    \b
    Examples:
      datasetgan generate runs/acdc64 --n 1000 --seed-start 0 --out runs/acdc64/generated/set1 \\
          --drop-uncertain 0.1
      datasetgan generate runs/acdc64 --seeds 1,5-9 --out runs/acdc64/generated/few
      datasetgan generate runs/acdc64 --n 1000000 --format wds --shard-size 1000 --ray auto --out /shared/set2
    """
    if (n is None) == (seed_list is None):
        raise click.UsageError("give either --n (with --seed-start) or --seeds")
    seeds = seed_list if seed_list is not None else range(seed_start, seed_start + n)
    if ray_address is not None and fmt != "wds":
        raise click.UsageError("--ray writes tar shards: add --format wds")

    from stylegan2_ops import tune_allocator

    tune_allocator()  # freed buffers kept for reuse: about 1.7x the pairs/s on the CPU (benchmarks/scaleout.py)

    import torch

    from ..factory import PairFactory, generate

    if threads:
        torch.set_num_threads(threads)
    factory = PairFactory(run, device="cpu" if ray_address else device)
    with contextlib.ExitStack() as stack:
        pool = None
        if ray_address is not None:
            from ..raygen import RayWorkers, local_cluster

            if ray_address == "local":
                ray_address = stack.enter_context(local_cluster())
            pool = RayWorkers(ray_address, run, device=device, workers=workers, threads=threads,
                              hashes=(factory.generator_sha256, factory.interpreter_sha256))
            stack.callback(pool.close)
        manifest = generate(factory, seeds, out, truncation=truncation, batch_size=batch_size, fmt=fmt,
                            drop_uncertain=drop_uncertain, shard_size=shard_size, prefix=prefix, progress=True,
                            workers=pool)
    click.echo(f"wrote {len(manifest['seeds_kept'])} pairs to {out} "
               f"(dropped {len(manifest['seeds_dropped'])} most uncertain)")
