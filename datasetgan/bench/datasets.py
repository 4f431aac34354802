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
from ..errors import ConfigError


@dataclass
class LabelledSet:
    kind: str  # real | synthetic | hybrid
    images: np.ndarray  # uint8 [N, C, R, R]
    masks: np.ndarray  # uint8 [N, R, R]
    names: list[str]
    classes: list[ClassInfo]
    seeds: list[int] = field(default_factory=list)  # generated pairs' seeds (synthetic part)
    info: dict = field(default_factory=dict)  # what the set is, for results.json

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
        raise ConfigError(f"a subset needs at least 1 item, got {k}")
    return np.sort(np.random.default_rng(seed).choice(n, size=k, replace=False))


def load_real(
    path,
    resolution: int,
    limit: int | None = None,
    seed: int = 0,
    what: str = "real data",
    cache_dir=None,
    class_map: dict[int, int] | None = None,
) -> LabelledSet:
    """A labelled folder, optionally only ``limit`` images drawn at random (seeded) from it, its classes
    renumbered by ``class_map``."""
    full = remap_classes(_load(path, resolution, what, cache_dir), class_map or {})
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
        raise DataError(
            f"{folder}: not a generated folder (file names must be seed numbers, e.g. 00000042.png; found {bad[0]!r})"
        )
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
        score = next(
            (rec[k] for k in ("uncertainty_score", "score") if isinstance(rec.get(k), (int, float))),
            manifest_scores.get(n),
        )
        if not isinstance(score, (int, float)):
            raise DataError(
                f"{p}: no uncertainty score for pair {n} (records/{n}.json or manifest.json 'scores'); "
                "dropping uncertain pairs needs a folder written by `datasetgan generate`"
            )
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


def load_generated(
    path,
    resolution: int,
    size: int | None = None,
    drop_uncertain: float = 0.0,
    what: str = "generated data",
    cache_dir=None,
) -> LabelledSet:
    """The first ``size`` pairs of a generated folder (seed order), minus the ``drop_uncertain``
    fraction with the highest uncertainty scores (round(fraction * size) pairs dropped)."""
    full = _load(path, resolution, what, cache_dir)
    try:
        seeds = generated_seeds(full.names, path)
    except DataError as e:
        raise DataError(f"{what}: {e}") from None
    n = len(full) if size is None else size
    if n > len(full):
        raise DataError(f"{path}: {n} pairs asked for but the folder holds only {len(full)}")
    idx = np.arange(n)
    if drop_uncertain:
        if not 0 <= drop_uncertain < 1:
            raise ConfigError(f"drop fraction must be in [0, 1), got {drop_uncertain}")
        scores = read_scores(path, full.names[:n])
        n_drop = int(round(drop_uncertain * n))
        keep = np.sort(np.argsort(scores, kind="stable")[: n - n_drop])
        idx = idx[keep]
    out = full.subset(idx)
    out.kind = "synthetic"
    out.seeds = [seeds[i] for i in idx]
    manifest = read_manifest(path)
    out.info.update(
        kind="synthetic",
        n=len(out),
        size=n,
        drop_uncertain=drop_uncertain,
        annotated=annotation_count(manifest, path),
        seed_min=min(out.seeds),
        seed_max=max(out.seeds),
    )
    return out


def check_disjoint(train: LabelledSet, test: LabelledSet, label: str = "test-G") -> None:
    """Refuse a test-G set that shares seeds with a synthetic training set."""
    common = sorted(set(train.seeds) & set(test.seeds))
    if common:
        raise DataError(
            f"{label} shares {len(common)} seed(s) with the synthetic training set "
            f"(e.g. {common[:5]}); generate test-G from a disjoint seed range"
        )


def hybrid(synthetic: LabelledSet, real: LabelledSet) -> LabelledSet:
    """Synthetic pairs plus a few real ones (same channels, size and classes)."""
    if synthetic.images.shape[1:] != real.images.shape[1:]:
        raise DataError(
            f"synthetic images {synthetic.images.shape[1:]} and real images "
            f"{real.images.shape[1:]} differ in channels or size"
        )
    check_compatible(
        {
            f"the synthetic pairs ({synthetic.info.get('path')})": synthetic,
            f"the real images of the hybrid set ({real.info.get('path')})": real,
        }
    )
    info = {"kind": "hybrid", "n": len(synthetic) + len(real), "synthetic": synthetic.info, "real": real.info}
    return LabelledSet(
        "hybrid",
        np.concatenate([synthetic.images, real.images]),
        np.concatenate([synthetic.masks, real.masks]),
        synthetic.names + ["real:" + n for n in real.names],
        synthetic.classes,
        list(synthetic.seeds),
        info,
    )


