"""The benchmark protocol: every (training set, model) pair is trained k times (k-fold cross-validation)
and each fold's model is scored on its held-out fold, on test-R and on test-G.

Results go to ``RUN/bench/results.json`` after every fold (atomically), so an interrupted run keeps
the folds it finished and a rerun with the same settings skips them.
"""

from __future__ import annotations

import hashlib
import json
import re
import time
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np
import torch
from filelock import FileLock

from ..atomic import atomic_path, atomic_write_text
from ..errors import ConfigError
from . import datasets
from .folds import group_kfold, kfold
from .gate import positive, train_gate
from .metrics import evaluate, mean_std, to_json
from .postprocess import area_candidates, choose_min_area, prior_map, remove_small_components
from .profiles import Profile
from .segmenters import Segmenter, SegmenterConfig, load_init_weights, save_segmenter
from .trainer import train_segmenter

FORMAT = "datasetgan-bench/1"
METRIC_NOTES = (
    "IoU/Dice/pixel accuracy from one confusion matrix summed over the test set; a class absent from both "
    "truth and prediction in the whole set is skipped (NaN), one never predicted scores 0. miou includes "
    "background (class 0), miou_fg excludes it. HD95, ASSD (MONAI), Chamfer (mean of the two directed mean "
    "boundary distances) in pixels at the benchmark resolution and BF score (boundary F1, tolerance bf_tau_px: "
    "2 px at 256x256 scaled to the resolution), per image and foreground class; a class absent from both masks "
    "is skipped, absent from exactly one scores the image diagonal (BF 0); averaged over images then classes. "
    "MMCL: mean probability of the predicted class; ECE: 15 equal-width confidence bins, over all pixels. "
    "mean +- std over folds (population std). Each fold trains on k-1 parts of the training set; 'val' is its "
    "held-out part. Rows: SET/MODEL/LOSS, +swa (cosine lr then weight averaging), +mincomp (small components "
    "removed), +gate (image classifier gate), SET/prior (per-pixel majority class of the fold's training masks)."
)
SPLITS = ("val", "test_r", "test_g")
# Every test-G set's figures are stored by name under "test_g_sets" (in each fold record and summary);
# "test_g" holds the first set's, as before there could be several. Inside a run the sets are split keys
# "test_g:NAME" (see nest_splits).
TEST_G_SETS = "test_g_sets"
TEST_G_SPLIT = "test_g:"
SUMMARY_KEYS = (
    "miou",
    "miou_fg",
    "mdice_fg",
    "pixel_accuracy",
    "hd95",
    "assd",
    "chamfer",
    "bf",
    "mmcl",
    "ece",
    "gate_accuracy",
)
PER_CLASS_KEYS = ("dice", "iou", "hd95_per_class", "assd_per_class", "chamfer_per_class", "bf_per_class")
N_SAMPLES = 6


@dataclass
class Experiment:
    """One row of the benchmark: a model trained with a loss on a set (``model`` None: the prior
    baseline), or a post-processing of another row's predictions (``post``)."""

    key: str  # e.g. "real500/unet/dice_ce", "real500/unet/dice_ce+gate", "real500/prior"
    set_key: str
    train: datasets.LabelledSet
    model: SegmenterConfig | None
    loss: str = ""
    swa: bool = False
    post: str = ""  # "" | mincomp | gate
    derived: list = field(default_factory=list)  # the post-processing rows made from this row's models


@dataclass
class PostProcessing:
    """The extra rows of a run: from each (set, model)'s first loss, small-component removal, the classifier
    gate and an SWA retraining; per set, the prior-only baseline."""

    min_component: int | str | None = None  # pixels, "auto" (chosen on the fold's held-out part) or None
    classifier_gate: bool = False
    swa: bool = False  # also train that loss with a cosine schedule + SWA
    prior: bool = True  # the prior-only baseline row of each set


