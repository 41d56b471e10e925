"""Aggregation of a dataset's cells: per-method summaries over seeds, per-query averages,
improvements, the pairs to compare, timing samples, training histories and router statistics, and
which configured cells are missing.

Conventions (see :mod:`maw.benchmark.report`): seed-independent methods count once; "± std" is the
sample standard deviation over seeds (None with one run); a method's 95% CI is the t interval over
test queries of the per-query score averaged over seeds.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from typing import Any

import numpy as np

from maw.benchmark.cells import RUNTIME_KEYS, SEED_INDEPENDENT, dataset_key
from maw.benchmark.significance import mean_ci
from maw.config import METHODS
from maw.evaluation.metrics import PRIMARY_METRICS, SELECTION_METRIC

BASELINES = ("bm25", "zeroshot", "lora", "finetune")

CAPACITY_MATCHED = "finetune"

HEADLINE = "maw"

# Figures where a smaller value is better: improvement = baseline - method.
LOWER_IS_BETTER = frozenset({"train_s", "encode_s", "search_s", "query_latency_ms", "index_bytes"})

TIMED_FIGURES = ("query_latency_ms", "qps", "encode_docs_per_s", "train_s")  # noisy: compared by spread

LATENCY_SAMPLES = "query_latency_samples_ms"  # cell["timings"] key: one latency per timed query


def higher_is_better(name: str) -> bool:
    """Direction of a figure: runtimes/sizes and rank diagnostics are lower-is-better."""
    low = name.lower()
    return not (name in LOWER_IS_BETTER or "rank" in low or low.startswith("norel"))


def retriever_kind(method: str) -> str:
    """The kind of system a method is: "lexical" (BM25) or "dense" (every encoder)."""
    return "lexical" if method == "bm25" else "dense"


def ordered_methods(methods: Iterable[str], preferred: Sequence[str] = ()) -> list[str]:
    order = list(dict.fromkeys([*preferred, *METHODS]))
    ms = set(methods)
    return [m for m in order if m in ms] + sorted(ms - set(order))


def distinct_cells(cells: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Seed-independent methods: only the original run counts (copies carry ``reused_from_seed``)."""
    if not cells:
        return cells
    if cells[0]["method"] in SEED_INDEPENDENT or cells[0].get("seed_independent"):
        originals = [c for c in cells if c.get("reused_from_seed") in (None, c["seed"])]
        return originals[:1] or cells[:1]
    return cells


def _stats(values: list[float | None]) -> dict[str, Any]:
    """Mean and sample std over runs; std is None (unknown) with fewer than two runs."""
    vals = [float(v) for v in values if v is not None and math.isfinite(float(v))]
    if not vals:
        return {"mean": None, "std": None, "n": 0}
    arr = np.asarray(vals)
    return {
        "mean": float(arr.mean()),
        "std": float(arr.std(ddof=1)) if len(vals) > 1 else None,
        "n": len(vals),
    }


def averaged_per_query(cells: list[dict[str, Any]], metric: str) -> dict[str, float]:
    """Per-query scores averaged over seeds (queries scored in every seed)."""
    dicts = [c["per_query"].get(metric) or {} for c in cells]
    if not dicts or not all(dicts):
        return {}
    common = set(dicts[0]).intersection(*dicts[1:])
    return {q: float(np.mean([d[q] for d in dicts])) for q in common if all(d[q] is not None for d in dicts)}


def summarise_method(cells: list[dict[str, Any]]) -> dict[str, Any]:
    """Mean ± std over seeds of every metric, runtime and parameter count; per-query 95% CIs;
    median and spread of the timed figures."""
    distinct = distinct_cells(cells)
    metric_names = list(dict.fromkeys(k for c in distinct for k in c["metrics"]))
    out: dict[str, Any] = {
        "seeds": [c["seed"] for c in cells],
        "seed_independent": bool(cells[0].get("seed_independent") or cells[0]["method"] in SEED_INDEPENDENT),
        "kind": retriever_kind(cells[0]["method"]),
        "n_runs": len(distinct),
        "metrics": {m: _stats([c["metrics"].get(m) for c in distinct]) for m in metric_names},
        "runtimes": {k: _stats([c["runtimes"].get(k) for c in distinct]) for k in RUNTIME_KEYS},
        "timings": {k: spread(*timing_samples(distinct, k)) for k in TIMED_FIGURES},
        "params": {k: _stats([c["params"].get(k) for c in distinct]) for k in ("total", "trainable")},
        "per_query_ci": {},
        "checkpoints": {str(c["seed"]): c.get("checkpoint") for c in distinct},
    }
    for metric in PRIMARY_METRICS:
        pq = averaged_per_query(distinct, metric)
        if pq:
            mean, lo, hi = mean_ci(np.fromiter(pq.values(), dtype=np.float64))
            out["per_query_ci"][metric] = {"mean": mean, "ci_low": lo, "ci_high": hi, "n": len(pq)}
    return out


