"""``datasetgan bench``: the segmenter benchmark (the seed paper's Tables I-III and the method comparison).

Subcommands: ``run`` (train and score), ``annotator`` (train the model-assisted labeller), ``grade``
(grade a generated folder's masks), ``agreement`` (score the interpreter on projected real images),
``report`` (tables and figures from results.json). The single
command of the previous release (``datasetgan bench RUN --real ... [--train-annotator F] [--grade D]
[--report-only]``) still works for this release, with a notice.
"""

from __future__ import annotations

import sys
from pathlib import Path

import click

from ..bench.profiles import PROFILES, Profile, SegmenterTrainConfig
from ..bench.runner import PostProcessing
from . import Command, ReportsErrors

RUN_DIR = click.Path(exists=True, file_okay=False, path_type=Path)
DATA_DIR = click.Path(exists=True, file_okay=False, path_type=Path)


def _defaults(name: str) -> str:
    """The profiles' values of a Profile or SegmenterTrainConfig field, for help texts."""
    in_train = name in SegmenterTrainConfig.__dataclass_fields__
    values = {p: getattr(prof.train if in_train else prof, name) for p, prof in PROFILES.items()}
    show = {
        p: ",".join(map(str, v)) if isinstance(v, tuple) else ("all" if v is None else v) for p, v in values.items()
    }
    return "profile default: " + ", ".join(f"{p} {v}" for p, v in show.items())


def _options(*decorators):
    def apply(f):
        for d in reversed(decorators):
            f = d(f)
        return f

    return apply


def _csv(value: str | None, cast=str) -> list:
    if value is None:
        return []
    try:
        return [cast(v.strip()) for v in value.split(",") if v.strip()]
    except ValueError:
        raise click.BadParameter(f"expected a comma-separated list, got {value!r}") from None


def _limit(value: str | None) -> int | None:
    if value is None or value.lower() in ("all", "0", "none"):
        return None
    try:
        v = int(value)
    except ValueError:
        raise click.BadParameter(f"expected a number or 'all', got {value!r}", param_hint="--real-limit") from None
    if v < 1:
        raise click.BadParameter("must be at least 1", param_hint="--real-limit")
    return v


def _min_component(value: str | None) -> int | str | None:
    if value is None or value == "auto":
        return value
    try:
        area = int(value)
    except ValueError:
        area = -1
    if area < 1:
        raise click.BadParameter(
            f"expected a pixel area of at least 1 or 'auto', got {value!r}", param_hint="--min-component"
        )
    return area


def _command_line() -> str:
    """This invocation as `datasetgan bench ...`, for results.json."""
    import shlex

    args = sys.argv[1:]
    return "datasetgan " + " ".join(shlex.quote(a) for a in (args[args.index("bench") :] if "bench" in args else args))


PROFILE_OPTIONS = _options(
    click.option(
        "--profile",
        "profile_name",
        type=click.Choice(sorted(PROFILES)),
        default="cpu",
        show_default=True,
        help="cpu: 64x64, MobileNetV3 backbones (stride 8). paper: 256x256, ResNet-101, the seed's protocol.",
    ),
    click.option("--resolution", type=int, help=f"Image size, a power of two ({_defaults('resolution')})."),
    click.option("--epochs", type=click.IntRange(1), help=f"Training epochs ({_defaults('epochs')})."),
    click.option("--batch-size", type=click.IntRange(2), help=f"Batch size ({_defaults('batch_size')})."),
    click.option("--lr", type=float, help=f"Learning rate ({_defaults('lr')})."),
    click.option("--unet-channels", help=f"U-Net channel widths per level ({_defaults('unet_channels')})."),
    click.option(
        "--output-stride",
        type=click.Choice(["8", "16"]),
        help=f"Output stride of MobileNetV3 backbones ({_defaults('output_stride')}).",
    ),
    click.option("--threads", type=click.IntRange(1), help=f"torch.set_num_threads ({_defaults('threads')})."),
    click.option("--device", default="cpu", show_default=True, help="cpu or cuda[:N]."),
    click.option(
        "--real-limit",
        help=f"Use k real training images drawn at random (seeded), or 'all' ({_defaults('real_limit')}).",
    ),
    click.option("--subset-seed", type=int, default=0, show_default=True, help="Seed of the random real subsets."),
    click.option(
        "--class-map",
        metavar="OLD=NEW,...",
        help="Renumber the classes of the real folders (--real, --test-real) to the generated folders' "
        "ids, e.g. 1=3,3=1; every set must then agree on class ids and names.",
    ),
    click.option(
        "--init-weights",
        multiple=True,
        metavar="ARCH=FILE",
        help="Start ARCH from a local weights file (.safetensors, or .pth read with weights_only).",
    ),
    click.option("--no-progress", is_flag=True, help="No progress bars."),
)

