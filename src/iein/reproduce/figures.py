"""The figures of ``iein report``: Figure 3 (w-F1 against T) and the test confusion matrices,
drawn with matplotlib from numbers the report computed."""
from __future__ import annotations

from pathlib import Path
from typing import Any, Sequence

import numpy as np

from ..evaluation.metrics import mean_std
from ..utils import plural
from .paper import DATASET_TITLE, PAPER_TABLE3
from .plan import FIGURE3_ITERATIONS, TABLE3_ITERATIONS

__all__ = ["seed_count_label", "plot_figure3", "plot_confusion"]


def seed_count_label(counts: Sequence[int]) -> str:
    """``"5 seeds"`` when every point has the same number of seeds, ``"1–5 seeds per point"``
    when a partial reproduction left some points with fewer (the legend must not claim more)."""
    lo, hi = min(counts), max(counts)
    if lo == hi:
        return plural(hi, "seed")
    return f"{lo}–{hi} seeds per point"


def plot_figure3(data: dict[str, list[tuple[int, list[float]]]], datasets: Sequence[str], quick: bool,
                 path: Path) -> None:
    """Figure 3: test w-F1 against T per dataset (our mean and std band, the paper's Table 3 points)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(datasets), figsize=(4.2 * len(datasets), 3.4), squeeze=False)
    for ax, d in zip(axes[0], datasets):
        pts = data[d]
        if pts:
            x = np.array([t for t, _ in pts])
            m = np.array([mean_std(v)[0] for _, v in pts])
            s = np.array([mean_std(v)[1] for _, v in pts])
            ax.plot(x, m, "o-", color="C0", label=f"ours (mean ± std, {seed_count_label([len(v) for _, v in pts])})")
            ax.fill_between(x, m - s, m + s, color="C0", alpha=0.2)
        paper = PAPER_TABLE3.get(d, {})
        pt = [t for t in TABLE3_ITERATIONS if t in paper]
        if pt:
            ax.plot(pt, [paper[t] for t in pt], "s--", color="C3", mfc="none", label="paper (Table 3)")
        ax.set_title(DATASET_TITLE.get(d, d))
        ax.set_xlabel("maximum iteration number T")
        ax.set_ylabel("test weighted F1 (%)")
        ax.set_xticks(list(FIGURE3_ITERATIONS))
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8, loc="lower right")
    fig.suptitle("Figure 3: weighted F1 vs maximum iteration number" + (" (QUICK MODE)" if quick else ""))
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def plot_confusion(matrices: Sequence[Any], labels: Sequence[str], title: str, path: Path) -> None:
    """The mean of some runs' test confusion matrices, shaded by the share of each gold row."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    cm = np.mean([np.array(m, dtype=float) for m in matrices], axis=0)
    rows = cm.sum(axis=1, keepdims=True)
    norm = np.divide(cm, rows, out=np.zeros_like(cm), where=rows > 0)
    fig, ax = plt.subplots(figsize=(1.0 + 0.75 * len(labels), 0.8 + 0.7 * len(labels)))
    im = ax.imshow(norm, cmap="Blues", vmin=0, vmax=1)
    for i in range(len(labels)):
        for j in range(len(labels)):
            ax.text(j, i, f"{cm[i, j]:.1f}", ha="center", va="center", fontsize=7,
                    color="white" if norm[i, j] > 0.5 else "black")
    ax.set_xticks(range(len(labels)), labels, rotation=45, ha="right")
    ax.set_yticks(range(len(labels)), labels)
    ax.set_xlabel("predicted")
    ax.set_ylabel("gold")
    ax.set_title(title, fontsize=9)
    fig.colorbar(im, ax=ax, fraction=0.046, label="share of gold row")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
