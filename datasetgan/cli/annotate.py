"""``datasetgan annotate``: render seed images into the run's annotation set and serve the page."""
from __future__ import annotations

import json
import re
import socket
from pathlib import Path

import click
import numpy as np

from ..annotations import ITEM_ID, AnnotationError, AnnotationSet, item_id, render_items
from ..data import DataError, ClassInfo, locate, read_labels, read_mask
from ..runfolder import RunFolder

MAX_SEED = 10 ** 8 - 1          # item ids hold 8 digits
DATA_KEYS = ("data", "data_dir", "dataset", "training_data", "data_path")


def parse_seeds(text: str) -> list[int]:
    """'1,2,5-9' -> [1, 2, 5, 6, 7, 8, 9] (order kept, repeats dropped)."""
    seeds: list[int] = []
    for part in (p.strip() for p in text.split(",")):
        if re.fullmatch(r"[0-9]+", part):
            seeds.append(int(part))
        elif m := re.fullmatch(r"([0-9]+)\s*-\s*([0-9]+)", part):
            lo, hi = int(m[1]), int(m[2])
            if hi < lo or hi - lo > 100_000:
                raise click.BadParameter(f"range {part} must go upwards and hold at most 100001 seeds")
            seeds.extend(range(lo, hi + 1))
        elif part:
            raise click.BadParameter(f"{part!r} is not a seed or a range like 5-9")
    bad = [s for s in seeds if s > MAX_SEED]
    if bad:
        raise click.BadParameter(f"seeds must be in 0..{MAX_SEED}, got {bad[:5]}")
    if not seeds:
        raise click.BadParameter("no seeds given")
    return list(dict.fromkeys(seeds))


def random_seeds(n: int, rng_seed: int) -> list[int]:
    """n distinct seeds from a seeded RNG; the first k of n are the same for every n >= k."""
    rng = np.random.default_rng(rng_seed)
    out: dict[int, None] = {}
    while len(out) < n:
        out.setdefault(int(rng.integers(0, MAX_SEED + 1)), None)
    return list(out)


def diverse_seeds(G, n: int, rng_seed: int, pool: int | None = None) -> list[int]:
    """n seeds spread over the latent space: farthest-point sampling on w over a pool of candidates."""
    import torch

    from ..render import seed_latent

    candidates = random_seeds(pool or max(1000, 20 * n), rng_seed)
    with torch.no_grad():
        z = torch.stack([seed_latent(s, G.cfg.z_dim) for s in candidates])
        device = next(G.parameters()).device
        w = torch.cat([G.mapping(z[i:i + 256].to(device))[:, 0].cpu() for i in range(0, len(z), 256)])
    w = w.double()
    # start from the candidate nearest the mean w (a typical image), then add the farthest each time
    chosen = [int((w - w.mean(0)).norm(dim=1).argmin())]
    dist = (w - w[chosen[0]]).norm(dim=1)
    while len(chosen) < min(n, len(candidates)):
        k = int(dist.argmax())
        chosen.append(k)
        dist = torch.minimum(dist, (w - w[k]).norm(dim=1))
    return [candidates[k] for k in chosen]


def training_labels(run: RunFolder) -> Path | None:
    """The labels.json of the data the generator was trained on, if the run records that folder."""
    for meta_file in (run.generator.with_suffix(".json"), run.training / "options.json",
                      run.training / "config.json", run.training / "training_options.json"):
        try:
            meta = json.loads(meta_file.read_text())
        except (OSError, ValueError):
            continue
        for holder in (meta, meta.get("config", {}) if isinstance(meta.get("config"), dict) else {},
                       meta.get("training", {}) if isinstance(meta.get("training"), dict) else {}):
            for key in DATA_KEYS:
                value = holder.get(key)
                if isinstance(value, str) and value:
                    try:
                        labels = locate(value)[2]
                    except DataError:
                        continue
                    if labels is not None:
                        return labels
    return None


