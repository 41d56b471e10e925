"""The plots of a dataset's report (drawn by :mod:`maw.benchmark.plots`): which figures, from which
summaries, and the removal of figures an earlier build drew that this one did not."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from maw.benchmark import plots as plotting
from maw.benchmark.report.aggregate import history_curve, merged_depth, router_kind
from maw.evaluation.metrics import PRIMARY_METRICS, SELECTION_METRIC


def make_plots(run_dir: Path, rep: dict[str, Any]) -> tuple[dict[str, str], list[str]]:
    """Draw the figures of a dataset; returns ({kind: relative path}, [errors])."""
    ds, ok, summaries = rep["dataset"], rep["_ok"], rep["methods"]
    made: dict[str, str] = {}
    errors: list[str] = []

    def attempt(kind: str, fn, *args) -> None:
        path = run_dir / "plots" / f"{ds}_{kind}.png"
        try:
            fn(path, *args)
            made[kind] = str(path.relative_to(run_dir))
        except Exception as exc:  # a figure must never cost the reports of a long run
            errors.append(f"plot {kind} of {ds} failed: {type(exc).__name__}: {exc}")

    bars = {
        m: {k: (v["mean"], v["ci_low"], v["ci_high"]) for k, v in s["per_query_ci"].items()}
        for m, s in summaries.items()
        if s["per_query_ci"]
    }
    if bars:
        title = f"{ds}: test metrics (95% CI over queries)"
        attempt("metrics", plotting.plot_metrics, title, bars, PRIMARY_METRICS)
    curves = {f"{m} seed {c['seed']}": history_curve(c["history"]) for m, cs in ok.items() for c in cs}
    curves = {
        k: v for k, v in curves.items() if any(x is not None for x in v["val_ndcg10"] + v["train_loss"])
    }
    if curves:
        attempt("curves", plotting.plot_training_curves, f"{ds}: training curves", curves)
    for m, cs in ok.items():
        layers = merged_depth(cs)
        if layers:
            router = router_kind(cs[0])
            title = f"{ds}: {m} ({router} router), validation texts at the best epoch, {len(cs)} seed(s)"
            attempt(f"depth_{m}", plotting.plot_depth, title, layers, router)
    points = {
        m: (s["timings"]["query_latency_ms"], s["metrics"].get(SELECTION_METRIC, {}).get("mean"))
        for m, s in summaries.items()
    }
    points = {
        m: (t["median"], t["q25"], t["q75"], y, t["n"])
        for m, (t, y) in points.items()
        if t["n"] and y is not None
    }
    if points:
        attempt("tradeoff", plotting.plot_tradeoff, f"{ds}: {SELECTION_METRIC} vs query latency", points)
    return made, errors


def remove_stale_plots(run_dir: Path, dataset: str, made: dict[str, str], methods: Sequence[str]) -> None:
    """Delete this dataset's figures from an earlier build that this build did not draw again
    (e.g. a method whose cell is gone), so plots/ shows only the cells on disk."""
    kinds = ["metrics", "curves", "tradeoff", *[f"depth_{m}" for m in dict.fromkeys(methods)]]
    for kind in kinds:
        path = run_dir / "plots" / f"{dataset}_{kind}.png"
        if kind not in made and path.exists():
            path.unlink()
