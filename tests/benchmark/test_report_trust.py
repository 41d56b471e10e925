"""Reports that can be trusted: Holm family without degenerate tests, intervals that match the
verdicts, honest seed and completeness notes, efficiency without cross-kind ratios, plots that
show what the router does. All on small synthetic cells."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
from bench_testkit import synthetic_cell, write_synthetic_run

from maw.benchmark import plots
from maw.benchmark.cells import load_cells, new_cell, write_cell
from maw.benchmark.report import (
    MIN_TIMING_SAMPLES,
    build_reports,
    dataset_report,
    history_curve,
    router_kind,
    significance_tests,
    timing_conclusion,
)
from maw.benchmark.significance import apply_holm, compare

HISTORY = [  # the trainer's format: "val" holds the ir_measures names
    {"epoch": 0, "val": {"nDCG@10": 0.50, "R@100": 0.9}},
    {"epoch": 1, "train_loss": 1.20, "val": {"nDCG@10": 0.55, "R@100": 0.9}},
    {"epoch": 2, "train_loss": 0.90, "val": {"nDCG@10": 0.60, "R@100": 0.9}},
]


def _config(run, datasets, methods, seeds):
    (run / "config.json").write_text(
        json.dumps({"datasets": datasets, "methods": methods, "seeds": list(seeds)})
    )


def _section(md: str, start: str, end: str = "\n### ") -> str:
    i = md.index(start)
    j = md.find(end, i + len(start))
    return md[i : j if j > 0 else len(md)]


# --------------------------------------------------------------------------- significance
def test_degenerate_comparisons_left_out_of_holm(tmp_path):
    rng = np.random.default_rng(0)
    base = rng.uniform(0.2, 0.7, 40)
    for method, scores in (("finetune", base), ("maw", base + rng.normal(0.02, 0.02, 40))):
        cell = synthetic_cell("d", method, 1, scores, history=HISTORY)
        cell["per_query"]["R@100"] = {f"q{i}": 1.0 for i in range(40)}  # both perfect: identical scores
        write_cell(tmp_path, cell)
    comps = significance_tests({m: [c] for m, c in ((c["method"], c) for c in load_cells(tmp_path))})
    by_metric = {c.metric: c for c in comps}
    r100 = by_metric["R@100"]
    assert r100.degenerate == "identical scores on every query"
    assert r100.p_perm is None and r100.p_perm_holm is None and r100.verdict == "not tested"
    # the family has 3 members, not 4: the smallest raw p is multiplied by 3
    tested = [c for c in comps if not c.degenerate]
    assert len(tested) == 3
    smallest = min(tested, key=lambda c: c.p_perm)
    assert smallest.p_perm_holm == pytest.approx(min(1.0, 3 * smallest.p_perm))

    _config(tmp_path, ["d"], ["finetune", "maw"], [1])
    build_reports(tmp_path, n_resamples=2000)
    md = (tmp_path / "REPORT.md").read_text()
    assert "Holm over the 3 tested comparisons" in md
    assert "Left out of the Holm family (degenerate, not tested): 1 comparisons." in md
    assert "- maw vs finetune, R@100 (1.0000 vs 1.0000): identical scores on every query" in md


def test_constant_shift_is_degenerate():
    base = {f"q{i}": 0.1 * i for i in range(10)}
    shifted = {q: v + 0.05 for q, v in base.items()}
    c = compare("maw", "finetune", "AP", shifted, base)
    assert c.degenerate and "zero variance" in c.degenerate and c.p_perm is None


def test_holm_interval_matches_verdict_on_many_families():
    rng = np.random.default_rng(11)
    checked = disagree_unadjusted = 0
    for trial in range(30):
        n = int(rng.integers(8, 60))
        base = {f"q{i}": float(v) for i, v in enumerate(rng.uniform(0, 1, n))}
        comps = []
        for k in range(int(rng.integers(2, 9))):
            shift = float(rng.normal(0.0, 0.05))
            other = {q: v + shift + float(rng.normal(0, 0.1)) for q, v in base.items()}
            comps.append(compare(f"m{k}", "base", "nDCG@10", other, base, n_resamples=2000, seed=trial))
        apply_holm(comps)
        for c in comps:
            excludes_zero = c.holm_ci_low > 0 or c.holm_ci_high < 0
            assert excludes_zero == bool(c.significant), c
            assert c.holm_ci_low <= c.diff <= c.holm_ci_high
            assert 0 < c.holm_level <= 0.05
            disagree_unadjusted += (c.ci_low > 0 or c.ci_high < 0) != bool(c.significant)
            checked += 1
    assert checked > 100
    assert disagree_unadjusted > 0  # the unadjusted interval would have contradicted some verdicts


def test_holm_interval_is_the_holm_step_level():
    rng = np.random.default_rng(4)
    base = {f"q{i}": float(v) for i, v in enumerate(rng.uniform(0, 1, 80))}
    comps = [
        compare(f"m{k}", "base", "AP", {q: v + d + float(rng.normal(0, 0.05)) for q, v in base.items()}, base)
        for k, d in enumerate((0.2, 0.1, 0.0))
    ]
    apply_holm(comps)
    strongest = min(comps, key=lambda c: c.p_perm)
    # the smallest p is tested at alpha / m; its interval is wider than the unadjusted 95% one
    assert strongest.holm_level == pytest.approx(0.05 / 3)
    assert strongest.holm_ci_high - strongest.holm_ci_low > strongest.ci_high - strongest.ci_low


# --------------------------------------------------------------------------- seeds and completeness
def test_single_seed_says_training_variance_unknown(tmp_path):
    write_synthetic_run(tmp_path, "d", {"bm25": 0.0, "finetune": 0.02, "maw": 0.03}, seeds=(42,))
    _config(tmp_path, ["d"], ["bm25", "finetune", "maw"], [42])
    combined = build_reports(tmp_path, n_resamples=500)
    md = (tmp_path / "REPORT.md").read_text()
    summary = (tmp_path / "summary.txt").read_text()
    for text in (md, summary):
        head = "\n".join(text.splitlines()[:8])
        assert "ONE SEED (42)" in head and "training variance is unknown" in head
    assert "±" not in _section(summary, "== d ==", "\n\n")
    table = _section(md, "### Test metrics")
    assert "training variance unknown" in table and "±" not in table and "mean ± std" not in table
    assert combined["datasets"]["d"]["methods"]["maw"]["metrics"]["nDCG@10"]["std"] is None
    assert combined["missing_cells"] == []


def test_multi_seed_shows_std_and_marks_single_runs(tmp_path):
    write_synthetic_run(tmp_path, "d", {"bm25": 0.0, "finetune": 0.02, "maw": 0.03}, seeds=(1, 2))
    (tmp_path / "cells" / "d" / "finetune-seed2.json").unlink()
    _config(tmp_path, ["d"], ["bm25", "finetune", "maw"], [1, 2])
    build_reports(tmp_path, n_resamples=500)
    table = _section((tmp_path / "REPORT.md").read_text(), "### Test metrics")
    maw_row = next(r for r in table.splitlines() if r.startswith("| maw"))
    finetune_row = next(r for r in table.splitlines() if r.startswith("| finetune"))
    assert "±" in maw_row and "mean ± std" in table
    assert "(1 run)" in finetune_row and "±" not in finetune_row


def test_missing_and_failed_cells_listed_first(tmp_path):
    write_synthetic_run(tmp_path, "a", {"bm25": 0.0, "finetune": 0.02, "maw": 0.03}, seeds=(1, 2))
    (tmp_path / "cells" / "a" / "maw-seed2.json").unlink()
    failed = new_cell("a", "finetune", 2)
    failed["error"] = "RuntimeError: out of memory"
    write_cell(tmp_path, failed)
    # dataset b was configured but the run was interrupted before it started
    _config(tmp_path, ["a", "../somewhere/b/"], ["bm25", "finetune", "maw"], [1, 2])
    combined = build_reports(tmp_path, n_resamples=500)
    missing = {(m["dataset"], m["method"], m["seed"]): m["status"] for m in combined["missing_cells"]}
    assert missing[("a", "maw", 2)] == "not on disk" and missing[("a", "finetune", 2)] == "failed"
    assert {k for k in missing if k[0] == "b"} == {
        ("b", m, s) for m in ("bm25", "finetune", "maw") for s in (1, 2)
    }
    assert len(missing) == 8
    for name in ("REPORT.md", "summary.txt"):
        head = "\n".join((tmp_path / name).read_text().splitlines()[:16])
        assert "INCOMPLETE RUN: 8 of 12 configured cells" in head, name
        assert "a maw seed 2: not on disk" in head
        assert "a finetune seed 2: failed (RuntimeError: out of memory)" in head
        assert "b bm25 seed 1: not on disk" in head


# --------------------------------------------------------------------------- efficiency
def _latency_cells(run, dataset, latencies: dict[str, list[float] | None], seeds=(1,)):
    """One cell per method and seed; a method's latency samples are split evenly over its seeds."""
    rng = np.random.default_rng(3)
    base = rng.uniform(0.2, 0.7, 30)
    for m, samples in latencies.items():
        for k, seed in enumerate(seeds):
            cell = synthetic_cell(dataset, m, seed, base + rng.normal(0, 0.02, 30), history=HISTORY)
            if samples is not None:
                cell["timings"] = {"query_latency_samples_ms": list(samples[k :: len(seeds)])}
            write_cell(run, cell)


