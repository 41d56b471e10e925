"""``maw benchmark`` writes the TREC run file of every BM25 and dense cell beside its cell JSON, and
the file scores exactly as the cell (the demo collection, a tiny random BERT)."""

from __future__ import annotations

import pytest

from maw.benchmark.cells import load_cells
from maw.benchmark.presets import benchmark_config
from maw.benchmark.runner import run_benchmark, run_file_path
from maw.data import load_dataset
from maw.evaluation.metrics import evaluate_run
from maw.evaluation.runfile import read_trec_run

TOP_K = 50


@pytest.mark.slow
def test_every_bm25_and_dense_cell_writes_its_run_file(tmp_path, tiny_model):
    cfg = benchmark_config(
        {
            "datasets": "demo",
            "methods": "bm25,zeroshot,finetune",
            "seeds": "1,2",
            "out": str(tmp_path / "runs"),
            "run_name": "r",
            "model": {"model": str(tiny_model), "query_max_length": 16, "doc_max_length": 32},
            "data": {"train_samples": 24, "val_samples": 8},
            "train": {"num_epochs": 1, "batch_size": 8, "checkpoint_every": 0},
            "eval": {"top_k": TOP_K, "latency_queries": 2, "embedding_cache_dir": str(tmp_path / "emb")},
            "runtime": {"progress": False, "device": "cpu"},
        }
    )
    outcome = run_benchmark(cfg)
    assert not outcome.failed, outcome.failed
    run_dir = outcome.folder
    qrels = load_dataset("demo").qrels["test"]
    cells = load_cells(run_dir)
    assert len(cells) == 6
    for cell in cells:
        path = run_file_path(run_dir, "demo", cell["method"], cell["seed"])
        assert path == run_dir / "runs" / "demo" / f"{cell['method']}-seed{cell['seed']}.trec"
        assert cell["run_file"] == f"runs/demo/{cell['method']}-seed{cell['seed']}.trec", cell["method"]
        assert (run_dir / cell["run_file"]).is_file()
        run = read_trec_run(path)
        assert set(run) == set(qrels) and all(len(docs) <= TOP_K for docs in run.values())
        assert path.read_text().split("\n", 1)[0].split()[-1] == f"maw-{cell['method']}"
        # the metrics of the file are the cell's
        result = evaluate_run(qrels, run)
        for metric in ("nDCG@10", "R@100", "AP"):
            assert result.aggregate[metric] == pytest.approx(cell["metrics"][metric], abs=1e-12), metric
    # a seed-independent cell copied for another seed has its own file with the same run
    for method in ("bm25", "zeroshot"):
        one, two = (run_file_path(run_dir, "demo", method, s).read_text() for s in (1, 2))
        assert one == two
    assert not list(run_dir.rglob("*.tmp"))  # written atomically