@dataclass
class BenchInputs:
    train_sets: dict[str, datasets.LabelledSet]
    test_r: datasets.LabelledSet | None = None
    test_g_sets: dict[str, datasets.LabelledSet] = field(default_factory=dict)  # by name, in the order given
    classes: list = field(default_factory=list)

    @property
    def test_g(self) -> datasets.LabelledSet | None:
        """The first test-G set (the one results.json's "test_g" keys describe)."""
        return next(iter(self.test_g_sets.values()), None)


def parse_models(spec: list[str], profile: Profile, in_channels: int, num_classes: int) -> list[SegmenterConfig]:
    """'deeplabv3', 'fcn:resnet50', 'unet' -> configurations (backbones from the profile by default)."""
    out = []
    for item in spec:
        arch, _, backbone = item.strip().partition(":")
        backbone = backbone or profile.backbones.get(arch, "resnet101")
        out.append(
            SegmenterConfig(
                arch=arch,
                backbone=backbone,
                in_channels=in_channels,
                num_classes=num_classes,
                resolution=profile.resolution,
                aux_loss=profile.aux_loss and arch != "unet",
                unet_channels=profile.unet_channels,
                output_stride=profile.output_stride,
            )
        )
    names = [c.name for c in out]
    if len(set(names)) != len(names):
        raise ConfigError(f"a model is listed twice: {names}")
    return out


def load_inputs(
    profile: Profile,
    sets: list[str],
    real=None,
    test_real=None,
    synthetic=(),
    test_generated=None,
    real_limit: int | None = None,
    hybrid_real: int | None = None,
    synthetic_sizes=None,
    drop_uncertain: float = 0.0,
    annotated=None,
    subset_seed: int = 0,
    cache_dir=None,
    class_map: dict[int, int] | None = None,
) -> BenchInputs:
    """Load and check every set the run needs; ``class_map`` renumbers the real folders' classes.

    ``test_generated``: a generated folder, or {name: folder} for several test-G sets (see
    :func:`datasets.parse_test_generated`); every trained model is scored on each."""
    res = profile.resolution
    unknown = set(sets) - {"real", "synthetic", "hybrid"}
    if unknown:
        raise ConfigError(f"unknown training set(s) {sorted(unknown)}; choose from real, synthetic, hybrid")
    if "real" in sets and real is None:
        raise ConfigError("the 'real' training set needs --real DATA")
    if ("synthetic" in sets or "hybrid" in sets) and not synthetic:
        raise ConfigError("the 'synthetic' and 'hybrid' training sets need --synthetic DIR")
    if "hybrid" in sets and real is None:
        raise ConfigError("the 'hybrid' training set needs --real DATA (its real images come from there)")
    if annotated and len(annotated) != len(synthetic):
        raise ConfigError(f"--annotated gives {len(annotated)} count(s) for {len(synthetic)} synthetic folder(s)")
    train_sets: dict[str, datasets.LabelledSet] = {}
    if "real" in sets:
        s = datasets.load_real(real, res, real_limit, subset_seed, "--real", cache_dir, class_map)
        train_sets[f"real{len(s)}"] = s
    for j, folder in enumerate(synthetic):
        tag = ""
        counts = {}
        if "synthetic" in sets or "hybrid" in sets:
            available = len(datasets.list_names(folder))
            sizes = (
                list(synthetic_sizes)
                if synthetic_sizes
                else sorted({min(n, available) for n in profile.synthetic_sizes})
            )
            for size in sizes:
                s = datasets.load_generated(folder, res, size, drop_uncertain, "--synthetic", cache_dir)
                if annotated:
                    s.info["annotated"] = int(annotated[j])
                counts[size] = s
            a = next(iter(counts.values())).info.get("annotated")
            tag = f"-a{a}" if len(synthetic) > 1 and a is not None else (f"-{j}" if len(synthetic) > 1 else "")
        if "synthetic" in sets:
            for size, s in counts.items():
                train_sets[f"synthetic{len(s)}{tag}"] = s
        if "hybrid" in sets:
            k = profile.hybrid_real if hybrid_real is None else hybrid_real
            r = datasets.load_real(real, res, k, subset_seed, "--real", cache_dir, class_map)
            s = counts[max(counts)]
            h = datasets.hybrid(s, r)
            train_sets[f"hybrid{len(s)}+{len(r)}{tag}"] = h
    test_r = datasets.load_real(test_real, res, None, 0, "--test-real", cache_dir, class_map) if test_real else None
    if test_generated and not isinstance(test_generated, dict):
        test_generated = {datasets.UNNAMED_TEST_G: test_generated}
    test_g_sets = {}
    for name, path in (test_generated or {}).items():
        what = "--test-generated" + ("" if name == datasets.UNNAMED_TEST_G else f" {name}")
        test_g_sets[name] = datasets.load_generated(path, res, None, 0.0, what, cache_dir)
    labelled = {f"{datasets.test_g_label(n)} ({t.info['path']})": t for n, t in test_g_sets.items()}
    for name, s in train_sets.items():
        for label, t in labelled.items():
            if s.seeds:
                try:
                    datasets.check_disjoint(s, t, label)
                except datasets.DataError as e:
                    raise datasets.DataError(f"{name}: {e}") from None
    everything = {**train_sets, **({"test-R": test_r} if test_r else {}), **labelled}
    if not everything:
        raise ConfigError("nothing to do: give training data (--real / --synthetic) or test data")
    classes = datasets.check_compatible(everything)
    return BenchInputs(train_sets, test_r, test_g_sets, classes)


