"""Tables and figures of a benchmark, written from ``RUN/bench/results.json`` alone (so they can be
redrawn any time): ``tables.md`` (the seed's Tables I-III where the run has the data for them, all
metrics per experiment, the annotator ceiling and the pair grading), ``bars.png`` (mIoU with fold
std as error bars) and ``predictions.png`` (test-R predictions next to the ground truth)."""

from __future__ import annotations

import io
import json
from pathlib import Path

import numpy as np

from ..atomic import atomic_write_bytes, atomic_write_text
from .runner import TEST_G_SETS, safe_name

SPLIT_NAMES = {"val": "held-out fold", "test_r": "test-R", "test_g": "test-G"}


def fmt(ms, digits: int = 3) -> str:
    """[mean, std] -> '0.773 ± 0.012' (or '-')."""
    if not ms or ms[0] is None:
        return "-"
    m, s = ms
    return f"{m:.{digits}f} ± {s:.{digits}f}" if s is not None else f"{m:.{digits}f}"


def _summary(entry: dict, split: str, key: str = "miou"):
    return ((entry.get("summary") or {}).get(split) or {}).get(key)


def _table(header: list[str], rows: list[list[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    lines += ["| " + " | ".join(r) + " |" for r in rows]
    return "\n".join(lines)


def method(entry: dict) -> str:
    """The row's name without its set: model/loss[+post] (older results: the model's name)."""
    return entry.get("method") or entry["model_name"]


def _has(entries, split) -> bool:
    return any(_summary(e, split) for e in entries)


def build_tables(doc: dict) -> str:
    exps = doc.get("experiments", {})
    classes = [c["name"] for c in doc.get("classes", [])]
    prof = doc.get("profile", {})
    out = [
        "# Segmenter benchmark\n",
        f"Profile `{prof.get('name')}`: {prof.get('resolution')}x{prof.get('resolution')}, "
        f"{(prof.get('train') or {}).get('epochs')} epochs, batch {(prof.get('train') or {}).get('batch_size')}, "
        f"{(prof.get('train') or {}).get('optimizer')} lr {(prof.get('train') or {}).get('lr')}. "
        f"Scores are mean ± std over the folds each experiment completed.\n",
        f"Metric conventions: {doc.get('metric_notes', '')}\n",
    ]
    tests = doc.get("test_sets") or {}
    test_g_sets = tests.get(TEST_G_SETS) or {}
    named = (
        [
            (f"test-G {n}" + (" (the test-G columns)" if i == 0 else ""), t)
            for i, (n, t) in enumerate(test_g_sets.items())
        ]
        if len(test_g_sets) > 1
        else [("test-G", tests.get("test_g"))]
    )
    for name, t in [("test-R", tests.get("test_r"))] + named:
        if t:
            extra = f", seeds {t.get('seed_min')}..{t.get('seed_max')}" if t.get("seed_min") is not None else ""
            out.append(f"- {name}: `{t.get('path')}`, {t.get('n')} images{extra}")
    out.append("")
    entries = list(exps.values())
    models = list(dict.fromkeys(method(e) for e in entries))

    # Seed §III-C: each training set scored on test-G and test-R
    if entries:
        rows = []
        for key, e in exps.items():
            done = len(e.get("folds", []))
            rows.append(
                [
                    e["set"],
                    method(e),
                    str(e["n_train"]),
                    f"{done}/{e.get('folds_k')}",
                    fmt(_summary(e, "val")),
                    fmt(_summary(e, "test_g")),
                    fmt(_summary(e, "test_r")),
                    fmt(_summary(e, "test_r", "miou_fg")),
                    fmt(_summary(e, "test_r", "mdice_fg")),
                    fmt(_summary(e, "test_r", "hd95"), 2),
                    fmt(_summary(e, "test_r", "pixel_accuracy")),
                ]
            )
        out += [
            "## Training sets and models (mIoU incl. background unless noted)\n",
            _table(
                [
                    "training set",
                    "model/loss",
                    "n train",
                    "folds",
                    "mIoU held-out fold",
                    "mIoU test-G",
                    "mIoU test-R",
                    "mIoU test-R (no bg)",
                    "Dice test-R (fg mean)",
                    "HD95 test-R (px)",
                    "pixel acc. test-R",
                ],
                rows,
            ),
            "",
        ]

        if len(test_g_sets) > 1:
            rows = [
                [e["set"], method(e)]
                + [fmt(((e.get("summary") or {}).get(TEST_G_SETS) or {}).get(n, {}).get("miou")) for n in test_g_sets]
                for e in entries
            ]
            head = ["training set", "model/loss"] + [f"mIoU test-G {n}" for n in test_g_sets]
            out += ["### mIoU on each test-G set (every model trained once)\n", _table(head, rows), ""]

        for split in ("test_r", "test_g"):
            if not _has(entries, split):
                continue
            rows = []
            for key, e in exps.items():
                dice = _summary(e, split, "dice") or []
                hd = _summary(e, split, "hd95_per_class") or []
                rows.append([e["set"], method(e)] + [fmt(d) for d in dice[1:]] + [fmt(h, 2) for h in hd[1:]])
            head = (
                ["training set", "model/loss"] + [f"Dice {c}" for c in classes[1:]] + [f"HD95 {c}" for c in classes[1:]]
            )
            out += [f"### Per-class Dice and HD95 (px) on {SPLIT_NAMES[split]}\n", _table(head, rows), ""]

    # Table I: synthetic set size vs mIoU
    synth = [e for e in entries if (e.get("set_info") or {}).get("kind") == "synthetic"]
    if synth:
        out.append("## Table I: synthetic training set size vs mIoU\n")
        for m in models:
            rows = [
                [
                    f"Dataset size={e['n_train']}"
                    + (
                        f" (annotated={e['set_info'].get('annotated')})"
                        if e["set_info"].get("annotated") is not None
                        else ""
                    ),
                    fmt(_summary(e, "test_g")),
                    fmt(_summary(e, "test_r")),
                ]
                for e in sorted((e for e in synth if method(e) == m), key=lambda e: e["n_train"])
            ]
            if rows:
                out += [f"Model: {m}\n", _table(["", "mIoU on test-G", "mIoU on test-R"], rows), ""]

    # Table II: annotated images (interpreter) vs mIoU
    annotated = [e for e in synth if e["set_info"].get("annotated") is not None]
    if annotated:
        out.append("## Table II: annotated images (style interpreter) vs mIoU\n")
        for m in models:
            rows = [
                [
                    f"Annotated images={e['set_info']['annotated']} (n={e['n_train']})",
                    fmt(_summary(e, "test_g")),
                    fmt(_summary(e, "test_r")),
                ]
                for e in sorted(
                    (e for e in annotated if method(e) == m), key=lambda e: (e["set_info"]["annotated"], e["n_train"])
                )
            ]
            if rows:
                out += [f"Model: {m}\n", _table(["", "mIoU on test-G", "mIoU on test-R"], rows), ""]

    # Table III: models compared, per training set
    if len(models) > 1:
        out.append("## Table III: segmentation networks compared\n")
        for set_key in dict.fromkeys(e["set"] for e in entries):
            row_e = {method(e): e for e in entries if e["set"] == set_key}
            rows = []
            for split, label in (("test_g", "mIoU on test-G"), ("test_r", "mIoU on test-R")):
                if _has(row_e.values(), split):
                    rows.append([label] + [fmt(_summary(row_e[m], split)) if m in row_e else "-" for m in models])
            if _has(row_e.values(), "test_r"):
                rows.append(
                    ["Dice on test-R (fg mean)"]
                    + [fmt(_summary(row_e[m], "test_r", "mdice_fg")) if m in row_e else "-" for m in models]
                )
                rows.append(
                    ["HD95 on test-R (px)"]
                    + [fmt(_summary(row_e[m], "test_r", "hd95"), 2) if m in row_e else "-" for m in models]
                )
            if not rows:
                rows.append(
                    ["mIoU on held-out fold"] + [fmt(_summary(row_e[m], "val")) if m in row_e else "-" for m in models]
                )
            out += [f"Training set: {set_key}\n", _table([""] + models, rows), ""]

    ann = doc.get("annotator")
    if ann:
        tr = ann.get("test_r") or {}
        out += [
            "## Model-assisted annotator\n",
            f"`{ann['path']}`: {ann['model_name']} trained on {ann['n_train']} real labelled images. "
            f"test-R mIoU {tr.get('miou', float('nan')):.3f} (no background {tr.get('miou_fg', float('nan')):.3f}), "
            f"Dice (fg mean) {tr.get('mdice_fg', float('nan')):.3f}. This is the ceiling of a run whose "
            "interpreter is trained on this model's masks instead of a person's.\n"
            if tr
            else f"`{ann['path']}`: {ann['model_name']} trained on {ann['n_train']} images (no test-R given).\n",
        ]

    g = doc.get("grading")
    if g:
        c = g["counts"]
        n = max(g["n"], 1)
        out += [
            "## Pair grading (as the seed's Fig. 7)\n",
            f"{g['n']} pairs of `{g['folder']}` against `{g['reference']}` "
            f"(good: <= {g['good_max']:.0%} pixels differ, bad: >= {g['bad_min']:.0%}).\n",
            _table(
                ["good", "partial", "bad", "mean wrong pixels"],
                [
                    [
                        f"{c['good']} ({c['good'] / n:.0%})",
                        f"{c['partial']} ({c['partial'] / n:.0%})",
                        f"{c['bad']} ({c['bad'] / n:.0%})",
                        f"{g['mean_wrong']:.2%}",
                    ]
                ],
            ),
            "",
        ]
    return "\n".join(out) + "\n"


def figure_png(fig) -> bytes:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110, bbox_inches="tight")
    return buf.getvalue()


def plot_bars(doc: dict) -> bytes | None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    exps = doc.get("experiments", {})
    splits = [s for s in ("test_r", "test_g", "val") if any(_summary(e, s) for e in exps.values())]
    if not exps or not splits:
        return None
    labels = [f"{e['set']}\n{method(e)}" for e in exps.values()]
    x = np.arange(len(labels))
    w = 0.8 / len(splits)
    fig, ax = plt.subplots(figsize=(max(5, 1.4 * len(labels) + 2), 4))
    for i, s in enumerate(splits):
        ms = [(_summary(e, s) or [np.nan, 0]) for e in exps.values()]
        ax.bar(
            x + (i - (len(splits) - 1) / 2) * w,
            [m[0] if m[0] is not None else np.nan for m in ms],
            w,
            yerr=[m[1] or 0 for m in ms],
            capsize=3,
            label=SPLIT_NAMES[s],
        )
    ax.set_xticks(x, labels, fontsize=8)
    ax.set_ylabel("mIoU (incl. background), mean ± std over folds")
    ax.set_ylim(0, 1)
    ax.legend(fontsize=8)
    ax.grid(axis="y", alpha=0.3)
    fig.tight_layout()
    data = figure_png(fig)
    plt.close(fig)
    return data


def _colour(mask: np.ndarray, colours: np.ndarray) -> np.ndarray:
    return colours[np.clip(mask, 0, len(colours) - 1)]


def overlay(image: np.ndarray, mask: np.ndarray, colours: np.ndarray, alpha: float = 0.45) -> np.ndarray:
    """uint8 image [C, H, W] with its label map blended in (background left as is)."""
    img = image.transpose(1, 2, 0).astype(np.float32)
    img = np.repeat(img, 3, 2) if img.shape[2] == 1 else img[..., :3]
    col = _colour(mask, colours).astype(np.float32)
    fg = (mask > 0)[..., None]
    return np.where(fg, (1 - alpha) * img + alpha * col, img).clip(0, 255).astype(np.uint8)


def plot_predictions(doc: dict, bench_dir: Path) -> bytes | None:
    samples = bench_dir / "samples"
    if not (samples / "test_r_images.npy").is_file():
        return None
    images = np.load(samples / "test_r_images.npy", allow_pickle=False)
    masks = np.load(samples / "test_r_masks.npy", allow_pickle=False)
    preds = []
    for key in doc.get("experiments", {}):
        p = samples / f"pred_{safe_name(key)}.npy"
        if p.is_file():
            arr = np.load(p, allow_pickle=False)
            if arr.shape == masks.shape:
                preds.append((key.replace("/", "\n"), arr))
    if not preds:
        return None
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    colours = np.array([[int(c["color"][i : i + 2], 16) for i in (1, 3, 5)] for c in doc["classes"]], dtype=np.uint8)
    cols = 2 + len(preds)
    fig, axes = plt.subplots(len(images), cols, figsize=(1.6 * cols, 1.6 * len(images)), squeeze=False)
    for r in range(len(images)):
        panels = [
            ("image", overlay(images[r], np.zeros_like(masks[r]), colours)),
            ("ground truth", overlay(images[r], masks[r], colours)),
        ]
        panels += [(k, overlay(images[r], p[r], colours)) for k, p in preds]
        for c, (title, pic) in enumerate(panels):
            ax = axes[r, c]
            ax.imshow(pic, interpolation="nearest")
            ax.set_xticks([]), ax.set_yticks([])
            if r == 0:
                ax.set_title(title, fontsize=6)
    fig.suptitle("test-R: predictions (first completed fold) over ground truth", fontsize=8)
    fig.tight_layout()
    data = figure_png(fig)
    plt.close(fig)
    return data


def write_report(bench_dir, figures: bool = True) -> list[Path]:
    """Write tables.md (and, with ``figures``, bars.png and predictions.png) from results.json;
    returns the paths written."""
    bench_dir = Path(bench_dir)
    doc = json.loads((bench_dir / "results.json").read_text())
    written = []
    atomic_write_text(bench_dir / "tables.md", build_tables(doc))
    written.append(bench_dir / "tables.md")
    if not figures:
        return written
    for name, data in (("bars.png", plot_bars(doc)), ("predictions.png", plot_predictions(doc, bench_dir))):
        if data:
            atomic_write_bytes(bench_dir / name, data)
            written.append(bench_dir / name)
    return written