def resolve_classes(run: RunFolder, aset: AnnotationSet, labels: str | None) -> list[ClassInfo] | None:
    """Classes to store (or None to keep the set's own labels.json)."""
    try:
        if labels:
            new = read_labels(labels)
            if aset.labels_path.is_file():
                old = aset.classes()
                masks = [r.id for r in aset.records() if aset.path(r.id, "mask").is_file()]
                if old != new and masks:
                    raise click.ClickException(
                        f"{aset.labels_path} already defines {len(old)} classes and {len(masks)} masks use them; "
                        f"{labels} differs. Omit --labels to keep the set's classes.")
            return new
        if aset.labels_path.is_file():
            aset.classes()  # validates
            return None
        found = training_labels(run)
        if found is not None:
            click.echo(f"classes: {found} (the training data's labels.json)")
            return read_labels(found)
    except DataError as e:
        raise click.ClickException(str(e)) from None
    raise click.ClickException(
        "no classes: pass --labels labels.json, e.g. "
        '{"classes": [{"id": 0, "name": "background", "color": "#000000"}, '
        '{"id": 1, "name": "organ", "color": "#e6194b"}]}')


def import_masks(aset: AnnotationSet, folder: Path) -> int:
    """Import label maps DIR/<item id or seed>.png; every file is checked before any is saved."""
    if not folder.is_dir():
        raise click.ClickException(f"--import {folder}: not a folder")
    files = sorted(p for p in folder.iterdir() if p.suffix.lower() == ".png" and not p.name.startswith("."))
    if not files:
        raise click.ClickException(f"--import {folder}: no PNG label maps found")
    n_classes = len(aset.classes())
    known = set(aset.ids())
    plan, problems = [], []
    for f in files:
        stem = f.stem
        if ITEM_ID.fullmatch(stem) and stem.isascii():
            item = stem
        elif stem.isdigit() and stem.isascii() and int(stem) < 10 ** 8:
            item = item_id(int(stem))
        else:
            problems.append(f"{f.name}: name must be an item id (seed_00000042.png) or a seed (42.png)")
            continue
        if item not in known:
            problems.append(f"{f.name}: no item {item} in the set (render it first with --seeds {int(item[5:])})")
            continue
        try:
            mask = read_mask(f)
        except DataError as e:
            problems.append(str(e))
            continue
        res = aset.record(item).resolution
        if mask.shape != (res, res):
            problems.append(f"{f.name}: mask is {mask.shape[1]}x{mask.shape[0]}, expected {res}x{res}")
        elif mask.size and int(mask.max()) >= n_classes:
            bad = sorted(int(v) for v in np.unique(mask) if v >= n_classes)
            problems.append(f"{f.name}: unknown class id(s) {bad}; classes are 0..{n_classes - 1}")
        else:
            plan.append((item, mask))
    if problems:
        raise click.ClickException("nothing imported:\n  " + "\n  ".join(problems))
    for item, mask in plan:
        aset.save_mask(item, mask, state="done", source="import")
    return len(plan)


def unlabelled(aset: AnnotationSet) -> list:
    return [r for r in aset.records() if r.state == "todo" and not aset.path(r.id, "mask").is_file()]


def pre_annotate_with_model(aset: AnnotationSet, model_path: str) -> int:
    from PIL import Image

    path = Path(model_path)
    if not path.is_file():
        raise click.ClickException(f"--pre-annotate {model_path}: no such file (or use the keyword 'interpreter')")
    try:
        from ..bench.segmenters import load_segmenter
    except ImportError:
        raise click.ClickException("--pre-annotate MODEL needs datasetgan.bench.segmenters (the benchmark stage), "
                                   "which this installation does not have yet") from None
    try:
        seg = load_segmenter(path)
    except Exception as e:  # a bad model file: report, do not trace back
        raise click.ClickException(f"--pre-annotate {model_path}: cannot load the segmenter ({e})") from None
    n_classes = len(aset.classes())
    if len(seg.classes) != n_classes:
        raise click.ClickException(f"{model_path} predicts {len(seg.classes)} classes but the set has {n_classes}")
    todo = unlabelled(aset)
    for rec in todo:
        img = aset.image(rec.id)
        if seg.resolution != rec.resolution:
            img = np.asarray(Image.fromarray(img).resize((seg.resolution, seg.resolution), Image.BILINEAR))
        x = (img[..., None] if img.ndim == 2 else img).transpose(2, 0, 1)[None]
        mask = np.asarray(seg.predict(np.ascontiguousarray(x)))[0].astype(np.uint8)
        if mask.shape[0] != rec.resolution:
            mask = np.asarray(Image.fromarray(mask).resize((rec.resolution, rec.resolution), Image.NEAREST))
        aset.save_mask(rec.id, np.minimum(mask, n_classes - 1), state="pre-annotated", source=f"model:{path.stem}")
    return len(todo)