def test_no_cross_kind_or_relative_efficiency(tmp_path):
    write_synthetic_run(
        tmp_path, "d", {"bm25": 0.0, "zeroshot": 0.01, "finetune": 0.02, "maw": 0.03}, seeds=(1,)
    )
    rep = dataset_report("d", load_cells(tmp_path), n_resamples=500)
    assert rep["efficiency"], "dense methods are compared with each other"
    assert all("bm25" not in (r["method"], r["baseline"]) for r in rep["efficiency"])
    # one latency value per run: a single measurement, never a conclusion
    assert all(not r["resolved"] for r in rep["efficiency"])
    assert {r["text"] for r in rep["efficiency"] if r["figure"] == "query_latency_ms"} == {
        "no difference resolved (single measurement)"
    }
    assert all("query_latency_ms" != r["figure"] for r in rep["improvements"])
    build_reports(tmp_path, n_resamples=500)
    eff = _section((tmp_path / "REPORT.md").read_text(), "### Efficiency")
    assert "%" not in eff and "single measurement" in eff and "No runtime difference resolved" in eff
    assert "lexical: bm25" in eff and "are not compared on runtime" in eff


def test_latency_samples_give_median_spread_and_conclusions(tmp_path):
    rng = np.random.default_rng(0)
    fast = list(rng.normal(5.0, 0.2, 40))
    slow = list(rng.normal(9.0, 0.2, 40))
    overlapping = list(rng.normal(5.1, 0.5, 40))
    latencies = {"bm25": [0.1] * 40, "zeroshot": slow, "lora": overlapping, "finetune": slow, "maw": fast}
    _latency_cells(tmp_path / "two", "d", latencies, seeds=(1, 2))
    rep = dataset_report("d", load_cells(tmp_path / "two"), n_resamples=500)
    t = rep["methods"]["maw"]["timings"]["query_latency_ms"]
    assert t["n"] == 40 and t["source"] == "per-query timings" and len(t["runs"]) == 2
    assert t["median"] == pytest.approx(float(np.median(fast))) and t["q25"] < t["median"] < t["q75"]
    text = {(r["method"], r["baseline"]): r for r in rep["efficiency"] if r["figure"] == "query_latency_ms"}
    assert text[("maw", "finetune")]["resolved"] and text[("maw", "finetune")]["text"].startswith(
        "maw faster"
    )
    assert text[("maw", "lora")]["text"] == "no difference resolved (spreads overlap)"
    # zero-shot does not depend on the seed: it ran once, so nothing is resolved against it
    assert text[("maw", "zeroshot")]["text"] == (
        "no difference resolved (one run of a side: the load between runs is unknown)"
    )
    assert ("maw", "bm25") not in text
    build_reports(tmp_path / "two", n_resamples=500)
    eff = _section((tmp_path / "two" / "REPORT.md").read_text(), "### Efficiency")
    assert "maw faster: median" in eff and "(n=40)" in eff and "%" not in eff
    # one run per method: however clear the per-query spread, the load between runs is unknown
    _latency_cells(tmp_path / "one", "d", latencies)
    rep = dataset_report("d", load_cells(tmp_path / "one"), n_resamples=500)
    assert not any(r["resolved"] for r in rep["efficiency"])
    text = {
        (r["method"], r["baseline"]): r["text"]
        for r in rep["efficiency"]
        if r["figure"] == "query_latency_ms"
    }
    assert (
        text[("maw", "zeroshot")]
        == "no difference resolved (one run of a side: the load between runs is unknown)"
    )


