"""``datasetgan train``: StyleGAN2-ADA on a folder of images."""

from __future__ import annotations

from pathlib import Path

import click

from ..presets import PRESETS, TrainConfig
from ..training import LoopOptions
from . import Command, defaults

CONFIG, LOOP = defaults(TrainConfig), defaults(LoopOptions)


@click.command("train", cls=Command)
@click.argument("data", type=click.Path(file_okay=False, path_type=str))
@click.option(
    "--out",
    "run_dir",
    required=True,
    type=click.Path(file_okay=False, path_type=str),
    help="Run folder; training writes RUN/training/ and RUN/generator.safetensors.",
)
@click.option(
    "--preset",
    type=click.Choice(list(PRESETS)),
    default="cpu-tiny",
    show_default=True,
    help="Network size and training defaults (see datasetgan/presets.py).",
)
@click.option(
    "--kimg",
    type=float,
    default=100.0,
    show_default=True,
    help="Train until this many thousand images have been shown to D (in total, over resumes).",
)
@click.option(
    "--snap",
    "snap_kimg",
    type=float,
    default=4.0,
    show_default=True,
    help="Snapshot (weights, sample grid, FID, curves) every this many thousand images.",
)
@click.option("--resume", is_flag=True, help="Continue from RUN/training's newest snapshot.")
@click.option(
    "--aug",
    type=click.Choice(["ada", "fixed", "none"]),
    default=None,
    help="Augmentation: adaptive p (default), a fixed --p, or none.",
)
@click.option(
    "--p",
    "--aug-p",
    "aug_p",
    type=float,
    default=None,
    help="Augmentation probability (fixed mode) or start value (write --aug-p under torchrun, "
    "which takes --p for its own --print-completion).",
)
@click.option(
    "--target", "ada_target", type=float, default=None, help=f"ADA's target for r_t (default {CONFIG['ada_target']})."
)
@click.option(
    "--augpipe", type=str, default=None, help=f"Augmentation groups: letters of 'bgc' (default {CONFIG['augpipe']})."
)
@click.option("--batch", type=int, default=None, help="Minibatch size (default from the preset).")
@click.option("--gamma", "r1_gamma", type=float, default=None, help="R1 weight (default from the preset).")
@click.option("--cbase", "channel_base", type=int, default=None, help="Channel base (default from the preset).")
@click.option("--cmax", "channel_max", type=int, default=None, help="Channel maximum (default from the preset).")
@click.option(
    "--d-cbase",
    "d_channel_base",
    type=int,
    default=None,
    help="The discriminator's channel base, independent of G's (default: --cbase).",
)
@click.option(
    "--d-cmax",
    "d_channel_max",
    type=int,
    default=None,
    help="The discriminator's channel maximum, independent of G's (default: --cmax).",
)
@click.option("--glr", "g_lr", type=float, default=None, help=f"G's learning rate (default {CONFIG['g_lr']}).")
@click.option("--dlr", "d_lr", type=float, default=None, help=f"D's learning rate (default {CONFIG['d_lr']}).")
@click.option(
    "--pl-weight",
    type=float,
    default=None,
    help=f"Path-length regularisation weight, 0 = off (default from the preset, else {CONFIG['pl_weight']:g}).",
)
@click.option(
    "--map", "mapping_layers", type=int, default=None, help="Mapping network depth (default from the preset)."
)
@click.option(
    "--ada-kimg",
    type=float,
    default=None,
    help="ADA speed: thousands of images for p to go from 0 to 1 (default from the preset: "
    + ", ".join(f"{name} {PRESETS[name].get('ada_kimg', CONFIG['ada_kimg']):g}" for name in PRESETS)
    + ").",
)
@click.option("--resolution", type=int, default=None, help="Override the preset's resolution (power of two).")
@click.option(
    "--mirror/--no-mirror",
    default=None,
    help="Also train on x-flipped copies of the images. Wrong where left and right matter (chest X-rays, "
    "cardiac MRI in a fixed orientation): the generator then makes mirrored anatomy.",
)
@click.option("--seed", type=int, default=None, help=f"Random seed of the run (default {CONFIG['seed']}).")
@click.option(
    "--fid",
    "fid_images",
    type=int,
    default=1000,
    show_default=True,
    help="Generated images for the FID at each snapshot (0: no FID). Few images bias FID up; "
    "1000 takes a few minutes on a CPU, the papers use 50000.",
)
@click.option("--log-kimg", type=float, default=None, help="A log.jsonl line every this many kimg (default snap/4).")
@click.option(
    "--grid",
    "grid_seeds",
    type=int,
    default=LOOP["grid_seeds"],
    show_default=True,
    help="Seeds 0..N-1 in the sample grid.",
)
@click.option(
    "--keep",
    "keep_snapshots",
    type=int,
    default=LOOP["keep_snapshots"],
    show_default=True,
    help="Snapshots kept on disk (0: all).",
)
@click.option("--limit", type=int, default=None, help="Use only the first N images (sorted by name).")
@click.option("--threads", type=int, default=None, help="CPU threads for PyTorch (default: PyTorch's choice).")
@click.option(
    "--device",
    default="cpu",
    show_default=True,
    help="torch device for G and D, e.g. cuda (the paper256 preset is meant for a GPU).",
)
@click.option("--progress/--no-progress", default=True, help="Show a progress bar.")
@click.option(
    "--dry-run", is_flag=True, help="Print the resolved configuration (preset, overrides, automatic R1 gamma) and stop."
)
def command(
    data,
    run_dir,
    preset,
    kimg,
    snap_kimg,
    resume,
    aug,
    aug_p,
    ada_target,
    augpipe,
    batch,
    r1_gamma,
    channel_base,
    channel_max,
    d_channel_base,
    d_channel_max,
    g_lr,
    d_lr,
    pl_weight,
    mapping_layers,
    ada_kimg,
    resolution,
    mirror,
    seed,
    fid_images,
    log_kimg,
    grid_seeds,
    keep_snapshots,
    limit,
    threads,
    device,
    progress,
    dry_run,
):
    """Train a StyleGAN2-ADA generator on the images in DATA.

    DATA is a folder of PNG/JPEG images (or DATA/images/). Images are cropped to a square and
    resized to the preset's resolution once, then cached. Every --snap thousand images the run
    writes a snapshot into RUN/training/ (weights, optimiser and random states, ADA's p), the EMA
    generator to RUN/generator.safetensors for the later stages, a sample grid of fixed seeds, the
    FID and curves.png; log.jsonl gets losses, p, r_t, FID and images/s.

    \b
    Example (about 2 hours on a 2-core CPU):
      datasetgan train ../shared/data/acdc/train --out runs/acdc64 --preset cpu-small --kimg 50 --snap 5
      datasetgan train ../shared/data/acdc/train --out runs/acdc64 --kimg 100 --resume   # later: continue
    """
    overrides = dict(
        aug=aug,
        aug_p=aug_p,
        ada_target=ada_target,
        augpipe=augpipe,
        batch=batch,
        r1_gamma=r1_gamma,
        channel_base=channel_base,
        channel_max=channel_max,
        d_channel_base=d_channel_base,
        d_channel_max=d_channel_max,
        g_lr=g_lr,
        d_lr=d_lr,
        pl_weight=pl_weight,
        mapping_layers=mapping_layers,
        ada_kimg=ada_kimg,
        resolution=resolution,
        mirror=mirror,
        seed=seed,
    )
    if dry_run:
        return print_config(run_dir, preset, resume, overrides)
    from stylegan2_ops import tune_allocator

    tune_allocator()  # before the first large allocation; nearly halves step time on the CPU

    import torch

    from .. import distributed

    if threads:
        torch.set_num_threads(threads)
    if kimg <= 0 or snap_kimg <= 0:
        raise click.UsageError("--kimg and --snap must be positive")
    with distributed.process_group(device) as group:  # one rank of a torchrun launch, or the only process
        _train(
            group,
            data,
            run_dir,
            preset,
            kimg,
            snap_kimg,
            resume,
            fid_images,
            log_kimg,
            grid_seeds,
            keep_snapshots,
            limit,
            progress,
            overrides,
        )


