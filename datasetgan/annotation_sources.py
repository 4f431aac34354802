"""Where the items and masks of an annotation set come from.

:mod:`datasetgan.annotations` stores a set (records, images, masks, history); this module fills it:

* classes: given labels.json, the set's own, or the labels.json of the data the generator was
  trained on (recorded by ``datasetgan train`` in generator.json as ``data``);
* items: seed choice (random, diverse, or the set's own topped up) and rendering
  (:func:`datasetgan.annotations.render_items`);
* masks: label maps painted elsewhere (:func:`import_masks`), a segmentation model
  (:func:`label_with_segmenter`, as pre-annotations or as model-made annotations), or the run's
  interpreter (:func:`pre_annotate_with_interpreter`);
* real labelled images, projected into the generator, with their expert masks (:func:`import_real`).

A new source is one function here that writes through :class:`AnnotationSet` (``add_item``,
``save_mask``), checks everything before it saves anything, and raises :class:`AnnotationError`
with a message naming the file or option; the CLI only parses options and calls it.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
from PIL import Image

from .annotations import ITEM_ID, AnnotationError, AnnotationRecord, AnnotationSet, item_id, render_items
from .atomic import atomic_write_bytes
from .data import (
    ClassInfo,
    DataError,
    fit_square,
    list_images,
    locate,
    mask_path_for,
    read_image,
    read_labels,
    read_mask,
    resize_image,
    resize_mask,
)
from .png import png_bytes
from .runfolder import RunFolder
from .seeds import MAX_SEED, random_seeds

PRE_ANNOTATED = "pre-annotated"


# -- classes ----------------------------------------------------------------------------------------


def training_labels(run: RunFolder) -> Path | None:
    """The labels.json of the data the generator was trained on (``data`` in generator.json), if any."""
    try:
        data = json.loads(run.generator.with_suffix(".json").read_text()).get("data")
        return locate(data)[2] if isinstance(data, str) and data else None
    except (OSError, ValueError, AttributeError):
        return None


def resolve_classes(run: RunFolder, aset: AnnotationSet, labels: str | None, echo=print) -> list[ClassInfo] | None:
    """Classes to store (None: keep the set's own labels.json): ``labels`` if given (refused when it
    changes the classes under saved masks), else the set's own, else the training data's."""
    if labels:
        new = read_labels(labels)
        if aset.labels_path.is_file():
            old = aset.classes()
            masks = [r.id for r in aset.records() if aset.path(r.id, "mask").is_file()]
            if old != new and masks:
                raise AnnotationError(
                    f"{aset.labels_path} already defines {len(old)} classes and {len(masks)} masks use them; "
                    f"{labels} differs. Omit --labels to keep the set's classes."
                )
        return new
    if aset.labels_path.is_file():
        aset.classes()  # validates
        return None
    found = training_labels(run)
    if found is not None:
        echo(f"classes: {found} (the training data's labels.json)")
        return read_labels(found)
    raise AnnotationError(
        "no classes: pass --labels labels.json, e.g. "
        '{"classes": [{"id": 0, "name": "background", "color": "#000000"}, '
        '{"id": 1, "name": "organ", "color": "#e6194b"}]}'
    )


# -- seeds ------------------------------------------------------------------------------------------


def diverse_seeds(G, n: int, rng_seed: int, pool: int | None = None) -> list[int]:
    """n seeds spread over the latent space: farthest-point sampling on w over a pool of candidates."""
    import torch

    from .render import seed_latent

    candidates = random_seeds(pool or max(1000, 20 * n), rng_seed)
    with torch.no_grad():
        z = torch.stack([seed_latent(s, G.cfg.z_dim) for s in candidates])
        device = next(G.parameters()).device
        w = torch.cat([G.mapping(z[i : i + 256].to(device))[:, 0].cpu() for i in range(0, len(z), 256)])
    w = w.double()
    # start from the candidate nearest the mean w (a typical image), then add the farthest each time
    chosen = [int((w - w.mean(0)).norm(dim=1).argmin())]
    dist = (w - w[chosen[0]]).norm(dim=1)
    while len(chosen) < min(n, len(candidates)):
        k = int(dist.argmax())
        chosen.append(k)
        dist = torch.minimum(dist, (w - w[k]).norm(dim=1))
    return [candidates[k] for k in chosen]


def existing_then_smallest(aset: AnnotationSet, n: int) -> list[int]:
    """The set's items first (in seed order), topped up with the smallest unused seeds."""
    have = [r.seed for r in aset.records() if r.kind == "seed"][:n]
    seeds, s = list(have), 0
    taken = set(have)
    while len(seeds) < n:
        if s not in taken:
            seeds.append(s)
        s += 1
    return seeds