def name_groups(names: list[str], pattern: str) -> list[str]:
    """The group of each name: the regex match (its first group if any); a name without one is alone."""
    rx = re.compile(pattern)
    out = []
    for n in names:
        m = rx.search(n)
        out.append((m.group(1) if rx.groups else m.group(0)) if m else f"\0{n}")
    return out


def fingerprint(*parts) -> str:
    return hashlib.sha256(json.dumps(parts, sort_keys=True, default=str).encode()).hexdigest()[:16]


def safe_name(key: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.+-]", "_", key)


class Results:
    """``RUN/bench/results.json``, updated and rewritten atomically after each fold.

    Several commands may write one run's results at once (a benchmark, the annotator, grading), so
    :meth:`save` re-reads the file under a lock and writes back only what this process set with
    :meth:`set` or :meth:`set_experiment`: nobody's results are lost."""

    def __init__(self, bench_dir: Path):
        self.dir = Path(bench_dir)
        self.path = self.dir / "results.json"
        self.doc = self._read()
        self._keys: set[str] = set()
        self._experiments: set[str] = set()

    def _read(self) -> dict:
        doc = {"format": FORMAT, "metric_notes": METRIC_NOTES, "experiments": {}}
        if self.path.is_file():
            try:
                old = json.loads(self.path.read_text())
                if old.get("format") == FORMAT:
                    doc = old
            except json.JSONDecodeError:
                pass  # a broken file is replaced; results are recomputed
        doc["metric_notes"] = METRIC_NOTES
        return doc

    def set(self, **values) -> None:
        self.doc.update(values)
        self._keys.update(values)

    def set_experiment(self, key: str, entry: dict) -> None:
        """Register an experiment's entry; later in-place changes to it are saved too."""
        self.doc["experiments"][key] = entry
        self._experiments.add(key)

    def save(self) -> None:
        self.dir.mkdir(parents=True, exist_ok=True)
        with FileLock(str(self.path) + ".lock"):
            disk = self._read()
            disk.update({k: self.doc[k] for k in self._keys})
            disk["experiments"].update({k: self.doc["experiments"][k] for k in self._experiments})
            atomic_write_text(self.path, json.dumps(to_json(disk), indent=1))
        self.doc = disk


def summarise(folds: list[dict], num_classes: int) -> dict:
    """Mean and std over folds of every split, and of every test-G set by name (under "test_g_sets")."""
    out = {split: _summarise([f[split] for f in folds if f.get(split)], num_classes) for split in SPLITS}
    names = dict.fromkeys(n for f in folds for n in f.get(TEST_G_SETS) or {})
    if names:
        out[TEST_G_SETS] = {
            n: _summarise([f[TEST_G_SETS][n] for f in folds if (f.get(TEST_G_SETS) or {}).get(n)], num_classes)
            for n in names
        }
    return {k: v for k, v in out.items() if v}


