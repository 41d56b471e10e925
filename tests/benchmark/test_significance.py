"""Significance helpers: Holm against a hand example, paired tests against scipy, interval coverage."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import stats

from maw.benchmark.significance import (
    Comparison,
    apply_holm,
    bootstrap_ci,
    compare,
    holm,
    mean_ci,
    paired_ttest,
    permutation_pvalue,
)


def test_holm_hand_example():
    # sorted p: 0.005 (x4 = 0.02), 0.01 (x3 = 0.03), 0.03 (x2 = 0.06), 0.04 (x1 = 0.04 -> monotone 0.06)
    assert holm([0.01, 0.04, 0.03, 0.005]) == pytest.approx([0.03, 0.06, 0.06, 0.02])
    # capped at 1, None passes through and does not count towards m
    assert holm([0.5, None, 0.4]) == [pytest.approx(0.8), None, pytest.approx(0.8)]
    assert holm([0.9, 0.8]) == [1.0, 1.0]
    assert holm([]) == []


def test_holm_rejections_match_stepdown_procedure():
    rng = np.random.default_rng(3)
    for _ in range(50):
        p = rng.uniform(0, 0.1, size=7)
        adj = holm(list(p))
        order = np.argsort(p)
        reject = np.zeros(7, bool)
        for rank, i in enumerate(order):  # classic step-down: stop at the first non-rejection
            if p[i] <= 0.05 / (7 - rank):
                reject[i] = True
            else:
                break
        assert np.array_equal(np.array(adj) <= 0.05, reject)


def test_paired_ttest_matches_scipy():
    rng = np.random.default_rng(0)
    a = rng.uniform(0, 1, 40)
    b = np.clip(a - 0.05 + rng.normal(0, 0.1, 40), 0, 1)
    p, lo, hi = paired_ttest(a, b)
    ref = stats.ttest_rel(a, b)
    assert p == pytest.approx(ref.pvalue)
    d = a - b
    half = stats.t.ppf(0.975, len(d) - 1) * d.std(ddof=1) / np.sqrt(len(d))
    assert (lo, hi) == pytest.approx((d.mean() - half, d.mean() + half))


def test_paired_ttest_degenerate():
    a = np.array([0.5, 0.2, 0.9])
    assert paired_ttest(a, a) == (1.0, 0.0, 0.0)
    p, lo, hi = paired_ttest(a + 0.1, a)
    assert p == 0.0 and lo == pytest.approx(0.1) and hi == pytest.approx(0.1)
    with pytest.raises(ValueError, match="equal length"):
        paired_ttest(a, a[:2])


def test_permutation_exact_against_enumeration():
    # n = 8 -> 256 sign patterns <= n_resamples: scipy enumerates exactly; compare with our own enumeration
    rng = np.random.default_rng(1)
    a = rng.uniform(0, 1, 8)
    b = a - rng.normal(0.1, 0.1, 8)
    d = a - b
    signs = np.array(np.meshgrid(*[[-1, 1]] * 8)).reshape(8, -1).T
    null = (signs * d).mean(1)
    expected = np.mean(np.abs(null) >= abs(d.mean()) - 1e-12)
    assert permutation_pvalue(a, b) == pytest.approx(expected)


def test_permutation_agrees_with_ttest_on_large_sample():
    rng = np.random.default_rng(2)
    a = rng.uniform(0, 1, 200)
    b = np.clip(a - 0.02 + rng.normal(0, 0.1, 200), 0, 1)
    p_perm = permutation_pvalue(a, b, n_resamples=5000)
    p_t = stats.ttest_rel(a, b).pvalue
    assert abs(p_perm - p_t) < 0.03
    assert permutation_pvalue(a, a) == 1.0


def test_ci_contains_true_mean_difference():
    # constructed case: b = a - 0.1 + symmetric noise with known mean 0 -> true mean difference 0.1
    rng = np.random.default_rng(7)
    covered_t = covered_boot = 0
    trials = 40
    for _ in range(trials):
        a = rng.uniform(0.3, 0.9, 100)
        b = a - 0.1 + rng.normal(0, 0.05, 100)
        _, lo, hi = paired_ttest(a, b)
        covered_t += lo <= 0.1 <= hi
        blo, bhi = bootstrap_ci(a, b, n_resamples=2000, seed=1)
        covered_boot += blo <= 0.1 <= bhi
    assert covered_t >= 0.85 * trials and covered_boot >= 0.85 * trials
    # a single exactly-known case: the interval of differences all around 0.1 contains 0.1
    a = np.linspace(0.2, 0.8, 21)
    b = a - 0.1 + np.tile([-0.01, 0.01, 0.0], 7)
    _, lo, hi = paired_ttest(a, b)
    assert lo < 0.1 < hi


def test_mean_ci():
    m, lo, hi = mean_ci(np.array([0.2, 0.4, 0.6]))
    half = stats.t.ppf(0.975, 2) * 0.2 / np.sqrt(3)
    assert (m, lo, hi) == pytest.approx((0.4, 0.4 - half, 0.4 + half))
    assert mean_ci(np.array([0.3])) == (0.3, 0.3, 0.3)


def test_compare_pairs_by_query_and_holm_verdicts():
    rng = np.random.default_rng(5)
    base = {f"q{i}": float(v) for i, v in enumerate(rng.uniform(0, 1, 80))}
    better = {q: v + 0.1 + rng.normal(0, 0.02) for q, v in base.items()}
    same = {q: v + rng.normal(0, 0.05) for q, v in base.items()}
    worse = {q: v - 0.1 + rng.normal(0, 0.02) for q, v in base.items()}
    better["extra"] = 1.0  # scored for one system only: not paired
    comps = [
        compare(name, "base", "nDCG@10", s, base, n_resamples=2000)
        for name, s in (("better", better), ("same", same), ("worse", worse))
    ]
    assert comps[0].n == 80
    apply_holm(comps)
    assert [c.verdict for c in comps] == ["better", "n.s.", "worse"]
    assert all(c.p_perm_holm >= c.p_perm for c in comps)
    assert isinstance(Comparison(**comps[0].to_dict()), Comparison)
    with pytest.raises(ValueError, match="no query scored for both"):
        compare("a", "b", "AP", {"x": 1.0}, {"y": 1.0})


def test_sign_flip_interval_and_unbounded_small_samples():
    from maw.benchmark.significance import SignFlipNull

    rng = np.random.default_rng(8)
    d = rng.normal(0.1, 0.05, 60)
    null = SignFlipNull.build(d, n_resamples=4000, seed=0)
    lo, hi = null.interval(0.05)
    t_lo, t_hi = stats.ttest_1samp(d, 0.0).confidence_interval(0.95)
    assert lo == pytest.approx(t_lo, abs=0.01) and hi == pytest.approx(t_hi, abs=0.01)
    assert null.pvalue(lo) > 0.05 and null.pvalue(hi) > 0.05
    # n = 4: the smallest exact two-sided p is 2 / 16 > 0.05, so no shift is ever rejected
    comps = [
        compare(
            "a",
            "b",
            "AP",
            {f"q{i}": v for i, v in enumerate([0.9, 0.8, 0.7, 0.95])},
            {f"q{i}": v for i, v in enumerate([0.1, 0.2, 0.3, 0.1])},
        )
    ]
    apply_holm(comps)
    c = comps[0]
    assert c.verdict == "n.s." and c.holm_ci_low == -np.inf and c.holm_ci_high == np.inf
    assert c.to_dict()["holm_ci_low"] is None and c.to_dict()["holm_ci_high"] is None


def test_tost_randomisation_agrees_with_the_t_test_version_and_holm():
    """Equivalence within ±m: two one-sided sign-flip tests on the same patterns as the two-sided one."""
    from maw.benchmark.significance import SignFlipNull, paired_tost_ttest

    rng = np.random.default_rng(3)
    b = rng.uniform(0.2, 0.8, 150)
    noise = rng.normal(0.0, 0.02, 150)
    close = b + noise - noise.mean() + 0.001  # mean difference 0.001: well inside ±0.02
    null = SignFlipNull.build(close - b, n_resamples=4000, seed=0)
    p_rand, p_t = null.tost(0.02), paired_tost_ttest(close, b, 0.02)
    assert p_rand < 0.01 and p_t < 0.01 and p_rand == pytest.approx(p_t, abs=0.01)
    # each one-sided p against scipy's one-sided t-test
    d = close - b
    assert null.pvalue_one_sided(-0.02, "greater") == pytest.approx(
        stats.ttest_1samp(d, -0.02, alternative="greater").pvalue, abs=0.01
    )
    # a margin inside the observed difference: never equivalent
    assert null.tost(abs(d.mean()) / 2) > 0.3 and null.pvalue(0.0) > 0.3
    # exact enumeration for small n: p is a share of the 2**n patterns
    small = SignFlipNull.build(np.array([0.01, -0.02, 0.015, 0.0, 0.005]), n_resamples=10_000)
    assert small.exact and small.tost(0.5) == pytest.approx(1 / 32)
    comps = [
        compare("a", "b", "AP", dict(enumerate(close)), dict(enumerate(b)), n_resamples=2000, margin=0.02),
        compare("c", "b", "AP", dict(enumerate(b + 0.1)), dict(enumerate(b)), n_resamples=2000, margin=0.02),
    ]
    apply_holm(comps)
    assert comps[0].verdict == "equivalent" and comps[0].verdict_text == "equivalent within ±0.02"
    assert comps[1].degenerate  # the same shift on every query
    no_margin = compare("a", "b", "AP", dict(enumerate(close)), dict(enumerate(b)), n_resamples=2000)
    apply_holm([no_margin])
    assert no_margin.verdict == "n.s." and no_margin.p_tost is None
    assert no_margin.verdict_text == f"no significant difference (could detect ≥ {no_margin.mde_holm:.4f})"
