"""``datasetgan annotate``: render seed images into the run's annotation set and serve the page.

The work is done by :mod:`datasetgan.annotation_sources`; this command parses options and calls it."""

from __future__ import annotations

import socket
from pathlib import Path

import click

from ..annotation_sources import (
    diverse_seeds,
    import_masks,
    import_real,
    pre_annotate_with_interpreter,
    pre_annotate_with_model,
    resolve_classes,
)
from ..annotations import AnnotationSet, item_id, render_items
from ..atomic import remove_stale_temps
from ..runfolder import RunFolder
from ..seeds import random_seeds
from . import SEEDS, Command
from .project import make_config, perceptual_network, projector_options


def check_port(host: str, port: int) -> int:
    """The port to serve on (a free one if 0); a clear error if it is taken."""
    try:
        with socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET) as s:
            s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            s.bind((host, port))
            return s.getsockname()[1]
    except OSError as e:
        raise click.ClickException(f"cannot serve on {host}:{port} ({e.strerror}); choose another --port") from None


def run_generator(rf: RunFolder, device: str):
    if not rf.generator.is_file():
        raise click.ClickException(f"{rf.generator} does not exist; run `datasetgan train DATA --out {rf.root}` first")
    from ..checkpoint import load_generator

    return load_generator(rf.generator, device)