def _summarise(rows: list[dict], num_classes: int) -> dict:
    if not rows:
        return {}
    s = {k: mean_std([r.get(k) for r in rows]) for k in SUMMARY_KEYS if any(k in r for r in rows)}
    for k in PER_CLASS_KEYS:
        if any(k in r for r in rows):
            s[k] = [mean_std([(r.get(k) or [None] * num_classes)[c] for r in rows]) for c in range(num_classes)]
    s["folds"] = len(rows)
    return s


def nest_splits(scores: dict) -> dict:
    """A fold's scores keyed by split ("test_g:NAME" for each test-G set) -> the stored record: the test-G
    sets under "test_g_sets" by name, the first one also as "test_g"; other keys unchanged."""
    out = {k: v for k, v in scores.items() if not k.startswith(TEST_G_SPLIT)}
    named = {k.removeprefix(TEST_G_SPLIT): v for k, v in scores.items() if k.startswith(TEST_G_SPLIT)}
    if named:
        out["test_g"] = next(iter(named.values()))
        out[TEST_G_SETS] = named
    return out


def missing_splits(rec: dict, splits) -> list[str]:
    """The splits (as in :func:`nest_splits`) a stored fold record has no figures for. A record written
    before several test-G sets existed holds its one set as "test_g": the unnamed set."""
    named = rec.get(TEST_G_SETS) or {datasets.UNNAMED_TEST_G: rec.get("test_g")}
    return [
        s
        for s in splits
        if (named.get(s.removeprefix(TEST_G_SPLIT)) if s.startswith(TEST_G_SPLIT) else rec.get(s)) is None
    ]


def sample_indices(masks: np.ndarray, n: int = N_SAMPLES) -> np.ndarray:
    """Evenly spread test images that show some foreground (for the prediction grid)."""
    fg = np.flatnonzero(masks.reshape(len(masks), -1).max(1) > 0)
    pool = fg if len(fg) >= n else np.arange(len(masks))
    return pool[np.linspace(0, len(pool) - 1, min(n, len(pool))).round().astype(int)]


def save_npy(path: Path, array: np.ndarray) -> None:
    with atomic_path(path) as tmp:
        with open(tmp, "wb") as f:
            np.save(f, array, allow_pickle=False)


def plan_experiments(
    inputs: BenchInputs, models: list[SegmenterConfig], losses: list[str], post: PostProcessing
) -> list[Experiment]:
    """Every row of the run: per set the prior baseline, then per model each loss, the first loss with
    SWA, and the post-processing rows of the first loss."""
    from .losses import parse_loss

    out = []
    for sk, s in inputs.train_sets.items():
        if post.prior:
            out.append(Experiment(f"{sk}/prior", sk, s, None))
        for m in models:
            for i, loss in enumerate(losses):
                label = parse_loss(loss).label
                exp = Experiment(f"{sk}/{m.name}/{label}", sk, s, m, loss)
                out.append(exp)
                if i == 0:
                    if post.min_component is not None:
                        exp.derived.append(Experiment(exp.key + "+mincomp", sk, s, m, loss, post="mincomp"))
                    if post.classifier_gate:
                        exp.derived.append(Experiment(exp.key + "+gate", sk, s, m, loss, post="gate"))
                    if post.swa:
                        out.append(Experiment(exp.key + "+swa", sk, s, m, loss, swa=True))
    return out


def predict(model: Segmenter, images: np.ndarray, batch: int) -> tuple[np.ndarray, torch.Tensor]:
    """(label maps uint8 [N, H, W], class probabilities [N, K, H, W])."""
    probs = model.logits(images, batch).softmax(1)
    return probs.argmax(1).to(torch.uint8).numpy(), probs


