"""``datasetgan interpret RUN``: train the style interpreter on the run's annotations."""
from __future__ import annotations

import time

import click

from ..interpreter import InterpreterConfig
from . import Command, defaults

D = defaults(InterpreterConfig)


@click.command(name="interpret", cls=Command)
@click.argument("run", type=click.Path(file_okay=False, path_type=str))
@click.option("--members", default=D["members"], show_default=True, type=click.IntRange(1, 100), help="Ensemble size.")
@click.option("--epochs", default=D["epochs"], show_default=True, type=click.IntRange(1), help="Epochs per member (upper bound).")
@click.option("--patience", default=D["patience"], show_default=True, type=click.IntRange(1),
              help="Stop a member after this many epochs without held-out improvement.")
@click.option("--lr", default=D["lr"], show_default=True, type=click.FloatRange(0, min_open=True), help="Adam learning rate.")
@click.option("--batch-size", default=D["batch_size"], show_default=True, type=click.IntRange(2), help="Pixels per step.")
@click.option("--pixels-per-epoch", default=None, type=click.IntRange(1),
              help="Pixels per epoch (default: every training pixel once).")
@click.option("--hidden", default=",".join(map(str, D["hidden"])), show_default=True, help="Hidden widths, comma separated.")
@click.option("--holdout", default=D["holdout"], show_default=True, type=click.FloatRange(0, 1, max_open=True),
              help="Share of annotated pixels held out for early stopping.")
@click.option("--balanced/--no-balanced", default=D["balanced"], show_default=True, help="Class-balanced pixel sampling.")
@click.option("--include-pre-annotated", is_flag=True,
              help="Also train on pre-annotated (model-made, unreviewed) masks.")
@click.option("--seed", default=D["seed"], show_default=True, type=int,
              help="Seed of the held-out split and the members.")
@click.option("--device", default="cpu", show_default=True, help="torch device, e.g. cpu or cuda.")
@click.option("--threads", default=None, type=click.IntRange(1), help="CPU threads (default: torch's choice).")
def command(run, members, epochs, patience, lr, batch_size, pixels_per_epoch, hidden, holdout, balanced,
            include_pre_annotated, seed, device, threads):
    """Train the style interpreter (an ensemble of pixel classifiers) on RUN/annotations.

    Uses every annotation in state "done" (and "pre-annotated" with --include-pre-annotated):
    painted seeds, re-rendered with their own truncation and noise mode, and real images imported
    with `datasetgan annotate RUN --import-real DIR`, rendered from their stored projections. Writes
    RUN/interpreter.safetensors + .json and a log of every epoch in RUN/interpret/log.jsonl.

    \b
    Example:
      datasetgan interpret runs/acdc64 --members 10 --epochs 20
    """
    import torch

    from .. import jsonlog
    from ..annotations import AnnotationSet
    from ..atomic import remove_stale_temps
    from ..checkpoint import load_generator
    from ..features import render_annotated
    from ..interpreter import InterpreterInfo, save_interpreter, train_interpreter
    from ..runfolder import RunFolder

    if threads:
        torch.set_num_threads(threads)
    rf = RunFolder(run)
    remove_stale_temps(rf.root, "interpreter.*")  # what a killed `interpret` left half-written
    if not rf.generator.is_file():
        raise click.ClickException(f"{rf.generator} does not exist; run `datasetgan train` first")
    if not rf.annotations.is_dir():
        raise click.ClickException(f"{rf.annotations} does not exist; run `datasetgan annotate {run}` first")
    try:
        widths = tuple(int(h) for h in hidden.split(","))
        cfg = InterpreterConfig(members=members, hidden=widths, lr=lr, batch_size=batch_size, epochs=epochs,
                                pixels_per_epoch=pixels_per_epoch, patience=patience, holdout=holdout,
                                balanced=balanced, seed=seed)
    except ValueError as e:
        raise click.BadParameter(f"{e}", param_hint="--hidden") from None
    log_path = rf.root / "interpret" / "log.jsonl"
    log_path.parent.mkdir(parents=True, exist_ok=True)
    G = load_generator(rf.generator, device)
    aset = AnnotationSet(rf.annotations)
    classes = aset.classes()
    feats, masks, records = render_annotated(G, aset, include_pre_annotated, progress=True)
    # the noise mode the factory renders new seeds with; real images bring their own noise maps
    modes = sorted({r.noise_mode for r in records if r.kind != "real"}) or ["const"]
    if len(modes) > 1:
        raise click.ClickException(f"annotations mix noise modes {modes}; the interpreter needs one")
    info = InterpreterInfo(feats.taps, classes, G.cfg.resolution, G.cfg.img_channels, G.sha256, modes[0],
                           [r.id for r in records])
    del G  # training needs only the features; the generator's weights would add to the peak
    click.echo(f"{len(records)} annotated images, {feats.channels} feature channels from {len(feats.taps)} taps "
               f"({feats.nbytes() / 2**20:.0f} MiB at native resolution, float16)")
    def log(line):
        jsonlog.append(log_path, {"time": time.time(), **line})

    log({"event": "start", "config": cfg.to_dict(), "annotations": info.annotations})
    interp = train_interpreter(feats.to(device), masks, info, cfg, log=log, progress=True)
    sha = save_interpreter(rf.interpreter, interp)
    log({"event": "saved", "path": str(rf.interpreter), "sha256": sha})
    click.echo(f"wrote {rf.interpreter} (sha256 {sha[:12]}...)")