RUN_OPTIONS = _options(
    click.option(
        "--real",
        type=DATA_DIR,
        help="Labelled real folder for the 'real' and 'hybrid' training sets (e.g. ACDC train).",
    ),
    click.option("--test-real", type=DATA_DIR, help="Labelled real folder scored as test-R (e.g. ACDC test)."),
    click.option(
        "--synthetic",
        multiple=True,
        type=DATA_DIR,
        help="Generated folder (datasetgan generate) for the 'synthetic' and 'hybrid' sets; repeat it for "
        "interpreters trained on different numbers of annotations (Table II).",
    ),
    click.option(
        "--test-generated",
        multiple=True,
        metavar="[NAME=]DIR",
        help="Generated folder scored as test-G; its seeds must be disjoint from the training pairs. Repeat "
        "it as NAME=DIR to score every model, trained once, on several test-G sets (e.g. one per "
        "interpreter); results.json keeps each under test_g_sets.NAME, the first also as test_g.",
    ),
    click.option(
        "--models",
        help="Comma-separated: deeplabv3, fcn, unet, optionally arch:backbone "
        f"(resnet101, resnet50, mobilenet_v3_large) ({_defaults('models')}).",
    ),
    click.option("--sets", help="Training sets: real, synthetic, hybrid (default: every set the given data allows)."),
    click.option("--folds", type=click.IntRange(1, 100), help=f"Cross-validation folds ({_defaults('folds')})."),
    click.option(
        "--fold-groups",
        metavar="REGEX",
        help="Keep images whose names share this regex match in one fold, e.g. 'patient\\d+' for ACDC.",
    ),
    click.option(
        "--hybrid-real",
        type=click.IntRange(1),
        help=f"Real images added to the synthetic set ({_defaults('hybrid_real')}).",
    ),
    click.option(
        "--hybrid-real-weight",
        type=click.FloatRange(0, 1),
        metavar="W",
        help="Share of each minibatch drawn from the hybrid set's real images (default: their natural "
        "share, i.e. plain shuffling).",
    ),
    click.option(
        "--synthetic-sizes", help=f"Synthetic set sizes, e.g. 1500,5000,10000 ({_defaults('synthetic_sizes')})."
    ),
    click.option(
        "--drop-uncertain",
        type=click.FloatRange(0, 1, max_open=True),
        default=0.0,
        show_default=True,
        help="Drop this fraction of the most uncertain synthetic pairs (records/*.json score).",
    ),
    click.option(
        "--annotated",
        help="Annotation counts of the --synthetic folders' interpreters, in order, when "
        "their manifest.json does not say (Table II).",
    ),
    click.option(
        "--loss",
        "loss_specs",
        multiple=True,
        metavar="LOSS[:K=V,...]",
        help="Training loss: ce, dice, dice_ce, focal[:gamma=2], jaccard, tversky[:alpha=0.7,beta=0.3] "
        "(alpha weights false negatives), lovasz, boundary[:alpha=0.01], gambling[:beta=0.1] (adversarial "
        "gambler network). Repeat it (or separate by commas) for one row per loss "
        f"({_defaults('loss')}).",
    ),
    click.option(
        "--min-component",
        metavar="AREA|auto",
        help="Add a row with connected components below AREA pixels removed from the first loss' "
        "predictions ('auto': the area chosen on each fold's held-out part).",
    ),
    click.option(
        "--classifier-gate",
        is_flag=True,
        default=PostProcessing.classifier_gate,
        help="Add a row where a small image classifier trained on the fold keeps the first loss' "
        "prediction only for images it calls positive (its accuracy is reported).",
    ),
    click.option(
        "--swa",
        is_flag=True,
        default=PostProcessing.swa,
        help="Add a row trained with the first loss under a cosine schedule and stochastic weight "
        "averaging of the last quarter of the epochs.",
    ),
    click.option(
        "--no-prior",
        is_flag=True,
        default=not PostProcessing.prior,
        help="Leave out the prior-only baseline row (the per-pixel majority class of the training masks).",
    ),
    click.option("--save-models", is_flag=True, help="Keep every fold's segmenter in RUN/bench/models/."),
)


