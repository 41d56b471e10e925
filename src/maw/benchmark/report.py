"""Reports rebuilt from the cells on disk: JSON, CSV, a text summary, plots and REPORT.md.

``build_reports(run_dir)`` is called at the end of every ``maw benchmark`` run (and after an
interruption), so the reports always describe exactly the cells that exist. Outputs::

    results/<dataset>.json   every method and seed of one dataset: metrics, per-query metrics,
                             history, router stats, params, runtimes, checkpoint; plus the
                             seed aggregates, improvements, timing spreads and significance tests
    results.json             all datasets together, with the resolved config, the environment and
                             the configured cells that are missing or failed
    results.csv              dataset, method, seed, metric, value (one row per figure)
    summary.txt              primary metrics per dataset x method, mean ± std over seeds
    plots/<dataset>_*.png    metrics with 95% CIs, training curves, router depth use, trade-off
    REPORT.md                missing cells, verdicts, tables, plot links, settings

Aggregation conventions: seed-independent methods (bm25, zeroshot) count once (their cells for
other seeds are copies); "± std" is the sample standard deviation over seeds, shown only with two
or more runs (one seed: training variance is unknown, and the report says so); the 95% CI of a
method's metric is the t interval over test queries of the per-query score averaged over seeds.
Significance (and its Holm-adjusted intervals): see :mod:`maw.benchmark.significance`.

Efficiency: a runtime figure is summarised by the median and interquartile range of its repeated
samples (per-query latencies when the cell records ``timings["query_latency_samples_ms"]``,
otherwise one value per run). Two systems are compared only when they are the same kind (dense
encoders with each other; BM25 with none), and a difference is stated only when both have at
least ``MIN_TIMING_SAMPLES`` samples from at least ``MIN_TIMING_RUNS`` runs, their interquartile
ranges do not overlap and every run of one side is on the same side of every run of the other
(cells are timed minutes apart on a machine whose load is not controlled: one run's spread says
nothing about the load during another's); otherwise the report says "no difference resolved". No relative (%) change of a runtime is reported.
"""

from __future__ import annotations

import csv
import io
import json
import math
import time
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from maw.benchmark import plots as plotting
from maw.benchmark.cells import RUNTIME_KEYS, SEED_INDEPENDENT, THROUGHPUT_SAMPLE, dataset_key, load_cells
from maw.benchmark.significance import ALPHA, DEFAULT_RESAMPLES, Comparison, apply_holm, compare, mean_ci
from maw.config import METHODS
from maw.utils.io import atomic_write_json, atomic_write_text, read_json

PRIMARY_METRICS = ("nDCG@10", "R@100", "RR@10", "AP")
VAL_METRIC = "nDCG@10"  # the trainer's model-selection metric in history[i]["val"] (ir_measures name)
BASELINES = ("bm25", "zeroshot", "lora", "finetune")
CAPACITY_MATCHED = "finetune"
HEADLINE = "maw"
# Figures where a smaller value is better: improvement = baseline - method.
LOWER_IS_BETTER = frozenset({"train_s", "encode_s", "search_s", "query_latency_ms", "index_bytes"})
TIMED_FIGURES = ("query_latency_ms", "qps", "encode_docs_per_s", "train_s")  # noisy: compared by spread
LATENCY_SAMPLES = "query_latency_samples_ms"  # cell["timings"] key: one latency per timed query
MIN_TIMING_SAMPLES = 5
MIN_TIMING_RUNS = 2  # runs (cells) per side before a runtime difference is stated
UNITS = {"query_latency_ms": "ms", "qps": "queries/s", "encode_docs_per_s": "docs/s", "train_s": "s"}


def higher_is_better(name: str) -> bool:
    """Direction of a figure: runtimes/sizes and rank diagnostics are lower-is-better."""
    low = name.lower()
    return not (name in LOWER_IS_BETTER or "rank" in low or low.startswith("norel"))


def retriever_kind(method: str) -> str:
    """The kind of system a method is: "lexical" (BM25) or "dense" (every encoder)."""
    return "lexical" if method == "bm25" else "dense"


# --------------------------------------------------------------------------- aggregation
def _method_order(methods: Iterable[str], preferred: Sequence[str] = ()) -> list[str]:
    order = list(dict.fromkeys([*preferred, *METHODS]))
    ms = set(methods)
    return [m for m in order if m in ms] + sorted(ms - set(order))


def _distinct_cells(cells: list[dict[str, Any]]) -> list[dict[str, Any]]:
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
    distinct = _distinct_cells(cells)
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


