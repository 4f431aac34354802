"""Training and test sets of the benchmark: real, synthetic (a generated folder) and hybrid.

A generated folder is a canonical data folder (``images/{seed:08d}.png``, ``masks/...``,
``records/{seed:08d}.json`` with the pair's uncertainty ``score``, ``manifest.json``), so both kinds
load with :func:`datasetgan.data.load_image_folder`. Seeds are read from the file names; test-G must
come from seeds disjoint from every synthetic training set.
"""
from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ..data import ClassInfo, DataError, list_images, load_image_folder, locate


@dataclass
class LabelledSet:
    kind: str                      # real | synthetic | hybrid
    images: np.ndarray             # uint8 [N, C, R, R]
    masks: np.ndarray              # uint8 [N, R, R]
    names: list[str]
    classes: list[ClassInfo]
    seeds: list[int] = field(default_factory=list)   # generated pairs' seeds (synthetic part)
    info: dict = field(default_factory=dict)          # what the set is, for results.json

    def __len__(self) -> int:
        return len(self.names)

    def subset(self, idx) -> "LabelledSet":
        idx = np.asarray(idx, dtype=np.int64)
        names = [self.names[i] for i in idx]
        seeds = [self.seeds[i] for i in idx] if len(self.seeds) == len(self.names) else list(self.seeds)
        return LabelledSet(self.kind, self.images[idx], self.masks[idx], names, self.classes, seeds, dict(self.info))


def _load(path, resolution: int, what: str, cache_dir=None) -> LabelledSet:
    try:
        ds = load_image_folder(path, resolution, masks="require", cache_dir=cache_dir)
    except DataError as e:
        raise DataError(f"{what}: {e}") from None
    return LabelledSet("real", ds.images, ds.masks, ds.names, ds.classes, info={"path": str(path)})


def random_subset(n: int, k: int | None, seed: int = 0) -> np.ndarray:
    """Sorted indices of k items drawn without replacement (all if k is None or >= n)."""
    if k is None or k >= n:
        return np.arange(n)
    if k < 1:
        raise ValueError(f"a subset needs at least 1 item, got {k}")
    return np.sort(np.random.default_rng(seed).choice(n, size=k, replace=False))


def load_real(path, resolution: int, limit: int | None = None, seed: int = 0, what: str = "real data",
              cache_dir=None) -> LabelledSet:
    """A labelled folder, optionally only ``limit`` images drawn at random (seeded) from it."""
    full = _load(path, resolution, what, cache_dir)
    out = full.subset(random_subset(len(full), limit, seed))
    out.info.update(kind="real", n=len(out), n_available=len(full), limit=limit, subset_seed=seed)
    return out


def list_names(folder) -> list[str]:
    """Image names (stems) of a data folder, without loading anything."""
    return [p.stem for p in list_images(locate(folder)[0])]


SEED_NAME = re.compile(r"\d+")


def generated_seeds(names: list[str], folder) -> list[int]:
    bad = [n for n in names if not SEED_NAME.fullmatch(n)]
    if bad:
        raise DataError(f"{folder}: not a generated folder (file names must be seed numbers, "
                        f"e.g. 00000042.png; found {bad[0]!r})")
    return [int(n) for n in names]


def read_scores(folder, names: list[str]) -> np.ndarray:
    """Uncertainty score of each pair: ``records/<name>.json`` (key ``uncertainty_score`` or ``score``),
    else the ``scores`` table of ``manifest.json``."""
    manifest_scores = read_manifest(folder).get("scores") or {}
    scores = []
    for n in names:
        p = Path(folder) / "records" / f"{n}.json"
        rec = {}
        if p.is_file():
            try:
                rec = json.loads(p.read_text())
            except json.JSONDecodeError as e:
                raise DataError(f"{p}: not valid JSON ({e})") from None
        score = next((rec[k] for k in ("uncertainty_score", "score") if isinstance(rec.get(k), (int, float))),
                     manifest_scores.get(n))
        if not isinstance(score, (int, float)):
            raise DataError(f"{p}: no uncertainty score for pair {n} (records/{n}.json or manifest.json 'scores'); "
                            "dropping uncertain pairs needs a folder written by `datasetgan generate`")
        scores.append(float(score))
    return np.asarray(scores)