def pre_annotate_with_interpreter(aset: AnnotationSet, run: RunFolder) -> int:
    if not run.interpreter.is_file():
        raise click.ClickException(f"--pre-annotate interpreter: {run.interpreter} does not exist; "
                                   "train it with `datasetgan interpret RUN` first")
    try:
        from ..factory import PairFactory
    except ImportError:
        raise click.ClickException("--pre-annotate interpreter needs datasetgan.factory (the interpreter stage), "
                                   "which this installation does not have yet") from None
    factory = PairFactory(run.root)
    if len(factory.classes) != len(aset.classes()):
        raise click.ClickException(f"the interpreter predicts {len(factory.classes)} classes but the set has "
                                   f"{len(aset.classes())}")
    todo = unlabelled(aset)
    by_truncation: dict[float, list] = {}
    for rec in todo:
        by_truncation.setdefault(rec.truncation, []).append(rec)
    for truncation, recs in by_truncation.items():
        for rec, pair in zip(recs, factory.pairs([r.seed for r in recs], truncation=truncation)):
            image = aset.image(rec.id)
            shown = pair.image[..., 0] if pair.image.ndim == 3 and pair.image.shape[2] == 1 else pair.image
            if shown.shape != image.shape or not np.array_equal(shown, image):
                click.echo(f"warning: the interpreter's image for {rec.id} differs from the annotated one "
                           f"(noise mode {rec.noise_mode}?); skipped", err=True)
                continue
            aset.save_mask(rec.id, pair.mask, state="pre-annotated", source="interpreter")
    return len(todo)


def check_port(host: str, port: int) -> int:
    """The port to serve on (a free one if 0); a clear error if it is taken."""
    try:
        with socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET) as s:
            s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            s.bind((host, port))
            return s.getsockname()[1]
    except OSError as e:
        raise click.ClickException(f"cannot serve on {host}:{port} ({e.strerror}); choose another --port") from None


@click.command(context_settings={"help_option_names": ["-h", "--help"]})
@click.argument("run", type=click.Path(file_okay=False, path_type=Path))
@click.option("--n", "n", type=click.IntRange(1, 10_000), default=None,
              help="Number of seed images to render (default 30 for a new set; a set that already has "
                   "images is only served unless --n or --seeds is given).")
@click.option("--seeds", default=None, help="Explicit seeds, e.g. 1,2,5-9 (instead of random ones).")
@click.option("--diverse", is_flag=True, help="Pick seeds spread over the latent space (farthest-point "
              "sampling on w over a pool of random candidates) instead of purely random ones.")
@click.option("--random-seed", type=int, default=0, show_default=True,
              help="Seed of the random choice of seeds, so the same command picks the same images.")
@click.option("--truncation", type=click.FloatRange(0.0, 2.0), default=1.0, show_default=True,
              help="Truncation psi used to render (and recorded with each item).")
@click.option("--noise-mode", type=click.Choice(["const", "seed"]), default="const", show_default=True,
              help="Per-layer noise: the generator's stored constant noise, or noise drawn from the seed.")
@click.option("--labels", type=click.Path(dir_okay=False, exists=True), default=None,
              help="labels.json with the classes (default: the set's own, else the training data's).")
@click.option("--import", "import_dir", type=click.Path(file_okay=False, path_type=Path), default=None,
              help="Import label maps painted elsewhere: DIR/<item id or seed>.png (class ids).")
@click.option("--pre-annotate", "pre_annotate", default=None, metavar="MODEL|interpreter",
              help="Fill empty masks from a segmentation model file, or from the run's interpreter; "
                   "they are marked pre-annotated until a person edits them.")
@click.option("--auto", "auto_model", default=None, metavar="MODEL",
              help="Label the chosen seeds with a segmentation model and record them as model-made.")
@click.option("--host", default="127.0.0.1", show_default=True, help="Address to serve the page on.")
@click.option("--port", type=click.IntRange(0, 65535), default=8765, show_default=True,
              help="Port to serve the page on (0: any free port).")