def significance_tests(
    cells_by_method: dict[str, list[dict[str, Any]]],
    metrics: Sequence[str] = PRIMARY_METRICS,
    n_resamples: int = DEFAULT_RESAMPLES,
    alpha: float = ALPHA,
) -> list[Comparison]:
    """Every (method, baseline, metric) comparison of one dataset; the non-degenerate ones are
    Holm-corrected together (degenerate ones carry their reason and no p-value)."""
    todo = []
    for m, base in comparison_pairs(list(cells_by_method)):
        for metric in metrics:
            a = averaged_per_query(_distinct_cells(cells_by_method[m]), metric)
            b = averaged_per_query(_distinct_cells(cells_by_method[base]), metric)
            if set(a) & set(b):
                todo.append((m, base, metric, a, b))
    # The smallest two-sided randomisation p-value is 2 / (n_resamples + 1) and Holm multiplies it by
    # the family size m (<= len(todo)); resample enough that a clear difference can still reach alpha / 5.
    n_resamples = max(n_resamples, math.ceil(10 * len(todo) / alpha))
    # one fixed resampling seed: reproducible, and identical inputs give identical p-values and intervals
    comps = [
        compare(m, base, metric, a, b, n_resamples=n_resamples, seed=0) for m, base, metric, a, b in todo
    ]
    return apply_holm(comps, alpha=alpha)


def _confidence(level: float) -> str:
    """Confidence of an interval at test level alpha_i, e.g. 0.000625 -> "99.94%"."""
    return f"{100 * (1 - level):.4g}%"


def _signed(x: float) -> str:
    """An interval end: +0.0123, or ±∞ when the test cannot bound it (tiny n, strict level)."""
    if not math.isfinite(x):
        return "+∞" if x > 0 else "−∞"
    return "0.0000" if abs(x) < 1e-9 else f"{x:+.4f}"  # bisection ends a hair off an exact 0


def comparison_numbers(c: Comparison) -> str:
    """The figures of one tested comparison, with its Holm-adjusted interval beside the adjusted p."""
    return (
        f"{c.metric} {c.mean_method:.4f} vs {c.mean_baseline:.4f} (difference {c.diff:+.4f}, "
        f"Holm-adjusted {_confidence(c.holm_level)} CI [{_signed(c.holm_ci_low)}, {_signed(c.holm_ci_high)}], "
        f"Holm-adjusted randomisation-test p = {c.p_perm_holm:.3g}, paired t-test p = {c.p_ttest:.3g}, "
        f"n = {c.n} test queries)"
    )


def verdict(
    dataset: str,
    comps: list[Comparison],
    failed: dict[str, list[dict]],
    present: Sequence[str],
    metric: str = "nDCG@10",
    method: str = HEADLINE,
    baseline: str = CAPACITY_MATCHED,
) -> dict[str, Any]:
    """The one plain sentence: did MAW beat the capacity-matched baseline significantly?"""
    name, bname = method.upper(), f"the capacity-matched baseline ({baseline})"
    for who in (method, baseline):
        if who not in present:
            why = "failed" if who in failed else "was not run"
            return {
                "outcome": "missing",
                "sentence": f"{dataset}: no verdict — {who} {why}, so MAW cannot be compared with {bname}.",
            }
    c = next((c for c in comps if c.method == method and c.baseline == baseline and c.metric == metric), None)
    if c is None:
        return {
            "outcome": "missing",
            "sentence": f"{dataset}: no verdict — no {metric} scores in common for {method} and {baseline}.",
        }
    if c.degenerate:
        s = (
            f"{dataset}: no test — {name} and {bname} on {metric}: {c.degenerate} "
            f"({c.mean_method:.4f} vs {c.mean_baseline:.4f}, n = {c.n} test queries)."
        )
        return {"outcome": c.verdict, "sentence": s, "comparison": c.to_dict()}
    nums = comparison_numbers(c)
    outcome = c.verdict
    if outcome == "better":
        s = f"{dataset}: {name} beat {bname} significantly: {nums}."
    elif outcome == "worse":
        s = f"{dataset}: {name} was significantly worse than {bname}: {nums}."
    else:
        s = f"{dataset}: {name} did not beat {bname} significantly: {nums}."
    return {"outcome": outcome, "sentence": s, "comparison": c.to_dict()}


# --------------------------------------------------------------------------- efficiency
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