@click.command(context_settings={"help_option_names": ["-h", "--help"]}, cls=Command)
@click.argument("run", type=click.Path(file_okay=False, path_type=Path))
@click.option(
    "--n",
    "n",
    type=click.IntRange(1, 10_000),
    default=None,
    help="Number of seed images to render (default 30 for a new set; a set that already has "
    "images is only served unless --n or --seeds is given).",
)
@click.option("--seeds", type=SEEDS, default=None, help="Explicit seeds, e.g. 1,2,5-9 (instead of random ones).")
@click.option(
    "--diverse",
    is_flag=True,
    help="Pick seeds spread over the latent space (farthest-point "
    "sampling on w over a pool of random candidates) instead of purely random ones.",
)
@click.option(
    "--random-seed",
    type=int,
    default=0,
    show_default=True,
    help="Seed of the random choice of seeds, so the same command picks the same images.",
)
@click.option(
    "--truncation",
    type=click.FloatRange(0.0, 2.0),
    default=1.0,
    show_default=True,
    help="Truncation psi used to render (and recorded with each item).",
)
@click.option(
    "--noise-mode",
    type=click.Choice(["const", "seed"]),
    default="const",
    show_default=True,
    help="Per-layer noise: the generator's stored constant noise, or noise drawn from the seed.",
)
@click.option(
    "--labels",
    type=click.Path(dir_okay=False, exists=True),
    default=None,
    help="labels.json with the classes (default: the set's own, else the training data's).",
)
@click.option(
    "--import",
    "import_dir",
    type=click.Path(file_okay=False, path_type=Path),
    default=None,
    help="Import label maps painted elsewhere: DIR/<item id or seed>.png (class ids).",
)
@click.option(
    "--import-real",
    "import_real_dir",
    type=click.Path(file_okay=False, exists=True, path_type=Path),
    default=None,
    help="Import real labelled images (DIR/images/, DIR/masks/, DIR/labels.json): each is "
    "projected into the generator and stored with its expert mask as a finished annotation "
    "(real, projected). The projector options below apply.",
)
@click.option(
    "--projections",
    "projections_dir",
    type=click.Path(file_okay=False, exists=True, path_type=Path),
    default=None,
    help="With --import-real: take the projections stored in this folder by `datasetgan project` "
    "(same generator, same --fit) instead of projecting again.",
)
@projector_options
@click.option(
    "--pre-annotate",
    "pre_annotate",
    default=None,
    metavar="MODEL|interpreter",
    help="Fill empty masks from a segmentation model file, or from the run's interpreter; "
    "they are marked pre-annotated until a person edits them.",
)
@click.option(
    "--auto",
    "auto_model",
    default=None,
    metavar="MODEL",
    help="Label the chosen seeds with a segmentation model and record them as model-made.",
)
@click.option("--host", default="127.0.0.1", show_default=True, help="Address to serve the page on.")
@click.option(
    "--port",
    type=click.IntRange(0, 65535),
    default=8765,
    show_default=True,
    help="Port to serve the page on (0: any free port).",
)
@click.option("--no-serve", is_flag=True, help="Prepare the images (and imports) but do not start the page.")
@click.option("--device", default="cpu", show_default=True, help="Torch device used to render.")
def command(
    run,
    n,
    seeds,
    diverse,
    random_seed,
    truncation,
    noise_mode,
    labels,
    import_dir,
    import_real_dir,
    projections_dir,
    steps,
    perceptual,
    optimize_noise,
    batch,
    seed,
    fit,
    pre_annotate,
    auto_model,
    host,
    port,
    no_serve,
    device,
):
    """Render seed images of a trained generator and paint their masks in a browser.

    \b
    The images, their seeds and masks are stored in RUN/annotations/ (the annotation set that
    `datasetgan interpret RUN` trains from). The page runs locally; open the printed URL.
    \b
    Examples:
      datasetgan annotate runs/acdc64 --n 30 --diverse
      datasetgan annotate runs/acdc64 --seeds 1,2,5-9 --labels data/labels.json --port 8800
      datasetgan annotate runs/acdc64 --import painted/ --no-serve
      datasetgan annotate runs/acdc64 --import-real labelled/ --steps 300 --no-serve
      datasetgan annotate runs/acdc64 --import-real labelled/ --projections runs/acdc64/projected --no-serve
      datasetgan annotate runs/acdc64 --pre-annotate interpreter
    """
    if projections_dir is not None and import_real_dir is None:
        raise click.UsageError("--projections goes with --import-real DIR")
    rf = RunFolder(run)
    if not rf.root.is_dir():
        raise click.ClickException(f"{run}: not a run folder (train one with `datasetgan train DATA --out {run}`)")
    aset = AnnotationSet(rf.annotations)
    for folder in (aset.dir, aset.dir / "history"):  # left by killed saves (not by one in progress)
        remove_stale_temps(folder, min_age_s=600)
    if import_real_dir is None or labels or aset.labels_path.is_file():  # else the import brings its classes
        classes = resolve_classes(rf, aset, labels, echo=click.echo)
        if classes is not None:
            aset.set_classes(classes)

    if seeds is not None and n is not None:
        raise click.UsageError("give either --n or --seeds, not both")
    wanted = seeds is not None or n is not None or (not aset.ids() and import_real_dir is None)
    G = run_generator(rf, device) if wanted or auto_model or import_real_dir is not None else None
    if wanted or auto_model:
        stale = [r.id for r in aset.records() if r.generator_sha256 and r.generator_sha256 != G.sha256]
        if stale:
            click.echo(
                f"warning: {len(stale)} item(s) (e.g. {stale[0]}) were rendered by a different generator; "
                "their images are kept as annotated",
                err=True,
            )
        if seeds is not None:
            chosen = seeds
        else:
            count = n or 30
            chosen = diverse_seeds(G, count, random_seed) if diverse else random_seeds(count, random_seed)
        new = [s for s in chosen if not aset.path(item_id(s), "record").is_file()]
        from tqdm import tqdm

        for s in tqdm(new, desc="render", unit="img", disable=not new):
            render_items(aset, G, [s], truncation=truncation, noise_mode=noise_mode)
        click.echo(f"{len(chosen)} seed image(s) chosen, {len(new)} newly rendered into {aset.dir}")
    else:
        chosen = None

    if import_real_dir is not None:
        cfg = make_config(steps, perceptual, optimize_noise, batch, seed)
        features = None if projections_dir else perceptual_network(cfg, run, device)
        new = import_real(aset, G, import_real_dir, cfg, features, fit, progress=True, projection_dir=projections_dir)
        for rec in (aset.record(i) for i in new):
            click.echo(f"{rec.id} <- {rec.real_name}: PSNR {rec.psnr:.2f} dB, SSIM {rec.ssim:.4f}")
        click.echo(f"imported {len(new)} real image(s) from {import_real_dir} (already there are skipped)")
    if import_dir is not None:
        click.echo(f"imported {import_masks(aset, import_dir)} mask(s) from {import_dir}")
    if pre_annotate:
        done = (
            pre_annotate_with_interpreter(aset, rf, warn=lambda m: click.echo(m, err=True))
            if pre_annotate == "interpreter"
            else pre_annotate_with_model(aset, pre_annotate)
        )
        click.echo(f"pre-annotated {done} item(s) with {pre_annotate}")
    if auto_model:
        if not Path(auto_model).is_file():
            raise click.ClickException(f"--auto {auto_model}: no such file")
        from ..bench.autoannotate import auto_annotate

        auto_annotate(rf.root, auto_model, len(chosen), seeds=chosen)
        click.echo(f"auto-annotated {len(chosen)} item(s) with {auto_model}")

    recs = aset.records()
    done = sum(r.state == "done" for r in recs)
    click.echo(f"annotation set {aset.dir}: {len(recs)} item(s), {done} done")
    if no_serve:
        return
    port = check_port(host, port)
    import uvicorn

    from datasetgan.annotate.api import create_app

    shown = "127.0.0.1" if host in ("0.0.0.0", "::") else host
    click.echo(f"Annotation page: http://{shown}:{port}/   (Ctrl+C to stop)")
    if host not in ("127.0.0.1", "localhost", "::1"):
        click.echo("note: the page has no login; serve it beyond this machine only on a trusted network", err=True)
    uvicorn.run(create_app(rf.root), host=host, port=port, log_level="warning")