def improvements(
    summaries: dict[str, dict[str, Any]], baselines: Sequence[str] = BASELINES
) -> list[dict[str, Any]]:
    """Absolute and relative improvement of each method over each baseline, per test metric.

    Higher-is-better metrics: ``absolute = method - baseline``; lower-is-better (rank diagnostics):
    ``absolute = baseline - method``. ``relative = absolute / |baseline|`` (None when the baseline
    is 0 or missing). Positive always means "method is better". Runtimes are not here: they are
    compared by their spread, within one kind of system (:func:`efficiency_comparisons`).
    """
    rows = []
    for base in baselines:
        if base not in summaries:
            continue
        for method, s in summaries.items():
            if method == base:
                continue
            for fig, st in s["metrics"].items():
                b = summaries[base]["metrics"].get(fig, {}).get("mean")
                v = st.get("mean")
                if v is None or b is None:
                    continue
                hib = higher_is_better(fig)
                absolute = (v - b) if hib else (b - v)
                rows.append(
                    {
                        "method": method,
                        "baseline": base,
                        "figure": fig,
                        "higher_is_better": hib,
                        "method_value": v,
                        "baseline_value": b,
                        "absolute": absolute,
                        "relative": absolute / abs(b) if b != 0 else None,
                    }
                )
    return rows


def comparison_pairs(methods: Sequence[str], baselines: Sequence[str] = BASELINES) -> list[tuple[str, str]]:
    """(method, baseline) pairs to test: every method vs every baseline, each unordered pair once
    (between two baselines the later one in ``baselines`` order is the "method")."""
    pairs = []
    for base in baselines:
        if base not in methods:
            continue
        for m in methods:
            if m == base:
                continue
            if m in baselines and baselines.index(m) < baselines.index(base):
                continue  # already tested the other way round
            pairs.append((m, base))
    return pairs


def timing_samples(cells: list[dict[str, Any]], figure: str) -> tuple[list[float], str, list[float]]:
    """Repeated measurements of one runtime figure over a method's distinct cells, what they are, and
    the median of each run (cell).

    Query latency: the per-query timings ``timings["query_latency_samples_ms"]`` of every cell when
    all cells have them; otherwise (and for every other figure) one value per run.
    """
    if figure == "query_latency_ms":
        lists = [(c.get("timings") or {}).get(LATENCY_SAMPLES) for c in cells]
        if lists and all(isinstance(x, list) and x for x in lists):
            runs = [float(np.median(np.asarray(x, dtype=np.float64))) for x in lists]
            return [float(v) for x in lists for v in x], "per-query timings", runs
    if figure == "train_s" and not any(c["runtimes"].get("train_s") for c in cells):
        return [], "not trained", []
    vals = [c["runtimes"].get(figure) for c in cells]
    vals = [float(v) for v in vals if v is not None and math.isfinite(float(v))]
    return vals, "one measurement per run", list(vals)


def spread(samples: Sequence[float], source: str, runs: Sequence[float] = ()) -> dict[str, Any]:
    """Median and interquartile range of repeated timings (None fields when there are none), and
    the per-run medians ``runs``."""
    if not samples:
        return {"median": None, "q25": None, "q75": None, "n": 0, "source": source, "runs": []}
    q25, med, q75 = np.percentile(np.asarray(samples, dtype=np.float64), [25, 50, 75])
    return {
        "median": float(med),
        "q25": float(q25),
        "q75": float(q75),
        "n": len(samples),
        "source": source,
        "runs": [float(r) for r in runs],
    }