def timing_conclusion(figure: str, method: str, baseline: str, x: dict, y: dict) -> dict[str, Any]:
    """Compare two same-kind systems on one timed figure. A difference is stated only when both have
    at least MIN_TIMING_SAMPLES samples from at least MIN_TIMING_RUNS runs, their interquartile ranges
    do not overlap, and every run of one is on the same side of every run of the other: the cells
    are timed at different moments, so one run's spread says nothing about the machine's load in
    the other's."""
    row = {"figure": figure, "method": method, "baseline": baseline, "resolved": False}
    if x["n"] == 0 or y["n"] == 0:
        return {
            **row,
            "text": "not applicable" if "not trained" in (x["source"], y["source"]) else "not measured",
        }
    if min(x["n"], y["n"]) < MIN_TIMING_SAMPLES:
        why = (
            "single measurement"
            if max(x["n"], y["n"]) == 1 or min(x["n"], y["n"]) == 1
            else "too few samples"
        )
        return {**row, "text": f"no difference resolved ({why})"}
    runs_x, runs_y = x.get("runs") or [], y.get("runs") or []
    if min(len(runs_x), len(runs_y)) < MIN_TIMING_RUNS:
        return {**row, "text": "no difference resolved (one run of a side: the load between runs is unknown)"}
    if x["q75"] >= y["q25"] and y["q75"] >= x["q25"]:
        return {**row, "text": "no difference resolved (spreads overlap)"}
    if not (max(runs_x) < min(runs_y) or max(runs_y) < min(runs_x)):
        return {**row, "text": "no difference resolved (the runs disagree)"}
    lower = x["median"] < y["median"]
    better = lower != higher_is_better(figure)
    word = {
        "query_latency_ms": "faster" if better else "slower",
        "train_s": "trains faster" if better else "trains slower",
    }
    word = word.get(figure, "lower" if lower else "higher")
    unit = UNITS.get(figure, "")
    text = f"{method} {word}: median {_fmt(x['median'], 2)} vs {_fmt(y['median'], 2)} {unit}".rstrip()
    return {**row, "resolved": True, "better": better, "text": text}


def efficiency_comparisons(summaries: dict[str, dict[str, Any]]) -> list[dict[str, Any]]:
    """Timed-figure conclusions for every method-baseline pair of the same kind of system."""
    rows = []
    for m, base in comparison_pairs(list(summaries)):
        if summaries[m]["kind"] != summaries[base]["kind"]:
            continue  # a dense encoder vs BM25: different systems, no runtime comparison
        for fig in TIMED_FIGURES:
            rows.append(
                timing_conclusion(fig, m, base, summaries[m]["timings"][fig], summaries[base]["timings"][fig])
            )
    return rows


# --------------------------------------------------------------------------- history / router stats
def history_curve(history: list[dict[str, Any]]) -> dict[str, list]:
    """Epoch, validation nDCG@10 and training loss series from a trainer history
    (entries ``{"epoch", "train_loss", "val": {"nDCG@10", ...}}``; epoch 0 has no loss)."""
    out: dict[str, list] = {"epoch": [], "val_ndcg10": [], "train_loss": []}
    for i, h in enumerate(history):
        out["epoch"].append(h.get("epoch", i))
        out["val_ndcg10"].append((h.get("val") or {}).get(VAL_METRIC))
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


# --------------------------------------------------------------------------- run completeness
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


def run_notes(missing: list[dict[str, Any]], seeds: Sequence[int], n_configured: int | None) -> list[str]:
    """The warnings a reader must see first: missing cells and a single seed."""
    notes = []
    if missing:
        total = f" of {n_configured}" if n_configured else ""
        lines = [
            f"{m['dataset']} {m['method']} seed {m['seed']}: "
            + ("not on disk" if m["status"] == "not on disk" else f"failed ({m['error']})")
            for m in missing
        ]
        notes.append(
            f"INCOMPLETE RUN: {len(missing)}{total} configured cells (datasets x methods x seeds in config.json) "
            "are missing or failed; the figures below come from the finished cells only:\n"
            + "\n".join(f"  - {line}" for line in lines)
        )
    if len(seeds) == 1:
        notes.append(
            f"ONE SEED ({seeds[0]}): every trained method is a single training run, so training variance is "
            "unknown; the figures are single runs, not mean ± std."
        )
    return notes


