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


MARKERS = ("o", "s", "^", "D", "v", "P", "X", "*")


def _markers(names: Sequence[str]) -> dict[str, str]:
    """The same marker for a method in every figure (by its place in ``maw.config.METHODS``)."""
    extra = [n for n in names if n not in METHODS]
    return {
        n: MARKERS[(METHODS.index(n) if n in METHODS else len(METHODS) + extra.index(n)) % len(MARKERS)]
        for n in names
    }


def _integer_epochs(ax, epochs: Sequence[float]) -> None:
    """Ticks on whole epochs only (a single epoch gets one tick, not a fractional axis)."""
    if not epochs:
        return
    lo, hi = int(np.floor(min(epochs))), int(np.ceil(max(epochs)))
    ax.set_xticks(range(lo, hi + 1))
    ax.set_xlim(lo - 0.5, hi + 0.5)


def plot_training_curves(
    path: str | Path,
    title: str,
    curves: Mapping[str, Mapping[str, Sequence[float | None]]],
) -> Path:
    """Validation nDCG@10 and training loss per epoch.

    curves: label ("<method> seed <seed>") -> {"epoch": [...], "val_ndcg10": [...], "train_loss": [...]}
    (None where a value is missing, e.g. no training loss at epoch 0). Each method has its own
    colour and marker and is shifted by a small fixed offset along the epoch axis, so identical
    values of two methods stay visible side by side; a one-point series is a marker.
    """
    plt = _pyplot()
    labels = list(curves)
    methods = list(dict.fromkeys(lab.split(" ")[0] for lab in labels))
    colors, markers = _colors(methods), _markers(methods)
    width = min(0.08, 0.3 / max(1, len(methods)))
    offset = {m: (i - (len(methods) - 1) / 2) * width for i, m in enumerate(methods)}
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(10, 4.2))
    epochs: dict[str, list[float]] = {"val_ndcg10": [], "train_loss": []}
    for lab in labels:
        c, m = curves[lab], lab.split(" ")[0]
        for ax, key in ((ax1, "val_ndcg10"), (ax2, "train_loss")):
            pts = [(e, v) for e, v in zip(c.get("epoch", []), c.get(key, []), strict=False) if v is not None]
            if not pts:
                continue
            ex, ey = zip(*pts, strict=True)
            epochs[key] += list(ex)
            ax.plot(
                np.asarray(ex, dtype=np.float64) + offset[m],
                ey,
                marker=markers[m],
                markersize=6,
                linestyle="-" if len(pts) > 1 else "none",
                label=lab,
                color=colors[m],
                alpha=0.9,
            )
    ax1.set_title("validation nDCG@10")
    ax2.set_title("training loss (InfoNCE)")
    for ax, key in ((ax1, "val_ndcg10"), (ax2, "train_loss")):
        _integer_epochs(ax, epochs[key])
        ax.set_xlabel("epoch (methods drawn slightly apart)")
        ax.grid(alpha=0.3)
    handles, names = ax1.get_legend_handles_labels()
    if not handles:
        handles, names = ax2.get_legend_handles_labels()
    fig.legend(handles, names, fontsize=8, ncols=min(5, max(1, len(names))), loc="lower center")
    fig.suptitle(title)
    fig.tight_layout(rect=(0, 0.06 + 0.025 * ((len(names) - 1) // 5), 1, 1))
    return _save(fig, path)


HARD_ROUTERS = ("gumbel", "grpo", "supervised")


def plot_depth(
    path: str | Path,
    title: str,
    layers: Mapping[str, Mapping[str, Sequence]],
    router: str,
) -> Path:
    """How a MAW layer uses its D depths, per head: one column per layer, two rows.

    layers: layer label -> {"counts": (H, D) choices per depth, "entropy": (H,) mean entropy (nats)
    of the per-unit depth distribution}. A soft router mixes all depths: the main row is the
    entropy of its weights against ln D (the uniform mix), and the argmax shares are a labelled
    secondary view. A hard router (gumbel, grpo, supervised) uses one depth per unit: the main row
    is the choice frequency, the secondary row the entropy of its policy.
    """
    plt = _pyplot()
    names = list(layers)
    soft = router not in HARD_ROUTERS
    fig, axes = plt.subplots(
        2, len(names), figsize=(4.2 * len(names) + 1.2, 7.2), squeeze=False, height_ratios=(1.2, 1.0)
    )
    for col, name in enumerate(names):
        counts = np.asarray(layers[name]["counts"], dtype=np.float64)  # (H, D)
        if counts.ndim != 2:
            raise ValueError(
                f"depth plot of layer {name}: expected (heads, depths) counts, got {counts.shape}"
            )
        H, D = counts.shape
        entropy = np.asarray(layers[name].get("entropy", [np.nan] * H), dtype=np.float64)  # (H,)
        share = counts / np.clip(counts.sum(1, keepdims=True), 1e-12, None)  # (H, D)
        ent_ax, share_ax = (axes[0, col], axes[1, col]) if soft else (axes[1, col], axes[0, col])
        _entropy_bars(ent_ax, entropy, D, name, "soft-weight" if soft else "policy")
        im = share_ax.imshow(
            share.T, aspect="auto", cmap="Greys" if soft else "viridis", vmin=0.0, vmax=1.0, origin="lower"
        )
        share_ax.set_xlabel("head")
        share_ax.set_ylabel("depth")
        share_ax.set_xticks(range(H))
        share_ax.set_yticks(range(D))
        share_ax.tick_params(labelsize=7)
        if soft:
            share_ax.set_title(
                f"layer {name}, SECONDARY: argmax of the soft weights\n(not a choice: all {D} depths are mixed)",
                fontsize=9,
            )
        else:
            share_ax.set_title(f"layer {name}: depth choice frequency ({router} router)", fontsize=9)
        fig.colorbar(
            im,
            ax=share_ax,
            label="share of routing units" if not soft else "share of units where it is the largest",
        )
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    return _save(fig, path)


def _entropy_bars(ax, entropy: np.ndarray, D: int, name: str, what: str) -> None:
    """Mean entropy per head (bars) against the uniform-mix entropy ln D (dashed line)."""
    H, ln_d = entropy.size, float(np.log(D))
    ax.bar(range(H), entropy, color="tab:purple", alpha=0.8, label=f"mean {what} entropy")
    ax.axhline(
        ln_d,
        color="black",
        linestyle="--",
        linewidth=1,
        label=f"uniform over {D} depths (ln {D} = {ln_d:.3f})",
    )
    ratio = float(np.nanmean(entropy)) / ln_d if H and np.isfinite(entropy).any() else float("nan")
    lo = float(np.nanmin(entropy)) / ln_d if H and np.isfinite(entropy).any() else float("nan")
    ax.set_ylim(0, ln_d * 1.25)
    ax.set_xticks(range(H))
    ax.tick_params(labelsize=7)
    ax.set_xlabel("head")
    ax.set_ylabel("entropy (nats)")
    ax.set_title(
        f"layer {name}: {what} entropy per head\nmean H / ln D = {ratio:.4f}, lowest {lo:.4f} (1 = uniform mix)",
        fontsize=9,
    )
    ax.legend(fontsize=7, loc="upper right", ncols=2)


def plot_tradeoff(
    path: str | Path,
    title: str,
    points: Mapping[str, tuple[float, float, float, float, int]],
    xlabel: str = "query latency (ms, log scale; median when repeated timings exist)",
    ylabel: str = "nDCG@10",
) -> Path:
    """Metric vs runtime scatter, one marker per method, named in a legend (no text on the points).

    points: method -> (median, q25, q75, metric, n samples); the horizontal bar is the
    interquartile range (absent with a single measurement).
    """
    plt = _pyplot()
    colors, markers = _colors(list(points)), _markers(list(points))
    fig, ax = plt.subplots(figsize=(6.8, 4.2))
    for m, (x, lo, hi, y, n) in points.items():
        if x is None or y is None or not np.isfinite(x) or not np.isfinite(y):
            continue
        xerr = [[x - lo], [hi - x]] if n > 1 else None
        label = f"{m}: {x:.3g} ms, {ylabel} {y:.4f}" + (" (1 measurement)" if n <= 1 else f" (n={n})")
        ax.errorbar(
            [x], [y], xerr=xerr, fmt=markers[m], color=colors[m], markersize=8, capsize=3, label=label
        )
    xs = [p[0] for p in points.values() if p[0] is not None and np.isfinite(p[0]) and p[0] > 0]
    if xs and max(xs) / max(min(xs), 1e-12) > 20:
        ax.set_xscale("log")
    else:
        xlabel = xlabel.replace(", log scale", "")
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    if all(p[4] <= 1 for p in points.values()):
        title += "\n(latency: one measurement per method, no spread known)"
    else:
        title += "\n(horizontal bars: interquartile range of the per-query latencies)"
    # each method is timed in its own cell, minutes apart, under whatever load the machine had
    title += "\nmethods timed at different moments: a latency gap is a difference only where the report resolves it"
    ax.set_title(title, fontsize=10)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.02, 1.0), borderaxespad=0)
    return _save(fig, path)


def plot_sweep_curves(
    path: str | Path,
    title: str,
    arms: Mapping[str, Sequence[Mapping]],
    rungs: Sequence[int] = (),
    metric: str = "nDCG@10",
) -> Path:
    """A sweep's validation curves: one panel per arm (shared y axis), one line per configuration.

    arms: arm -> [{"name": cell id, "epochs": [...], "scores": [...], "pruned_at": epoch or None,
    "best": bool}], in the order the configurations finished. The arm's best configuration is drawn
    thick; a pruned one ends in a cross at the epoch it was stopped; the dotted vertical lines are
    the pruning rungs.
    """
    plt = _pyplot()
    names = [a for a in arms if arms[a]]
    if not names:
        raise ValueError("sweep curves: no finished configuration to draw")
    ncols = min(4, len(names))
    nrows = -(-len(names) // ncols)
    fig, axes = plt.subplots(
        nrows, ncols, figsize=(3.8 * ncols, 4.4 * nrows + 0.4), squeeze=False, sharey=True
    )
    cmap = plt.get_cmap("tab10")
    for ax, arm in zip(axes.flat, names, strict=False):
        epochs: list[float] = []
        for i, c in enumerate(arms[arm]):
            ex, ey = list(c["epochs"]), list(c["scores"])
            epochs += ex
            pruned = c.get("pruned_at")
            label = f"{c['name']}: {max(ey):.4f}" + (f" (pruned @ {pruned})" if pruned else "")
            (line,) = ax.plot(
                ex,
                ey,
                marker="o",
                markersize=3.5,
                linewidth=2.6 if c.get("best") else 1.2,
                color=cmap(i % 10),
                label=label + (" best" if c.get("best") else ""),
            )
            if pruned:
                ax.plot([ex[-1]], [ey[-1]], "x", markersize=10, mew=2.2, color=line.get_color())
        for r in rungs:
            if epochs and r <= max(epochs):
                ax.axvline(r, color="grey", linestyle=":", linewidth=1)
        _integer_epochs(ax, epochs)
        ax.set_title(arm)
        ax.set_xlabel("epoch (0 = pretrained)")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7, loc="upper center", bbox_to_anchor=(0.5, -0.2))  # below: never over a line
    for ax in axes.flat[len(names) :]:
        ax.set_visible(False)
    for row in axes:
        row[0].set_ylabel(f"validation {metric}")
    keys = [f"dotted: pruning rungs (epochs {', '.join(map(str, rungs))})"] if rungs else []
    if any(c.get("pruned_at") for a in names for c in arms[a]):
        keys.append("x: pruned there")
    keys.append("thick: the arm's best")
    fig.suptitle(f"{title}\n{'; '.join(keys)}", fontsize=10)
    fig.tight_layout()
    return _save(fig, path)