def test_timing_conclusion_needs_enough_samples():
    few = {"median": 1.0, "q25": 0.9, "q75": 1.1, "n": MIN_TIMING_SAMPLES - 1, "source": "x"}
    many = {"median": 5.0, "q25": 4.9, "q75": 5.1, "n": 50, "source": "x", "runs": [4.9, 5.1]}
    assert timing_conclusion("query_latency_ms", "a", "b", few, many)["text"] == (
        "no difference resolved (too few samples)"
    )
    lower = {**many, "median": 2.0, "q25": 1.9, "q75": 2.1, "runs": [1.9, 2.1]}
    higher = timing_conclusion("qps", "a", "b", many, lower)
    assert higher["resolved"] and higher["better"] and higher["text"].startswith("a higher")
    # the pooled spreads are apart but one run of b sits among a's runs: no conclusion
    disagree = timing_conclusion("qps", "a", "b", many, {**lower, "runs": [1.9, 5.0]})
    assert disagree["text"] == "no difference resolved (the runs disagree)"


def test_identical_runs_give_identical_conclusions(tmp_path):
    runs = []
    for k, jitter in enumerate((1.0, 2.3)):  # the same scores, very different single timings
        run = tmp_path / f"run{k}"
        write_synthetic_run(
            run, "d", {"bm25": 0.0, "zeroshot": 0.01, "finetune": 0.02, "maw": 0.04}, seeds=(42,)
        )
        for p in (run / "cells" / "d").glob("*.json"):
            cell = json.loads(p.read_text())
            cell["runtimes"]["query_latency_ms"] *= jitter if cell["method"] == "maw" else 1.0
            p.write_text(json.dumps(cell))
        runs.append(build_reports(run, n_resamples=1000)["datasets"]["d"])
    a, b = runs
    assert a["verdict"] == b["verdict"] and a["significance"] == b["significance"]
    assert [r["text"] for r in a["efficiency"]] == [r["text"] for r in b["efficiency"]]