def subsample_notes(reports: list[dict[str, Any]], config: dict[str, Any] | None) -> list[str]:
    """The first warning of a report: the datasets whose corpus was subsampled (a size preset or
    ``data.corpus_size``; ``dataset_info["corpus_subsample"]``, see :mod:`maw.data.subsample`)."""
    lines = []
    for rep in reports:
        sub = (rep.get("dataset_info") or {}).get("corpus_subsample")
        if sub:
            lines.append(
                f"{rep['dataset']}: {sub['documents']:,} of {sub['of']:,} documents (seed {sub['seed']}): "
                f"all {sub['judged']:,} documents judged for the train, val and test queries used, plus "
                f"{sub['random']:,} drawn at random from the rest"
                + (
                    f" ({sub['judged_absent']:,} judged ids are not in the corpus)"
                    if sub.get("judged_absent")
                    else ""
                )
            )
    if not lines:
        return []
    preset = (config or {}).get("preset")
    how = f"--preset {preset}" if preset else "data.corpus_size"
    return [
        f"SUBSAMPLED CORPUS ({how}): scores are not comparable with full-corpus numbers (with fewer "
        "distractors they are usually higher):\n" + "\n".join(f"  - {line}" for line in lines)
    ]


def validation_notes(cells: list[dict[str, Any]]) -> list[str]:
    """How the trained cells selected their epoch: validation on the full corpus or on a pool
    (``train_setup["validation"]``, see :mod:`maw.training.validation`), per dataset."""
    kinds: dict[str, set[str]] = {}
    for c in cells:
        setup = c.get("train_setup") or {}
        v, n = setup.get("validation"), setup.get("validation_documents")
        if v and v == "full corpus" and n:
            v = f"full corpus ({n:,} documents)"
        if v and c.get("status") == "ok":
            kinds.setdefault(c["dataset"], set()).add(v)
    if not kinds:
        return []
    lines = [f"{ds}: {'; '.join(sorted(v))}" for ds, v in sorted(kinds.items())]
    pooled = any("pool" in v for vs in kinds.values() for v in vs)
    head = "Model selection (early stopping, best epoch) used validation nDCG@10 retrieved from"
    if pooled:
        head += " (a pool re-ranks judged + BM25 documents: its scores are higher than full-corpus ones)"
    return [head + ":\n" + "\n".join(f"  - {line}" for line in lines)]


def _n_configured(config: dict[str, Any] | None) -> int | None:
    if not config:
        return None
    return (
        len(config.get("datasets") or []) * len(config.get("methods") or []) * len(config.get("seeds") or [])
    )


# --------------------------------------------------------------------------- formatting
def _fmt(v: Any, digits: int = 4) -> str:
    if v is None:
        return "—"
    if isinstance(v, float) and not math.isfinite(v):
        return "∞" if v > 0 else "−∞"
    if isinstance(v, int | float) and float(v).is_integer() and abs(v) >= 1000:
        return f"{int(v):,}"
    if isinstance(v, float):
        if abs(v) >= 1e5 or (v != 0 and abs(v) < 1e-3):
            return f"{v:.3g}"
        return f"{v:.{digits}f}"
    return str(v)


def _mean_std(st: dict[str, Any], seed_independent: bool, multi_seed: bool, digits: int = 4) -> str:
    """ "m ± s" over two or more runs; one run: the value alone (marked when other methods have more)."""
    if st.get("mean") is None:
        return "—"
    value = _fmt(st["mean"], digits)
    if seed_independent:
        return value + " (seed-indep.)"
    if st.get("n", 0) >= 2 and st.get("std") is not None:
        return f"{value} ± {_fmt(st['std'], digits)}"
    return value + (" (1 run)" if multi_seed else "")


def _timing(t: dict[str, Any]) -> str:
    """Median [IQR] (n) of a timed figure; a single value says so."""
    if not t["n"]:
        return "—"
    if t["n"] == 1:
        return f"{_fmt(t['median'], 2)} (single measurement)"
    return f"{_fmt(t['median'], 2)} [{_fmt(t['q25'], 2)}, {_fmt(t['q75'], 2)}] (n={t['n']})"


def _text_table(header: list[str], rows: list[list[str]]) -> str:
    widths = [max(len(str(x)) for x in col) for col in zip(header, *rows, strict=True)]
    line = lambda r: "  ".join(str(x).ljust(w) for x, w in zip(r, widths, strict=True)).rstrip()  # noqa: E731
    return "\n".join([line(header), line(["-" * w for w in widths]), *map(line, rows)])


def _md_table(header: list[str], rows: list[list[str]]) -> str:
    esc = lambda x: str(x).replace("|", "\\|")  # noqa: E731
    out = ["| " + " | ".join(map(esc, header)) + " |", "|" + "---|" * len(header)]
    out += ["| " + " | ".join(map(esc, r)) + " |" for r in rows]
    return "\n".join(out)


