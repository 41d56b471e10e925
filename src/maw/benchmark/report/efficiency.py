"""Runtime conclusions between systems of the same kind, from the spread of repeated timings.

A difference is stated only when both sides have at least ``MIN_TIMING_SAMPLES`` samples from at
least ``MIN_TIMING_RUNS`` runs, their interquartile ranges do not overlap and every run of one side
is on the same side of every run of the other; no relative (%) change of a runtime is reported.
"""

from __future__ import annotations

from typing import Any

from maw.benchmark.report.aggregate import TIMED_FIGURES, comparison_pairs, higher_is_better
from maw.benchmark.report.tables import fmt

MIN_TIMING_SAMPLES = 5

MIN_TIMING_RUNS = 2  # runs (cells) per side before a runtime difference is stated

UNITS = {"query_latency_ms": "ms", "qps": "queries/s", "encode_docs_per_s": "docs/s", "train_s": "s"}


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
    text = f"{method} {word}: median {fmt(x['median'], 2)} vs {fmt(y['median'], 2)} {unit}".rstrip()
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
