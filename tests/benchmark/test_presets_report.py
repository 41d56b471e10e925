"""A subsampled corpus: the runner applies it after the splits, cells record it, the report opens with it."""

from __future__ import annotations

import json

from bench_testkit import synthetic_cell, write_tiny_beir

from maw.benchmark.cells import read_cell, write_cell
from maw.benchmark.presets import benchmark_config
from maw.benchmark.report import build_reports
from maw.benchmark.runner import CellDataset, run_benchmark
from maw.config import to_dict
from maw.data.subsample import judged_ids

SUBSAMPLE = {
    "documents": 2000,
    "of": 5183,
    "seed": 13,
    "size": 2000,
    "judged": 612,
    "judged_absent": 0,
    "random": 1388,
    "original_fingerprint": "abc123",
}


def write_run(run, subsample, preset="smoke"):
    for method in ("bm25", "zeroshot"):
        cell = synthetic_cell("scifact", method, 42, [0.5, 0.6, 0.7, 0.4, 0.55])
        cell["dataset_info"]["corpus_subsample"] = subsample
        write_cell(run, cell)
    config = {"datasets": ["scifact"], "methods": ["bm25", "zeroshot"], "seeds": [42], "preset": preset}
    (run / "config.json").write_text(json.dumps(config))


def test_report_and_summary_open_with_the_subsampling_statement(tmp_path):
    run = tmp_path / "run"
    write_run(run, SUBSAMPLE)
    build_reports(run, n_resamples=200)
    report = (run / "REPORT.md").read_text().splitlines()
    assert report[0] == "# MAW benchmark report"
    first = next(i for i, line in enumerate(report) if line.startswith(">"))
    assert first <= 4  # right under the title and the run-folder line (blank lines between)
    assert report[first].startswith("> **SUBSAMPLED CORPUS (--preset smoke): scores are not comparable")
    assert "scifact: 2,000 of 5,183 documents (seed 13)" in report[first + 1]
    assert "612 documents judged" in report[first + 1] and "1,388 drawn at random" in report[first + 1]
    assert report.index("## Verdicts") > first + 1
    summary = (run / "summary.txt").read_text().splitlines()
    assert summary[2].startswith("SUBSAMPLED CORPUS (--preset smoke)")
    assert "not comparable with full-corpus numbers" in summary[2]
    assert (
        summary.index(
            "ONE SEED (42): every trained method is a single training run, so training variance is "
            "unknown; the figures are single runs, not mean ± std."
        )
        > 2
    )  # the other notes follow


def test_report_says_nothing_without_a_subsample(tmp_path):
    run = tmp_path / "run"
    write_run(run, None, preset=None)
    build_reports(run, n_resamples=200)
    assert "SUBSAMPLED" not in (run / "REPORT.md").read_text()
    assert "SUBSAMPLED" not in (run / "summary.txt").read_text()


def test_dataset_load_subsamples_after_the_splits_keeping_judged_documents(tmp_path):
    folder = write_tiny_beir(tmp_path / "tiny80", num_docs=80)
    cfg = benchmark_config({"data": {"corpus_size": 50, "train_samples": 10, "val_samples": 3}})
    ds = CellDataset(str(folder), "tiny80", cfg)
    ds.load()
    keep = judged_ids(ds.splits)
    assert len(keep) == 33 and len(ds.dataset.corpus) == 50 and keep <= set(ds.dataset.corpus)
    sub = ds.info["corpus_subsample"]
    assert (sub["documents"], sub["of"], sub["seed"], sub["judged"]) == (50, 80, 13, 33)
    assert ds.info["counts"]["docs"] == 50
    assert ds.info["fingerprint"] != sub["original_fingerprint"]
    again = CellDataset(str(folder), "tiny80", cfg)
    again.load()
    assert list(again.dataset.corpus) == list(ds.dataset.corpus)  # same seed, same sample


def test_bm25_run_on_a_subsampled_corpus_records_it(tmp_path):
    folder = write_tiny_beir(tmp_path / "tiny80", num_docs=80)
    cfg = benchmark_config(
        {
            "datasets": str(folder),
            "methods": "bm25",
            "seeds": "1",
            "out": str(tmp_path / "runs"),
            "run_name": "r",
            "data": {"corpus_size": 40, "train_samples": 10, "val_samples": 3},
            "runtime": {"progress": False},
        }
    )
    out = run_benchmark(cfg)
    assert out.exit_code == 0, out.failed
    cell = read_cell(out.folder / "cells" / "tiny80" / "bm25-seed1.json")
    assert cell["dataset_info"]["corpus_subsample"]["documents"] == 40
    assert len(cell["per_query"]["nDCG@10"]) == cell["dataset_info"]["counts"]["test_queries"] == 20
    report = (out.folder / "REPORT.md").read_text()
    assert "SUBSAMPLED CORPUS (data.corpus_size)" in report.split("## Verdicts")[0]
    assert json.loads((out.folder / "config.json").read_text()) == to_dict(cfg)
