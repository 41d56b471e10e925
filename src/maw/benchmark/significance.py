"""Paired significance tests on per-query scores, Holm correction, confidence intervals.

The benchmark compares every method against every baseline (bm25, zeroshot, lora, finetune) on
each primary metric of a dataset. A comparison is *paired by query*: both systems are scored on
the same test queries, and the tests look at the per-query differences ``d_q = a_q - b_q``.

Conventions (also written into REPORT.md):

* **Seeds.** When a method ran with several seeds, its per-query score is the mean over the
  seeds' scores for that query; the paired tests then run on those averaged vectors. Seed
  variability is reported separately as mean ± std of the aggregate metric over seeds.
* **Queries.** Only queries scored for both systems are paired (normally all test queries; the
  metric suite scores unretrieved judged queries as 0). ``n`` is recorded.
* **Tests.** A two-sided paired t-test (``scipy.stats.ttest_rel``) and a two-sided paired
  randomisation test (``scipy.stats.permutation_test`` with ``permutation_type="samples"``: the
  sign of each query's difference is flipped at random; exact when ``2**n <= n_resamples``).
  The report uses at least 10,000 resamples, and at least ``10 m / alpha`` for a family of m
  comparisons, so that the smallest attainable Holm-adjusted p-value stays below ``alpha / 5``.
* **Multiple comparisons.** Holm's step-down correction over all comparisons of one dataset
  (every method x baseline x metric), applied separately to each test's p-values. The verdict
  ("significant") uses the Holm-adjusted randomisation-test p-value at ``alpha`` (0.05).
* **Intervals.** 95% confidence interval of the mean difference from the t distribution
  (``ttest_rel(...).confidence_interval``); :func:`bootstrap_ci` gives a percentile bootstrap
  interval as an alternative.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
from scipy import stats

DEFAULT_RESAMPLES = 10_000
ALPHA = 0.05


def holm(pvalues: Sequence[float | None]) -> list[float | None]:
    """Holm-Bonferroni adjusted p-values, in the input order. ``None`` entries stay ``None``.

    With the m valid p-values sorted ascending ``p_(1) <= ... <= p_(m)``, the adjusted value is
    ``max_{j <= i} min(1, (m - j + 1) * p_(j))`` (the step-down procedure written as adjusted
    p-values: reject ``H_(i)`` at level alpha iff its adjusted p-value <= alpha).
    """
    idx = [i for i, p in enumerate(pvalues) if p is not None and np.isfinite(p)]
    out: list[float | None] = [None] * len(pvalues)
    m = len(idx)
    order = sorted(idx, key=lambda i: pvalues[i])
    running = 0.0
    for rank, i in enumerate(order):  # rank 0 .. m-1 -> multiplier m .. 1
        running = max(running, min(1.0, (m - rank) * float(pvalues[i])))
        out[i] = running
    return out


def paired_ttest(a: np.ndarray, b: np.ndarray, confidence: float = 0.95) -> tuple[float, float, float]:
    """Two-sided paired t-test of ``mean(a - b) == 0``. a, b: (n,) -> (p, ci_low, ci_high).

    Degenerate case: if every difference is identical the t statistic is undefined; then p = 1
    when the differences are all zero (the systems are equal on every query) and p = 0 otherwise,
    and the interval collapses onto the difference.
    """
    a, b = _check_pair(a, b)
    diff = a - b
    if len(diff) < 2 or np.allclose(diff, diff[0], rtol=0.0, atol=1e-15):
        d = float(diff.mean())
        return (1.0 if d == 0.0 else 0.0), d, d
    res = stats.ttest_rel(a, b)
    ci = res.confidence_interval(confidence)
    return float(res.pvalue), float(ci.low), float(ci.high)


def permutation_pvalue(
    a: np.ndarray, b: np.ndarray, n_resamples: int = DEFAULT_RESAMPLES, seed: int = 0
) -> float:
    """Two-sided paired randomisation test of the mean difference. a, b: (n,) -> p-value.

    ``scipy.stats.permutation_test(permutation_type="samples")`` swaps a and b within a query at
    random (equivalently flips the sign of d_q); exact enumeration when ``2**n <= n_resamples``.
    """
    a, b = _check_pair(a, b)
    if np.all(a == b):
        return 1.0

    def mean_diff(x: np.ndarray, y: np.ndarray, axis: int) -> np.ndarray:
        return np.mean(x - y, axis=axis)

    res = stats.permutation_test(
        (a, b),
        mean_diff,
        permutation_type="samples",
        vectorized=True,
        n_resamples=n_resamples,
        alternative="two-sided",
        rng=np.random.default_rng(seed),
    )
    return float(min(1.0, res.pvalue))


def bootstrap_ci(
    a: np.ndarray,
    b: np.ndarray,
    confidence: float = 0.95,
    n_resamples: int = DEFAULT_RESAMPLES,
    seed: int = 0,
) -> tuple[float, float]:
    """Percentile bootstrap interval of ``mean(a - b)`` (queries resampled with replacement)."""
    a, b = _check_pair(a, b)
    diff = a - b
    if np.all(diff == diff[0]):
        return float(diff[0]), float(diff[0])
    res = stats.bootstrap(
        (diff,),
        np.mean,
        confidence_level=confidence,
        n_resamples=n_resamples,
        method="percentile",
        rng=np.random.default_rng(seed),
    )
    return float(res.confidence_interval.low), float(res.confidence_interval.high)


def mean_ci(x: np.ndarray, confidence: float = 0.95) -> tuple[float, float, float]:
    """Mean of per-query scores with its t-distribution interval. x: (n,) -> (mean, low, high)."""
    x = np.asarray(x, dtype=np.float64)
    if x.size == 0:
        raise ValueError("mean_ci: no scores")
    m = float(x.mean())
    if x.size < 2 or np.all(x == x[0]):
        return m, m, m
    half = float(stats.t.ppf(0.5 + confidence / 2, x.size - 1) * x.std(ddof=1) / np.sqrt(x.size))
    return m, m - half, m + half


def _check_pair(a: Any, b: Any) -> tuple[np.ndarray, np.ndarray]:
    a = np.asarray(a, dtype=np.float64)
    b = np.asarray(b, dtype=np.float64)
    if a.shape != b.shape or a.ndim != 1:
        raise ValueError(f"paired test needs two 1-D arrays of equal length, got {a.shape} and {b.shape}")
    if a.size == 0:
        raise ValueError("paired test: no queries in common")
    return a, b


@dataclass
class Comparison:
    """One paired comparison ``method`` vs ``baseline`` on ``metric`` (higher is better)."""

    method: str
    baseline: str
    metric: str
    n: int
    mean_method: float
    mean_baseline: float
    diff: float  # mean(method - baseline)
    ci_low: float
    ci_high: float
    p_ttest: float
    p_perm: float
    p_ttest_holm: float | None = None
    p_perm_holm: float | None = None
    significant: bool | None = None  # Holm-adjusted randomisation p <= alpha

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @property
    def verdict(self) -> str:
        """ "better" / "worse" (significant, by the sign of diff) or "n.s."."""
        if not self.significant:
            return "n.s."
        return "better" if self.diff > 0 else "worse"


def compare(
    method: str,
    baseline: str,
    metric: str,
    scores_method: Mapping[str, float],
    scores_baseline: Mapping[str, float],
    n_resamples: int = DEFAULT_RESAMPLES,
    seed: int = 0,
) -> Comparison:
    """Paired tests on the queries both systems were scored on. scores: qid -> per-query value."""
    qids = sorted(set(scores_method) & set(scores_baseline))
    if not qids:
        raise ValueError(f"{method} vs {baseline} on {metric}: no query scored for both")
    a = np.array([scores_method[q] for q in qids], dtype=np.float64)
    b = np.array([scores_baseline[q] for q in qids], dtype=np.float64)
    p_t, lo, hi = paired_ttest(a, b)
    p_perm = permutation_pvalue(a, b, n_resamples=n_resamples, seed=seed)
    return Comparison(
        method=method,
        baseline=baseline,
        metric=metric,
        n=len(qids),
        mean_method=float(a.mean()),
        mean_baseline=float(b.mean()),
        diff=float((a - b).mean()),
        ci_low=lo,
        ci_high=hi,
        p_ttest=p_t,
        p_perm=p_perm,
    )


def apply_holm(comparisons: list[Comparison], alpha: float = ALPHA) -> list[Comparison]:
    """Fill the Holm-adjusted p-values and verdicts of one family (one dataset), in place."""
    for adj, c in zip(holm([c.p_ttest for c in comparisons]), comparisons, strict=True):
        c.p_ttest_holm = adj
    for adj, c in zip(holm([c.p_perm for c in comparisons]), comparisons, strict=True):
        c.p_perm_holm = adj
        c.significant = adj is not None and adj <= alpha
    return comparisons
