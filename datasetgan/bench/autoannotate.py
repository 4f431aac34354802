"""Model-assisted annotation: a segmenter trained on real labels paints the masks of generated seed
images, so the pipeline can run end to end without a person (``datasetgan annotate RUN --auto MODEL``).

Items are rendered into ``RUN/annotations`` with :func:`datasetgan.annotations.render_items` (seeds
already there are reused) and saved with state "done" and source "model:<name>". A person's finished
masks are never overwritten unless asked.
"""
from __future__ import annotations

import numpy as np

from ..annotations import AnnotationError, AnnotationSet, render_items
from ..checkpoint import load_generator
from ..runfolder import RunFolder
from .segmenters import load_segmenter


def choose_seeds(aset: AnnotationSet, n: int) -> list[int]:
    """The set's existing items first (in seed order), topped up with the smallest unused seeds."""
    have = [aset.record(i).seed for i in aset.ids()][:n]
    seeds, s = list(have), 0
    taken = set(have)
    while len(seeds) < n:
        if s not in taken:
            seeds.append(s)
        s += 1
    return seeds


def auto_annotate(run_dir, model_path, n: int = 30, seeds=None, truncation: float = 1.0,
                  noise_mode: str = "const", overwrite: bool = False, device: str = "cpu",
                  batch_size: int = 16) -> list[str]:
    """Label ``seeds`` (default: ``n`` seeds, see :func:`choose_seeds`) with the segmenter at
    ``model_path``; returns the ids labelled (items a person finished are skipped unless ``overwrite``)."""
    run = RunFolder(run_dir)
    model = load_segmenter(model_path, device)
    G = load_generator(run.require(run.generator, "datasetgan train"), device)
    if G.cfg.img_channels != model.cfg.in_channels:
        raise AnnotationError(f"{model_path}: the segmenter takes {model.cfg.in_channels}-channel images but the "
                              f"generator makes {G.cfg.img_channels}-channel ones")
    aset = AnnotationSet(run.annotations)
    classes = None
    if aset.labels_path.is_file():
        have = aset.classes()
        if len(have) != len(model.classes):
            raise AnnotationError(f"{aset.labels_path} has {len(have)} classes but the segmenter predicts "
                                  f"{len(model.classes)}")
    else:
        classes = model.classes
    if seeds is None:
        if n < 1:
            raise AnnotationError(f"n must be at least 1, got {n}")
        seeds = choose_seeds(aset, n)
    ids = render_items(aset, G, [int(s) for s in seeds], truncation, noise_mode, classes=classes)
    todo = []
    for i in ids:
        rec = aset.record(i)
        person_done = rec.state == "done" and not rec.source.startswith("model:") and aset.path(i, "mask").is_file()
        if overwrite or not person_done:
            todo.append(i)
    for start in range(0, len(todo), batch_size):
        chunk = todo[start: start + batch_size]
        imgs = [aset.image(i) for i in chunk]
        batch = np.stack([im[None] if im.ndim == 2 else im.transpose(2, 0, 1) for im in imgs])
        masks = model.predict(batch)
        for i, m in zip(chunk, masks):
            aset.save_mask(i, m, state="done", source=f"model:{model.name}")
    return todo

