"""Reports rebuilt from synthetic cells: every file, the verdict sentences, CSV schema, improvements."""

from __future__ import annotations

import csv
import json

import pytest
from bench_testkit import synthetic_cell, write_synthetic_run, write_three_datasets

from maw.benchmark.cells import (
    CellError,
    cell_path,
    dataset_key,
    is_done,
    load_cells,
    new_cell,
    read_cell,
    write_cell,
)
from maw.benchmark.report import (
    PRIMARY_METRICS,
    build_reports,
    comparison_pairs,
    dataset_report,
    higher_is_better,
    improvements,
    summarise_method,
)


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    run = write_three_datasets(tmp_path_factory.mktemp("bench") / "run")
    failed = new_cell("same", "lora", 13)
    failed["error"] = "TrainingError: non-finite loss at epoch 1 step 3"
    write_cell(run, failed)
    (run / "config.json").write_text(
        json.dumps({"datasets": ["better", "worse", "same"], "methods": ["bm25", "maw"]})
    )
    (run / "environment.json").write_text(json.dumps({"torch": "2.13.0", "python": "3.11"}))
    combined = build_reports(run, n_resamples=2000)
    return run, combined


def test_every_file_produced(built):
    run, combined = built
    for name in ("results.json", "results.csv", "summary.txt", "REPORT.md"):
        assert (run / name).stat().st_size > 0, name
    for ds in ("better", "worse", "same"):
        res = json.loads((run / "results" / f"{ds}.json").read_text())
        assert set(res["methods"]) >= {"bm25", "zeroshot", "finetune", "maw"}
        assert len(res["cells"]) >= 8 and all("per_query" in c and "history" in c for c in res["cells"])
        for kind in ("metrics", "curves", "depth_maw", "tradeoff"):
            png = run / res["plots"][kind]
            assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n", png
    assert combined["n_failed"] == 1 and combined["config"]["methods"] == ["bm25", "maw"]
    assert list(combined["datasets"]) == ["better", "worse", "same"]  # the config's order
    # no temporary files left behind by the atomic writers
    assert not list(run.rglob("*.tmp"))


def test_verdict_sentences(built):
    run, combined = built
    report = (run / "REPORT.md").read_text()
    v = {ds: combined["datasets"][ds]["verdict"] for ds in ("better", "worse", "same")}
    assert v["better"]["outcome"] == "better"
    assert v["worse"]["outcome"] == "worse"
    assert v["same"]["outcome"] == "n.s."
    assert "better: MAW beat the capacity-matched baseline (finetune): nDCG@10" in report
    assert "worse: MAW lost to the capacity-matched baseline (finetune): nDCG@10" in report
    same = v["same"]["comparison"]
    assert (
        "same: no significant difference between MAW and the capacity-matched baseline (finetune) "
        f"(the test could detect ≥ {same['mde_holm']:.4f} nDCG@10 with 80% power)"
    ) in report
    assert "no equivalence is claimed" in v["same"]["sentence"]  # no margin in config.json
    assert "equivalent" not in v["better"]["sentence"] + v["worse"]["sentence"]
    assert "untrained:" not in report and combined["datasets"]["better"]["untrained"] == []  # no best_epoch
    c = v["better"]["comparison"]
    # the numbers in the sentence are the comparison's
    assert f"{c['mean_method']:.4f} vs {c['mean_baseline']:.4f}" in v["better"]["sentence"]
    assert c["diff"] == pytest.approx(0.07, abs=0.01) and c["p_perm_holm"] <= 0.05 and c["n"] == 60
    for section in (
        "## Settings",
        "### Resolved configuration",
        "### Environment",
        "fingerprint `abc123`",
        "split provenance",
        "(plots/better_metrics.png)",
        "### Paired significance tests",
    ):
        assert section in report, section