# -- masks ------------------------------------------------------------------------------------------


def import_masks(aset: AnnotationSet, folder: Path) -> int:
    """Import label maps DIR/<item id or seed>.png; every file is checked before any is saved."""
    folder = Path(folder)
    if not folder.is_dir():
        raise AnnotationError(f"--import {folder}: not a folder")
    files = sorted(p for p in folder.iterdir() if p.suffix.lower() == ".png" and not p.name.startswith("."))
    if not files:
        raise AnnotationError(f"--import {folder}: no PNG label maps found")
    n_classes = len(aset.classes())
    known = set(aset.ids())
    plan, problems = [], []
    for f in files:
        stem = f.stem
        if ITEM_ID.fullmatch(stem):
            item = stem
        elif stem.isdigit() and stem.isascii() and int(stem) <= MAX_SEED:
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
        raise AnnotationError("nothing imported:\n  " + "\n  ".join(problems))
    for item, mask in plan:
        aset.save_mask(item, mask, state="done", source="import")
    return len(plan)


def unlabelled(aset: AnnotationSet) -> list[str]:
    """Items nobody has painted yet (no mask, state todo)."""
    return [
        r.id for r in aset.records() if r.kind == "seed" and r.state == "todo" and not aset.path(r.id, "mask").is_file()
    ]


def resize(a: np.ndarray, size: int, resample) -> np.ndarray:
    return a if a.shape[0] == size else np.asarray(Image.fromarray(a).resize((size, size), resample))


def check_model_classes(aset: AnnotationSet, seg, source: str) -> int:
    n_classes = len(aset.classes())
    if len(seg.classes) != n_classes:
        raise AnnotationError(
            f"{source}: the model predicts {len(seg.classes)} classes but {aset.labels_path} has {n_classes}"
        )
    return n_classes


def label_with_segmenter(
    aset: AnnotationSet, seg, ids: list[str], state: str, source: str, batch_size: int = 16
) -> list[str]:
    """Save ``seg``'s label maps of the items ``ids`` (images resized to the segmenter's resolution
    and masks back); ``seg`` has ``classes``, ``resolution`` and ``predict(uint8 [N, C, H, W])``."""
    n_classes = check_model_classes(aset, seg, source)
    for start in range(0, len(ids), batch_size):
        chunk = ids[start : start + batch_size]
        images = [resize(aset.image(i), seg.resolution, Image.BILINEAR) for i in chunk]
        x = np.stack([(im[..., None] if im.ndim == 2 else im).transpose(2, 0, 1) for im in images])
        for i, m in zip(chunk, np.asarray(seg.predict(np.ascontiguousarray(x))).astype(np.uint8)):
            mask = resize(m, aset.record(i).resolution, Image.NEAREST)
            aset.save_mask(i, np.minimum(mask, n_classes - 1), state=state, source=source)
    return ids


def pre_annotate_with_model(aset: AnnotationSet, model_path: str) -> int:
    """Fill the unpainted items' masks from a segmentation model file (state pre-annotated)."""
    path = Path(model_path)
    if not path.is_file():
        raise AnnotationError(f"--pre-annotate {model_path}: no such file (or use the keyword 'interpreter')")
    from .bench.segmenters import load_segmenter

    try:
        seg = load_segmenter(path)
    except Exception as e:  # a bad model file: report, do not trace back
        raise AnnotationError(f"--pre-annotate {model_path}: cannot load the segmenter ({e})") from None
    return len(label_with_segmenter(aset, seg, unlabelled(aset), PRE_ANNOTATED, f"model:{path.stem}"))