# --------------------------------------------------------------------------- history and plots
def test_history_reads_exactly_the_trainer_names():
    cur = history_curve(HISTORY)
    assert cur == {"epoch": [0, 1, 2], "val_ndcg10": [0.50, 0.55, 0.60], "train_loss": [None, 1.20, 0.90]}
    # other spellings are not guessed
    assert history_curve([{"epoch": 0, "val_ndcg@10": 0.5, "loss": 1.0}])["val_ndcg10"] == [None]


class _Captured:
    def __init__(self, monkeypatch):
        self.figs = []
        real = plots._save

        def save(fig, path):
            self.figs.append(fig)
            return real(fig, path)

        monkeypatch.setattr(plots, "_save", save)


def _titles(fig) -> list[str]:
    return [ax.get_title() for ax in fig.axes]


def test_soft_depth_plot_shows_entropy_not_choices(tmp_path, monkeypatch):
    cap = _Captured(monkeypatch)
    D, H = 8, 3
    near_uniform = [2.0788, 2.0791, 2.0794]
    counts = [[40, 0, 0, 0, 0, 0, 0, 0], [0, 40, 0, 0, 0, 0, 0, 0], [0, 0, 0, 0, 0, 0, 0, 40]]
    plots.plot_depth(tmp_path / "soft.png", "t", {"6": {"counts": counts, "entropy": near_uniform}}, "soft")
    fig = cap.figs[-1]
    main, secondary = fig.axes[0], fig.axes[1]
    assert "entropy" in main.get_title() and "mean H / ln D = 0.99" in main.get_title()
    assert [p.get_height() for p in main.patches] == pytest.approx(near_uniform)
    assert any(np.allclose(line.get_ydata(), math.log(D)) for line in main.get_lines())  # the ln D line
    assert "SECONDARY" in secondary.get_title() and "not a choice" in secondary.get_title()
    assert (tmp_path / "soft.png").read_bytes()[:4] == b"\x89PNG"

    plots.plot_depth(tmp_path / "hard.png", "t", {"6": {"counts": counts, "entropy": [0.1] * H}}, "gumbel")
    titles = _titles(cap.figs[-1])
    assert "depth choice frequency (gumbel router)" in titles[0]
    assert not any("SECONDARY" in t for t in titles)


def test_router_kind_from_stats_then_config():
    assert router_kind({"router_stats": {"router": "grpo"}, "config": {}}) == "grpo"
    assert router_kind({"router_stats": {}, "config": {"maw": {"router": "supervised"}}}) == "supervised"
    assert router_kind({"router_stats": {}, "config": {}}) == "soft"