def read_manifest(folder) -> dict:
    p = Path(folder) / "manifest.json"
    if not p.is_file():
        return {}
    try:
        return json.loads(p.read_text())
    except json.JSONDecodeError as e:
        raise DataError(f"{p}: not valid JSON ({e})") from None


def annotation_count(manifest: dict, folder=None) -> int | None:
    """How many annotated images trained the interpreter that made a generated folder: from the
    manifest if it says, else from the interpreter's JSON sidecar of the run folder the generated
    folder sits in (RUN/generated/NAME or RUN/NAME), when its hash matches the manifest's."""
    for k in ("n_annotations", "num_annotations", "annotations", "annotated"):
        v = manifest.get(k)
        if isinstance(v, int) and not isinstance(v, bool):
            return v
        if isinstance(v, list):
            return len(v)
    sha = manifest.get("interpreter_sha256")
    if folder is None or not sha:
        return None
    folder = Path(folder).resolve()
    for run in (folder.parent.parent, folder.parent):
        side = run / "interpreter.json"
        if side.is_file():
            try:
                meta = json.loads(side.read_text())
            except json.JSONDecodeError:
                continue
            if meta.get("sha256") == sha and isinstance(meta.get("annotations"), list):
                return len(meta["annotations"])
    return None


def load_generated(path, resolution: int, size: int | None = None, drop_uncertain: float = 0.0,
                   what: str = "generated data", cache_dir=None) -> LabelledSet:
    """The first ``size`` pairs of a generated folder (seed order), minus the ``drop_uncertain``
    fraction with the highest uncertainty scores (round(fraction * size) pairs dropped)."""
    full = _load(path, resolution, what, cache_dir)
    seeds = generated_seeds(full.names, path)
    n = len(full) if size is None else size
    if n > len(full):
        raise DataError(f"{path}: {n} pairs asked for but the folder holds only {len(full)}")
    idx = np.arange(n)
    if drop_uncertain:
        if not 0 <= drop_uncertain < 1:
            raise ValueError(f"drop fraction must be in [0, 1), got {drop_uncertain}")
        scores = read_scores(path, full.names[:n])
        n_drop = int(round(drop_uncertain * n))
        keep = np.sort(np.argsort(scores, kind="stable")[: n - n_drop])
        idx = idx[keep]
    out = full.subset(idx)
    out.kind = "synthetic"
    out.seeds = [seeds[i] for i in idx]
    manifest = read_manifest(path)
    out.info.update(kind="synthetic", n=len(out), size=n, drop_uncertain=drop_uncertain,
                    annotated=annotation_count(manifest, path), seed_min=min(out.seeds), seed_max=max(out.seeds))
    return out


def check_disjoint(train: LabelledSet, test: LabelledSet) -> None:
    """Refuse a test-G set that shares seeds with a synthetic training set."""
    common = sorted(set(train.seeds) & set(test.seeds))
    if common:
        raise DataError(f"test-G shares {len(common)} seed(s) with the synthetic training set "
                        f"(e.g. {common[:5]}); generate test-G from a disjoint seed range")


def hybrid(synthetic: LabelledSet, real: LabelledSet) -> LabelledSet:
    """Synthetic pairs plus a few real ones."""
    if synthetic.images.shape[1:] != real.images.shape[1:]:
        raise DataError(f"synthetic images {synthetic.images.shape[1:]} and real images "
                        f"{real.images.shape[1:]} differ in channels or size")
    info = {"kind": "hybrid", "n": len(synthetic) + len(real), "synthetic": synthetic.info, "real": real.info}
    return LabelledSet("hybrid", np.concatenate([synthetic.images, real.images]),
                       np.concatenate([synthetic.masks, real.masks]),
                       synthetic.names + ["real:" + n for n in real.names], synthetic.classes,
                       list(synthetic.seeds), info)


def check_compatible(sets: dict[str, LabelledSet]) -> list[ClassInfo]:
    """All sets must have the same channel count and class count; returns the classes."""
    ref_name, ref = next(iter(sets.items()))
    for name, s in sets.items():
        if s.images.shape[1] != ref.images.shape[1]:
            raise DataError(f"{name} has {s.images.shape[1]} channel(s) but {ref_name} has {ref.images.shape[1]}")
        if len(s.classes) != len(ref.classes):
            raise DataError(f"{name} has {len(s.classes)} classes but {ref_name} has {len(ref.classes)} "
                            "(check their labels.json)")
    return ref.classes