def auto_annotate(
    aset: AnnotationSet,
    G,
    seg,
    name: str,
    seeds,
    truncation: float = 1.0,
    noise_mode: str = "const",
    overwrite: bool = False,
) -> list[str]:
    """Render ``seeds`` (reusing items already there) and save ``seg``'s masks as finished, model-made
    annotations (source ``model:<name>``); a person's finished masks are kept unless ``overwrite``."""
    classes = None
    if aset.labels_path.is_file():
        check_model_classes(aset, seg, f"model:{name}")  # before anything is rendered
    else:
        classes = seg.classes
    ids = render_items(aset, G, [int(s) for s in seeds], truncation, noise_mode, classes=classes)
    todo = []
    for i in ids:
        rec = aset.record(i)
        person_done = rec.state == "done" and not rec.source.startswith("model:") and aset.path(i, "mask").is_file()
        if overwrite or not person_done:
            todo.append(i)
    return label_with_segmenter(aset, seg, todo, "done", f"model:{name}")


def pre_annotate_with_interpreter(aset: AnnotationSet, run: RunFolder, warn=print) -> int:
    """Fill the unpainted items' masks from the run's interpreter (state pre-annotated); an item whose
    re-rendered image differs from the annotated one is skipped with a warning."""
    if not run.interpreter.is_file():
        raise AnnotationError(
            f"--pre-annotate interpreter: {run.interpreter} does not exist; "
            "train it with `datasetgan interpret RUN` first"
        )
    from .factory import PairFactory

    factory = PairFactory(run.root)
    if len(factory.classes) != len(aset.classes()):
        raise AnnotationError(
            f"the interpreter predicts {len(factory.classes)} classes but the set has {len(aset.classes())}"
        )
    todo = [aset.record(i) for i in unlabelled(aset)]
    by_truncation: dict[float, list] = {}
    for rec in todo:
        by_truncation.setdefault(rec.truncation, []).append(rec)
    for truncation, recs in by_truncation.items():
        for rec, pair in zip(recs, factory.pairs([r.seed for r in recs], truncation=truncation)):
            image = aset.image(rec.id)
            shown = pair.image[..., 0] if pair.image.ndim == 3 and pair.image.shape[2] == 1 else pair.image
            if shown.shape != image.shape or not np.array_equal(shown, image):
                warn(
                    f"warning: the interpreter's image for {rec.id} differs from the annotated one "
                    f"(noise mode {rec.noise_mode}?); skipped"
                )
                continue
            aset.save_mask(rec.id, pair.mask, state=PRE_ANNOTATED, source="interpreter")
    return len(todo)


# -- real labelled images ---------------------------------------------------------------------------


def read_real_folder(folder, classes: list[ClassInfo] | None, channels: int, resolution: int, fit: str = "crop"):
    """A canonical data folder (images/ + masks/ + labels.json) checked whole and prepared at
    ``resolution`` (images Lanczos, masks nearest neighbour): (names, uint8 images [N, C, R, R], masks
    [N, R, R], classes). The first problem raises AnnotationError naming its file."""
    try:
        image_dir, mask_dir, labels_path = locate(folder)
        if mask_dir is None:
            raise AnnotationError(f"--import-real {folder}: no masks/ folder (expected images/, masks/, labels.json)")
        own = read_labels(labels_path) if labels_path else None
        if own is None and classes is None:
            raise AnnotationError(f"--import-real {folder}: no labels.json (and the annotation set has no classes)")
        if own is not None and classes is not None and own != classes:
            raise AnnotationError(f"{labels_path}: its classes differ from the annotation set's labels.json")
        classes = own or classes
        files = list_images(image_dir)
        if not files:
            raise AnnotationError(f"--import-real {folder}: no PNG or JPEG images in {image_dir}")
        names, images, masks = [], [], []
        for f in files:
            a = read_image(f)
            if a.shape[2] != channels:
                raise AnnotationError(f"{f}: has {a.shape[2]} channel(s), the generator makes {channels}")
            mask_file = mask_path_for(mask_dir, f)
            if mask_file is None:
                raise AnnotationError(f"{f}: no mask with the same name in {mask_dir}")
            m = read_mask(mask_file)
            if m.shape != a.shape[:2]:
                raise AnnotationError(
                    f"{mask_file}: mask is {m.shape[1]}x{m.shape[0]}, its image {a.shape[1]}x{a.shape[0]}"
                )
            if m.size and int(m.max()) >= len(classes):
                bad = sorted(int(v) for v in np.unique(m) if v >= len(classes))
                raise AnnotationError(f"{mask_file}: class id(s) {bad} are not in labels.json (0..{len(classes) - 1})")
            names.append(f.name)
            images.append(resize_image(fit_square(a, fit), resolution).transpose(2, 0, 1))
            masks.append(resize_mask(fit_square(m, fit), resolution))
    except DataError as e:
        raise AnnotationError(str(e)) from None
    return names, np.stack(images), np.stack(masks), classes


