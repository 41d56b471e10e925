"""Ranking metrics: one documented suite, computed by ``ir_measures`` (pytrec_eval backend).

The suite
---------
``SUITE`` is the one list of measures every result file reports, named the ``ir_measures`` way
(``str(measure)`` is the key in every dict):

* ``nDCG@{1,3,5,10,15,20,100,1000}`` and uncut ``nDCG`` - graded gains (gain = the qrels grade,
  log2 discount; trec_eval ``ndcg_cut`` and ``ndcg``: uncut nDCG scores the whole retrieved list
  against the ideal ranking of every judged document).
* ``R@{1,3,5,10,15,20,100,1000}``, ``P@{1,3,5,10,15,20,100,1000}``, ``RR@10``, ``RR``, ``AP``,
  ``AP@{10,100,1000}``, ``Rprec``, ``Bpref``, ``Success@{1,3,5,10,20,100}`` - binary measures; a
  document is relevant when its grade is ``>= 1`` (``ir_measures``' default ``rel=1``, trec_eval
  ``-l 1``). ``AP@k`` is trec_eval's ``map_cut.k``: precision summed over the relevant documents in
  the top k, divided by the number of relevant documents (all of them, not only those within k).
* ``Judged@{10,100}`` - share of the top-k that has any judgement (grade 0 included): a hint of how
  far a ranking strays from the judged pool, not a quality figure.

``RR@10`` is computed by ``ir_measures``' MS MARCO provider, ``Judged@k`` by its own provider
(judged docs in the top k / min(k, number retrieved)), everything else by pytrec_eval. Providers
break score ties differently (trec_eval: doc id descending; MS MARCO: ascending), so ties are
broken once here, trec_eval's way, and every provider receives the same strict ranking (scores
replaced by ``n - rank``; measures depend on the order only).

First-relevant-rank diagnostics (computed here, trec_eval ordering): per query the 1-based rank of
the first relevant document among the retrieved ones. ``FirstRelRank_mean`` and
``FirstRelRank_median`` are over the queries that retrieved at least one relevant document;
the others are *not* given a rank (no invented "1001") but counted in ``NoRelRetrieved``
(and their per-query value is ``None``).

Which queries count
-------------------
Every aggregate is the mean over **all judged queries with at least one relevant document**
(grade >= 1) in the qrels given. Queries absent from the run, or with an empty ranking, score 0
on every measure and count in the denominator - done here explicitly rather than left to the
provider (pytrec_eval itself skips queries absent from the run; ``ir_measures`` 0.4 fills them
in, older versions do not; its Judged provider fails on an empty ranking). Queries in the run but not in the qrels, and qrels
queries without any relevant document, are ignored; both are counted in ``MetricResult.notes``.

Efficiency figures (encode docs/s, query latency, QPS, index bytes) are added by the caller.
Measures that do not apply to these collections are listed in ``NOT_APPLICABLE`` with the reason;
they appear as ``None`` in ``MetricResult.aggregate`` and are never invented.

Calibration measures (Brier score, expected calibration error) are not in the suite: they compare
predicted probabilities of relevance with outcomes, and a ranked list of retrieval scores (cosine
similarities, BM25 weights) carries no calibrated probabilities - only an order. Turning scores
into probabilities would need a calibration model fitted on held-out judgements, which is a
modelling choice of its own, not a property of the run; so they are neither computed nor listed.
"""

from __future__ import annotations

import statistics
from dataclasses import dataclass, field
from typing import Any

import ir_measures
from ir_measures import AP, RR, Bpref, Judged, P, R, Rprec, Success, nDCG

from maw.data.types import Qrels, Run

RELEVANCE_LEVEL = 1  # binary measures: relevant <=> grade >= 1

SUITE: list = [
    *(nDCG @ k for k in (1, 3, 5, 10, 15, 20, 100, 1000)),
    nDCG,
    *(R @ k for k in (1, 3, 5, 10, 15, 20, 100, 1000)),
    *(P @ k for k in (1, 3, 5, 10, 15, 20, 100, 1000)),
    RR @ 10,
    RR,
    AP,
    *(AP @ k for k in (10, 100, 1000)),
    Rprec,
    Bpref,
    *(Success @ k for k in (1, 3, 5, 10, 20, 100)),
    Judged @ 10,
    Judged @ 100,
]

FIRST_REL_MEAN = "FirstRelRank_mean"
FIRST_REL_MEDIAN = "FirstRelRank_median"
NO_REL_RETRIEVED = "NoRelRetrieved"
FIRST_REL_RANK = "FirstRelRank"  # per-query key (rank or None)
DIAGNOSTICS = [FIRST_REL_MEAN, FIRST_REL_MEDIAN, NO_REL_RETRIEVED]

NOT_APPLICABLE: dict[str, str] = {
    "alpha-nDCG@10": "needs subtopic (intent) judgements; BEIR-format qrels have one grade per query-document pair",
    "ExactMatch": "needs gold answer strings; these are document-ranking collections without answers",
}

