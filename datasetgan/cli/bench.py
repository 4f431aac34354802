"""``datasetgan bench``: the segmenter benchmark (the seed paper's Tables I-III)."""
from __future__ import annotations

from pathlib import Path

import click


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
        raise click.BadParameter(f"expected a number or 'all', got {value!r}") from None
    if v < 1:
        raise click.BadParameter("must be at least 1")
    return v


def _min_component(value: str | None) -> int | str | None:
    if value is None or value == "auto":
        return value
    try:
        area = int(value)
    except ValueError:
        area = -1
    if area < 1:
        raise click.BadParameter(f"expected a pixel area of at least 1 or 'auto', got {value!r}",
                                 param_hint="--min-component")
    return area


def _command_line() -> str:
    """This invocation as `datasetgan bench ...`, for results.json."""
    import shlex
    import sys

    args = sys.argv[1:]
    return "datasetgan " + " ".join(shlex.quote(a) for a in (args[args.index("bench"):] if "bench" in args else args))


@click.command(context_settings={"help_option_names": ["-h", "--help"]})
@click.argument("run", type=click.Path(file_okay=False, path_type=Path))
@click.option("--real", type=click.Path(exists=True, file_okay=False, path_type=Path),
              help="Labelled real folder for the 'real' and 'hybrid' training sets (e.g. ACDC train).")
@click.option("--test-real", type=click.Path(exists=True, file_okay=False, path_type=Path),
              help="Labelled real folder scored as test-R (e.g. ACDC test).")
@click.option("--synthetic", multiple=True, type=click.Path(exists=True, file_okay=False, path_type=Path),
              help="Generated folder (datasetgan generate) for the 'synthetic' and 'hybrid' sets; repeat it for "
                   "interpreters trained on different numbers of annotations (Table II).")
@click.option("--test-generated", type=click.Path(exists=True, file_okay=False, path_type=Path),
              help="Generated folder scored as test-G; its seeds must be disjoint from the training pairs.")
@click.option("--models", help="Comma-separated: deeplabv3, fcn, unet, optionally arch:backbone "
                               "(resnet101, resnet50, mobilenet_v3_large). Default: the profile's.")
@click.option("--profile", "profile_name", type=click.Choice(["cpu", "paper"]), default="cpu", show_default=True,
              help="cpu: 64x64, MobileNetV3 backbones (stride 8), 20 epochs. paper: 256x256, ResNet-101, the seed's protocol.")
@click.option("--sets", help="Training sets: real, synthetic, hybrid (default: every set the given data allows).")
@click.option("--folds", type=click.IntRange(1, 100), help="Cross-validation folds (profile default 5).")
@click.option("--fold-groups", metavar="REGEX",
              help="Keep images whose names share this regex match in one fold, e.g. 'patient\\d+' for ACDC.")
@click.option("--real-limit", help="Use k real training images drawn at random (seeded), or 'all'. Profile default 500.")
@click.option("--hybrid-real", type=click.IntRange(1), help="Real images added to the synthetic set (default 30).")
@click.option("--synthetic-sizes", help="Synthetic set sizes, e.g. 1500,5000,10000 (Table I).")
@click.option("--drop-uncertain", type=click.FloatRange(0, 1, max_open=True), default=0.0, show_default=True,
              help="Drop this fraction of the most uncertain synthetic pairs (records/*.json score).")
@click.option("--annotated", help="Annotation counts of the --synthetic folders' interpreters, in order, when "
                                  "their manifest.json does not say (Table II).")
@click.option("--resolution", type=int, help="Override the profile's resolution (a power of two).")
@click.option("--epochs", type=click.IntRange(1), help="Override the profile's epochs.")
@click.option("--batch-size", type=click.IntRange(2), help="Override the profile's batch size.")
@click.option("--lr", type=float, help="Override the profile's learning rate.")
@click.option("--loss", "loss_specs", multiple=True, metavar="LOSS[:K=V,...]",
              help="Training loss: ce, dice, dice_ce, focal[:gamma=2], jaccard, tversky[:alpha=0.7,beta=0.3] "
                   "(alpha weights false negatives), lovasz, boundary[:alpha=0.01]. Repeat it (or separate by "
                   "commas) for one row per loss. Profile default: dice_ce for cpu, ce for paper.")
@click.option("--min-component", metavar="AREA|auto",
              help="Add a row with connected components below AREA pixels removed from the first loss' "
                   "predictions ('auto': the area chosen on each fold's held-out part).")
@click.option("--classifier-gate", is_flag=True,
              help="Add a row where a small image classifier trained on the fold keeps the first loss' "
                   "prediction only for images it calls positive (its accuracy is reported).")
