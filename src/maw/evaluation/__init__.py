"""Evaluation: the metric suite (``maw.evaluation.metrics``) and ``maw evaluate`` (``maw.evaluation.evaluate``).

* ``evaluate_run(qrels, run, metrics=SUITE) -> MetricResult``, ``ndcg_at_10(qrels, run)``,
  ``PRIMARY_METRICS``, ``SELECTION_METRIC`` (defined once, here), ``SUITE``, ``NOT_APPLICABLE``
* ``run_evaluation(plan, ...) -> dict`` (writes one JSON result file; optionally a TREC run file)
"""
