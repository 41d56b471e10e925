"""Significance tests of a dataset's comparisons and the plain sentences they allow: the verdict of
MAW against the capacity-matched baseline, and the flag of methods that never left epoch 0.
See :mod:`maw.benchmark.significance` for the tests themselves.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

from maw.benchmark.report.aggregate import (
    CAPACITY_MATCHED,
    HEADLINE,
    averaged_per_query,
    comparison_pairs,
    distinct_cells,
)
from maw.benchmark.significance import ALPHA, DEFAULT_RESAMPLES, Comparison, apply_holm, compare
from maw.evaluation.metrics import PRIMARY_METRICS, SELECTION_METRIC


def significance_tests(
    cells_by_method: dict[str, list[dict[str, Any]]],
    metrics: Sequence[str] = PRIMARY_METRICS,
    n_resamples: int = DEFAULT_RESAMPLES,
    alpha: float = ALPHA,
    margin: float | None = None,
) -> list[Comparison]:
    """Every (method, baseline, metric) comparison of one dataset; the non-degenerate ones are
    Holm-corrected together (degenerate ones carry their reason and no p-value). ``margin``: the
    run's equivalence margin (``equivalence_margin`` of its config.json; None: no TOST)."""
    todo = []
    for m, base in comparison_pairs(list(cells_by_method)):
        for metric in metrics:
            a = averaged_per_query(distinct_cells(cells_by_method[m]), metric)
            b = averaged_per_query(distinct_cells(cells_by_method[base]), metric)
            if set(a) & set(b):
                todo.append((m, base, metric, a, b))
    # The smallest two-sided randomisation p-value is 2 / (n_resamples + 1) and Holm multiplies it by
    # the family size m (<= len(todo)); resample enough that a clear difference can still reach alpha / 5.
    n_resamples = max(n_resamples, math.ceil(10 * len(todo) / alpha))
    # one fixed resampling seed: reproducible, and identical inputs give identical p-values and intervals
    comps = [
        compare(m, base, metric, a, b, n_resamples=n_resamples, seed=0, margin=margin)
        for m, base, metric, a, b in todo
    ]
    return apply_holm(comps, alpha=alpha)


def confidence(level: float) -> str:
    """Confidence of an interval at test level alpha_i, e.g. 0.000625 -> "99.94%"."""
    return f"{100 * (1 - level):.4g}%"


def signed(x: float) -> str:
    """An interval end: +0.0123, or ±∞ when the test cannot bound it (tiny n, strict level)."""
    if not math.isfinite(x):
        return "+∞" if x > 0 else "−∞"
    return "0.0000" if abs(x) < 1e-9 else f"{x:+.4f}"  # bisection ends a hair off an exact 0


def comparison_numbers(c: Comparison) -> str:
    """The figures of one tested comparison, with its Holm-adjusted interval beside the adjusted p."""
    return (
        f"{c.metric} {c.mean_method:.4f} vs {c.mean_baseline:.4f} (difference {c.diff:+.4f}, "
        f"Holm-adjusted {confidence(c.holm_level)} CI [{signed(c.holm_ci_low)}, {signed(c.holm_ci_high)}], "
        f"Holm-adjusted randomisation-test p = {c.p_perm_holm:.3g}, paired t-test p = {c.p_ttest:.3g}, "
        f"n = {c.n} test queries)"
    )


def untrained_methods(cells_by_method: dict[str, list[dict[str, Any]]]) -> list[str]:
    """Trained methods whose selected (best validation) epoch is 0 in every seed: training never beat
    the pretrained model on validation, so what was tested is the pretrained encoder."""
    return [
        m
        for m, cells in cells_by_method.items()
        if cells
        and all(c.get("best_epoch") is not None for c in cells)
        and all(c["best_epoch"] == 0 for c in cells)
    ]


def untrained_note(who: Sequence[str], names: dict[str, str] | None = None) -> str:
    """The sentence that flags untrained methods (empty when there is none)."""
    if not who:
        return ""
    names = names or {}
    shown = " and ".join(names.get(m, m) for m in who)
    verb = "is" if len(who) == 1 else "are"
    return (
        f" {shown[:1].upper()}{shown[1:]} {verb} untrained: the selected epoch was 0 in every seed (training "
        "never beat the pretrained model on validation), so the model tested is the pretrained encoder."
    )


def verdict(
    dataset: str,
    comps: list[Comparison],
    failed: dict[str, list[dict]],
    present: Sequence[str],
    metric: str = SELECTION_METRIC,
    method: str = HEADLINE,
    baseline: str = CAPACITY_MATCHED,
    untrained: Sequence[str] = (),
) -> dict[str, Any]:
    """The one plain sentence: did MAW beat or lose to the capacity-matched baseline, or what could
    the test not tell (with its minimum detectable effect)? Equivalence only from a TOST with the
    run's margin; ``untrained``: methods whose selected epoch was 0 in every seed (flagged)."""
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
    flag = untrained_note(
        [m for m in (method, baseline) if m in untrained],
        {method: name, baseline: f"the baseline {baseline}"},
    )
    if c.degenerate:
        s = (
            f"{dataset}: no test — {name} and {bname} on {metric}: {c.degenerate} "
            f"({c.mean_method:.4f} vs {c.mean_baseline:.4f}, n = {c.n} test queries).{flag}"
        )
        return {"outcome": c.verdict, "sentence": s, "comparison": c.to_dict()}
    nums = comparison_numbers(c)
    outcome = c.verdict
    within = f"±{c.margin:g}" if c.margin is not None else ""
    tost = f"TOST within {within}: Holm-adjusted p = {c.p_tost_holm:.3g}" if c.p_tost_holm is not None else ""
    if outcome == "better":
        s = f"{dataset}: {name} beat {bname}: {nums}."
    elif outcome == "worse":
        s = f"{dataset}: {name} lost to {bname}: {nums}."
    elif outcome == "equivalent":
        s = (
            f"{dataset}: {name} was equivalent to {bname} within {within} {metric} "
            f"(equivalence test with the margin fixed in the run's configuration; {tost}): {nums}."
        )
    else:
        s = (
            f"{dataset}: no significant difference between {name} and {bname} (the test could detect "
            f"≥ {c.mde_holm:.4f} {metric} with 80% power): {nums}."
        )
        s += (
            f" Equivalence within {within} was not shown ({tost})."
            if c.margin is not None
            else " No equivalence margin was set (--equivalence-margin), so no equivalence is claimed."
        )
    return {"outcome": outcome, "sentence": s + flag, "comparison": c.to_dict()}
