"""Benchmark figures (matplotlib, Agg backend, PNG). Each function draws one figure from plain data.

The report module turns cells into the inputs below; these functions know nothing about cells,
which keeps them testable on hand-made numbers.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np

from maw.config import METHODS
from maw.utils.io import atomic_path


def _pyplot():
    import matplotlib

    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt

    return plt


def _save(fig, path: str | Path) -> Path:
    path = Path(path)
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=110, bbox_inches="tight")
    _pyplot().close(fig)
    return path


def _colors(names: Sequence[str]) -> dict[str, tuple]:
    """The same colour for a method in every figure (by its place in ``maw.config.METHODS``)."""
    cmap = _pyplot().get_cmap("tab10")
    extra = [n for n in names if n not in METHODS]
    return {
        n: cmap((METHODS.index(n) if n in METHODS else len(METHODS) + extra.index(n)) % 10) for n in names
    }


def plot_metrics(
    path: str | Path,
    title: str,
    values: Mapping[str, Mapping[str, tuple[float, float, float]]],
    metrics: Sequence[str],
) -> Path:
    """Grouped bars: one group per metric, one bar per method, error bars = 95% CI.

    values: method -> metric -> (mean, ci_low, ci_high).
    """
    plt = _pyplot()
    methods = list(values)
    colors = _colors(methods)
    fig, ax = plt.subplots(figsize=(max(6.0, 1.4 * len(metrics) * max(1, len(methods)) / 2.5), 4.0))
    width = 0.8 / max(1, len(methods))
    x = np.arange(len(metrics))
    for i, m in enumerate(methods):
        means, err_lo, err_hi = [], [], []
        for metric in metrics:
            mean, lo, hi = values[m].get(metric, (np.nan, np.nan, np.nan))
            means.append(mean)
            err_lo.append(max(0.0, mean - lo) if np.isfinite(mean) else 0.0)
            err_hi.append(max(0.0, hi - mean) if np.isfinite(mean) else 0.0)
        ax.bar(
            x + (i - (len(methods) - 1) / 2) * width,
            means,
            width,
            yerr=[err_lo, err_hi],
            capsize=3,
            label=m,
            color=colors[m],
        )
    ax.set_xticks(x, list(metrics))
    ax.set_ylabel("score (mean over test queries, 95% CI)")
    ax.set_ylim(0, 1.05)
    ax.set_title(title)
    ax.legend(fontsize=8, ncols=min(5, max(1, len(methods))), loc="upper center", bbox_to_anchor=(0.5, -0.1))
    ax.grid(axis="y", alpha=0.3)
    return _save(fig, path)


def plot_training_curves(
    path: str | Path,
    title: str,
    curves: Mapping[str, Mapping[str, Sequence[float | None]]],
) -> Path:
    """Validation nDCG@10 and training loss per epoch.

    curves: label (e.g. "maw seed 42") -> {"epoch": [...], "val_ndcg10": [...], "train_loss": [...]}
    (None where a value is missing, e.g. no training loss at epoch 0).
    """
    plt = _pyplot()
    labels = list(curves)
    colors = _colors(list(dict.fromkeys(lab.split(" ")[0] for lab in labels)))  # one colour per method
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(10, 3.8))
    for lab in labels:
        c = curves[lab]
        color = colors[lab.split(" ")[0]]
        for ax, key in ((ax1, "val_ndcg10"), (ax2, "train_loss")):
            pts = [(e, v) for e, v in zip(c.get("epoch", []), c.get(key, []), strict=False) if v is not None]
            if pts:
                ex, ey = zip(*pts, strict=True)
                ax.plot(ex, ey, marker="o", label=lab, color=color, alpha=0.85)
    ax1.set_title("validation nDCG@10")
    ax2.set_title("training loss (InfoNCE)")
    from matplotlib.ticker import MaxNLocator

    for ax in (ax1, ax2):
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.set_xlabel("epoch")
        ax.grid(alpha=0.3)
    ax1.legend(fontsize=7)
    fig.suptitle(title)
    return _save(fig, path)


def plot_depth_histograms(
    path: str | Path, title: str, layers: Mapping[str, Sequence[Sequence[float]]]
) -> Path:
    """Share of routing units choosing each depth, per MAW layer (one panel) and head (rows).

    layers: layer label -> counts (H, D).
    """
    plt = _pyplot()
    names = list(layers)
    fig, axes = plt.subplots(1, len(names), figsize=(3.6 * len(names) + 1, 3.8), squeeze=False)
    im = None
    for ax, name in zip(axes[0], names, strict=True):
        counts = np.asarray(layers[name], dtype=np.float64)
        if counts.ndim != 2:
            raise ValueError(
                f"depth histogram of layer {name}: expected (heads, depths) counts, got {counts.shape}"
            )
        share = counts / np.clip(counts.sum(1, keepdims=True), 1e-12, None)
        im = ax.imshow(share, aspect="auto", cmap="viridis", vmin=0.0, vmax=1.0)
        ax.set_xlabel("depth")
        ax.set_ylabel("head")
        ax.set_title(f"layer {name}")
        ax.set_xticks(range(counts.shape[1]))
        ax.set_yticks(range(counts.shape[0]))
        ax.tick_params(labelsize=6)
    if im is not None:
        fig.colorbar(im, ax=axes[0].tolist(), label="share of routing units")
    fig.suptitle(title)
    return _save(fig, path)


def plot_tradeoff(
    path: str | Path,
    title: str,
    points: Mapping[str, tuple[float, float]],
    xlabel: str = "query latency (ms, log scale)",
    ylabel: str = "nDCG@10",
) -> Path:
    """Metric vs runtime scatter. points: method -> (runtime, metric)."""
    plt = _pyplot()
    colors = _colors(list(points))
    fig, ax = plt.subplots(figsize=(5.5, 4.0))
    for m, (x, y) in points.items():
        if x is None or y is None or not np.isfinite(x) or not np.isfinite(y):
            continue
        ax.scatter([x], [y], color=colors[m], s=50, label=m)
        ax.annotate(m, (x, y), textcoords="offset points", xytext=(5, 4), fontsize=8)
    xs = [p[0] for p in points.values() if p[0] is not None and np.isfinite(p[0]) and p[0] > 0]
    if xs and max(xs) / max(min(xs), 1e-12) > 20:
        ax.set_xscale("log")
    else:
        xlabel = xlabel.replace(", log scale", "")
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.set_title(title)
    ax.grid(alpha=0.3)
    return _save(fig, path)
