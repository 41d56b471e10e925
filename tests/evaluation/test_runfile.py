"""TREC run files: format, ranking order, exact round trip, errors, and metrics recomputed by ir_measures."""

from __future__ import annotations

import ir_measures
import pytest

from maw.data import load_dataset
from maw.evaluation.metrics import SUITE, evaluate_run
from maw.evaluation.runfile import ranked, read_trec_run, write_trec_run
from maw.retrieval.bm25 import BM25Retriever

# providers other than pytrec_eval: they break score ties doc id ascending, trec_eval descending
OTHER_PROVIDERS = {"RR@10", "Judged@10", "Judged@100"}


@pytest.fixture(scope="module")
def demo_bm25():
    ds = load_dataset("demo")
    qrels = ds.qrels["test"]
    run = BM25Retriever(ds.corpus).retrieve({q: ds.queries[q] for q in qrels}, k=1000)
    return qrels, run


def test_six_columns_top_k_and_trec_eval_tie_order(tmp_path):
    run = {"q2": {"a": 1.0, "b": 2.0, "c": 2.0, "d": 0.5}, "q1": {"x": 0.25}, "q3": {}}
    path = write_trec_run(run, tmp_path / "r.trec", tag="mine", k=3)
    lines = path.read_text().splitlines()
    assert lines == [
        "q1 Q0 x 1 0.25 mine",
        "q2 Q0 c 1 2.0 mine",  # tie at 2.0: doc id descending, as trec_eval sorts
        "q2 Q0 b 2 2.0 mine",
        "q2 Q0 a 3 1.0 mine",
    ]
    assert [d for d, _ in ranked(run["q2"])] == ["c", "b", "a", "d"]


def test_round_trip_is_bit_exact(tmp_path):
    import numpy as np

    rng = np.random.default_rng(0)
    scores = rng.standard_normal(200)
    run = {
        "q1": {f"d{i}": float(s) for i, s in enumerate(scores)},
        "q2": {f"d{i}": np.float32(s) for i, s in enumerate(scores[:50])},  # float32 scores too
        "q3": {"d1": 1e-300, "d2": -0.0, "d3": 123456789.123456789},
    }
    back = read_trec_run(write_trec_run(run, tmp_path / "r.trec", k=None))
    assert back == {q: {d: float(s) for d, s in docs.items()} for q, docs in run.items()}
    # the ids of the file's ranking are exactly the ranking's
    for q in run:
        assert [d for d, _ in ranked(back[q])] == [d for d, _ in ranked(run[q])]


def test_bad_input_is_refused_and_writes_nothing(tmp_path):
    path = tmp_path / "r.trec"
    path.write_text("old\n")
    with pytest.raises(ValueError, match="query 'q1', document 'b'.*not finite"):
        write_trec_run({"q1": {"a": 1.0, "b": float("nan")}}, path)
    with pytest.raises(ValueError, match="document id .*'a b'.*whitespace"):
        write_trec_run({"q1": {"a b": 1.0}}, path)
    with pytest.raises(ValueError, match="tag"):
        write_trec_run({"q1": {"a": 1.0}}, path, tag="my run")
    with pytest.raises(ValueError, match="k must be >= 1"):
        write_trec_run({"q1": {"a": 1.0}}, path, k=0)
    assert path.read_text() == "old\n"
    assert [p.name for p in tmp_path.iterdir()] == ["r.trec"]  # no temporary file left behind


@pytest.mark.parametrize(
    "text, message",
    [
        ("q1 Q0 a 1 1.0 t\nq1 Q0 b 2 0.5\n", r"r\.trec:2: expected 6 columns"),
        ("q1 Q0 a one 1.0 t\n", r"r\.trec:1: rank 'one' is not an integer"),
        ("\nq1 Q0 a 1 high t\n", r"r\.trec:2: score 'high' is not a number"),
        ("q1 Q0 a 1 nan t\n", r"r\.trec:1: score is NaN"),
        ("q1 Q0 a 1 1.0 t\nq1 Q0 a 2 0.5 t\n", r"r\.trec:2: document 'a' is listed twice for query 'q1'"),
    ],
)
def test_read_errors_name_file_and_line(tmp_path, text, message):
    path = tmp_path / "r.trec"
    path.write_text(text)
    with pytest.raises(ValueError, match=message):
        read_trec_run(path)


def test_ir_measures_on_the_file_reproduces_maw_metrics_on_demo_bm25(tmp_path, demo_bm25):
    qrels, run = demo_bm25
    path = write_trec_run(run, tmp_path / "bm25.trec", tag="bm25", k=1000)
    reported = evaluate_run(qrels, run).aggregate

    # the file read back by maw and scored by maw: identical figures
    assert evaluate_run(qrels, read_trec_run(path)).aggregate == reported

    # ir_measures straight from the file: every pytrec_eval measure exactly equal
    from_file = ir_measures.calc_aggregate(SUITE, qrels, ir_measures.read_trec_run(str(path)))
    for measure in SUITE:
        if str(measure) not in OTHER_PROVIDERS:
            assert from_file[measure] == reported[str(measure)], measure

    # the demo's BM25 scores tie a lot; the other providers order ties the other way, so give them
    # the file's own ranking (its rank column, which is trec_eval's order): exactly equal again
    ranks = [line.split() for line in path.read_text().splitlines()]
    by_rank = [ir_measures.ScoredDoc(q, d, -float(r)) for q, _, d, r, _, _ in ranks]
    others = [m for m in SUITE if str(m) in OTHER_PROVIDERS]
    assert len(others) == len(OTHER_PROVIDERS)
    from_ranks = ir_measures.calc_aggregate(others, qrels, by_rank)
    for measure in others:
        assert from_ranks[measure] == reported[str(measure)], measure


def test_top_k_cut_matches_maw_metrics_at_k(tmp_path, demo_bm25):
    qrels, run = demo_bm25
    path = write_trec_run(run, tmp_path / "top10.trec", k=10)
    assert max(len(docs) for docs in read_trec_run(path).values()) == 10
    cut = {q: dict(ranked(docs, 10)) for q, docs in run.items()}
    assert (
        evaluate_run(qrels, read_trec_run(path)).aggregate["nDCG@10"]
        == evaluate_run(qrels, cut).aggregate["nDCG@10"]
    )
    assert evaluate_run(qrels, cut).aggregate["nDCG@10"] == evaluate_run(qrels, run).aggregate["nDCG@10"]
