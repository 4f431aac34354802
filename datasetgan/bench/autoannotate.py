"""Model-assisted annotation: a segmenter trained on real labels paints the masks of generated seed
images, so the pipeline can run end to end without a person (``datasetgan annotate RUN --auto MODEL``).

This loads the segmenter and the generator; the annotations themselves are written by
:func:`datasetgan.annotation_sources.auto_annotate` (state "done", source "model:<name>"; a person's
finished masks are never overwritten unless asked).
"""

from __future__ import annotations

from ..annotation_sources import auto_annotate as annotate_with
from ..annotation_sources import existing_then_smallest
from ..annotations import AnnotationError, AnnotationSet
from ..checkpoint import load_generator
from ..runfolder import RunFolder
from .segmenters import load_segmenter


def auto_annotate(
    run_dir,
    model_path,
    n: int = 30,
    seeds=None,
    truncation: float = 1.0,
    noise_mode: str = "const",
    overwrite: bool = False,
    device: str = "cpu",
) -> list[str]:
    """Label ``seeds`` (default: the set's items topped up to ``n`` with the smallest unused seeds)
    with the segmenter at ``model_path``; returns the ids labelled."""
    run = RunFolder(run_dir)
    model = load_segmenter(model_path, device)
    G = load_generator(run.require(run.generator, "datasetgan train"), device)
    if G.cfg.img_channels != model.cfg.in_channels:
        raise AnnotationError(
            f"{model_path}: the segmenter takes {model.cfg.in_channels}-channel images but the "
            f"generator makes {G.cfg.img_channels}-channel ones"
        )
    aset = AnnotationSet(run.annotations)
    if seeds is None:
        if n < 1:
            raise AnnotationError(f"n must be at least 1, got {n}")
        seeds = existing_then_smallest(aset, n)
    return annotate_with(aset, G, model, model.name, seeds, truncation, noise_mode, overwrite)