def test_verdict_missing_when_maw_absent(tmp_path):
    write_synthetic_run(tmp_path, "d", {"bm25": 0.0, "finetune": 0.01})
    failed = new_cell("d", "maw", 13)
    failed["error"] = "RuntimeError: out of memory"
    write_cell(tmp_path, failed)
    rep = dataset_report("d", load_cells(tmp_path), n_resamples=500)
    assert rep["verdict"]["outcome"] == "missing"
    assert "maw failed" in rep["verdict"]["sentence"]
    assert rep["failed"] == [{"method": "maw", "seed": 13, "error": "RuntimeError: out of memory"}]


def test_failed_cells_reported(built):
    run, combined = built
    summary = (run / "summary.txt").read_text()
    assert "FAILED lora seed 13: TrainingError: non-finite loss at epoch 1 step 3" in summary
    assert "non-finite loss" in (run / "REPORT.md").read_text()
    assert "lora" not in combined["datasets"]["same"]["methods"]


def test_csv_schema(built):
    run, _ = built
    with (run / "results.csv").open() as fh:
        rows = list(csv.reader(fh))
    assert rows[0] == ["dataset", "method", "seed", "metric", "value"]
    body = rows[1:]
    assert all(len(r) == 5 for r in body)
    assert {r[0] for r in body} == {"better", "worse", "same"}
    assert not any(r[0] == "same" and r[1] == "lora" for r in body)  # failed cell: no figures
    figures = {r[3] for r in body}
    assert set(PRIMARY_METRICS) <= figures and {"query_latency_ms", "params_trainable", "train_s"} <= figures
    for r in body:
        int(r[2])
        float(r[4])
    # one row per (cell, figure)
    assert len(body) == len({tuple(r[:4]) for r in body})


def test_seed_independent_methods_count_once_and_std(tmp_path):
    write_synthetic_run(tmp_path, "d", {"bm25": 0.0, "maw": 0.05}, seeds=(1, 2, 3))
    cells = load_cells(tmp_path)
    bm25 = summarise_method([c for c in cells if c["method"] == "bm25"])
    maw = summarise_method([c for c in cells if c["method"] == "maw"])
    # one distinct run: the std is unknown (None), never a "± 0"
    assert bm25["n_runs"] == 1 and bm25["metrics"]["nDCG@10"]["std"] is None and bm25["seeds"] == [1, 2, 3]
    assert maw["n_runs"] == 3 and maw["metrics"]["nDCG@10"]["n"] == 3 and maw["metrics"]["nDCG@10"]["std"] > 0
    vals = [c["metrics"]["nDCG@10"] for c in cells if c["method"] == "maw"]
    assert maw["metrics"]["nDCG@10"]["mean"] == pytest.approx(sum(vals) / 3)


def test_improvements_are_metrics_only_and_signed():
    assert not higher_is_better("query_latency_ms") and not higher_is_better("index_bytes")
    assert higher_is_better("nDCG@10") and higher_is_better("qps") and higher_is_better("encode_docs_per_s")
    assert not higher_is_better("train_s") and not higher_is_better("FirstRelRank_mean")
    summ = {
        "bm25": {
            "metrics": {"nDCG@10": {"mean": 0.5}, "FirstRelRank_mean": {"mean": 4.0}},
            "runtimes": {"query_latency_ms": {"mean": 1.0}, "qps": {"mean": 1000.0}},
        },
        "maw": {
            "metrics": {"nDCG@10": {"mean": 0.6}, "FirstRelRank_mean": {"mean": 3.0}},
            "runtimes": {"query_latency_ms": {"mean": 4.0}, "qps": {"mean": 250.0}},
        },
    }
    rows = {r["figure"]: r for r in improvements(summ) if r["method"] == "maw"}
    assert rows["nDCG@10"]["absolute"] == pytest.approx(0.1)
    assert rows["nDCG@10"]["relative"] == pytest.approx(0.2)
    assert rows["FirstRelRank_mean"]["absolute"] == pytest.approx(1.0)  # lower rank = better = positive
    # runtimes are never turned into "improvements" (no % of a dense method vs BM25)
    assert set(rows) == {"nDCG@10", "FirstRelRank_mean"}
    back = {r["figure"]: r for r in improvements(summ) if r["method"] == "bm25"}
    assert back == {}  # maw is not a baseline