def score(pred: np.ndarray, probs: torch.Tensor, truth: np.ndarray, num_classes: int) -> dict:
    """All metrics of a prediction; the confidence is the probability of the class finally predicted
    (after any post-processing)."""
    conf = probs.gather(1, torch.as_tensor(pred.astype(np.int64))[:, None])[:, 0].numpy()
    return evaluate(pred, truth, num_classes, conf)


def run_benchmark(
    run_dir,
    inputs: BenchInputs,
    models: list[SegmenterConfig],
    profile: Profile,
    folds: int | None = None,
    save_models: bool = False,
    init_weights: dict | None = None,
    device: str = "cpu",
    progress: bool = True,
    log=print,
    on_fold=None,
    should_stop=None,
    fold_groups: str | None = None,
    command: str | None = None,
    losses: list[str] | None = None,
    post: PostProcessing | None = None,
) -> dict:
    """Train and score every row (see :func:`plan_experiments`) over k folds; returns the results document.

    ``losses``: loss specs (default: the profile's). ``fold_groups``: a regular expression whose match
    (first group if it has one) in an image name is its group (e.g. ``patient\\d+``); a group's images
    then stay in one fold."""
    bench = Path(run_dir) / "bench"
    bench.mkdir(exist_ok=True)
    results = Results(bench)
    k = profile.folds if folds is None else folds
    nc = len(inputs.classes)
    losses = list(losses or [profile.train.loss])
    post = post or PostProcessing()
    if fold_groups:
        try:
            re.compile(fold_groups)
        except re.error as e:
            raise ConfigError(f"--fold-groups: not a regular expression: {e}") from None
    if post.min_component == "auto" and k < 2:
        raise ConfigError("--min-component auto chooses the area on the held-out fold: it needs --folds 2 or more")
    if command:
        results.set(command=command)
    results.set(
        profile=profile.to_dict(),
        classes=[c.__dict__ for c in inputs.classes],
        test_sets={
            "test_r": inputs.test_r.info if inputs.test_r else None,
            "test_g": inputs.test_g.info if inputs.test_g else None,
            TEST_G_SETS: {n: t.info for n, t in inputs.test_g_sets.items()},
        },
    )
    if inputs.test_r is not None:
        idx = sample_indices(inputs.test_r.masks)
        save_npy(bench / "samples" / "test_r_images.npy", inputs.test_r.images[idx])
        save_npy(bench / "samples" / "test_r_masks.npy", inputs.test_r.masks[idx])
    results.save()
    experiments = plan_experiments(inputs, models, losses, post)
    splits_of = {}
    for sk, s in inputs.train_sets.items():
        splits_of[sk] = (
            group_kfold(name_groups(s.names, fold_groups), k, seed=profile.train.seed)
            if fold_groups
            else kfold(len(s), k, seed=profile.train.seed)
        )

    def open_entry(exp: Experiment, base_fp: str | None = None) -> dict:
        cfg = _train_config(profile, exp)
        parts = [
            exp.train.info,
            len(exp.train),
            exp.model.to_dict() if exp.model else None,
            cfg.__dict__,
            k,
            str((init_weights or {}).get(exp.model.arch if exp.model else None)),
        ]
        if fold_groups:
            parts.append(fold_groups)
        if exp.post:
            parts += [base_fp, exp.post, post.min_component if exp.post == "mincomp" else None]
        fp = fingerprint(*parts)
        entry = results.doc["experiments"].get(exp.key)
        if not entry or entry.get("fingerprint") != fp:
            entry = {
                "set": exp.set_key,
                "set_info": exp.train.info,
                "model": exp.model.to_dict() if exp.model else None,
                "model_name": exp.model.name if exp.model else "prior",
                "method": exp.key.split("/", 1)[1],
                "loss": exp.loss or None,
                "swa": exp.swa,
                "post": exp.post or None,
                "train": cfg.__dict__,
                "folds_k": k,
                "n_train": len(exp.train),
                "fingerprint": fp,
                "fold_groups": fold_groups,
                "folds": [],
            }
        results.set_experiment(exp.key, entry)
        return entry

    plans = []
    for exp in experiments:
        entry = open_entry(exp)
        plans.append((exp, entry, [(d, open_entry(d, entry["fingerprint"])) for d in exp.derived]))
    # experiments of earlier runs that this run does not repeat are kept in results.json as they were
    results.save()
    for f_i in range(k):
        gates = {}
        for e_i, (exp, entry, derived) in enumerate(plans):
            if should_stop is not None and should_stop():
                return results.doc
            t0, c0 = time.time(), time.process_time()
            tr, va = splits_of[exp.set_key][f_i]
            train = exp.train
            tests = {
                "val": (train.images[va], train.masks[va]) if len(va) else None,
                "test_r": (inputs.test_r.images, inputs.test_r.masks) if inputs.test_r else None,
                **{TEST_G_SPLIT + n: (t.images, t.masks) for n, t in inputs.test_g_sets.items()},
            }
            tests = {s: t for s, t in tests.items() if t is not None}
            stored = [f for e in [entry] + [d for _, d in derived] for f in e["folds"] if f["fold"] == f_i]
            missing = sorted({s for f in stored for s in missing_splits(f, tests)})
            if len(stored) == 1 + len(derived) and not missing:
                log(f"[{exp.key}] fold {f_i + 1}/{k} already done; skipped")
                continue
            if missing:  # e.g. a test-G set added since: the fold is trained again (same seed) and scored on all
                log(f"[{exp.key}] fold {f_i + 1}/{k} has no figures on {', '.join(missing)}; trained again")
            base = {"fold": f_i, "n_train": int(len(tr)), "n_val": int(len(va))}
            if exp.model is None:
                prior, freq = prior_map(train.masks[tr], nc)
                rec = dict(
                    base,
                    **nest_splits(
                        {
                            s: evaluate(np.broadcast_to(prior, m.shape), m, nc, np.broadcast_to(freq, m.shape))
                            for s, (_, m) in tests.items()
                        }
                    ),
                )
                _store(results, entry, rec, nc)
                log(_fold_line(exp.key, f_i, k, rec))
                continue
            torch.manual_seed(profile.train.seed + f_i)
            model = Segmenter(exp.model, inputs.classes).to(device)
            if init_weights and init_weights.get(exp.model.arch):
                load_init_weights(model, init_weights[exp.model.arch])
            cfg = replace(_train_config(profile, exp), seed=profile.train.seed + f_i)
            desc = f"fold {f_i + 1}/{k} [{e_i + 1}/{len(plans)}] {exp.key}"
            is_real = np.array([n.startswith("real:") for n in train.names])[tr]
            losses_seen = train_segmenter(
                model, train.images[tr], train.masks[tr], cfg, progress, desc, is_real=is_real
            )
            preds = {s: predict(model, im, profile.eval_batch) for s, (im, _) in tests.items()}
            rec = dict(
                base,
                losses=losses_seen,
                train_seconds=round(time.time() - t0, 1),
                **nest_splits({s: score(*preds[s], tests[s][1], nc) for s in tests}),
            )
            if "test_r" in preds:
                sample = bench / "samples" / f"pred_{safe_name(exp.key)}.npy"
                if not entry["folds"] or not sample.is_file():
                    save_npy(sample, preds["test_r"][0][sample_indices(inputs.test_r.masks)])
            rec["seconds"] = round(time.time() - t0, 1)
            rec["cpu_seconds"] = round(time.process_time() - c0, 1)  # wall time depends on the machine's load
            if save_models:
                path = bench / "models" / f"{safe_name(exp.key)}_fold{f_i}.safetensors"
                save_segmenter(path, model, {"experiment": exp.key, "fold": f_i})
                rec["model_path"] = str(path)
            _store(results, entry, rec, nc)
            log(_fold_line(exp.key, f_i, k, rec))
            for d_exp, d_entry in derived:
                if d_exp.post == "gate" and exp.set_key not in gates:
                    gates[exp.set_key] = train_gate(train.images[tr], train.masks[tr], cfg)
                d_rec = dict(
                    base,
                    **nest_splits(
                        postprocess(d_exp.post, preds, tests, nc, post.min_component, gates.get(exp.set_key))
                    ),
                )
                _store(results, d_entry, d_rec, nc)
                log(_fold_line(d_exp.key, f_i, k, d_rec))
            if on_fold is not None:
                on_fold(results.doc)
    return results.doc