# --------------------------------------------------------------------------- building
def dataset_report(
    dataset: str,
    cells: list[dict[str, Any]],
    method_order: Sequence[str] = (),
    n_resamples: int = DEFAULT_RESAMPLES,
) -> dict[str, Any]:
    """Everything about one dataset, from its cells."""
    ok: dict[str, list[dict[str, Any]]] = {}
    failed: dict[str, list[dict[str, Any]]] = {}
    for c in cells:
        (ok if c["status"] == "ok" else failed).setdefault(c["method"], []).append(c)
    methods = _method_order(ok, method_order)
    ok = {m: sorted(ok[m], key=lambda c: c["seed"]) for m in methods}
    summaries = {m: summarise_method(ok[m]) for m in methods}
    comps = significance_tests(ok, n_resamples=n_resamples)
    info = next((c.get("dataset_info") for c in cells if c.get("dataset_info")), None)
    return {
        "dataset": dataset,
        "dataset_info": info,
        "methods": summaries,
        "failed": [
            {"method": c["method"], "seed": c["seed"], "error": c["error"]}
            for fs in failed.values()
            for c in fs
        ],
        "improvements": improvements(summaries),
        "efficiency": efficiency_comparisons(summaries),
        "significance": [c.to_dict() for c in comps],
        "verdict": verdict(dataset, comps, failed, methods),
        "cells": cells,
        "_comparisons": comps,
        "_ok": ok,
    }


def _public(rep: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in rep.items() if not k.startswith("_")}


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
        m: (s["timings"]["query_latency_ms"], s["metrics"].get("nDCG@10", {}).get("mean"))
        for m, s in summaries.items()
    }
    points = {
        m: (t["median"], t["q25"], t["q75"], y, t["n"])
        for m, (t, y) in points.items()
        if t["n"] and y is not None
    }
    if points:
        attempt("tradeoff", plotting.plot_tradeoff, f"{ds}: nDCG@10 vs query latency", points)
    return made, errors


def remove_stale_plots(run_dir: Path, dataset: str, made: dict[str, str], methods: Sequence[str]) -> None:
    """Delete this dataset's figures from an earlier build that this build did not draw again
    (e.g. a method whose cell is gone), so plots/ shows only the cells on disk."""
    kinds = ["metrics", "curves", "tradeoff", *[f"depth_{m}" for m in dict.fromkeys(methods)]]
    for kind in kinds:
        path = run_dir / "plots" / f"{dataset}_{kind}.png"
        if kind not in made and path.exists():
            path.unlink()


def csv_rows(cells: Iterable[dict[str, Any]]) -> list[tuple[str, str, int, str, Any]]:
    """(dataset, method, seed, metric, value) for every figure of every ok cell (None = not
    applicable / not measured: no row)."""
    rows = []
    for c in cells:
        if c["status"] != "ok":
            continue
        figs = {**c["metrics"], **c["runtimes"], **{f"params_{k}": v for k, v in c["params"].items()}}
        rows += [(c["dataset"], c["method"], c["seed"], k, v) for k, v in figs.items() if v is not None]
    return rows


def _metric_rows(rep: dict[str, Any], multi_seed: bool) -> list[list[str]]:
    return [
        [m, *[_mean_std(s["metrics"].get(k, {}), s["seed_independent"], multi_seed) for k in PRIMARY_METRICS]]
        for m, s in rep["methods"].items()
    ]


def _metrics_heading(multi_seed: bool) -> str:
    if multi_seed:
        return "primary test metrics, mean ± std over seeds"
    return "primary test metrics, one training run per method (training variance unknown)"


def summary_text(reports: list[dict[str, Any]], notes: Sequence[str] = (), multi_seed: bool = True) -> str:
    out = [f"MAW benchmark summary: {_metrics_heading(multi_seed)}", ""]
    out += [line for note in notes for line in (note, "")]
    for rep in reports:
        out.append(f"== {rep['dataset']} ==")
        rows = [
            r + [str(len(s["seeds"]))]
            for r, s in zip(_metric_rows(rep, multi_seed), rep["methods"].values(), strict=True)
        ]
        if rows:
            out.append(_text_table(["method", *PRIMARY_METRICS, "seeds"], rows))
        for f in rep["failed"]:
            out.append(f"FAILED {f['method']} seed {f['seed']}: {f['error']}")
        out += ["", rep["verdict"]["sentence"], ""]
    return "\n".join(out).rstrip() + "\n"


