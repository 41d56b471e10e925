"""The metric suite: hand-computed values, equality with pytrec_eval, and which queries count."""

from __future__ import annotations

import math
import random

import ir_measures
import pytest
import pytrec_eval

from maw.evaluation.metrics import (
    NOT_APPLICABLE,
    PRIMARY_METRICS,
    SUITE,
    evaluate_run,
    first_relevant_rank,
    metric_names,
    ndcg_at_10,
)
from maw.evaluation.runfile import write_trec_run

NEW_MEASURES = ["P@1000", "AP@10", "AP@1000", "nDCG@15", "R@15", "P@15", "nDCG"]

# q1: binary view a, b, e relevant (R = 3), c judged non-relevant, d unjudged; e never retrieved.
# q2: graded x=3, y=1; the weaker doc is ranked first.
QRELS = {"q1": {"a": 2, "b": 1, "c": 0, "e": 1}, "q2": {"x": 3, "y": 1}}
RUN = {"q1": {"a": 0.9, "c": 0.8, "d": 0.7, "b": 0.6}, "q2": {"y": 0.9, "x": 0.8}}


def lg(rank: int) -> float:
    return math.log2(rank + 1)


def test_hand_computed_binary_and_graded_values():
    res = evaluate_run(QRELS, RUN)
    q1 = {name: values["q1"] for name, values in res.per_query.items()}
    q2 = {name: values["q2"] for name, values in res.per_query.items()}

    # graded nDCG: gain = grade, log2(rank + 1) discount
    idcg1 = 2 / lg(1) + 1 / lg(2) + 1 / lg(3)
    assert q1["nDCG@10"] == pytest.approx((2 / lg(1) + 1 / lg(4)) / idcg1)
    assert q1["nDCG@1"] == pytest.approx(2 / 2)  # best doc first: ideal@1 is also 2
    assert q1["nDCG@3"] == pytest.approx((2 / lg(1)) / idcg1)
    assert q2["nDCG@10"] == pytest.approx((1 / lg(1) + 3 / lg(2)) / (3 / lg(1) + 1 / lg(2)))
    assert q2["nDCG@1"] == pytest.approx(1 / 3)  # graded: the grade-1 doc gets a third of the ideal gain

    # binary measures, relevant <=> grade >= 1
    assert q1["AP"] == pytest.approx((1 / 1 + 2 / 4) / 3)
    assert q1["AP@100"] == pytest.approx((1 / 1 + 2 / 4) / 3)
    assert q1["AP@10"] == q1["AP@1000"] == pytest.approx((1 / 1 + 2 / 4) / 3)  # map_cut: / all R = 3
    assert q1["P@15"] == pytest.approx(2 / 15) and q1["P@1000"] == pytest.approx(2 / 1000)
    assert q1["R@15"] == pytest.approx(2 / 3)
    assert q1["nDCG"] == pytest.approx(q1["nDCG@1000"]) == pytest.approx(q1["nDCG@15"])  # 4 retrieved
    assert q2["nDCG"] == pytest.approx(q2["nDCG@10"])
    assert q2["AP"] == pytest.approx(1.0)  # binary: both docs relevant, both retrieved on top
    assert q1["RR"] == 1.0 and q1["RR@10"] == 1.0
    assert q1["P@1"] == 1.0 and q1["P@3"] == pytest.approx(1 / 3) and q1["P@5"] == pytest.approx(2 / 5)
    assert (
        q1["R@1"] == pytest.approx(1 / 3)
        and q1["R@3"] == pytest.approx(1 / 3)
        and q1["R@5"] == pytest.approx(2 / 3)
    )
    assert q1["R@1000"] == pytest.approx(2 / 3)
    assert q1["Rprec"] == pytest.approx(1 / 3)  # top R=3: a, c, d
    # bpref = 1/R * sum over retrieved relevant r of (1 - |judged non-rel above r| / min(R, N)); N = 1
    assert q1["Bpref"] == pytest.approx((1 - 0) / 3 + (1 - 1 / 1) / 3)
    assert q1["Success@1"] == 1.0 and q2["Success@1"] == 1.0
    assert q1["Judged@10"] == pytest.approx(3 / 4)  # a, c, b judged, d not; over min(10, 4 retrieved)
    assert q2["Judged@100"] == pytest.approx(1.0)
    assert res.per_query["FirstRelRank"] == {"q1": 1.0, "q2": 1.0}

    # aggregates are plain means over the two queries
    for name in ("nDCG@10", "AP", "P@5", "Bpref"):
        assert res.aggregate[name] == pytest.approx((q1[name] + q2[name]) / 2)
    assert ndcg_at_10(QRELS, RUN) == pytest.approx(res.aggregate["nDCG@10"])