def _profile(p: dict) -> Profile:
    import torch

    from ..bench.profiles import get_profile

    overrides = {
        k: p.get(k)
        for k in ("resolution", "epochs", "batch_size", "lr", "threads", "folds", "hybrid_real_weight")
        if p.get(k) is not None
    }
    losses = _losses(p)
    if losses:
        overrides["loss"] = losses[0]
    if p.get("output_stride") is not None:
        overrides["output_stride"] = int(p["output_stride"])
    if p.get("unet_channels") is not None:
        overrides["unet_channels"] = tuple(_csv(p["unet_channels"], int))
        if len(overrides["unet_channels"]) < 2:
            raise click.BadParameter("give at least two widths", param_hint="--unet-channels")
    res = p.get("resolution")
    if res is not None and (res < 16 or res & (res - 1)):
        raise click.BadParameter("must be a power of two, at least 16", param_hint="--resolution")
    profile = get_profile(p["profile_name"], **overrides)
    torch.set_num_threads(profile.threads)
    return profile


def _losses(p: dict) -> list[str]:
    """The --loss values as canonical specs (name:k=v,...), in order."""
    from ..bench.losses import parse_losses

    specs = [s for text in p.get("loss_specs") or () for s in parse_losses(text)]
    return [s.name + (":" + ",".join(f"{k}={v:g}" for k, v in s.params.items()) if s.params else "") for s in specs]


def _weights(items) -> dict:
    out = {}
    for item in items:
        arch, sep, path = item.partition("=")
        if not sep or not Path(path).is_file():
            raise click.BadParameter(
                f"expected ARCH=FILE with an existing file, got {item!r}", param_hint="--init-weights"
            )
        out[arch.strip()] = Path(path)
    return out


def _test_generated(p: dict) -> dict[str, Path]:
    from ..bench.datasets import parse_test_generated

    return parse_test_generated(p.get("test_generated") or ())


def _class_map(p: dict) -> dict[int, int]:
    from ..bench.datasets import parse_class_map

    return parse_class_map(p["class_map"]) if p.get("class_map") else {}


def _write_report(run: Path) -> None:
    from ..bench import report
    from ..bench.compare import write_comparison

    bench_dir = run / "bench"
    if not (bench_dir / "results.json").is_file():
        raise click.ClickException(f"{bench_dir / 'results.json'} does not exist; run the benchmark first")
    for path in report.write_report(bench_dir) + write_comparison(bench_dir):
        click.echo(f"wrote {path}")


def do_run(run: Path, p: dict) -> None:
    """Train and score every row; tables are rewritten after each fold."""
    from ..bench import report, runner

    synthetic, real = list(p.get("synthetic") or ()), p.get("real")
    sets = (
        _csv(p["sets"])
        if p.get("sets") is not None
        else (
            (["synthetic"] if synthetic else [])
            + (["real"] if real else [])
            + (["hybrid"] if synthetic and real else [])
        )
    )
    if not sets:
        raise click.UsageError("give training data: --real DATA and/or --synthetic DIR (see --help)")
    profile = _profile(p)
    post = PostProcessing(
        min_component=_min_component(p.get("min_component")),
        classifier_gate=p["classifier_gate"],
        swa=p["swa"],
        prior=not p["no_prior"],
    )
    limit = _limit(p["real_limit"]) if p.get("real_limit") is not None else profile.real_limit
    inputs = runner.load_inputs(
        profile,
        sets,
        real,
        p.get("test_real"),
        synthetic,
        _test_generated(p),
        limit,
        p.get("hybrid_real"),
        _csv(p.get("synthetic_sizes"), int) or None,
        p.get("drop_uncertain") or 0.0,
        _csv(p.get("annotated"), int) or None,
        p["subset_seed"],
        class_map=_class_map(p),
    )
    if not inputs.train_sets:
        raise click.UsageError("no training set to benchmark")
    channels = next(iter(inputs.train_sets.values())).images.shape[1]
    models = runner.parse_models(_csv(p.get("models")) or list(profile.models), profile, channels, len(inputs.classes))
    bench_dir = run / "bench"
    runner.run_benchmark(
        run,
        inputs,
        models,
        profile,
        save_models=p.get("save_models", False),
        init_weights=_weights(p.get("init_weights") or ()),
        device=p["device"],
        progress=not p["no_progress"],
        log=click.echo,
        on_fold=lambda doc: report.write_report(bench_dir, figures=False),
        fold_groups=p.get("fold_groups"),
        command=_command_line(),
        losses=_losses(p) or None,
        post=post,
    )