def postprocess(kind: str, preds: dict, tests: dict, nc: int, min_component, gate) -> dict:
    """Scores of every split after small-component removal or gating (see :mod:`.postprocess`)."""
    out = {}
    if kind == "mincomp":
        area = min_component
        if area == "auto":
            area = choose_min_area(preds["val"][0], tests["val"][1], nc, area_candidates(tests["val"][1].shape[-1]))
        out["min_area"] = int(area)
        for s, (pred, probs) in preds.items():
            out[s] = score(remove_small_components(pred, area), probs, tests[s][1], nc)
    else:
        for s, (pred, probs) in preds.items():
            keep = gate.predict(tests[s][0])
            out[s] = score(np.where(keep[:, None, None], pred, 0).astype(np.uint8), probs, tests[s][1], nc)
            out[s]["gate_accuracy"] = float(np.mean(keep == positive(tests[s][1])))
    return out


def _train_config(profile: Profile, exp: Experiment):
    return replace(profile.train, loss=exp.loss or profile.train.loss, swa=exp.swa)


def _store(results: "Results", entry: dict, rec: dict, nc: int) -> None:
    entry["folds"] = sorted([f for f in entry["folds"] if f["fold"] != rec["fold"]] + [rec], key=lambda f: f["fold"])
    entry["summary"] = summarise(entry["folds"], nc)
    results.save()