@click.option("--swa", is_flag=True, help="Add a row trained with the first loss under a cosine schedule and "
                                          "stochastic weight averaging of the last quarter of the epochs.")
@click.option("--no-prior", is_flag=True, help="Leave out the prior-only baseline row (per-pixel majority class).")
@click.option("--hybrid-real-weight", type=click.FloatRange(0, 1), metavar="W",
              help="Share of each minibatch drawn from the hybrid set's real images (default: their natural share).")
@click.option("--unet-channels", help="U-Net channel widths per level, e.g. 16,32,64,128,256 (profile default).")
@click.option("--output-stride", type=click.Choice(["8", "16"]), help="Output stride of MobileNetV3 backbones "
              "(profile default; 8 keeps an 8x8 grid at 64x64).")
@click.option("--threads", type=click.IntRange(1), help="torch.set_num_threads (profile default).")
@click.option("--device", default="cpu", show_default=True, help="cpu or cuda[:N].")
@click.option("--save-models", is_flag=True, help="Keep every fold's segmenter in RUN/bench/models/.")
@click.option("--init-weights", multiple=True, metavar="ARCH=FILE",
              help="Start ARCH from a local weights file (.safetensors, or .pth read with weights_only).")
@click.option("--train-annotator", type=click.Path(dir_okay=False, path_type=Path),
              help="Train one segmenter on all --real labels, save it here and score it on test-R "
                   "(for `datasetgan annotate RUN --auto FILE`). Skips the benchmark unless --sets is given.")
@click.option("--annotator-model", default="unet", show_default=True, help="Architecture of the annotator.")
@click.option("--grade", "grade_dir", type=click.Path(exists=True, file_okay=False, path_type=Path),
              help="Grade this generated folder's masks as good / partial / bad against --grade-reference.")
@click.option("--grade-reference", help="A segmenter file (model-assisted labeller) or a folder / annotation "
                                        "set of a person's masks named by seed.")