def test_rr_cutoff_and_first_relevant_rank_deep():
    qrels = {"q": {"r": 1, "n": 0}, "p": {"r": 1}}
    ranking = {f"d{i:02d}": 1.0 - i / 100 for i in range(20)}  # 0.99 .. 0.81
    run = {"q": ranking | {"r": 0.5}, "p": ranking | {"r": 0.95}}  # r at rank 21 / rank 6 (tied with d05)
    assert first_relevant_rank(qrels["q"], run["q"]) == 21
    res = evaluate_run(qrels, run)
    assert res.per_query["RR"] == {"q": pytest.approx(1 / 21), "p": pytest.approx(1 / 6)}
    assert res.per_query["RR@10"] == {"q": 0.0, "p": pytest.approx(1 / 6)}
    assert res.per_query["FirstRelRank"] == {"q": 21.0, "p": 6.0}
    assert res.aggregate["FirstRelRank_mean"] == 13.5 and res.aggregate["NoRelRetrieved"] == 0


def test_suite_size_names_and_not_applicable():
    names = metric_names()
    assert len(names) == len(set(names)) >= 43
    assert set(NEW_MEASURES) <= set(names)
    assert not {"Brier", "ECE"} & set(names)  # calibration: not defined for a ranked list (module doc)
    res = evaluate_run(QRELS, RUN)
    numeric = {k: v for k, v in res.aggregate.items() if v is not None}
    assert len(numeric) >= 36
    for name in PRIMARY_METRICS:
        assert name in numeric
    for name, reason in NOT_APPLICABLE.items():
        assert res.aggregate[name] is None and reason
    assert set(res.per_query) == {str(m) for m in SUITE} | {"FirstRelRank"}


def _random_case(seed: int, n_queries: int = 25, n_docs: int = 60):
    rng = random.Random(seed)
    qrels, run = {}, {}
    for qi in range(n_queries):
        q = f"q{qi}"
        judged = rng.sample(range(n_docs), rng.randint(2, 15))
        grades = {f"d{d}": rng.choice([0, 0, 1, 2, 3]) for d in judged}
        grades[f"d{judged[0]}"] = rng.randint(1, 3)  # at least one relevant
        qrels[q] = grades
        retrieved = rng.sample(range(n_docs), rng.randint(1, n_docs))
        run[q] = {f"d{d}": rng.random() for d in retrieved}  # distinct scores: no tie-break ambiguity
    return qrels, run


PYTREC = {
    "ndcg_cut": (1, 3, 5, 10, 15, 20, 100, 1000),
    "recall": (1, 3, 5, 10, 15, 20, 100, 1000),
    "P": (1, 3, 5, 10, 15, 20, 100, 1000),
    "success": (1, 3, 5, 10, 20, 100),
    "map_cut": (10, 100, 1000),
}
NAMES = {"ndcg_cut": "nDCG", "recall": "R", "P": "P", "success": "Success", "map_cut": "AP"}


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_equal_to_pytrec_eval_directly(seed):
    qrels, run = _random_case(seed)
    measures = {f"{m}.{','.join(map(str, ks))}" for m, ks in PYTREC.items()} | {
        "map",
        "ndcg",
        "recip_rank",
        "Rprec",
        "bpref",
    }
    ref = pytrec_eval.RelevanceEvaluator(qrels, measures, relevance_level=1).evaluate(run)
    res = evaluate_run(qrels, run)
    pairs = [(f"{m}_{k}", f"{NAMES[m]}@{k}") for m, ks in PYTREC.items() for k in ks]
    pairs += [
        ("map", "AP"),
        ("ndcg", "nDCG"),
        ("recip_rank", "RR"),
        ("Rprec", "Rprec"),
        ("bpref", "Bpref"),
    ]
    for theirs, ours in pairs:
        for q in qrels:
            assert res.per_query[ours][q] == pytest.approx(ref[q][theirs], abs=1e-12), (ours, q)
        assert res.aggregate[ours] == pytest.approx(
            sum(ref[q][theirs] for q in qrels) / len(qrels), abs=1e-12
        )
    # RR@10 == recip_rank of the run truncated to its top 10
    top10 = {q: dict(sorted(docs.items(), key=lambda x: -x[1])[:10]) for q, docs in run.items()}
    ref10 = pytrec_eval.RelevanceEvaluator(qrels, {"recip_rank"}).evaluate(top10)
    for q in qrels:
        assert res.per_query["RR@10"][q] == pytest.approx(ref10[q]["recip_rank"])
        rank = res.per_query["FirstRelRank"][q]
        if ref[q]["recip_rank"] > 0:
            assert rank == pytest.approx(1 / ref[q]["recip_rank"])
        else:
            assert rank is None


def test_queries_missing_from_run_count_as_zero():
    qrels, run = _random_case(5, n_queries=10)
    partial = {q: docs for i, (q, docs) in enumerate(run.items()) if i % 2 == 0}
    res = evaluate_run(qrels, partial)
    assert res.num_queries == 10
    full = evaluate_run(qrels, run)
    for name in ("nDCG@10", "AP", "R@100"):
        kept = [full.per_query[name][q] for q in partial]
        assert res.aggregate[name] == pytest.approx(sum(kept) / 10)
        assert all(res.per_query[name][q] == 0.0 for q in qrels if q not in partial)
    # pytrec_eval alone averages over the 5 retrieved queries only: the case this module guards against
    plain = pytrec_eval.RelevanceEvaluator(qrels, {"ndcg_cut.10"}).evaluate(partial)
    assert sorted(plain) == sorted(partial)
    assert res.notes["judged_queries_not_in_run"] == 5
    assert res.aggregate["NoRelRetrieved"] >= 5