def do_annotator(run: Path, out: Path, p: dict) -> None:
    """Train one segmenter on all real labels, save it and score it on test-R."""
    from ..bench import datasets, runner

    profile = _profile(p)
    limit = _limit(p["real_limit"]) if p.get("real_limit") is not None else profile.real_limit
    class_map = _class_map(p)
    train = datasets.load_real(p["real"], profile.resolution, limit, p["subset_seed"], "--real", class_map=class_map)
    test_r = None
    if p.get("test_real"):
        test_r = datasets.load_real(p["test_real"], profile.resolution, None, 0, "--test-real", class_map=class_map)
        datasets.check_compatible({"--real": train, "--test-real": test_r})
    cfg = runner.parse_models([p["annotator_model"]], profile, train.images.shape[1], len(train.classes))[0]
    runner.train_annotator(
        run,
        out,
        train,
        cfg,
        profile,
        test_r,
        train.classes,
        _weights(p.get("init_weights") or ()).get(cfg.arch),
        p["device"],
        not p["no_progress"],
        click.echo,
    )


def do_grade(run: Path, folder: Path, reference: str, n: int, device: str) -> None:
    from ..bench import grading

    g = grading.grade_folder(folder, reference, n, device=device)
    grading.store(run / "bench", g)
    click.echo(grading.summary_line(g))


LEGACY_SPELLINGS = (
    ("--report-only", "bench report RUN"),
    ("--train-annotator", "bench annotator RUN --real DATA --out FILE"),
    ("--grade", "bench grade RUN FOLDER --reference REF"),
)


class BenchGroup(ReportsErrors, click.Group):
    """Subcommands, and the previous release's single-command spelling (``bench RUN --options``)."""

    def parse_args(self, ctx, args):
        if args and args[0] not in self.commands and args[0] not in ("-h", "--help"):
            instead = [new for old, new in LEGACY_SPELLINGS if old in args] or ["bench run RUN [options]"]
            click.echo(
                f"note: `datasetgan bench RUN [options]` is deprecated and goes away in the next release; "
                f"use `datasetgan {'` and `datasetgan '.join(instead)}`",
                err=True,
            )
            args = ["legacy", *args]
        return super().parse_args(ctx, args)


@click.group(cls=BenchGroup, context_settings={"help_option_names": ["-h", "--help"]})
def command():
    """Benchmark segmenters trained on synthetic, real and hybrid sets; score on test-R/test-G.

    Each (training set, model, loss) is trained once per fold of a k-fold split and scored on its
    held-out part, on test-R (real labelled images) and test-G (generated pairs from unseen seeds; several
    named sets with --test-generated NAME=DIR, each model scored on all):
    Dice, IoU, HD95, ASSD, Chamfer, BF score, MMCL and ECE, mean +- std over folds. Writes
    RUN/bench/results.json, tables.md, methods.md/.json/.png, bars.png and predictions.png.

    \b
    Examples:
      datasetgan bench run runs/acdc64 --real ../shared/data/acdc/train --test-real ../shared/data/acdc/test
      datasetgan bench run runs/acdc64 --real ../shared/data/acdc/train --models unet \\
          --loss dice_ce,lovasz,tversky:alpha=0.7,beta=0.3 --min-component auto --classifier-gate --swa
      datasetgan bench run runs/acdc64 --synthetic runs/acdc64/generated/train \\
          --test-generated runs/acdc64/generated/test --real ../shared/data/acdc/train \\
          --test-real ../shared/data/acdc/test --sets synthetic,real,hybrid --models deeplabv3
      datasetgan bench run runs/acdc64 --sets real --real ../shared/data/acdc/train \\
          --test-generated a=runs/a/generated/test --test-generated b=runs/b/generated/test
      datasetgan bench annotator runs/acdc64 --real ../shared/data/acdc/train --out runs/acdc64/annotator.safetensors
      datasetgan bench grade runs/acdc64 runs/acdc64/generated/train --reference runs/acdc64/annotator.safetensors
      datasetgan bench report runs/acdc64
    """


@command.command("run", cls=Command)
@click.argument("run", type=RUN_DIR)
@RUN_OPTIONS
@PROFILE_OPTIONS
def run_command(run, **p):
    """Train and score every (training set, model, loss) row over k folds (resumable)."""
    do_run(run, p)
    _write_report(run)


