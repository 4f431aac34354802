"""Pair grading as in the seed's Fig. 7 analysis: a generated mask is *good* if at most 1 % of its
pixels disagree with a reference labeller, *bad* if at least 25 % do, *partial* in between.

The reference is a person's masks (an annotation set or a data folder with masks named by seed) or
the model-assisted annotator (a segmenter file), which labels the generated images itself.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
from PIL import Image

from ..data import DataError, fit_square, load_image_folder, resize_mask
from .datasets import class_differences
from .runner import Results

GOOD_MAX = 0.01
BAD_MIN = 0.25


def wrong_fraction(mask: np.ndarray, reference: np.ndarray) -> float:
    """Share of pixels whose class differs from the reference."""
    mask, reference = np.asarray(mask), np.asarray(reference)
    if mask.shape != reference.shape:
        raise ValueError(f"mask {mask.shape} and reference {reference.shape} differ in size")
    return float((mask != reference).mean())


def grade(fraction: float, good_max: float = GOOD_MAX, bad_min: float = BAD_MIN) -> str:
    if fraction <= good_max:
        return "good"
    return "bad" if fraction >= bad_min else "partial"


def grade_pairs(masks, references, good_max: float = GOOD_MAX, bad_min: float = BAD_MIN) -> dict:
    """Grade each mask against its reference; counts, per-pair fractions and grades."""
    if len(masks) != len(references):
        raise ValueError(f"{len(masks)} masks but {len(references)} references")
    fractions = [wrong_fraction(m, r) for m, r in zip(masks, references)]
    grades = [grade(f, good_max, bad_min) for f in fractions]
    return {
        "n": len(grades),
        "counts": {g: grades.count(g) for g in ("good", "partial", "bad")},
        "fractions": fractions,
        "grades": grades,
        "good_max": good_max,
        "bad_min": bad_min,
        "mean_wrong": float(np.mean(fractions)) if fractions else 0.0,
    }


def _person_masks(folder: Path, seeds: list[int], resolution: int) -> dict[int, np.ndarray]:
    """Masks of the given seeds from an annotation set (seed_XXXXXXXX.mask.png, state done) or a data
    folder (masks/XXXXXXXX.png)."""
    found = {}
    for s in seeds:
        cands = [folder / f"seed_{s:08d}.mask.png", folder / "masks" / f"{s:08d}.png", folder / f"{s:08d}.png"]
        p = next((c for c in cands if c.is_file()), None)
        if p is None:
            continue
        rec = folder / f"seed_{s:08d}.json"
        if p.name.startswith("seed_") and rec.is_file() and json.loads(rec.read_text()).get("state") != "done":
            continue  # an unfinished annotation is no reference
        m = fit_square(np.asarray(Image.open(p), dtype=np.uint8), "crop")  # as load_image_folder does
        found[s] = resize_mask(m, resolution)
    return found


def grade_folder(folder, reference, n: int = 100, device: str = "cpu", cache_dir=None) -> dict:
    """Grade the first ``n`` pairs of a generated folder (those the reference covers)."""
    folder = Path(folder)
    with Image.open(next((folder / "images").glob("*.png"))) as im:
        res = im.size[0]
    ds = load_image_folder(folder, res, masks="require", cache_dir=cache_dir)
    try:
        seeds = [int(nm) for nm in ds.names]
    except ValueError:
        raise DataError(f"{folder}: not a generated folder (file names must be seed numbers)") from None
    ref_path = Path(reference)
    if ref_path.is_file():
        from .segmenters import load_segmenter

        model = load_segmenter(ref_path, device)
        if model.cfg.in_channels != ds.channels:
            raise DataError(f"{reference}: takes {model.cfg.in_channels}-channel images, {folder} has {ds.channels}")
        problems = class_differences(str(reference), model.classes, str(folder), ds.classes)
        if problems:
            raise DataError("the grading reference and the folder disagree on classes:\n  " + "\n  ".join(problems))
        idx = np.arange(min(n, len(ds)))
        refs = model.predict(ds.images[idx])
        kind = f"model:{model.name}"
    elif ref_path.is_dir():
        found = _person_masks(ref_path, seeds, res)
        idx = np.asarray([i for i, s in enumerate(seeds) if s in found][:n], dtype=np.int64)
        if not len(idx):
            raise DataError(f"{reference}: holds no finished mask for any seed of {folder}")
        refs = np.stack([found[seeds[i]] for i in idx])
        kind = "masks"
    else:
        raise DataError(f"{reference}: no such segmenter file or mask folder")
    out = grade_pairs(ds.masks[idx], refs)
    out.update(folder=str(folder), reference=str(reference), reference_kind=kind, seeds=[seeds[i] for i in idx])
    return out


def store(bench_dir, g: dict) -> None:
    results = Results(Path(bench_dir))
    results.set(grading=g)
    results.save()


def summary_line(g: dict) -> str:
    c = g["counts"]
    return (
        f"graded {g['n']} pairs against {g['reference']}: good {c['good']}, partial {c['partial']}, "
        f"bad {c['bad']} (mean {g['mean_wrong']:.2%} pixels differ)"
    )
