"""BM25 with bm25s: ranking on a tiny corpus, analysis (stemming, stopwords), k clipping, timings."""

from __future__ import annotations

import pytest

from maw.data.types import Document
from maw.retrieval.bm25 import BM25Retriever

CORPUS = {
    "cats": Document("Cats", "The domestic cat sleeps most of the day and hunts mice at night."),
    "dogs": Document("Dogs", "Dogs are loyal animals that enjoy running in the park."),
    "quarks": Document("Quantum chromodynamics", "Quarks interact through gluons carrying colour charge."),
    "stocks": Document("", "Stock markets fell sharply as interest rates rose."),
    "empty": Document("", "the of and"),  # only stopwords
}


@pytest.fixture(scope="module")
def bm25() -> BM25Retriever:
    return BM25Retriever(CORPUS)


def test_obvious_document_ranks_first(bm25):
    run = bm25.retrieve(
        {"q1": "gluon quark interactions", "q2": "a dog running", "q3": "interest rates"}, k=10
    )
    assert max(run["q1"], key=run["q1"].get) == "quarks"
    assert max(run["q2"], key=run["q2"].get) == "dogs"  # stemming: dog/dogs, running/run
    assert max(run["q3"], key=run["q3"].get) == "stocks"


def test_title_is_indexed(bm25):
    run = bm25.retrieve({"q": "chromodynamics"}, k=10)
    assert list(run["q"]) == ["quarks"]  # the word only occurs in the title


def test_only_matching_documents_are_returned_and_k_is_clipped(bm25):
    run = bm25.retrieve({"q": "cat dogs quarks stock"}, k=1000)
    assert set(run["q"]) == {"cats", "dogs", "quarks", "stocks"}
    assert all(s > 0 for s in run["q"].values())
    run = bm25.retrieve({"q": "cat dogs quarks stock"}, k=2)
    assert len(run["q"]) == 2


def test_query_without_known_terms_gets_empty_ranking(bm25):
    run = bm25.retrieve({"stop": "the of and", "unknown": "xylophone zebra", "ok": "cats"}, k=5)
    assert run["stop"] == {} and run["unknown"] == {}
    assert "cats" in run["ok"] and "empty" not in run["ok"]
    assert bm25.timings["queries_without_known_terms"] == 2


def test_scores_follow_lucene_bm25(bm25):
    # Lucene BM25, one term in one document: idf * tf / (tf + k1 * (1 - b + b * dl / avgdl)), no (k1 + 1)
    import math

    import Stemmer

    from maw.retrieval.bm25 import BM25Retriever as R

    corpus = {"a": Document("", "apple banana"), "b": Document("", "cherry date elderberry fig")}
    r = R(corpus, k1=0.9, b=0.4)
    score = r.retrieve({"q": "apple"}, k=2)["q"]["a"]
    n, df, dl = 2, 1, 2
    avgdl = (2 + 4) / 2
    idf = math.log(1 + (n - df + 0.5) / (df + 0.5))
    expected = idf * 1 / (1 + 0.9 * (1 - 0.4 + 0.4 * dl / avgdl))
    assert score == pytest.approx(expected, rel=1e-5)
    assert Stemmer.Stemmer("english").stemWord("running") == "run"


def test_timings_and_params(bm25):
    bm25.retrieve({"q": "cats"}, k=3)
    for key in (
        "index_seconds",
        "index_docs_per_second",
        "index_bytes",
        "query_seconds",
        "qps",
        "query_latency_ms",
    ):
        assert bm25.timings[key] >= 0
    assert bm25.timings["index_bytes"] > 0
    assert bm25.params["k1"] == 0.9 and bm25.params["b"] == 0.4 and bm25.params["method"] == "lucene"


def test_bad_input():
    with pytest.raises(ValueError, match="empty"):
        BM25Retriever({})
    with pytest.raises(ValueError, match="k must be"):
        BM25Retriever(CORPUS).retrieve({"q": "cats"}, k=0)