@command.command("annotator", cls=Command)
@click.argument("run", type=RUN_DIR)
@click.option("--real", type=DATA_DIR, required=True, help="Labelled real folder the annotator learns from.")
@click.option("--test-real", type=DATA_DIR, help="Labelled real folder to score it on (test-R).")
@click.option(
    "--out",
    type=click.Path(dir_okay=False, path_type=Path),
    required=True,
    help="Segmenter file to write (for `datasetgan annotate RUN --auto FILE`).",
)
@click.option("--model", "annotator_model", default="unet", show_default=True, help="Architecture of the annotator.")
@click.option(
    "--loss", "loss_specs", multiple=True, metavar="LOSS[:K=V,...]", help=f"Training loss ({_defaults('loss')})."
)
@PROFILE_OPTIONS
def annotator_command(run, out, **p):
    """Train one segmenter on all real labels: the model-assisted labeller, scored on test-R."""
    do_annotator(run, out, p)
    _write_report(run)


@command.command("grade", cls=Command)
@click.argument("run", type=RUN_DIR)
@click.argument("folder", type=DATA_DIR)
@click.option(
    "--reference",
    required=True,
    help="A segmenter file (model-assisted labeller) or a folder / annotation set of a person's masks named by seed.",
)
@click.option("--n", type=click.IntRange(1), default=100, show_default=True, help="Pairs to grade.")
@click.option("--device", default="cpu", show_default=True, help="cpu or cuda[:N].")
def grade_command(run, folder, reference, n, device):
    """Grade a generated folder's masks as good / partial / bad against a reference (the seed's Fig. 7)."""
    do_grade(run, folder, reference, n, device)
    _write_report(run)


@command.command("agreement", cls=Command)
@click.argument("run", type=RUN_DIR)
@click.argument("projections", type=DATA_DIR)
@click.option(
    "--real",
    type=DATA_DIR,
    required=True,
    help="Labelled folder (images/, masks/, labels.json) holding the projected images' expert masks.",
)
@click.option("--device", default="cpu", show_default=True, help="cpu or cuda[:N].")
@click.option("--threads", type=click.IntRange(1), help="torch.set_num_threads (default: torch's choice).")
def agreement_command(run, projections, real, device, threads):
    """Score RUN's interpreter on real anatomy: its masks of real images projected into RUN's generator.

    PROJECTIONS is a folder written by `datasetgan project RUN IMAGES --out PROJECTIONS`; each projected
    image's mask, read by the interpreter from the features of its exact rendering, is scored against the
    expert mask of the same-named image in --real (IoU and Dice per class, mIoU, one confusion matrix
    over all images). Stored as 'agreement' in RUN/bench/results.json.

    \b
    Example:
      datasetgan project runs/acdc64 ../shared/data/acdc/val --out runs/acdc64/projected/val
      datasetgan bench agreement runs/acdc64 runs/acdc64/projected/val --real ../shared/data/acdc/val
    """
    import torch

    from ..bench import agreement

    if threads:
        torch.set_num_threads(threads)
    a = agreement.score_run(run, projections, real, device)
    agreement.store(run / "bench", a)
    click.echo(agreement.summary_line(a))
    _write_report(run)


@command.command("report", cls=Command)
@click.argument("run", type=RUN_DIR)
def report_command(run):
    """Tables (tables.md, methods.md), the method comparison (methods.json, paired over folds) and figures,
    from RUN/bench/results.json alone: nothing is recomputed."""
    _write_report(run)


@command.command("legacy", cls=Command, hidden=True)
@click.argument("run", type=RUN_DIR)
@RUN_OPTIONS
@PROFILE_OPTIONS
@click.option("--train-annotator", type=click.Path(dir_okay=False, path_type=Path))
@click.option("--annotator-model", default="unet", show_default=True)
@click.option("--grade", "grade_dir", type=DATA_DIR)
@click.option("--grade-reference")
@click.option("--grade-n", type=click.IntRange(1), default=100, show_default=True)
@click.option("--report-only", is_flag=True)
def legacy_command(run, train_annotator, annotator_model, grade_dir, grade_reference, grade_n, report_only, **p):
    """The previous release's spelling: `bench RUN` with --train-annotator, --grade, --report-only."""
    if report_only:
        return _write_report(run)
    if grade_dir is not None and not grade_reference:
        raise click.UsageError("--grade needs --grade-reference (a segmenter file or a folder of masks)")
    if train_annotator is not None and p.get("real") is None:
        raise click.UsageError("--train-annotator needs --real DATA (the labels it learns from)")
    if train_annotator is not None:
        do_annotator(run, train_annotator, dict(p, annotator_model=annotator_model))
    if p.get("sets") is not None or (train_annotator is None and grade_dir is None):
        do_run(run, p)
    if grade_dir is not None:
        do_grade(run, grade_dir, grade_reference, grade_n, p["device"])
    _write_report(run)