@click.option("--no-serve", is_flag=True, help="Prepare the images (and imports) but do not start the page.")
@click.option("--device", default="cpu", show_default=True, help="Torch device used to render.")
def command(run, n, seeds, diverse, random_seed, truncation, noise_mode, labels, import_dir, pre_annotate,
            auto_model, host, port, no_serve, device):
    """Render seed images of a trained generator and paint their masks in a browser.

    \b
    The images, their seeds and masks are stored in RUN/annotations/ (the annotation set that
    `datasetgan interpret RUN` trains from). The page runs locally; open the printed URL.
    \b
    Examples:
      datasetgan annotate runs/acdc64 --n 30 --diverse
      datasetgan annotate runs/acdc64 --seeds 1,2,5-9 --labels data/labels.json --port 8800
      datasetgan annotate runs/acdc64 --import painted/ --no-serve
      datasetgan annotate runs/acdc64 --pre-annotate interpreter
    """
    rf = RunFolder(run)
    if not rf.root.is_dir():
        raise click.ClickException(f"{run}: not a run folder (train one with `datasetgan train DATA --out {run}`)")
    aset = AnnotationSet(rf.annotations)
    classes = resolve_classes(rf, aset, labels)
    if classes is not None:
        aset.set_classes(classes)

    explicit = parse_seeds(seeds) if seeds else None
    if explicit is not None and n is not None:
        raise click.UsageError("give either --n or --seeds, not both")
    wanted = explicit is not None or n is not None or not aset.ids()
    if wanted or auto_model:
        if not rf.generator.is_file():
            raise click.ClickException(f"{rf.generator} does not exist; run `datasetgan train DATA --out {run}` first")
        from ..checkpoint import CheckpointError, load_generator

        try:
            G = load_generator(rf.generator, device)
        except CheckpointError as e:
            raise click.ClickException(str(e)) from None
        stale = [r.id for r in aset.records() if r.generator_sha256 and r.generator_sha256 != G.sha256]
        if stale:
            click.echo(f"warning: {len(stale)} item(s) (e.g. {stale[0]}) were rendered by a different generator; "
                       "their images are kept as annotated", err=True)
        if explicit is not None:
            chosen = explicit
        else:
            count = n or 30
            chosen = diverse_seeds(G, count, random_seed) if diverse else random_seeds(count, random_seed)
        new = [s for s in chosen if not aset.path(item_id(s), "record").is_file()]
        from tqdm import tqdm

        try:
            for s in tqdm(new, desc="render", unit="img", disable=not new):
                render_items(aset, G, [s], truncation=truncation, noise_mode=noise_mode)
        except (AnnotationError, ValueError) as e:
            raise click.ClickException(str(e)) from None
        click.echo(f"{len(chosen)} seed image(s) chosen, {len(new)} newly rendered into {aset.dir}")
    else:
        chosen = None

    try:
        if import_dir is not None:
            click.echo(f"imported {import_masks(aset, import_dir)} mask(s) from {import_dir}")
        if pre_annotate:
            done = (pre_annotate_with_interpreter(aset, rf) if pre_annotate == "interpreter"
                    else pre_annotate_with_model(aset, pre_annotate))
            click.echo(f"pre-annotated {done} item(s) with {pre_annotate}")
        if auto_model:
            try:
                from ..bench.autoannotate import auto_annotate
            except ImportError:
                raise click.ClickException("--auto needs datasetgan.bench.autoannotate (the benchmark stage), "
                                           "which this installation does not have yet") from None
            if not Path(auto_model).is_file():
                raise click.ClickException(f"--auto {auto_model}: no such file")
            auto_annotate(rf.root, auto_model, len(chosen), seeds=chosen)
            click.echo(f"auto-annotated {len(chosen)} item(s) with {auto_model}")
    except AnnotationError as e:
        raise click.ClickException(str(e)) from None

    recs = aset.records()
    done = sum(r.state == "done" for r in recs)
    click.echo(f"annotation set {aset.dir}: {len(recs)} item(s), {done} done")
    if no_serve:
        return
    port = check_port(host, port)
    import uvicorn

    from annotate.api import create_app

    shown = "127.0.0.1" if host in ("0.0.0.0", "::") else host
    click.echo(f"Annotation page: http://{shown}:{port}/   (Ctrl+C to stop)")
    if host not in ("127.0.0.1", "localhost", "::1"):
        click.echo("note: the page has no login; serve it beyond this machine only on a trusted network", err=True)
    uvicorn.run(create_app(rf.root), host=host, port=port, log_level="warning")