def _fold_line(key: str, f_i: int, k: int, rec: dict) -> str:
    named = rec.get(TEST_G_SETS) or {}
    shown = [(s, rec.get(s)) for s in SPLITS if s != "test_g" or len(named) < 2]
    shown += [(f"test_g[{n}]", r) for n, r in named.items() if len(named) > 1]
    return (
        f"[{key}] fold {f_i + 1}/{k}: "
        + ", ".join(f"{s} mIoU {r['miou']:.3f}" for s, r in shown if r and r.get("miou") is not None)
        + (f" ({rec['seconds']:.0f}s)" if "seconds" in rec else "")
    )


def train_annotator(
    run_dir,
    out_path,
    train: datasets.LabelledSet,
    model_cfg: SegmenterConfig,
    profile: Profile,
    test_r: datasets.LabelledSet | None,
    classes,
    init_weights=None,
    device="cpu",
    progress=True,
    log=print,
) -> dict:
    """Train one segmenter on all real labels, save it to ``out_path`` and score it on test-R: the
    ceiling of a run whose interpreter learns from this model's masks instead of a person's."""
    t0 = time.time()
    torch.manual_seed(profile.train.seed)
    model = Segmenter(model_cfg, classes).to(device)
    if init_weights:
        load_init_weights(model, init_weights)
    losses = train_segmenter(model, train.images, train.masks, profile.train, progress, f"annotator {model.name}")
    entry = {
        "path": str(out_path),
        "model": model_cfg.to_dict(),
        "model_name": model.name,
        "train_set": train.info,
        "n_train": len(train),
        "losses": losses,
    }
    if test_r is not None:
        entry["test_r"] = evaluate(model.predict(test_r.images, profile.eval_batch), test_r.masks, len(classes))
    entry["sha256"] = save_segmenter(out_path, model, {"trained_on": train.info, "test_r": entry.get("test_r")})
    entry["seconds"] = round(time.time() - t0, 1)
    results = Results(Path(run_dir) / "bench")
    results.set(annotator=entry)
    results.save()
    if entry.get("test_r"):
        log(f"annotator {model.name}: test-R mIoU {entry['test_r']['miou']:.3f} (saved to {out_path})")
    return entry