# --------------------------------------------------------------------------- REPORT.md sections
def md_header(run_dir: Path, notes: Sequence[str]) -> list[str]:
    """Title, then the warnings (missing cells, one seed) before anything else."""
    md = [
        f"# MAW benchmark report\n\nRun folder `{run_dir}`, reports generated {time.strftime('%Y-%m-%d %H:%M:%S')} "
        "from the cells on disk.\n"
    ]
    for note in notes:
        head, *items = note.split("\n")
        md.append(f"> **{head}**")
        md += [f"> {line.strip()}" for line in items]
        md.append("")
    return md


def md_verdicts(reports: list[dict[str, Any]]) -> list[str]:
    return ["## Verdicts\n", *[f"- {rep['verdict']['sentence']}" for rep in reports], ""]


def md_metrics(rep: dict[str, Any], multi_seed: bool) -> list[str]:
    rows = [
        [*row, _ci(s["per_query_ci"].get("nDCG@10")), ", ".join(map(str, s["seeds"]))]
        for row, s in zip(_metric_rows(rep, multi_seed), rep["methods"].values(), strict=True)
    ]
    header = ["method", *PRIMARY_METRICS, "nDCG@10 95% CI (queries)", "seeds"]
    return [f"### Test metrics: {_metrics_heading(multi_seed)}\n", _md_table(header, rows) + "\n"]


def _ci(ci: dict[str, Any] | None) -> str:
    return f"[{ci['ci_low']:.3f}, {ci['ci_high']:.3f}]" if ci else "—"


def md_significance(rep: dict[str, Any]) -> list[str]:
    """Tested comparisons with the Holm-adjusted interval beside the adjusted p; degenerate ones listed."""
    comps = rep["_comparisons"]
    tested = [c for c in comps if not c.degenerate]
    left_out = [c for c in comps if c.degenerate]
    md = []
    if tested:
        md.append(
            f"### Paired significance tests (Holm over the {len(tested)} tested comparisons of this dataset)\n"
        )
        header = [
            "method",
            "baseline",
            "metric",
            "diff",
            "Holm-adjusted CI",
            "p (perm., Holm)",
            "p (perm.)",
            "p (t)",
            "verdict",
        ]
        rows = [
            [
                c.method,
                c.baseline,
                c.metric,
                f"{c.diff:+.4f}",
                f"{_confidence(c.holm_level)}: [{_signed(c.holm_ci_low)}, {_signed(c.holm_ci_high)}]",
                f"{c.p_perm_holm:.3g}",
                f"{c.p_perm:.3g}",
                f"{c.p_ttest:.3g}",
                c.verdict,
            ]
            for c in tested
        ]
        md += [
            "Each interval inverts the randomisation test at its Holm step's level (confidence shown), so it "
            "excludes 0 exactly when the verdict is significant.\n",
            _md_table(header, rows) + "\n",
        ]
    if left_out:
        md.append(f"Left out of the Holm family (degenerate, not tested): {len(left_out)} comparisons.\n")
        md += [
            f"- {c.method} vs {c.baseline}, {c.metric} ({c.mean_method:.4f} vs {c.mean_baseline:.4f}): "
            f"{c.degenerate}"
            for c in left_out
        ]
        md.append("")
    return md


def md_efficiency(rep: dict[str, Any]) -> list[str]:
    """Timed figures as median [IQR] (n), sizes and parameters; then the same-kind conclusions."""
    rows = [
        [
            m,
            s["kind"],
            *[_timing(s["timings"][k]) for k in TIMED_FIGURES],
            _fmt(s["runtimes"]["index_bytes"]["mean"]),
            *[
                _fmt(None if s["params"][k]["mean"] is None else round(s["params"][k]["mean"]))
                for k in ("trainable", "total")
            ],
        ]
        for m, s in rep["methods"].items()
    ]
    header = [
        "method",
        "kind",
        *[f"{k} ({UNITS[k]})" for k in TIMED_FIGURES],
        "index_bytes",
        "trainable params",
        "total params",
    ]
    return [
        "### Efficiency\n",
        "Timed figures: median [interquartile range] (number of samples). Samples are per-query timings where "
        f"the cell recorded them (`timings.{LATENCY_SAMPLES}`), otherwise one value per run; a figure marked "
        "'single measurement' has no spread and supports no comparison.\n",
        _md_table(header, rows) + "\n",
        *md_efficiency_conclusions(rep),
    ]


