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
* **Degenerate comparisons.** When the differences have zero variance (identical scores on every
  query, e.g. R@100 = 1.0 for both systems, or the same shift on every query) neither test has
  anything to say; such comparisons are not tested, are left out of the Holm family, and the
  report lists them as left out.
* **Tests.** A two-sided paired randomisation test (the sign of each query's difference is
  flipped at random: ``p(δ) = (1 + #{r : |mean(s_r (d - δ))| >= |mean(d - δ)|}) / (R + 1)``;
  exact enumeration of all ``2**n`` sign patterns when ``2**n <= R``), and, as a cross-check, a
  two-sided paired t-test (``scipy.stats.ttest_rel``). The report uses at least 10,000
  resamples, and at least ``10 m / alpha`` for a family of m comparisons, so that the smallest
  attainable Holm-adjusted p-value stays below ``alpha / 5``.
* **Multiple comparisons.** Holm's step-down correction over the non-degenerate comparisons of
  one dataset (every method x baseline x metric), applied separately to each test's p-values.
  The verdict ("significant") uses the Holm-adjusted randomisation-test p-value at ``alpha``.
* **Intervals.** The interval shown next to a verdict is *Holm-adjusted*: it inverts the same
  randomisation test (same sign patterns) at level ``alpha_i = min(alpha / (m - i), alpha p / p_holm)``
  for the test of rank i (0-based, ascending p) in a family of m, i.e. the Holm step's level,
  tightened where the step-down's monotonicity raised p_holm. It is the set of shifts δ whose
  test is not rejected at ``alpha_i``, so it excludes 0 exactly when the verdict is significant.
  The unadjusted 95% t interval (``ttest_rel(...).confidence_interval``) is kept in the JSON;
  :func:`bootstrap_ci` gives a percentile bootstrap interval as another alternative.
* **What a verdict may say.** "beat" / "lost to": Holm-significant, by the sign of the difference.
  Otherwise "no significant difference", with the minimum detectable effect (:func:`mde`, 80%
  power, at the strictest Holm level ``alpha / m``): a non-significant test is not evidence of no
  difference. "equivalent within ±m" only from an equivalence test whose margin ``m`` was fixed
  before the test split was read (``--equivalence-margin``; none by default, and then no
  equivalence is ever claimed): TOST, two one-sided paired tests of ``H0: mean(d) <= -m`` and
  ``H0: mean(d) >= +m``, each a one-sided randomisation test on the same sign patterns as above
  (``p = (1 + #{r : mean(s_r (d + m)) >= mean(d + m)}) / (R + 1)`` and its mirror), the TOST
  p-value the larger of the two; Holm over the family as for the difference tests. The paired
  t-test version (``scipy.stats.ttest_1samp`` one-sided at ``-m`` and ``+m``) is kept as a cross-check.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
from scipy import stats

DEFAULT_RESAMPLES = 10_000
ALPHA = 0.05
POWER = 0.8  # of the minimum detectable effect (mde)
_CHUNK = 1 << 22  # sign-pattern entries materialised at once (R_chunk x n)


def holm(pvalues: Sequence[float | None]) -> list[float | None]:
    """Holm-Bonferroni adjusted p-values, in the input order. ``None`` entries stay ``None``.

    With the m valid p-values sorted ascending ``p_(1) <= ... <= p_(m)``, the adjusted value is
    ``max_{j <= i} min(1, (m - j + 1) * p_(j))`` (the step-down procedure written as adjusted
    p-values: reject ``H_(i)`` at level alpha iff its adjusted p-value <= alpha).
    """
    out: list[float | None] = [None] * len(pvalues)
    running = 0.0
    for i, step in holm_steps(pvalues):
        running = max(running, min(1.0, step * float(pvalues[i])))
        out[i] = running
    return out


def holm_steps(pvalues: Sequence[float | None]) -> list[tuple[int, int]]:
    """(input index, Holm multiplier m - rank) of the valid p-values, in ascending-p order."""
    idx = [i for i, p in enumerate(pvalues) if p is not None and np.isfinite(p)]
    order = sorted(idx, key=lambda i: pvalues[i])
    return [(i, len(idx) - rank) for rank, i in enumerate(order)]


def degenerate_reason(a: np.ndarray, b: np.ndarray) -> str | None:
    """Why a paired comparison cannot be tested (zero variance of the differences), or None."""
    a, b = _check_pair(a, b)
    diff = a - b
    if np.all(diff == 0.0):
        return "identical scores on every query"
    if len(diff) < 2 or np.allclose(diff, diff[0], rtol=0.0, atol=1e-12):
        return f"the same difference ({diff[0]:+.4g}) on every query: zero variance"
    return None


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


def mde(sd: float, n: int, alpha: float = ALPHA, power: float = POWER) -> float:
    """Minimum detectable mean difference of a two-sided paired test (normal approximation):
    ``(z_{1-alpha/2} + z_{power}) * sd / sqrt(n)``, ``sd`` the SD of the per-query differences."""
    if n < 1:
        raise ValueError("mde: n must be >= 1")
    return float((stats.norm.ppf(1 - alpha / 2) + stats.norm.ppf(power)) * sd / math.sqrt(n))


def paired_tost_ttest(a: np.ndarray, b: np.ndarray, margin: float) -> float:
    """TOST p-value of equivalence within ``±margin`` from two one-sided paired t-tests:
    ``max(p(H0: mean(a - b) <= -margin), p(H0: mean(a - b) >= +margin))``."""
    a, b = _check_pair(a, b)
    if not margin > 0:
        raise ValueError(f"equivalence margin must be > 0, got {margin!r}")
    d = a - b
    if len(d) < 2 or np.allclose(d, d[0], rtol=0.0, atol=1e-15):
        return 0.0 if abs(float(d.mean())) < margin else 1.0
    lower = stats.ttest_1samp(d, -margin, alternative="greater").pvalue
    upper = stats.ttest_1samp(d, margin, alternative="less").pvalue
    return float(max(lower, upper))


# --------------------------------------------------------------------------- randomisation test
@dataclass
class SignFlipNull:
    """The sign-flip null of one difference vector d (n,), summarised for any shift δ.

    For sign patterns s_r (R, n): ``mean(s_r (d - δ)) = a_r - δ b_r`` with ``a = S d / n`` and
    ``b = S 1 / n`` (both (R,)), so the p-value of every δ costs O(R) once a, b are known.
    """

    d: np.ndarray  # (n,)
    a: np.ndarray  # (R,)
    b: np.ndarray  # (R,)
    exact: bool  # all 2**n patterns (p = share of patterns) vs R random ones (p = (1 + k) / (R + 1))

    @classmethod
    def build(cls, d: np.ndarray, n_resamples: int = DEFAULT_RESAMPLES, seed: int = 0) -> SignFlipNull:
        d = np.asarray(d, dtype=np.float64)
        n = d.size
        exact = n < 63 and 2**n <= n_resamples
        rng = np.random.default_rng(seed)
        a_parts, b_parts = [], []
        total = 2**n if exact else n_resamples
        rows = max(1, _CHUNK // max(n, 1))
        for start in range(0, total, rows):
            r = min(rows, total - start)
            if exact:  # bit j of the pattern number -> sign of query j
                codes = np.arange(start, start + r, dtype=np.int64)[:, None]
                signs = 1.0 - 2.0 * ((codes >> np.arange(n, dtype=np.int64)) & 1)  # (r, n)
            else:
                signs = 2.0 * rng.integers(0, 2, size=(r, n), dtype=np.int8) - 1.0  # (r, n)
            a_parts.append(signs @ d / n)
            b_parts.append(signs.sum(1) / n)
        return cls(d=d, a=np.concatenate(a_parts), b=np.concatenate(b_parts), exact=exact)

    def pvalue(self, shift: float = 0.0) -> float:
        """Two-sided p-value of ``mean(d) == shift``."""
        obs = abs(float(self.d.mean()) - shift)
        null = np.abs(self.a - shift * self.b)  # (R,)
        tol = 1e-9 * max(obs, float(np.abs(self.d).mean()), 1e-300)  # float ties (the identity pattern)
        hits = int(np.count_nonzero(null >= obs - tol))
        if self.exact:
            return hits / self.a.size
        return min(1.0, (1 + hits) / (self.a.size + 1))

    def pvalue_one_sided(self, shift: float, alternative: str) -> float:
        """One-sided p-value on the same sign patterns: ``alternative="greater"`` tests
        ``H0: mean(d) <= shift`` (large ``mean(d - shift)`` is evidence against it), ``"less"`` tests
        ``H0: mean(d) >= shift``."""
        if alternative not in ("greater", "less"):
            raise ValueError(f"alternative must be 'greater' or 'less', got {alternative!r}")
        obs = float(self.d.mean()) - shift
        null = self.a - shift * self.b  # (R,)
        tol = 1e-9 * max(abs(obs), float(np.abs(self.d).mean()), 1e-300)
        if alternative == "greater":
            hits = int(np.count_nonzero(null >= obs - tol))
        else:
            hits = int(np.count_nonzero(null <= obs + tol))
        if self.exact:
            return hits / self.a.size
        return min(1.0, (1 + hits) / (self.a.size + 1))

    def tost(self, margin: float) -> float:
        """TOST p-value of ``|mean(d)| < margin``: the larger of the one-sided p-values of
        ``H0: mean(d) <= -margin`` and ``H0: mean(d) >= +margin``."""
        if not margin > 0:
            raise ValueError(f"equivalence margin must be > 0, got {margin!r}")
        return max(self.pvalue_one_sided(-margin, "greater"), self.pvalue_one_sided(margin, "less"))

    def interval(self, level: float) -> tuple[float, float]:
        """Shifts δ not rejected at ``level`` (p(δ) > level): (low, high), ±inf when unbounded."""
        centre = float(self.d.mean())
        step = max(float(self.d.std()) / math.sqrt(self.d.size), 1e-12)

        def end(direction: float) -> float:
            inside = centre
            outside = None
            # 0 is an endpoint bracket when it is rejected: the interval then cannot contain it
            if (0.0 - centre) * direction > 0 and self.pvalue(0.0) <= level:
                outside = 0.0
            k = 0
            while outside is None:
                x = centre + direction * step * 2.0**k
                if self.pvalue(x) <= level:
                    outside = x
                elif k >= 60:
                    return direction * math.inf
                else:
                    inside, k = x, k + 1
            for _ in range(60):  # bisection: inside accepted, outside rejected
                mid = 0.5 * (inside + outside)
                if abs(outside - inside) <= 1e-10 * max(1.0, abs(centre)):
                    break
                if self.pvalue(mid) <= level:
                    outside = mid
                else:
                    inside = mid
            return inside

        low, high = end(-1.0), end(1.0)
        if self.pvalue(0.0) > level:  # the hull of the accepted shifts includes 0
            low, high = min(low, 0.0), max(high, 0.0)
        return low, high


def permutation_pvalue(
    a: np.ndarray, b: np.ndarray, n_resamples: int = DEFAULT_RESAMPLES, seed: int = 0
) -> float:
    """Two-sided paired randomisation (sign-flip) test of the mean difference. a, b: (n,) -> p."""
    a, b = _check_pair(a, b)
    if np.all(a == b):
        return 1.0
    return SignFlipNull.build(a - b, n_resamples, seed).pvalue(0.0)


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


# --------------------------------------------------------------------------- comparisons
@dataclass
class Comparison:
    """One paired comparison ``method`` vs ``baseline`` on ``metric`` (higher is better).

    A degenerate comparison (``degenerate`` = the reason) has no p-values and is not in the Holm
    family; ``holm_ci_*`` is the Holm-adjusted randomisation interval shown beside the verdict,
    ``ci_low``/``ci_high`` the unadjusted 95% t interval.
    """

    method: str
    baseline: str
    metric: str
    n: int
    mean_method: float
    mean_baseline: float
    diff: float  # mean(method - baseline)
    ci_low: float
    ci_high: float
    p_ttest: float | None
    p_perm: float | None
    p_ttest_holm: float | None = None
    p_perm_holm: float | None = None
    significant: bool | None = None  # Holm-adjusted randomisation p <= alpha
    degenerate: str | None = None
    holm_level: float | None = None  # alpha_i of the interval below
    holm_ci_low: float | None = None
    holm_ci_high: float | None = None
    n_resamples: int = DEFAULT_RESAMPLES
    sd_diff: float | None = None  # SD of the per-query differences
    mde_holm: float | None = None  # minimum detectable effect at alpha / m (strictest Holm step)
    mde: float | None = None  # the same at alpha
    family_size: int | None = None  # m: tested comparisons of the Holm family
    margin: float | None = None  # equivalence margin fixed before the test split was read (None: no TOST)
    p_tost: float | None = None  # randomisation TOST p-value (equivalence within ±margin)
    p_tost_ttest: float | None = None  # the paired t-test TOST, a cross-check
    p_tost_holm: float | None = None
    equivalent: bool | None = None  # Holm-adjusted TOST p <= alpha
    _null: SignFlipNull | None = field(default=None, repr=False, compare=False)

    def to_dict(self) -> dict[str, Any]:
        """JSON-safe fields (an unbounded interval end is stored as None)."""
        finite = lambda v: None if isinstance(v, float) and not math.isfinite(v) else v  # noqa: E731
        return {k: finite(v) for k, v in asdict(self).items() if not k.startswith("_")}

    @property
    def verdict(self) -> str:
        """The outcome code: "better" / "worse" (significant, by the sign of diff), "equivalent" (not
        significant, and TOST within the fixed margin), "n.s.", or "not tested" (degenerate).
        :attr:`verdict_text` says it in words."""
        if self.degenerate:
            return "not tested"
        if self.significant:
            return "better" if self.diff > 0 else "worse"
        return "equivalent" if self.equivalent else "n.s."

    @property
    def verdict_text(self) -> str:
        """What the tests showed, in words: "beat", "lost to", "equivalent within ±m", "no
        significant difference (could detect ≥ X)" (X: :attr:`mde_holm`), or "not tested: why"."""
        outcome = self.verdict
        if outcome == "not tested":
            return f"not tested: {self.degenerate}"
        within = f"±{self.margin:g}" if self.margin is not None else ""
        if outcome in ("better", "worse"):
            text = "beat" if outcome == "better" else "lost to"
            return text + (f" (by less than the {within} margin: also equivalent)" if self.equivalent else "")
        if outcome == "equivalent":
            return f"equivalent within {within}"
        text = "no significant difference" + (
            f" (could detect ≥ {self.mde_holm:.4f})" if self.mde_holm is not None else ""
        )
        if self.margin is not None:
            text += f"; not shown equivalent within {within}"
        return text


def compare(
    method: str,
    baseline: str,
    metric: str,
    scores_method: Mapping[str, float],
    scores_baseline: Mapping[str, float],
    n_resamples: int = DEFAULT_RESAMPLES,
    seed: int = 0,
    margin: float | None = None,
) -> Comparison:
    """Paired tests on the queries both systems were scored on. scores: qid -> per-query value.
    ``margin``: the equivalence margin fixed before the test split was read (TOST; None: no
    equivalence test)."""
    qids = sorted(set(scores_method) & set(scores_baseline))
    if not qids:
        raise ValueError(f"{method} vs {baseline} on {metric}: no query scored for both")
    a = np.array([scores_method[q] for q in qids], dtype=np.float64)
    b = np.array([scores_baseline[q] for q in qids], dtype=np.float64)
    d = float((a - b).mean())
    common = dict(
        method=method,
        baseline=baseline,
        metric=metric,
        n=len(qids),
        mean_method=float(a.mean()),
        mean_baseline=float(b.mean()),
        diff=d,
        n_resamples=n_resamples,
        margin=margin,
    )
    reason = degenerate_reason(a, b)
    if reason:
        return Comparison(**common, ci_low=d, ci_high=d, p_ttest=None, p_perm=None, degenerate=reason)
    p_t, lo, hi = paired_ttest(a, b)
    null = SignFlipNull.build(a - b, n_resamples, seed)
    tost = {}
    if margin is not None:
        tost = {"p_tost": null.tost(margin), "p_tost_ttest": paired_tost_ttest(a, b, margin)}
    return Comparison(
        **common,
        ci_low=lo,
        ci_high=hi,
        p_ttest=p_t,
        p_perm=null.pvalue(0.0),
        sd_diff=float((a - b).std(ddof=1)),
        **tost,
        _null=null,
    )


def apply_holm(comparisons: list[Comparison], alpha: float = ALPHA) -> list[Comparison]:
    """Holm over the non-degenerate comparisons of one family (one dataset): adjusted p-values,
    verdicts, Holm-adjusted intervals, minimum detectable effects and (with a margin) Holm-adjusted
    TOST p-values, filled in place."""
    tested = [c for c in comparisons if not c.degenerate]
    for c in tested:
        c.family_size = len(tested)
        if c.sd_diff is not None:
            c.mde = mde(c.sd_diff, c.n, alpha)
            c.mde_holm = mde(c.sd_diff, c.n, alpha / len(tested))
    with_margin = [c for c in tested if c.p_tost is not None]
    for adj, c in zip(holm([c.p_tost for c in with_margin]), with_margin, strict=True):
        c.p_tost_holm = adj
        c.equivalent = adj <= alpha
    for adj, c in zip(holm([c.p_ttest for c in tested]), tested, strict=True):
        c.p_ttest_holm = adj
    p = [c.p_perm for c in tested]
    adjusted = holm(p)
    for i, step in holm_steps(p):
        c, adj = tested[i], adjusted[i]
        c.p_perm_holm = adj
        c.significant = adj <= alpha
        # the Holm step's level, tightened where monotonicity raised adj: 0 is outside iff adj <= alpha
        level = min(alpha / step, alpha * c.p_perm / adj)
        # guard the float boundary: the interval's test of 0 must reproduce the verdict exactly
        c.holm_level = max(level, c.p_perm) if c.significant else min(level, np.nextafter(c.p_perm, 0.0))
        if c._null is not None:
            c.holm_ci_low, c.holm_ci_high = c._null.interval(c.holm_level)
    return comparisons