def test_comparison_pairs_each_unordered_pair_once():
    pairs = comparison_pairs(["bm25", "zeroshot", "lora", "finetune", "maw"])
    assert (
        ("maw", "finetune") in pairs and ("finetune", "lora") in pairs and ("lora", "finetune") not in pairs
    )
    assert len(pairs) == len({frozenset(p) for p in pairs}) == 10


def test_cells_roundtrip_skip_and_validation(tmp_path):
    cell = synthetic_cell("d", "finetune", 42, [0.1, 0.2])
    path = write_cell(tmp_path, cell)
    assert (
        path == cell_path(tmp_path, "d", "finetune", 42) == tmp_path / "cells" / "d" / "finetune-seed42.json"
    )
    assert read_cell(path)["metrics"]["nDCG@10"] == pytest.approx(0.15)
    assert is_done(tmp_path, "d", "finetune", 42) and not is_done(tmp_path, "d", "finetune", 13)
    failed = new_cell("d", "maw", 42)
    with pytest.raises(CellError, match="must carry its error"):
        write_cell(tmp_path, failed)
    failed["error"] = "boom"
    write_cell(tmp_path, failed)
    assert not is_done(tmp_path, "d", "maw", 42)  # failed cells are retried
    bad = cell_path(tmp_path, "d", "lora", 1)
    bad.write_text("{not json")
    with pytest.raises(CellError, match="lora-seed1.json: not valid JSON"):
        load_cells(tmp_path)
    bad.write_text(json.dumps({"dataset": "d"}))
    with pytest.raises(CellError, match="missing key"):
        read_cell(bad)
    assert dataset_key("../shared/datasets/scifact/") == "scifact" and dataset_key("demo") == "demo"


def test_equivalence_only_from_a_fixed_margin_and_untrained_is_flagged(tmp_path):
    """Equivalence ("equivalent within ±m") needs the run's margin (TOST); a method whose selected epoch is 0 in
    every seed is called untrained in the verdict."""
    write_synthetic_run(tmp_path, "d", {"finetune": 0.0, "maw": 0.001}, noise=0.01, n=200)
    for c in load_cells(tmp_path):
        c["best_epoch"] = 0 if c["method"] == "maw" else 2
        write_cell(tmp_path, c)
    plain = dataset_report("d", load_cells(tmp_path), n_resamples=2000)
    assert plain["verdict"]["outcome"] == "n.s." and plain["untrained"] == ["maw"]
    sentence = plain["verdict"]["sentence"]
    assert "no significant difference" in sentence and "equivalent" not in sentence.replace(
        "no equivalence is claimed", ""
    )
    assert "MAW is untrained: the selected epoch was 0 in every seed" in sentence
    fixed = dataset_report("d", load_cells(tmp_path), n_resamples=2000, margin=0.01)
    assert fixed["verdict"]["outcome"] == "equivalent"
    assert (
        "was equivalent to the capacity-matched baseline (finetune) within ±0.01 nDCG@10"
        in (fixed["verdict"]["sentence"])
    )
    c = fixed["verdict"]["comparison"]
    assert c["p_tost_holm"] <= 0.05 and c["p_tost_ttest"] <= 0.05
    # a margin too small for the data: not shown equivalent, and said so
    tight = dataset_report("d", load_cells(tmp_path), n_resamples=2000, margin=0.0005)
    assert tight["verdict"]["outcome"] == "n.s."
    assert "Equivalence within ±0.0005 was not shown" in tight["verdict"]["sentence"]
    # build_reports takes the margin from the run's config.json
    (tmp_path / "config.json").write_text(
        json.dumps({"datasets": ["d"], "methods": ["finetune", "maw"], "equivalence_margin": 0.01})
    )
    combined = build_reports(tmp_path, n_resamples=2000)
    assert combined["datasets"]["d"]["verdict"]["outcome"] == "equivalent"
    assert "equivalent within ±0.01" in (tmp_path / "REPORT.md").read_text()