# the metrics every report, history and model card shows first (maw's one list of them)
PRIMARY_METRICS = ("nDCG@10", "R@100", "RR@10", "AP")
# the model-selection metric: best epoch and early stopping on validation, a sweep's ranking
SELECTION_METRIC = "nDCG@10"


@dataclass
class MetricResult:
    """Metrics of one run against one set of qrels.

    aggregate: metric name -> mean over ``num_queries`` judged queries (``None`` = not applicable).
    per_query: metric name -> query id -> value, for every judged query (``FirstRelRank`` holds
        the 1-based rank or ``None``).
    notes: counts of ignored / unretrieved queries.
    """

    aggregate: dict[str, float | None]
    per_query: dict[str, dict[str, float | None]]
    num_queries: int
    notes: dict[str, Any] = field(default_factory=dict)


def _name(measure: Any) -> str:
    return str(measure)


def _ranked(scores: dict[str, float]) -> list[str]:
    """Doc ids in trec_eval order: score descending, then doc id descending."""
    return [d for d, _ in sorted(scores.items(), key=lambda x: (x[1], x[0]), reverse=True)]


def _strict_ranking(scores: dict[str, float]) -> dict[str, float]:
    """Scores ``n - rank`` in trec_eval order: the same order for every provider, no ties."""
    ranked = _ranked({d: float(s) for d, s in scores.items()})
    n = len(ranked)
    return {d: float(n - i) for i, d in enumerate(ranked)}


def judged_queries(qrels: Qrels) -> list[str]:
    """Query ids with at least one relevant (grade >= 1) document, sorted."""
    return sorted(q for q, docs in qrels.items() if any(g >= RELEVANCE_LEVEL for g in docs.values()))


def first_relevant_rank(qrels_q: dict[str, int], scores: dict[str, float]) -> int | None:
    """1-based rank of the first relevant doc in ``scores`` (trec_eval order), ``None`` if absent."""
    for rank, doc in enumerate(_ranked(scores), start=1):
        if qrels_q.get(doc, 0) >= RELEVANCE_LEVEL:
            return rank
    return None


def evaluate_run(qrels: Qrels, run: Run, metrics: list | None = None) -> MetricResult:
    """Score ``run`` against ``qrels`` with ``metrics`` (default ``SUITE``) plus the diagnostics.

    qrels: query id -> doc id -> grade (int). run: query id -> doc id -> score (higher = better).
    Raises ValueError when the qrels hold no query with a relevant document.
    """
    metrics = list(SUITE if metrics is None else metrics)
    qids = judged_queries(qrels)
    if not qids:
        raise ValueError("qrels contain no query with a relevant document (grade >= 1); nothing to evaluate")
    judged = set(qids)
    sub_qrels = {q: {d: int(g) for d, g in qrels[q].items()} for q in qids}
    sub_run = {q: _strict_ranking(run[q]) for q in qids if run.get(q)}

    per_query: dict[str, dict[str, float | None]] = {_name(m): {} for m in metrics}
    if sub_run:
        for metric in ir_measures.iter_calc(metrics, sub_qrels, sub_run):
            per_query[_name(metric.measure)][metric.query_id] = float(metric.value)
    for values in per_query.values():  # judged queries with nothing retrieved score 0
        for q in qids:
            values.setdefault(q, 0.0)

    aggregate: dict[str, float | None] = {
        name: sum(values[q] for q in qids) / len(qids) for name, values in per_query.items()
    }

    ranks = {q: (first_relevant_rank(sub_qrels[q], sub_run[q]) if q in sub_run else None) for q in qids}
    found = [r for r in ranks.values() if r is not None]
    aggregate[FIRST_REL_MEAN] = float(statistics.fmean(found)) if found else None
    aggregate[FIRST_REL_MEDIAN] = float(statistics.median(found)) if found else None
    aggregate[NO_REL_RETRIEVED] = float(len(qids) - len(found))
    per_query[FIRST_REL_RANK] = {q: (float(r) if r is not None else None) for q, r in ranks.items()}

    for name in NOT_APPLICABLE:
        aggregate[name] = None

    notes = {
        "relevance_level": RELEVANCE_LEVEL,
        "judged_queries": len(qids),
        "judged_queries_not_in_run": sum(1 for q in qids if q not in sub_run),
        "run_queries_not_judged": sum(1 for q in run if q not in judged),
        "qrels_queries_without_relevant": len(qrels) - len(qids),
        "not_applicable": dict(NOT_APPLICABLE),
    }
    return MetricResult(aggregate=aggregate, per_query=per_query, num_queries=len(qids), notes=notes)


def ndcg_at_10(qrels: Qrels, run: Run) -> float:
    """nDCG@10 averaged over all judged queries (the primary model-selection figure)."""
    result = evaluate_run(qrels, run, metrics=[nDCG @ 10])
    value = result.aggregate["nDCG@10"]
    assert value is not None
    return value


def metric_names(metrics: list | None = None) -> list[str]:
    """Names of the measures of ``metrics`` (default ``SUITE``) followed by the diagnostics."""
    return [_name(m) for m in (SUITE if metrics is None else metrics)] + DIAGNOSTICS