@click.option("--grade-n", type=click.IntRange(1), default=100, show_default=True, help="Pairs to grade.")
@click.option("--subset-seed", type=int, default=0, show_default=True, help="Seed of the random real subsets.")
@click.option("--report-only", is_flag=True, help="Only rewrite tables and figures from RUN/bench/results.json.")
@click.option("--no-progress", is_flag=True, help="No progress bars.")
def command(run, real, test_real, synthetic, test_generated, models, profile_name, sets, folds, fold_groups,
            real_limit,
            hybrid_real, synthetic_sizes, drop_uncertain, annotated, resolution, epochs, batch_size, lr, loss_specs, min_component, classifier_gate, swa,
            no_prior, hybrid_real_weight, unet_channels,
            output_stride, threads,
            device, save_models, init_weights, train_annotator, annotator_model, grade_dir, grade_reference,
            grade_n, subset_seed, report_only, no_progress):
    """Benchmark DeepLabV3, FCN and U-Net trained on synthetic, real and hybrid sets; score on test-R/test-G.

    Each (training set, model) is trained once per fold of a k-fold split and scored on test-R (real
    labelled images) and test-G (generated pairs from unseen seeds): mIoU (with and without background),
    per-class Dice, HD95 and pixel accuracy, mean +- std over folds. Writes RUN/bench/results.json,
    tables.md (the seed's Tables I-III, where the run has the data), bars.png and predictions.png.

    \b
    Examples:
      datasetgan bench runs/acdc64 --real ../shared/data/acdc/train --test-real ../shared/data/acdc/test
      datasetgan bench runs/acdc64 --synthetic runs/acdc64/generated/train \\
          --test-generated runs/acdc64/generated/test --real ../shared/data/acdc/train \\
          --test-real ../shared/data/acdc/test --sets synthetic,real,hybrid --models deeplabv3
      datasetgan bench runs/acdc64 --real ../shared/data/acdc/train --test-real ../shared/data/acdc/test \\
          --train-annotator runs/acdc64/annotator.safetensors
      datasetgan bench runs/acdc64 --grade runs/acdc64/generated/train \\
          --grade-reference runs/acdc64/annotator.safetensors
    """
    import torch

    from ..checkpoint import CheckpointError
    from ..data import DataError
    from ..bench import report
    from ..bench.profiles import get_profile

    bench_dir = run / "bench"
    if report_only:
        if not (bench_dir / "results.json").is_file():
            raise click.ClickException(f"{bench_dir / 'results.json'} does not exist; run the benchmark first")
        for p in report.write_report(bench_dir):
            click.echo(f"wrote {p}")
        return

    from ..bench.losses import LossSpecError, parse_losses
    from ..bench.runner import PostProcessing

    try:
        losses = [s for text in loss_specs for s in parse_losses(text)]
    except LossSpecError as e:
        raise click.BadParameter(str(e), param_hint="--loss") from None
    loss_texts = [s.name + (":" + ",".join(f"{k}={v:g}" for k, v in s.params.items()) if s.params else "")
                  for s in losses]
    post = PostProcessing(min_component=_min_component(min_component), classifier_gate=classifier_gate,
                          swa=swa, prior=not no_prior)
    overrides = {k: v for k, v in dict(resolution=resolution, epochs=epochs, batch_size=batch_size, lr=lr,
                                       loss=loss_texts[0] if loss_texts else None, threads=threads,
                                       hybrid_real_weight=hybrid_real_weight).items() if v is not None}
    if folds is not None:
        overrides["folds"] = folds
    if output_stride is not None:
        overrides["output_stride"] = int(output_stride)
    if unet_channels is not None:
        overrides["unet_channels"] = tuple(_csv(unet_channels, int))
        if len(overrides["unet_channels"]) < 2:
            raise click.BadParameter("give at least two widths", param_hint="--unet-channels")
    if resolution is not None and (resolution < 16 or resolution & (resolution - 1)):
        raise click.BadParameter("must be a power of two, at least 16", param_hint="--resolution")
    try:
        profile = get_profile(profile_name, **overrides)
    except (ValueError, TypeError) as e:
        raise click.ClickException(str(e)) from None
    torch.set_num_threads(profile.threads)
    limit = _limit(real_limit) if real_limit is not None else profile.real_limit
    weights = {}
    for item in init_weights:
        arch, sep, path = item.partition("=")
        if not sep or not Path(path).is_file():
            raise click.BadParameter(f"expected ARCH=FILE with an existing file, got {item!r}", param_hint="--init-weights")
        weights[arch.strip()] = Path(path)

    want_bench = sets is not None or (train_annotator is None and grade_dir is None)
    if sets is not None:
        set_list = _csv(sets)
    else:
        set_list = (["synthetic"] if synthetic else []) + (["real"] if real else []) + \
                   (["hybrid"] if synthetic and real else [])
    if want_bench and not set_list and not test_real:
        raise click.UsageError("give training data: --real DATA and/or --synthetic DIR (see --help)")
    if fold_groups is not None:
        import re
        try:
            re.compile(fold_groups)
        except re.error as e:
            raise click.BadParameter(f"not a regular expression: {e}", param_hint="--fold-groups") from None
    if grade_dir is not None and not grade_reference:
        raise click.UsageError("--grade needs --grade-reference (a segmenter file or a folder of masks)")
    if train_annotator is not None and real is None:
        raise click.UsageError("--train-annotator needs --real DATA (the labels it learns from)")

    from ..bench import runner

    progress = not no_progress
    try:
        wanted_sets = set_list if want_bench else []
        inputs = None
        if want_bench or train_annotator is not None:
            inputs = runner.load_inputs(profile, wanted_sets, real, test_real, list(synthetic), test_generated,
                                        limit, hybrid_real, _csv(synthetic_sizes, int) or None, drop_uncertain,
                                        _csv(annotated, int) or None, subset_seed)
        if train_annotator is not None:
            from ..bench import datasets as D
            train = D.load_real(real, profile.resolution, limit, subset_seed, "--real")
            test_r = inputs.test_r
            cfg = runner.parse_models([annotator_model], profile, train.images.shape[1], len(train.classes))[0]
            runner.train_annotator(run, train_annotator, train, cfg, profile, test_r, train.classes,
                                   weights.get(cfg.arch), device, progress, click.echo)
        if want_bench and inputs.train_sets:
            model_cfgs = runner.parse_models(_csv(models) or list(profile.models), profile,
                                             next(iter(inputs.train_sets.values())).images.shape[1],
                                             len(inputs.classes))
            runner.run_benchmark(run, inputs, model_cfgs, profile, save_models=save_models, init_weights=weights,
                                 device=device, progress=progress, log=click.echo,
                                 on_fold=lambda doc: report.write_report(bench_dir, figures=False),
                                 fold_groups=fold_groups, command=_command_line(), losses=loss_texts or None,
                                 post=post)
        if grade_dir is not None:
            from ..bench import grading
            g = grading.grade_folder(grade_dir, grade_reference, grade_n, device=device)
            grading.store(bench_dir, g)
            click.echo(grading.summary_line(g))
    except (DataError, ValueError, FileNotFoundError) as e:
        raise click.ClickException(str(e)) from None
    except CheckpointError as e:
        raise click.ClickException(str(e)) from None
    if (bench_dir / "results.json").is_file():
        for p in report.write_report(bench_dir):
            click.echo(f"wrote {p}")
