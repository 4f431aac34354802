"""curves.png: training curves (losses, ADA's p and r_t, FID) against thousands of images seen."""

from __future__ import annotations

from . import jsonlog
from .atomic import atomic_path

LOSS_KEYS = ("loss_G", "loss_D", "r1_penalty", "pl_penalty")


def read_rows(log_path) -> list[dict]:
    return jsonlog.read(log_path)[0]  # a line cut short by a crash is dropped


def plot_curves(log_path, out_path, title: str | None = None) -> None:
    """Draw the curves of a log.jsonl into a PNG (written atomically)."""
    import matplotlib

    matplotlib.use("Agg", force=False)
    from matplotlib.figure import Figure

    rows = read_rows(log_path)
    fig = Figure(figsize=(12, 3.6), dpi=90)
    axes = fig.subplots(1, 3)
    for key in LOSS_KEYS:
        pts = [(r["kimg"], r[key]) for r in rows if r.get(key) is not None]
        if pts:  # regularisers are lazy, so their points are sparse: mark them
            axes[0].plot(*zip(*pts), label=key, lw=1, marker="o" if "penalty" in key else None, ms=2)
    axes[0].set_title("losses")
    for key, style in (("p", "-"), ("r_t", "--")):
        pts = [(r["kimg"], r[key]) for r in rows if r.get(key) is not None]
        if pts:
            axes[1].plot(*zip(*pts), style, label=key, lw=1)
    axes[1].axhline(0.6, color="gray", lw=0.5, ls=":")
    axes[1].set_title("ADA p and r_t (target 0.6)")
    pts = [(r["kimg"], r["fid"]) for r in rows if r.get("fid") is not None]
    if pts:
        axes[2].plot(*zip(*pts), "o-", lw=1, ms=3)
    else:
        axes[2].text(0.5, 0.5, "no FID yet", ha="center", va="center", transform=axes[2].transAxes)
    axes[2].set_title("FID")
    for ax in axes:
        ax.set_xlabel("kimg")
        ax.grid(alpha=0.3)
        if ax.get_legend_handles_labels()[0]:
            ax.legend(fontsize=7)
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    with atomic_path(out_path) as tmp:
        fig.savefig(tmp, format="png")