def import_real(
    aset: AnnotationSet,
    G,
    folder,
    cfg=None,
    features=None,
    fit: str = "crop",
    progress: bool = False,
    projection_dir=None,
) -> list[str]:
    """Project the real images of ``folder`` into G and store each as a finished annotation (kind
    "real": real, projected) whose mask is its expert mask, with its reconstruction PSNR and SSIM.

    ``projection_dir``: a folder written by ``datasetgan project`` (same generator, same ``fit``) whose
    stored projections are taken instead of projecting again (``cfg`` then does not apply).
    Every file is checked before anything is projected or written; images already imported (by file
    name, with this generator) are skipped. Each item's files are written before its record, so an
    interrupted import never shows a half-written item. Returns the new item ids."""
    import time

    from .projector import ProjectorConfig, project, quality, reconstruct, save_projection

    cfg = cfg or ProjectorConfig()
    existing = aset.labels_path.is_file()
    names, images, masks, classes = read_real_folder(
        folder, aset.classes() if existing else None, G.cfg.img_channels, G.cfg.resolution, fit
    )
    done = {r.real_name for r in aset.records() if r.kind == "real" and r.generator_sha256 == G.sha256}
    todo = [i for i, name in enumerate(names) if name not in done]
    stored = None
    if projection_dir is not None and todo:
        stored = stored_projections(projection_dir, G, [Path(names[i]).stem for i in todo], fit)
    if not existing:
        aset.set_classes(classes)
    if not todo:
        return []
    if stored is not None:
        projections, config = stored
    else:
        projections, config = project(G, images[todo], cfg, features=features, progress=progress), cfg.to_dict()
    number = max([r.seed + 1 for r in aset.records() if r.kind == "real"], default=0)
    ids = []
    for k, (i, p) in enumerate(zip(todo, projections)):
        original = images[i].transpose(1, 2, 0)
        recon = reconstruct(G, p)
        q = quality(original, recon)
        rec = AnnotationRecord(
            number + k,
            1.0,
            "projection",
            G.sha256,
            G.cfg.resolution,
            state="done",
            source="expert",
            updated=time.time(),
            kind="real",
            real_name=names[i],
            **q,
        )
        save_projection(aset.path(rec.id, "projection"), p, G.sha256, {"name": names[i], **q, "config": config})
        atomic_write_bytes(aset.path(rec.id, "original"), png_bytes(original))
        atomic_write_bytes(aset.path(rec.id, "mask"), png_bytes(masks[i]))
        aset.add_item(rec, recon)  # the image, then the record: the item exists from here on
        ids.append(rec.id)
    return ids


def stored_projections(folder, G, stems: list[str], fit: str) -> tuple[list, dict]:
    """The projections of the images ``stems`` from a folder written by ``datasetgan project`` with G
    (and the projector options they were made with); every one must be there, made with ``fit``."""
    from .projector import INDEX, load_projections

    names, projections, index = load_projections(folder, G)
    if index.get("fit", "crop") != fit:
        raise AnnotationError(f"{Path(folder) / INDEX}: images were made square by {index.get('fit')!r}, not {fit!r}")
    stored = dict(zip(names, projections))
    missing = [s for s in stems if s not in stored]
    if missing:
        raise AnnotationError(
            f"{Path(folder) / INDEX}: has no projection of {missing[0]!r} ({len(missing)} image(s) missing)"
        )
    return [stored[s] for s in stems], index.get("config", {})
