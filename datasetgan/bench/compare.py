"""The method comparison of a benchmark run (``datasetgan bench report RUN``), from results.json alone:
every row (set x architecture x loss x post-processing) x every metric as mean ± std over folds, a paired
comparison over folds with the best row, a bar chart and a JSON twin. Nothing is recomputed."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np

from ..atomic import atomic_write_bytes, atomic_write_text
from .report import figure_png

# (key in a fold's split record, column title, higher is better)
METRICS = (
    ("mdice_fg", "Dice (fg)", True),
    ("miou_fg", "IoU (fg)", True),
    ("miou", "mIoU", True),
    ("hd95", "HD95 px", False),
    ("assd", "ASSD px", False),
    ("chamfer", "Chamfer px", False),
    ("bf", "BF", True),
    ("mmcl", "MMCL", None),
    ("ece", "ECE", False),
    ("gate_accuracy", "gate acc.", True),
)
ALPHA = 0.05


def fold_values(entry: dict, split: str, key: str) -> dict[int, float]:
    return {f["fold"]: f[split][key] for f in entry.get("folds", []) if (f.get(split) or {}).get(key) is not None}


def paired(a: dict[int, float], b: dict[int, float]) -> dict | None:
    """Paired t-test over the folds both rows completed (None with fewer than 2)."""
    from scipy.stats import ttest_rel

    common = sorted(set(a) & set(b))
    if len(common) < 2:
        return None
    x, y = np.array([a[f] for f in common]), np.array([b[f] for f in common])
    d = x - y
    p = 1.0 if not d.any() else float(ttest_rel(x, y).pvalue)
    return {
        "n": len(common),
        "mean_diff": float(d.mean()),
        "p": p if math.isfinite(p) else 1.0,
        "wins": int((d > 0).sum()),
        "losses": int((d < 0).sum()),
    }


def compare(doc: dict, split: str = "test_r", key: str = "mdice_fg") -> dict:
    """The comparison document: methods with mean/std per metric, best first on ``key`` (Dice over the
    foreground classes by default), each paired with the best."""
    exps = doc.get("experiments", {})
    rows = []
    for name, e in exps.items():
        metrics = {}
        for k, _, _ in METRICS:
            v = list(fold_values(e, split, k).values())
            if v:
                metrics[k] = [float(np.mean(v)), float(np.std(v))]
        if metrics:
            rows.append(
                {
                    "key": name,
                    "set": e.get("set"),
                    "method": e.get("method", e.get("model_name")),
                    "folds": len(fold_values(e, split, "miou")),
                    "metrics": metrics,
                }
            )
    rows.sort(key=lambda r: -r["metrics"][key][0] if key in r["metrics"] else float("inf"))  # best first
    best = rows[0] if rows and key in rows[0]["metrics"] else None
    for r in rows:
        if best is not None and r is not best and key in r["metrics"]:
            r["vs_best"] = paired(fold_values(exps[r["key"]], split, key), fold_values(exps[best["key"]], split, key))
    return {
        "split": split,
        "key": key,
        "best": best["key"] if best else None,
        "alpha": ALPHA,
        "metric_notes": doc.get("metric_notes"),
        "methods": rows,
        "note": f"paired t-test over the folds both rows completed, on {key}; a difference is called "
        f"significant at p < {ALPHA} (with 5 folds only large, consistent differences are)",
    }


def cell(ms) -> str:
    """A [mean, std] pair as 'mean ± std', '-' when missing."""
    return "-" if not ms else f"{ms[0]:.3f} ± {ms[1]:.3f}"


def vs_best(row: dict, comp: dict) -> str:
    """A row's paired comparison with the best row: mean difference, p over folds, folds won."""
    v = row.get("vs_best")
    if row["key"] == comp["best"]:
        return "best"
    if not v:
        return "-"
    star = " *" if v["p"] < comp["alpha"] else ""
    return f"{v['mean_diff']:+.3f}, p={v['p']:.3f}{star} ({v['wins']}/{v['n']} folds better)"


def table(comp: dict) -> str:
    cols = [m for m in METRICS if any(m[0] in r["metrics"] for r in comp["methods"])]
    head = ["row", "folds"] + [f"{t} {'↑' if up else '↓' if up is False else ''}".strip() for _, t, up in cols]
    head.append(f"vs best ({comp['key']})")
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in comp["methods"]:
        cells = [r["key"], str(r["folds"])] + [cell(r["metrics"].get(k)) for k, _, _ in cols] + [vs_best(r, comp)]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def bar_chart(comp: dict) -> bytes | None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = [r for r in comp["methods"] if comp["key"] in r["metrics"]]
    if not rows:
        return None
    fig, ax = plt.subplots(figsize=(max(5, 0.5 * len(rows) + 2), 4))
    ms = np.array([r["metrics"][comp["key"]] for r in rows])
    ax.bar(
        np.arange(len(rows)),
        ms[:, 0],
        yerr=ms[:, 1],
        capsize=3,
        color=["tab:orange" if r["key"] == comp["best"] else "tab:blue" for r in rows],
    )
    ax.set_xticks(np.arange(len(rows)), [r["key"] for r in rows], rotation=60, ha="right", fontsize=7)
    ax.set_ylabel(f"{comp['key']} on {comp['split']}, mean ± std over folds")
    ax.set_ylim(0, 1)
    ax.grid(axis="y", alpha=0.3)
    fig.tight_layout()
    data = figure_png(fig)
    plt.close(fig)
    return data


def write_comparison(bench_dir, split: str = "test_r", key: str = "mdice_fg") -> list[Path]:
    """methods.md, methods.json and methods.png in ``bench_dir``, from its results.json."""
    bench_dir = Path(bench_dir)
    doc = json.loads((bench_dir / "results.json").read_text())
    if split == "test_r" and not any(
        f.get("test_r") for e in doc.get("experiments", {}).values() for f in e.get("folds", [])
    ):
        split = "val"  # no test-R in this run: compare on the held-out folds
    comp = compare(doc, split, key)
    written = [bench_dir / "methods.md", bench_dir / "methods.json"]
    atomic_write_text(
        written[0],
        f"# Methods compared on {split}\n\n{table(comp)}\n\n{comp['note']}.\n\n"
        f"Metric conventions: {comp['metric_notes']}\n",
    )
    atomic_write_text(written[1], json.dumps(comp, indent=1))
    png = bar_chart(comp)
    if png:
        atomic_write_bytes(bench_dir / "methods.png", png)
        written.append(bench_dir / "methods.png")
    return written