def test_empty_run_and_empty_rankings():
    for run in ({}, {"q1": {}, "q2": {}}):
        res = evaluate_run(QRELS, run)
        assert res.num_queries == 2
        assert all(
            v == 0.0
            for k, v in res.aggregate.items()
            if k.split("@")[0] in {"nDCG", "R", "P", "AP", "RR", "Success", "Judged", "Bpref", "Rprec"}
        )
        assert res.aggregate["NoRelRetrieved"] == 2
        assert res.aggregate["FirstRelRank_mean"] is None and res.aggregate["FirstRelRank_median"] is None
        assert res.per_query["FirstRelRank"] == {"q1": None, "q2": None}


def test_unknown_run_queries_and_queries_without_relevant_docs_are_ignored():
    qrels = dict(QRELS) | {"q_norel": {"z": 0}}
    run = dict(RUN) | {"q_unknown": {"a": 1.0}, "q_norel": {"z": 1.0}}
    res = evaluate_run(qrels, run)
    base = evaluate_run(QRELS, RUN)
    assert res.num_queries == 2
    assert res.aggregate == base.aggregate
    assert "q_unknown" not in res.per_query["nDCG@10"] and "q_norel" not in res.per_query["nDCG@10"]
    assert res.notes["run_queries_not_judged"] == 2  # q_unknown and q_norel
    assert res.notes["qrels_queries_without_relevant"] == 1


def test_no_relevant_query_at_all_is_an_error():
    with pytest.raises(ValueError, match="no query with a relevant document"):
        evaluate_run({"q": {"d": 0}}, {"q": {"d": 1.0}})
    with pytest.raises(ValueError):
        evaluate_run({}, {})


def test_ties_are_broken_the_same_way_for_every_measure():
    qrels = {"q": {"a": 1}}
    run = {"q": {"a": 1.0, "b": 1.0, "c": 1.0}}  # trec_eval order: c, b, a
    res = evaluate_run(qrels, run)
    assert res.per_query["RR"]["q"] == pytest.approx(1 / 3)
    assert res.per_query["RR@10"]["q"] == pytest.approx(1 / 3)  # MS MARCO provider alone would say 1.0
    assert res.per_query["Success@1"]["q"] == 0.0 and res.per_query["FirstRelRank"]["q"] == 3.0


def test_first_relevant_rank_median_and_ties_follow_trec_eval():
    # equal scores: trec_eval orders by doc id descending, so "b" comes before "a"
    assert first_relevant_rank({"a": 1}, {"a": 1.0, "b": 1.0}) == 2
    assert first_relevant_rank({"a": 1}, {"b": 1.0}) is None
    qrels = {"q1": {"a": 1}, "q2": {"a": 1}, "q3": {"a": 1}}
    run = {"q1": {"a": 1.0}, "q2": {"x": 2.0, "y": 1.5, "a": 1.0}, "q3": {"x": 1.0}}
    res = evaluate_run(qrels, run)
    assert res.aggregate["FirstRelRank_mean"] == 2.0 and res.aggregate["FirstRelRank_median"] == 2.0
    assert res.aggregate["NoRelRetrieved"] == 1.0


@pytest.mark.parametrize("seed", [3, 4])
def test_new_measures_equal_ir_measures_on_the_run_file(tmp_path, seed):
    """P@1000, AP@10, AP@1000, nDCG@15, R@15, P@15 and uncut nDCG: maw's figures equal
    ``ir_measures`` called directly on the TREC run file maw writes (per query and aggregate)."""
    qrels, run = _random_case(seed, n_queries=30, n_docs=1200)
    for q in list(run)[:3]:  # long rankings, so the @1000 cuts and the uncut nDCG differ
        run[q] = {f"d{d}": random.Random(f"{seed}/{q}").random() for d in range(1200)}
    path = write_trec_run(run, tmp_path / "run.trec", k=None)
    measures = [ir_measures.parse_measure(name) for name in NEW_MEASURES]
    from_file = ir_measures.read_trec_run(str(path))
    direct = ir_measures.calc_aggregate(measures, qrels, from_file)
    res = evaluate_run(qrels, run)
    for measure in measures:
        assert res.aggregate[str(measure)] == pytest.approx(direct[measure], abs=1e-12), measure
    per_query = {
        (m.query_id, str(m.measure)): m.value
        for m in ir_measures.iter_calc(measures, qrels, ir_measures.read_trec_run(str(path)))
    }
    for (q, name), value in per_query.items():
        assert res.per_query[name][q] == pytest.approx(value, abs=1e-12), (name, q)
    assert len(per_query) == len(qrels) * len(NEW_MEASURES)
    assert (
        res.aggregate["nDCG"] != res.aggregate["nDCG@15"]
        and res.aggregate["AP@10"] < res.aggregate["AP@1000"]
    )