def md_efficiency_conclusions(rep: dict[str, Any]) -> list[str]:
    """Same-kind timing conclusions, and which systems are not compared at all."""
    summaries, rows, md = rep["methods"], rep["efficiency"], []
    pairs = list(dict.fromkeys((r["method"], r["baseline"]) for r in rows))
    if rows and all("single measurement" in r["text"] or r["text"] == "not applicable" for r in rows):
        md.append(
            "No runtime difference resolved: every timed figure is a single measurement per method, with no "
            "spread to compare against (repeated timings are needed for a conclusion).\n"
        )
    elif pairs:
        text = {(r["method"], r["baseline"], r["figure"]): r["text"] for r in rows}
        md += [
            f"Same-kind comparisons (a difference is stated only when both sides have at least {MIN_TIMING_SAMPLES} "
            f"samples from at least {MIN_TIMING_RUNS} runs, the interquartile ranges do not overlap and every run "
            "of one side is on the same side of every run of the other: cells are timed at different moments "
            "and the machine's load between them is not controlled):\n",
            _md_table(
                ["method", "baseline", *TIMED_FIGURES],
                [[m, b, *[text[(m, b, f)] for f in TIMED_FIGURES]] for m, b in pairs],
            )
            + "\n",
        ]
    kinds = sorted({s["kind"] for s in summaries.values()})
    if len(kinds) > 1:
        md.append(
            "Systems of different kinds ("
            + ", ".join(f"{k}: {', '.join(m for m, s in summaries.items() if s['kind'] == k)}" for k in kinds)
            + ") are not compared on runtime: no ratio or relative change between them is meaningful.\n"
        )
    return md


PLOT_CAPTIONS = {
    "metrics": "primary test metrics per method, error bars = 95% CI over test queries",
    "curves": "validation nDCG@10 and training loss per epoch",
    "tradeoff": "nDCG@10 against median query latency (bars: interquartile range when per-query timings exist)",
}


def md_plots(made: dict[str, str]) -> list[str]:
    if not made:
        return []
    caption = lambda kind: PLOT_CAPTIONS.get(  # noqa: E731
        kind, "router depth use: weight entropy per head (soft) or depth-choice frequencies (hard routers)"
    )
    return ["### Plots\n", *[f"- [{kind}]({p}): {caption(kind)}" for kind, p in made.items()], ""]


def md_failed(rep: dict[str, Any]) -> list[str]:
    if not rep["failed"]:
        return []
    return [
        "### Failed cells\n",
        *[f"- {f['method']} seed {f['seed']}: `{f['error']}`" for f in rep["failed"]],
        "",
    ]


def md_dataset(rep: dict[str, Any], made: dict[str, str], multi_seed: bool) -> list[str]:
    return [
        f"## {rep['dataset']}\n\n{rep['verdict']['sentence']}\n",
        *md_metrics(rep, multi_seed),
        *md_significance(rep),
        *md_efficiency(rep),
        *md_plots(made),
        *md_failed(rep),
    ]


def md_settings(reports: list[dict[str, Any]], config: Any, environment: Any) -> list[str]:
    md = ["## Settings\n", "### Datasets\n"]
    for rep in reports:
        info = rep["dataset_info"] or {}
        md.append(
            f"- **{rep['dataset']}**: source `{info.get('source', '?')}`, fingerprint `{info.get('fingerprint', '?')}`, "
            f"counts {json.dumps(info.get('counts', {}))}"
        )
        if info.get("provenance"):
            md.append(f"  - split provenance: `{json.dumps(info['provenance'], sort_keys=True)}`")
    md.append("\n### Resolved configuration\n")
    md.append(
        "```json\n" + json.dumps(config, indent=2, sort_keys=True) + "\n```\n"
        if config
        else "(config.json not found)\n"
    )
    md.append("### Environment\n")
    if environment:
        md.append(_md_table(["package", "version"], [[k, str(v)] for k, v in environment.items()]) + "\n")
    return md


