"""Reports rebuilt from the cells on disk: JSON, CSV, a text summary, plots and REPORT.md.

``build_reports(run_dir)`` is called at the end of every ``maw benchmark`` run (and after an
interruption), so the reports always describe exactly the cells that exist. Outputs::

    results/<dataset>.json   every method and seed of one dataset: metrics, per-query metrics,
                             history, router stats, params, runtimes, checkpoint; plus the
                             seed aggregates, improvements and significance tests
    results.json             all datasets together, with the resolved config and environment
    results.csv              dataset, method, seed, metric, value (one row per figure)
    summary.txt              primary metrics per dataset x method, mean ± std over seeds
    plots/<dataset>_*.png    metrics with 95% CIs, training curves, depth histograms, trade-off
    REPORT.md                settings, tables, plot links, and the MAW vs finetune verdict

Aggregation conventions: seed-independent methods (bm25, zeroshot) count once (their cells for
other seeds are copies); "± std" is the sample standard deviation over seeds (0 with one seed);
the 95% CI of a method's metric is the t interval over test queries of the per-query score
averaged over seeds. Significance: see :mod:`maw.benchmark.significance`.
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
BASELINES = ("bm25", "zeroshot", "lora", "finetune")
CAPACITY_MATCHED = "finetune"
HEADLINE = "maw"
# Figures where a smaller value is better: improvement = baseline - method.
LOWER_IS_BETTER = frozenset({"train_s", "encode_s", "search_s", "query_latency_ms", "index_bytes"})
EFFICIENCY_FIGURES = ("train_s", "encode_docs_per_s", "query_latency_ms", "qps", "index_bytes")


def higher_is_better(name: str) -> bool:
    """Direction of a figure: runtimes/sizes and rank diagnostics are lower-is-better."""
    low = name.lower()
    return not (name in LOWER_IS_BETTER or "rank" in low or low.startswith("norel"))


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
    vals = [float(v) for v in values if v is not None and math.isfinite(float(v))]
    if not vals:
        return {"mean": None, "std": None, "n": 0}
    arr = np.asarray(vals)
    return {
        "mean": float(arr.mean()),
        "std": float(arr.std(ddof=1)) if len(vals) > 1 else 0.0,
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
    """Mean ± std over seeds of every metric, runtime and parameter count; per-query 95% CIs."""
    distinct = _distinct_cells(cells)
    metric_names = list(dict.fromkeys(k for c in distinct for k in c["metrics"]))
    out: dict[str, Any] = {
        "seeds": [c["seed"] for c in cells],
        "seed_independent": bool(cells[0].get("seed_independent") or cells[0]["method"] in SEED_INDEPENDENT),
        "n_runs": len(distinct),
        "metrics": {m: _stats([c["metrics"].get(m) for c in distinct]) for m in metric_names},
        "runtimes": {k: _stats([c["runtimes"].get(k) for c in distinct]) for k in RUNTIME_KEYS},
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
    """Absolute and relative improvement of each method over each baseline, per figure.

    Higher-is-better figures: ``absolute = method - baseline``; lower-is-better (latency, index
    size, seconds): ``absolute = baseline - method``. ``relative = absolute / |baseline|``
    (None when the baseline is 0 or missing). Positive always means "method is better".
    """
    rows = []
    for base in baselines:
        if base not in summaries:
            continue
        for method, s in summaries.items():
            if method == base:
                continue
            for kind, key in (("metric", "metrics"), ("runtime", "runtimes")):
                for fig, st in s[key].items():
                    b = summaries[base][key].get(fig, {}).get("mean")
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
                            "kind": kind,
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
    """Every (method, baseline, metric) comparison of one dataset, Holm-corrected together."""
    todo = []
    for m, base in comparison_pairs(list(cells_by_method)):
        for metric in metrics:
            a = averaged_per_query(_distinct_cells(cells_by_method[m]), metric)
            b = averaged_per_query(_distinct_cells(cells_by_method[base]), metric)
            if set(a) & set(b):
                todo.append((m, base, metric, a, b))
    # The smallest two-sided randomisation p-value is 2 / (n_resamples + 1) and Holm multiplies it by
    # the family size m; resample enough that a clear difference can still reach alpha / 5.
    n_resamples = max(n_resamples, math.ceil(10 * len(todo) / alpha))
    # one fixed resampling seed: reproducible, and identical inputs give identical p-values
    comps = [
        compare(m, base, metric, a, b, n_resamples=n_resamples, seed=0) for m, base, metric, a, b in todo
    ]
    return apply_holm(comps, alpha=alpha)


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
    nums = (
        f"{metric} {c.mean_method:.4f} vs {c.mean_baseline:.4f} (difference {c.diff:+.4f}, "
        f"95% CI [{c.ci_low:+.4f}, {c.ci_high:+.4f}], Holm-adjusted randomisation-test p = {c.p_perm_holm:.3g}, "
        f"paired t-test p = {c.p_ttest:.3g}, n = {c.n} test queries)"
    )
    outcome = c.verdict
    if outcome == "better":
        s = f"{dataset}: {name} beat {bname} significantly: {nums}."
    elif outcome == "worse":
        s = f"{dataset}: {name} was significantly worse than {bname}: {nums}."
    else:
        s = f"{dataset}: {name} did not beat {bname} significantly: {nums}."
    return {"outcome": outcome, "sentence": s, "comparison": c.to_dict()}


# --------------------------------------------------------------------------- history / router stats
def _first(d: dict[str, Any], keys: Sequence[str]) -> Any:
    for k in keys:
        if k in d and d[k] is not None and not isinstance(d[k], dict):
            return d[k]
    return None


def history_curve(history: list[dict[str, Any]]) -> dict[str, list]:
    """Epoch, validation nDCG@10 and training loss series from a trainer history."""
    out: dict[str, list] = {"epoch": [], "val_ndcg10": [], "train_loss": []}
    for i, h in enumerate(history):
        if not isinstance(h, dict):
            continue
        val = _first(h, ("val_nDCG@10", "val_ndcg@10", "val_ndcg10", "val_ndcg"))
        for sub in ("val", "val_metrics"):
            if val is None and isinstance(h.get(sub), dict):
                val = _first(h[sub], ("nDCG@10", "ndcg@10", "ndcg_at_10"))
        out["epoch"].append(h.get("epoch", i))
        out["val_ndcg10"].append(val)
        out["train_loss"].append(_first(h, ("train_loss", "loss", "mean_loss")))
    return out


def depth_counts(router_stats: Any) -> dict[str, list[list[float]]]:
    """layer label -> (H, D) depth-choice counts from a cell's router stats.

    The trainer's ``eval_depth_statistics`` (greedy inference policy on the validation texts at the
    best epoch, ``depth_statistics`` format ``{layer: {"counts": [[D] x H], ...}}``) when present;
    otherwise any such block found in the stats (the last occurrence of a layer wins).
    """
    found: dict[str, list[list[float]]] = {}
    if isinstance(router_stats, dict) and router_stats.get("eval_depth_statistics"):
        router_stats = router_stats["eval_depth_statistics"]

    def walk(obj: Any, key: str) -> None:
        if isinstance(obj, dict):
            counts = obj.get("counts")
            if isinstance(counts, list) and counts and isinstance(counts[0], list):
                found[key] = counts
                return
            for k, v in obj.items():
                walk(v, str(k))
        elif isinstance(obj, list):
            for v in obj:
                walk(v, key)

    walk(router_stats, "?")
    return found


# --------------------------------------------------------------------------- formatting
def _fmt(v: Any, digits: int = 4) -> str:
    if v is None:
        return "—"
    if isinstance(v, int | float) and float(v).is_integer() and abs(v) >= 1000:
        return f"{int(v):,}"
    if isinstance(v, float):
        if abs(v) >= 1e5 or (v != 0 and abs(v) < 1e-3):
            return f"{v:.3g}"
        return f"{v:.{digits}f}"
    return str(v)


def _mean_std(st: dict[str, Any], seed_independent: bool, digits: int = 4) -> str:
    if st.get("mean") is None:
        return "—"
    if seed_independent or st.get("n", 0) <= 1:
        return _fmt(st["mean"], digits) + (" (seed-indep.)" if seed_independent else "")
    return f"{_fmt(st['mean'], digits)} ± {_fmt(st['std'], digits)}"


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
        "significance": [c.to_dict() for c in comps],
        "verdict": verdict(dataset, comps, failed, methods),
        "cells": cells,
        "_comparisons": comps,
        "_ok": ok,
    }


def _public(rep: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in rep.items() if not k.startswith("_")}


def make_plots(run_dir: Path, rep: dict[str, Any]) -> tuple[dict[str, str], list[str]]:
    """Draw the four figures of a dataset; returns ({kind: relative path}, [errors])."""
    ds, ok, summaries = rep["dataset"], rep["_ok"], rep["methods"]
    made: dict[str, str] = {}
    errors: list[str] = []
    pdir = run_dir / "plots"

    def attempt(kind: str, fn, *args) -> None:
        path = pdir / f"{ds}_{kind}.png"
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
        attempt(
            "metrics",
            plotting.plot_metrics,
            f"{ds}: test metrics (95% CI over queries)",
            bars,
            PRIMARY_METRICS,
        )
    curves = {}
    for m, cs in ok.items():
        for c in cs:
            cur = history_curve(c["history"])
            if any(v is not None for v in cur["val_ndcg10"] + cur["train_loss"]):
                curves[f"{m} seed {c['seed']}"] = cur
    if curves:
        attempt("curves", plotting.plot_training_curves, f"{ds}: training curves", curves)
    for m, cs in ok.items():
        layers: dict[str, np.ndarray] = {}
        for c in cs:
            for layer, counts in depth_counts(c["router_stats"]).items():
                arr = np.asarray(counts, dtype=np.float64)
                layers[layer] = (
                    layers[layer] + arr if layer in layers and layers[layer].shape == arr.shape else arr
                )
        if layers:
            attempt(
                f"depth_{m}",
                plotting.plot_depth_histograms,
                f"{ds}: {m} depth choices at inference, validation texts (summed over seeds)",
                {k: v.tolist() for k, v in sorted(layers.items())},
            )
    points = {
        m: (s["runtimes"]["query_latency_ms"]["mean"], s["metrics"].get("nDCG@10", {}).get("mean"))
        for m, s in summaries.items()
    }
    points = {m: p for m, p in points.items() if p[0] is not None and p[1] is not None}
    if points:
        attempt("tradeoff", plotting.plot_tradeoff, f"{ds}: nDCG@10 vs query latency", points)
    return made, errors


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


def summary_text(reports: list[dict[str, Any]]) -> str:
    out = ["MAW benchmark summary: primary test metrics, mean ± std over seeds", ""]
    for rep in reports:
        out.append(f"== {rep['dataset']} ==")
        rows = []
        for m, s in rep["methods"].items():
            rows.append(
                [
                    m,
                    *[_mean_std(s["metrics"].get(k, {}), s["seed_independent"]) for k in PRIMARY_METRICS],
                    str(len(s["seeds"])),
                ]
            )
        if rows:
            out.append(_text_table(["method", *PRIMARY_METRICS, "seeds"], rows))
        for f in rep["failed"]:
            out.append(f"FAILED {f['method']} seed {f['seed']}: {f['error']}")
        out += ["", rep["verdict"]["sentence"], ""]
    return "\n".join(out).rstrip() + "\n"


def report_markdown(
    run_dir: Path,
    reports: list[dict[str, Any]],
    config: Any,
    environment: Any,
    plots_made: dict[str, dict[str, str]],
    plot_errors: list[str],
) -> str:
    md = [
        f"# MAW benchmark report\n\nRun folder `{run_dir}`, reports generated {time.strftime('%Y-%m-%d %H:%M:%S')} "
        "from the cells on disk.\n"
    ]
    md.append("## Verdicts\n")
    md += [f"- {rep['verdict']['sentence']}" for rep in reports]
    md.append("")
    for rep in reports:
        ds = rep["dataset"]
        md.append(f"## {ds}\n\n{rep['verdict']['sentence']}\n")
        rows = []
        for m, s in rep["methods"].items():
            cis = [s["per_query_ci"].get(k) for k in PRIMARY_METRICS]
            rows.append(
                [
                    m,
                    *[_mean_std(s["metrics"].get(k, {}), s["seed_independent"]) for k in PRIMARY_METRICS],
                    *[f"[{ci['ci_low']:.3f}, {ci['ci_high']:.3f}]" if ci else "—" for ci in cis[:1]],
                    ", ".join(map(str, s["seeds"])),
                ]
            )
        md.append("### Test metrics (mean ± std over seeds)\n")
        md.append(_md_table(["method", *PRIMARY_METRICS, "nDCG@10 95% CI (queries)", "seeds"], rows) + "\n")
        rows = [
            [
                m,
                *[_mean_std(s["runtimes"][k], s["seed_independent"], 2) for k in EFFICIENCY_FIGURES],
                *[
                    _fmt(None if s["params"][k]["mean"] is None else round(s["params"][k]["mean"]))
                    for k in ("trainable", "total")
                ],
            ]
            for m, s in rep["methods"].items()
        ]
        md.append("### Efficiency\n")
        md.append(_md_table(["method", *EFFICIENCY_FIGURES, "trainable params", "total params"], rows) + "\n")
        imp = {(r["method"], r["baseline"], r["figure"]): r for r in rep["improvements"]}
        pairs = list(dict.fromkeys((m, b) for m, b, _ in imp))
        if pairs:
            md.append(
                "### Improvements over baselines\n\nPositive = the method is better: nDCG@10 uses method − "
                "baseline, query latency (lower is better) uses baseline − method; relative = absolute / baseline.\n"
            )
            rows = []
            for m, b in pairs:
                row = [m, b]
                for fig in ("nDCG@10", "query_latency_ms"):
                    r = imp.get((m, b, fig))
                    row += [
                        _fmt(r["absolute"]) if r else "—",
                        f"{100 * r['relative']:+.1f}%" if r and r["relative"] is not None else "—",
                    ]
                rows.append(row)
            md.append(
                _md_table(
                    ["method", "baseline", "Δ nDCG@10", "Δ nDCG@10 rel.", "Δ latency ms", "Δ latency rel."],
                    rows,
                )
                + "\n"
            )
        if rep["significance"]:
            md.append("### Paired significance tests (Holm over all comparisons of this dataset)\n")
            md.append(
                _md_table(
                    [
                        "method",
                        "baseline",
                        "metric",
                        "diff",
                        "95% CI",
                        "p (t)",
                        "p (perm.)",
                        "p (perm., Holm)",
                        "verdict",
                    ],
                    [
                        [
                            c["method"],
                            c["baseline"],
                            c["metric"],
                            f"{c['diff']:+.4f}",
                            f"[{c['ci_low']:+.4f}, {c['ci_high']:+.4f}]",
                            f"{c['p_ttest']:.3g}",
                            f"{c['p_perm']:.3g}",
                            f"{c['p_perm_holm']:.3g}",
                            Comparison(**c).verdict,
                        ]
                        for c in rep["significance"]
                    ],
                )
                + "\n"
            )
        if plots_made.get(ds):
            md.append("### Plots\n")
            md += [f"- [{kind}]({p})" for kind, p in plots_made[ds].items()]
            md.append("")
        if rep["failed"]:
            md.append("### Failed cells\n")
            md += [f"- {f['method']} seed {f['seed']}: `{f['error']}`" for f in rep["failed"]]
            md.append("")
    md.append("## Settings\n")
    md.append("### Datasets\n")
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
    md.append("### Statistics\n")
    md.append(
        "Per-query scores are averaged over seeds, then each method is compared with each baseline "
        "(bm25, zeroshot, lora, finetune) by a two-sided paired t-test and a two-sided paired randomisation "
        f"test (at least {DEFAULT_RESAMPLES:,} random sign flips, and at least 10 m / alpha for m comparisons; exact for "
        "small n) on the primary metrics. Holm's correction "
        "runs over all comparisons of a dataset; a difference is called significant when the Holm-adjusted "
        f"randomisation p-value is <= {ALPHA}. 95% CIs of mean differences use the t distribution. "
        "bm25 and zeroshot do not depend on the seed: they run once and count once. "
        "'± std' is the sample standard deviation of the aggregate metric over seeds.\n"
    )
    md.append("### Runtimes\n")
    md.append(
        "train_s: wall seconds of training (all epochs and validations). query_latency_ms: one test query at a "
        "time (encode + search), mean over the first `latency_queries` test queries; qps: all test queries "
        "batched. encode_docs_per_s: document-encoding throughput of the whole model (bm25: indexing). "
        "For the trained methods the test corpus embeddings reuse the trainer's frozen-prefix cache (only the "
        "trainable top layers run; encode_s is that pass) and encode_docs_per_s is measured by encoding "
        f"{THROUGHPUT_SAMPLE} documents spread over the corpus with the whole model, after a warm-up batch. "
        "index_bytes: FAISS flat index (dense) or BM25 score matrix.\n"
    )
    if plot_errors:
        md.append("### Plot errors\n")
        md += [f"- {e}" for e in plot_errors]
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

    plots_made: dict[str, dict[str, str]] = {}
    plot_errors: list[str] = []
    for rep in reports:
        made, errs = make_plots(run_dir, rep)
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
    }
    atomic_write_json(run_dir / "results.json", combined)

    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(["dataset", "method", "seed", "metric", "value"])
    writer.writerows(csv_rows(cells))
    atomic_write_text(run_dir / "results.csv", buf.getvalue())
    atomic_write_text(run_dir / "summary.txt", summary_text(reports))
    atomic_write_text(
        run_dir / "REPORT.md", report_markdown(run_dir, reports, config, environment, plots_made, plot_errors)
    )
    return combined