def resolve_config(run_dir, preset: str, resume: bool, overrides: dict, say):
    """The run's configuration: the snapshot's when resuming (with --preset checked and ignored
    overrides named), else the preset with the overrides; returns (config, snapshot path, its tensors
    and metadata)."""
    from .. import training
    from ..presets import make_config

    run = training.RunFolder(run_dir)
    snapshot = training.latest_snapshot(run.training)
    if resume and snapshot is None:
        raise click.UsageError(f"--resume: {run.training} holds no snapshot; start without --resume")
    if not resume and snapshot is not None:
        raise click.UsageError(
            f"{run_dir} already holds a training run; pass --resume to continue it or choose another --out"
        )
    if not resume:
        return make_config(preset, **overrides), None, None, None
    tensors, meta = training.load_snapshot(snapshot)
    cfg = TrainConfig.from_dict(meta["config"])
    if click.get_current_context().get_parameter_source("preset").name != "DEFAULT" and preset != cfg.preset:
        raise click.UsageError(
            f"--preset {preset}: the run was trained with preset {cfg.preset}, which "
            "resuming keeps; drop --preset, or train a new run with another --out"
        )
    ignored = [k for k, v in overrides.items() if v is not None and v != getattr(cfg, k)]
    if ignored:
        say(f"note: resuming keeps the run's configuration; ignoring --{', --'.join(ignored)}")
    return cfg, snapshot, tensors, meta