def md_methods_text() -> list[str]:
    """How the statistics and runtimes were obtained."""
    statistics = (
        "Per-query scores are averaged over seeds, then each method is compared with each baseline "
        "(bm25, zeroshot, lora, finetune) on the primary metrics by a two-sided paired randomisation test "
        f"(sign flips; at least {DEFAULT_RESAMPLES:,} resamples, and at least 10 m / alpha for m comparisons; "
        "exact for small n) and, as a cross-check, a two-sided paired t-test. Comparisons whose per-query "
        "differences have zero variance (e.g. identical scores on every query) are not tested and are left out of "
        "the Holm family. Holm's correction runs over the remaining comparisons of a dataset; a difference is "
        f"called significant when the Holm-adjusted randomisation p-value is <= {ALPHA}. The interval beside it "
        "inverts the same randomisation test at level min(alpha / (m - i), alpha p / p_Holm) for the test of rank i, "
        "so it excludes 0 exactly when the verdict is significant (the unadjusted 95% t interval is in the JSON). "
        "bm25 and zeroshot do not depend on the seed: they run once and count once. "
        "'± std' is the sample standard deviation of the aggregate metric over seeds, shown only with two or more.\n"
    )
    runtimes = (
        "train_s: wall seconds of training (all epochs and validations). query_latency_ms: one test query at a "
        "time (encode + search) over the first `latency_queries` test queries; qps: all test queries "
        "batched. encode_docs_per_s: document-encoding throughput of the whole model (bm25: indexing). "
        "For the trained methods the test corpus embeddings reuse the trainer's frozen-prefix cache (only the "
        "trainable top layers run; encode_s is that pass) and encode_docs_per_s is measured by encoding "
        f"{THROUGHPUT_SAMPLE} documents spread over the corpus with the whole model, after a warm-up batch. "
        "index_bytes: FAISS flat index (dense) or BM25 score matrix.\n"
    )
    return ["### Statistics\n", statistics, "### Runtimes\n", runtimes]


def report_markdown(
    run_dir: Path,
    reports: list[dict[str, Any]],
    config: Any,
    environment: Any,
    plots_made: dict[str, dict[str, str]],
    plot_errors: list[str],
    notes: Sequence[str] = (),
    multi_seed: bool = True,
) -> str:
    md = [*md_header(run_dir, notes), *md_verdicts(reports)]
    for rep in reports:
        md += md_dataset(rep, plots_made.get(rep["dataset"], {}), multi_seed)
    md += [*md_settings(reports, config, environment), *md_methods_text()]
    if plot_errors:
        md += ["### Plot errors\n", *[f"- {e}" for e in plot_errors]]
    return "\n".join(md).rstrip() + "\n"


def build_reports(run_dir: str | Path, n_resamples: int = DEFAULT_RESAMPLES) -> dict[str, Any]:
    """Rebuild every report file of ``run_dir`` from its cells; returns the combined results."""
    run_dir = Path(run_dir)
    cells = load_cells(run_dir)
    config = read_json(run_dir / "config.json") if (run_dir / "config.json").exists() else None
    environment = read_json(run_dir / "environment.json") if (run_dir / "environment.json").exists() else None
    order = (config or {}).get("methods", [])
    by_ds: dict[str, list[dict[str, Any]]] = {}
    for c in cells:
        by_ds.setdefault(c["dataset"], []).append(c)
    ds_order = [
        d for d in dict.fromkeys(map(dataset_key, (config or {}).get("datasets") or [])) if d in by_ds
    ]
    ds_order += sorted(set(by_ds) - set(ds_order))
    reports = [dataset_report(ds, by_ds[ds], order, n_resamples=n_resamples) for ds in ds_order]
    missing = missing_cells(config, cells)
    seeds = run_seeds(config, cells)
    notes = (
        subsample_notes(reports, config)
        + run_notes(missing, seeds, _n_configured(config))
        + validation_notes(cells)
    )

    plots_made: dict[str, dict[str, str]] = {}
    plot_errors: list[str] = []
    for rep in reports:
        made, errs = make_plots(run_dir, rep)
        remove_stale_plots(run_dir, rep["dataset"], made, [*METHODS, *order])
        plots_made[rep["dataset"]] = made
        plot_errors += errs
        atomic_write_json(run_dir / "results" / f"{rep['dataset']}.json", {**_public(rep), "plots": made})

    combined = {
        "config": config,
        "environment": environment,
        "datasets": {
            rep["dataset"]: {**_public(rep), "plots": plots_made[rep["dataset"]]} for rep in reports
        },
        "n_cells": len(cells),
        "n_failed": sum(c["status"] != "ok" for c in cells),
        "missing_cells": missing,
        "seeds": seeds,
    }
    atomic_write_json(run_dir / "results.json", combined)

    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(["dataset", "method", "seed", "metric", "value"])
    writer.writerows(csv_rows(cells))
    atomic_write_text(run_dir / "results.csv", buf.getvalue())
    multi_seed = len(seeds) > 1
    atomic_write_text(run_dir / "summary.txt", summary_text(reports, notes, multi_seed))
    markdown = report_markdown(
        run_dir, reports, config, environment, plots_made, plot_errors, notes, multi_seed
    )
    atomic_write_text(run_dir / "REPORT.md", markdown)
    return combined
