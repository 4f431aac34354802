"""``datasetgan demo``: the built-in demo (bundled phantom run, service, a few pairs) and phantom data."""

from __future__ import annotations

from pathlib import Path

import click

from . import Command


@click.command("demo", cls=Command)
@click.option(
    "--out",
    type=click.Path(file_okay=False, path_type=Path),
    default=Path("demo-output"),
    show_default=True,
    help="Folder for the pairs (and a working copy of the demo run).",
)
@click.option(
    "--run",
    "run_dir",
    type=click.Path(file_okay=False, path_type=Path),
    default=None,
    help="Run folder to demo instead of the bundled one (needs generator + interpreter).",
)
@click.option(
    "--port",
    type=click.IntRange(0, 65535),
    default=0,
    show_default=True,
    help="Port on 127.0.0.1 for the service; 0 picks a free one.",
)
@click.option(
    "--n",
    "n",
    type=click.IntRange(min=1),
    default=8,
    show_default=True,
    help="Pairs to request (with --make-data: slices to make).",
)
@click.option("--keep-serving", is_flag=True, help="Keep the service running until Ctrl+C.")
@click.option(
    "--make-data",
    type=click.Path(file_okay=False, path_type=Path),
    default=None,
    help="Instead of the demo: write N procedural cardiac phantom slices with masks to this folder.",
)
@click.option(
    "--resolution",
    type=click.IntRange(min=16),
    default=64,
    show_default=True,
    help="With --make-data: image size in pixels.",
)
@click.option(
    "--seed",
    type=click.IntRange(min=0),
    default=0,
    show_default=True,
    help="With --make-data: seed of the phantom (same seed, same bytes).",
)
def command(out, run_dir, port, n, keep_serving, make_data, resolution, seed):
    """Run the built-in demo, or make phantom cardiac MRI data.

    \b
    The demo serves the bundled demo run (a small generator + interpreter trained on the
    procedural phantom by demo/rebuild.sh) with `datasetgan serve` on 127.0.0.1, requests N
    image + mask pairs over HTTP, writes them to --out (images/, masks/, overlays/) and prints
    the annotation page's URL and curl examples of the API. Nothing leaves the machine.

    \b
    Examples:
      datasetgan demo                          # pairs in ./demo-output, then stop the service
      datasetgan demo --n 16 --keep-serving    # keep the API and annotation page up (Ctrl+C)
      datasetgan demo --make-data data/phantom --n 400 --resolution 64
    """
    if make_data is not None:
        from ..phantom import write_phantom_folder

        write_phantom_folder(make_data, n=n, resolution=resolution, seed=seed)
        click.echo(
            f"Wrote {n} phantom slices ({resolution}x{resolution}) with masks to {make_data}/ "
            f"(images/, masks/, labels.json)"
        )
        return
    if n > 256:
        raise click.UsageError(
            "--n: the demo streams at most 256 pairs; for more, use `datasetgan generate` "
            "or a job (POST /v1/models/{id}/jobs)"
        )
    from ..demo import run_demo

    try:
        run_demo(out=out, run_dir=run_dir, port=port, n=n, keep_serving=keep_serving, echo=click.echo)
    except KeyboardInterrupt:
        click.echo("\nInterrupted; the service has been stopped.", err=True)
        raise SystemExit(130) from None