def print_config(run_dir, preset: str, resume: bool, overrides: dict) -> None:
    """``--dry-run``: where the values come from (on stderr), then the configuration as JSON on stdout
    (what train would save as RUN/training/config.json)."""

    from ..presets import auto_r1_gamma, gamma_is_automatic

    def note(text):
        click.echo(text, err=True)

    cfg = resolve_config(run_dir, preset, resume, overrides, say=note)[0]
    given = {k: v for k, v in overrides.items() if v is not None}
    if resume:
        note(f"resuming {run_dir}: the configuration of its newest snapshot")
    else:
        note(f"preset {preset}; overrides: {', '.join(f'{k}={v}' for k, v in given.items()) or 'none'}")
        if gamma_is_automatic(preset, overrides):
            note(
                f"r1_gamma is automatic: 0.0002 * resolution^2 / batch = 0.0002 * {cfg.resolution}^2 / {cfg.batch}"
                f" = {auto_r1_gamma(cfg.resolution, cfg.batch):g}"
            )
        note("img_channels is set from the images in DATA when training starts")
    click.echo(cfg.to_json())


def _train(
    group,
    data,
    run_dir,
    preset,
    kimg,
    snap_kimg,
    resume,
    fid_images,
    log_kimg,
    grid_seeds,
    keep_snapshots,
    limit,
    progress,
    overrides,
):
    from .. import training
    from ..atomic import remove_stale_temps
    from ..data import load_image_folder

    def say(text: str) -> None:  # rank 0 speaks for all
        if group.main:
            click.echo(text, err=True)

    device = group.device
    run = training.RunFolder(run_dir)
    cfg, snapshot, tensors, meta = resolve_config(run_dir, preset, resume, overrides, say)
    # what a killed run left half-written (this run's own files only: other stages may be writing)
    for folder, names in ((run.training, "*"), (run.root, "generator.*")) if group.main else ():
        remove_stale_temps(folder, names)

    ds = load_image_folder(data, cfg.resolution, masks="ignore", limit=limit)
    if not resume:
        cfg.img_channels = ds.channels
    elif ds.channels != cfg.img_channels:
        raise click.ClickException(
            f"{data} has {ds.channels}-channel images but the run was trained on {cfg.img_channels}-channel images"
        )
    ranks = f" over {group.world_size} ranks ({cfg.batch // group.world_size} each)" if group.active else ""
    say(
        f"{len(ds)} images {ds.resolution}x{ds.resolution}x{ds.channels} from {data}; preset {cfg.preset}, "
        f"batch {cfg.batch}{ranks}, augmentation {cfg.aug}"
    )

    try:
        trainer = training.Trainer(cfg, ds.images, device=device, group=group)
    except training.TrainingError:
        raise
    except (RuntimeError, AssertionError) as e:  # no such device, or no driver for it
        raise click.ClickException(f"--device {device}: {e}") from None
    if resume:
        trainer.load_state(tensors, meta)
        saved = meta["state"].get("shares", 1)
        if saved != trainer.num_shares:
            say(
                f"note: the run was saved by {saved} rank(s) and continues on {trainer.num_shares}: training "
                "goes on from the snapshot, but no longer bit-exactly as the original run would have"
            )
        torn = training.truncate_log(run.training / "log.jsonl", trainer.nimg) if group.main else []
        if torn:
            say(
                f"note: dropped {len(torn)} torn line(s) (line {', '.join(map(str, torn))}) of "
                f"{run.training / 'log.jsonl'}, cut short when the run was stopped"
            )
        say(f"resumed from {snapshot.name}: {trainer.nimg} images seen, step {trainer.step_count}, p {trainer.p:.3f}")

    fid = None
    if fid_images > 0 and group.main:  # rank 0 alone scores snapshots
        from ..fid import FIDEvaluator

        fid = FIDEvaluator(ds.images, fid_images, device=device)

    reals = ds.images[: min(32, len(ds))].transpose(0, 2, 3, 1)
    opts = training.LoopOptions(
        kimg=kimg,
        snap_kimg=snap_kimg,
        log_kimg=log_kimg,
        grid_seeds=grid_seeds,
        keep_snapshots=keep_snapshots,
        progress=progress,
        fid=fid,
        data=str(Path(data).resolve()),
    )
    try:
        training.train(trainer, run_dir, opts, reals_grid=reals)
    except KeyboardInterrupt:
        raise click.ClickException(
            f"interrupted at {trainer.nimg} images; `--resume` continues from the last snapshot"
        ) from None
    say(f"done: {trainer.nimg} images seen; generator in {run.generator}")