def test_curves_integer_epochs_offsets_and_single_points(tmp_path, monkeypatch):
    cap = _Captured(monkeypatch)
    same = {"epoch": [0, 1], "val_ndcg10": [0.5, 0.6], "train_loss": [None, 1.0]}  # one loss point each
    plots.plot_training_curves(tmp_path / "c.png", "t", {"maw seed 1": same, "finetune seed 1": same})
    val_ax, loss_ax = cap.figs[-1].axes[:2]
    for ax in (val_ax, loss_ax):
        ticks = ax.get_xticks()
        assert np.allclose(ticks, np.round(ticks))
    assert list(loss_ax.get_xticks()) == [1]
    xs = [tuple(line.get_xdata()) for line in val_ax.get_lines()]
    assert len(set(xs)) == 2  # identical values are drawn apart, not on top of each other
    for line in loss_ax.get_lines():
        assert line.get_linestyle() == "None" and line.get_marker() not in (None, "", "None")


def test_tradeoff_uses_legend_not_point_labels(tmp_path, monkeypatch):
    cap = _Captured(monkeypatch)
    pts = {
        "finetune": (7.5, 7.0, 8.0, 0.76, 50),
        "maw": (7.6, 7.1, 8.2, 0.766, 50),
        "bm25": (0.1, 0.1, 0.1, 0.5, 1),
    }
    plots.plot_tradeoff(tmp_path / "t.png", "t", pts)
    ax = cap.figs[-1].axes[0]
    assert not ax.texts  # no text drawn over the points
    names = [t.get_text() for t in ax.get_legend().get_texts()]
    assert len(names) == 3 and any(n.startswith("maw: 7.6 ms") for n in names)
    assert any("(1 measurement)" in n for n in names)


def test_all_plots_produced_and_depth_uses_router(tmp_path):
    write_synthetic_run(tmp_path, "d", {"bm25": 0.0, "finetune": 0.02, "maw": 0.03}, seeds=(1, 2))
    for p in (tmp_path / "cells" / "d").glob("*.json"):
        cell = json.loads(p.read_text())
        if cell["method"] not in ("bm25", "zeroshot"):
            cell["history"] = HISTORY
        if cell["method"] == "maw":
            cell["router_stats"]["router"] = "grpo"
        p.write_text(json.dumps(cell))
    combined = build_reports(tmp_path, n_resamples=500)
    made = combined["datasets"]["d"]["plots"]
    assert set(made) == {"metrics", "curves", "depth_maw", "tradeoff"}
    for rel in made.values():
        assert (tmp_path / rel).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert "Plot errors" not in (tmp_path / "REPORT.md").read_text()


def test_stale_plots_removed_when_their_cells_are_gone(tmp_path):
    write_synthetic_run(tmp_path, "d", {"bm25": 0.0, "finetune": 0.02, "maw": 0.03}, seeds=(1,))
    build_reports(tmp_path, n_resamples=500)
    assert (tmp_path / "plots" / "d_depth_maw.png").exists()
    (tmp_path / "cells" / "d" / "maw-seed1.json").unlink()
    combined = build_reports(tmp_path, n_resamples=500)
    assert "depth_maw" not in combined["datasets"]["d"]["plots"]
    assert not (tmp_path / "plots" / "d_depth_maw.png").exists()
    assert (tmp_path / "plots" / "d_metrics.png").exists()


def test_the_report_says_how_validation_selected_the_epoch():
    from maw.benchmark.report import validation_notes

    cells = [
        {
            "dataset": "big",
            "status": "ok",
            "train_setup": {"validation": "pool of 900 documents: judged + BM25 top-100"},
        },
        {
            "dataset": "small",
            "status": "ok",
            "train_setup": {"validation": "full corpus", "validation_documents": 2000},
        },
        {"dataset": "small", "status": "ok", "train_setup": {}},  # bm25 / zeroshot: no training
    ]
    (note,) = validation_notes(cells)
    assert "pool re-ranks judged + BM25 documents" in note
    assert (
        "  - big: pool of 900 documents: judged + BM25 top-100" in note
        and "  - small: full corpus (2,000 documents)" in note
    )
    assert validation_notes(cells[1:]) == [
        "Model selection (early stopping, best epoch) used validation nDCG@10 retrieved from:\n  - small: full corpus (2,000 documents)"
    ]
    assert validation_notes([]) == []
