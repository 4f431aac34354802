"""Interpreter agreement on real images: the masks an interpreter reads from the features of real
images projected into its generator (:mod:`datasetgan.projector`), scored against their expert masks.

It measures the interpreter on real anatomy directly, with no segmenter in between: IoU and Dice per
class from one confusion matrix summed over all images (a class absent from both truth and prediction
is NaN), their means (mIoU with and without background) and pixel accuracy, as the benchmark does.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from ..data import DataError, load_image_folder
from ..errors import DatasetganError
from ..projector import Projection, load_projections, reconstruct
from ..runfolder import RunFolder
from .datasets import class_differences
from .metrics import confusion_matrix, scores_from_confusion


class AgreementError(DatasetganError, ValueError):
    """Inputs that cannot be scored together; the message names the file."""


def predict_masks(G, interp, projections: list[Projection]) -> np.ndarray:
    """uint8 [N, R, R]: the interpreter's mask of each projection, from the features of its exact rendering."""
    return np.stack([interp.predict(reconstruct(G, p, with_taps=True)[1]).mask[0].numpy() for p in projections])


def agreement(pred: np.ndarray, truth: np.ndarray, class_names: list[str]) -> dict:
    """Scores of predicted against expert masks (uint8 [N, R, R]) over all images at once."""
    cm = confusion_matrix(pred, truth, len(class_names))
    return {"n": int(len(pred)), "classes": list(class_names), **scores_from_confusion(cm), "confusion": cm.tolist()}


def expert_masks(data, names: list[str], resolution: int, fit: str, classes) -> np.ndarray:
    """The masks of the images ``names`` (stems) of the labelled folder ``data``, prepared like the
    projected images (square by ``fit``, nearest-neighbour resize); its classes must be ``classes``."""
    try:
        ds = load_image_folder(data, resolution, fit=fit, masks="require")
    except DataError as e:
        raise AgreementError(str(e)) from None
    problems = class_differences(str(data), ds.classes, "the interpreter's classes", classes)
    if problems:
        raise AgreementError("; ".join(problems))
    index = {n: i for i, n in enumerate(ds.names)}
    missing = [n for n in names if n not in index]
    if missing:
        raise AgreementError(
            f"{data}: has no image named {missing[0]!r} ({len(missing)} of the {len(names)} projected image(s) missing)"
        )
    return ds.masks[[index[n] for n in names]]


def score_run(run, projections, data, device: str = "cpu") -> dict:
    """Score RUN's interpreter on the real images projected into RUN's generator in the folder
    ``projections`` (written by ``datasetgan project``), against the expert masks of the same-named
    images of the labelled folder ``data``. Every input is checked before anything is computed."""
    from ..checkpoint import CheckpointError, load_generator
    from ..interpreter import load_interpreter

    rf = RunFolder(run)
    try:
        G = load_generator(rf.require(rf.generator, f"datasetgan train DATA --out {run}"), device)
        interp = load_interpreter(rf.require(rf.interpreter, f"datasetgan interpret {run}"), device)
    except (CheckpointError, FileNotFoundError) as e:
        raise AgreementError(str(e)) from None
    if interp.info.generator_sha256 != G.sha256:
        raise AgreementError(
            f"{rf.interpreter}: trained on generator {interp.info.generator_sha256[:12]}..., "
            f"not the run's {G.sha256[:12]}..."
        )
    names, projected, index = load_projections(projections, G)
    truth = expert_masks(data, names, G.cfg.resolution, index.get("fit", "crop"), interp.info.classes)
    out = agreement(predict_masks(G, interp, projected), truth, [c.name for c in interp.info.classes])
    out.update(
        run=str(run),
        projections=str(projections),
        data=str(data),
        generator_sha256=G.sha256,
        interpreter_sha256=interp.sha256,
        annotations=len(interp.info.annotations),
        names=names,
    )
    return out


def summary_line(a: dict) -> str:
    per_class = ", ".join(f"{c} {v:.3f}" for c, v in zip(a["classes"], a["iou"]) if v == v)  # NaN: class absent
    return f"interpreter agreement on {a['n']} projected real image(s): mIoU {a['miou']:.3f} (IoU {per_class})"


def store(bench_dir, a: dict) -> None:
    from .runner import Results

    results = Results(Path(bench_dir))
    results.set(agreement=a)
    results.save()