def class_differences(name: str, classes: list[ClassInfo], ref_name: str, ref: list[ClassInfo]) -> list[str]:
    """One line per class on which two sets disagree (id present in one only, or named differently)."""
    mine, theirs = {c.id: c.name for c in classes}, {c.id: c.name for c in ref}
    out = []
    for i in sorted(set(mine) | set(theirs)):
        if i not in theirs:
            out.append(f"{name}: class {i} {mine[i]!r} is not in {ref_name}")
        elif i not in mine:
            out.append(f"{name}: has no class {i} ({ref_name} calls it {theirs[i]!r})")
        elif mine[i] != theirs[i]:
            out.append(f"{name}: class {i} is {mine[i]!r} but {ref_name} calls it {theirs[i]!r}")
    return out


def check_compatible(sets: dict[str, LabelledSet]) -> list[ClassInfo]:
    """All sets must have the same channel count and the same classes (ids and names); returns the
    classes. A mismatch is one error listing every difference, a line each."""
    ref_name, ref = next(iter(sets.items()))
    problems = []
    for name, s in sets.items():
        if s.images.shape[1] != ref.images.shape[1]:
            problems.append(f"{name} has {s.images.shape[1]} channel(s) but {ref_name} has {ref.images.shape[1]}")
        problems += class_differences(name, s.classes, ref_name, ref.classes)
    if problems:
        raise DataError(
            "the sets disagree (check their labels.json, or renumber the real folders' classes "
            "with --class-map):\n  " + "\n  ".join(problems)
        )
    return ref.classes


def parse_class_map(text: str) -> dict[int, int]:
    """``'1=3,3=1'`` -> {1: 3, 3: 1}: class ids of the real folders and the ids they become."""
    out = {}
    for item in filter(None, (t.strip() for t in text.split(","))):
        old, sep, new = item.partition("=")
        try:
            old_id, new_id = int(old), int(new)
        except ValueError:
            raise ConfigError(f"--class-map: expected OLD=NEW class ids, got {item!r}") from None
        if not sep or old_id in out:
            raise ConfigError(f"--class-map: expected each OLD=NEW once, got {item!r}")
        out[old_id] = new_id
    return out


UNNAMED_TEST_G = "test-G"  # the name of a test-G set given as a bare folder
TEST_G_NAME = re.compile(r"[A-Za-z0-9_.+-]+")


def parse_test_generated(items) -> dict[str, Path]:
    """``--test-generated`` values, each ``NAME=DIR`` or a bare ``DIR`` (named ``test-G``) -> {name: folder},
    in the order given."""
    out: dict[str, Path] = {}
    for item in items:
        name, sep, folder = str(item).partition("=")
        if not sep or Path(item).is_dir():  # a bare folder (its path may itself hold a '=')
            name, folder = UNNAMED_TEST_G, str(item)
        elif not TEST_G_NAME.fullmatch(name):
            raise ConfigError(
                f"--test-generated: {item!r}: "
                + (
                    "the NAME of NAME=DIR is empty"
                    if not name
                    else f"NAME {name!r} may hold only letters, digits, _ . + -"
                )
            )
        if not Path(folder).is_dir():
            raise ConfigError(f"--test-generated: {item!r}: no folder {folder}")
        if name in out:
            raise ConfigError(
                f"--test-generated: the name {name!r} is given twice"
                + ("; name each set: --test-generated NAME=DIR" if name == UNNAMED_TEST_G else "")
            )
        out[name] = Path(folder)
    return out


def test_g_label(name: str) -> str:
    """How messages name a test-G set: 'test-G' for a bare folder, else 'test-G NAME'."""
    return UNNAMED_TEST_G if name == UNNAMED_TEST_G else f"{UNNAMED_TEST_G} {name}"


def remap_classes(s: LabelledSet, mapping: dict[int, int]) -> LabelledSet:
    """The set with its class ids renumbered (ids not in ``mapping`` keep theirs); the result must
    number the classes 0..K-1, each once."""
    if not mapping:
        return s
    ids = {c.id for c in s.classes}
    unknown = sorted(set(mapping) - ids)
    if unknown:
        raise DataError(f"--class-map: {s.info.get('path')} has no class {unknown[0]}")
    classes = [ClassInfo(mapping.get(c.id, c.id), c.name, c.color) for c in s.classes]
    if sorted(c.id for c in classes) != list(range(len(classes))):
        raise DataError(
            f"--class-map: the classes of {s.info.get('path')} would not be numbered 0..{len(classes) - 1} "
            f"each once (got ids {sorted(c.id for c in classes)})"
        )
    table = np.arange(256, dtype=np.uint8)
    for old, new in mapping.items():
        table[old] = new
    out = LabelledSet(
        s.kind,
        s.images,
        table[s.masks],
        s.names,
        sorted(classes, key=lambda c: c.id),
        s.seeds,
        dict(s.info, class_map={str(k): v for k, v in mapping.items()}),
    )
    return out