def history_curve(history: list[dict[str, Any]]) -> dict[str, list]:
    """Epoch, validation nDCG@10 and training loss series from a trainer history
    (entries ``{"epoch", "train_loss", "val": {"nDCG@10", ...}}``; epoch 0 has no loss)."""
    out: dict[str, list] = {"epoch": [], "val_ndcg10": [], "train_loss": []}
    for i, h in enumerate(history):
        out["epoch"].append(h.get("epoch", i))
        out["val_ndcg10"].append((h.get("val") or {}).get(SELECTION_METRIC))
        out["train_loss"].append(h.get("train_loss"))
    return out


def depth_blocks(router_stats: Any) -> dict[str, dict[str, Any]]:
    """layer label -> ``{"counts": [[D] x H], "entropy": [H], "units": n}`` from a cell's router stats.

    The trainer's ``eval_depth_statistics`` (inference policy on the validation texts at the best
    epoch) when present; otherwise any such block found in the stats (the last one of a layer wins).
    """
    found: dict[str, dict[str, Any]] = {}
    if isinstance(router_stats, dict) and router_stats.get("eval_depth_statistics"):
        router_stats = router_stats["eval_depth_statistics"]

    def walk(obj: Any, key: str) -> None:
        if isinstance(obj, dict):
            counts = obj.get("counts")
            if isinstance(counts, list) and counts and isinstance(counts[0], list):
                found[key] = obj
                return
            for k, v in obj.items():
                walk(v, str(k))
        elif isinstance(obj, list):
            for v in obj:
                walk(v, key)

    walk(router_stats, "?")
    return found


def router_kind(cell: dict[str, Any]) -> str:
    """The cell's router ("soft", "gumbel", "grpo", "supervised"); "soft" (the default) when unrecorded."""
    rs = cell.get("router_stats") or {}
    return str(rs.get("router") or ((cell.get("config") or {}).get("maw") or {}).get("router") or "soft")


def merged_depth(cells: list[dict[str, Any]]) -> dict[str, dict[str, np.ndarray]]:
    """Depth statistics summed over seeds: counts (H, D) add, entropy (H,) is the units-weighted mean."""
    acc: dict[str, dict[str, np.ndarray]] = {}
    for c in cells:
        for layer, blk in depth_blocks(c["router_stats"]).items():
            counts = np.asarray(blk["counts"], dtype=np.float64)  # (H, D)
            units = float(blk.get("units") or counts.sum(1).max(initial=0.0))
            ent = np.asarray(blk.get("entropy") or [np.nan] * counts.shape[0], dtype=np.float64)  # (H,)
            if layer in acc and acc[layer]["counts"].shape == counts.shape:
                a = acc[layer]
                total = a["units"] + units
                a["entropy"] = (a["entropy"] * a["units"] + ent * units) / max(total, 1e-12)
                a["counts"], a["units"] = a["counts"] + counts, total
            else:
                acc[layer] = {"counts": counts, "entropy": ent, "units": units}
    return dict(sorted(acc.items()))


def missing_cells(config: dict[str, Any] | None, cells: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Configured cells (config.json datasets x methods x seeds) that are absent or failed on disk."""
    if not config:
        return []
    on_disk = {(c["dataset"], c["method"], c["seed"]): c for c in cells}
    out = []
    for ds in config.get("datasets") or []:
        key = dataset_key(ds)
        for method in config.get("methods") or []:
            for seed in config.get("seeds") or []:
                c = on_disk.get((key, method, int(seed)))
                if c is None or c["status"] != "ok":
                    status = "not on disk" if c is None else "failed"
                    out.append(
                        {
                            "dataset": key,
                            "method": method,
                            "seed": int(seed),
                            "status": status,
                            "error": None if c is None else c["error"],
                        }
                    )
    return out


def run_seeds(config: dict[str, Any] | None, cells: list[dict[str, Any]]) -> list[int]:
    """The run's seeds: config.json's, else those of the cells on disk."""
    seeds = (config or {}).get("seeds") or sorted({c["seed"] for c in cells})
    return [int(s) for s in seeds]


def n_configured(config: dict[str, Any] | None) -> int | None:
    if not config:
        return None
    return (
        len(config.get("datasets") or []) * len(config.get("methods") or []) * len(config.get("seeds") or [])
    )
