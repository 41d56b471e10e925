"""Reports rebuilt from the cells on disk: JSON, CSV, a text summary, plots and REPORT.md.

``build_reports(run_dir)`` is called at the end of every ``maw benchmark`` run (and after an
interruption), so the reports always describe exactly the cells that exist. Outputs::

    results/<dataset>.json   every method and seed of one dataset: metrics, per-query metrics,
                             history, router stats, params, runtimes, checkpoint; plus the
                             seed aggregates, improvements, timing spreads and significance tests
    results.json             all datasets together, with the resolved config, the environment and
                             the configured cells that are missing or failed
    results.csv              dataset, method, seed, metric, value (one row per figure)
    summary.txt              primary metrics per dataset x method, mean ± std over seeds
    plots/<dataset>_*.png    metrics with 95% CIs, training curves, router depth use, trade-off
    REPORT.md                missing cells, verdicts, tables, plot links, settings

Aggregation conventions: seed-independent methods (bm25, zeroshot) count once (their cells for
other seeds are copies); "± std" is the sample standard deviation over seeds, shown only with two
or more runs (one seed: training variance is unknown, and the report says so); the 95% CI of a
method's metric is the t interval over test queries of the per-query score averaged over seeds.
Significance (and its Holm-adjusted intervals): see :mod:`maw.benchmark.significance`.

Efficiency: a runtime figure is summarised by the median and interquartile range of its repeated
samples (per-query latencies when the cell records ``timings["query_latency_samples_ms"]``,
otherwise one value per run). Two systems are compared only when they are the same kind (dense
encoders with each other; BM25 with none), and a difference is stated only when both have at
least ``MIN_TIMING_SAMPLES`` samples from at least ``MIN_TIMING_RUNS`` runs, their interquartile
ranges do not overlap and every run of one side is on the same side of every run of the other
(cells are timed minutes apart on a machine whose load is not controlled: one run's spread says
nothing about the load during another's); otherwise the report says "no difference resolved". No relative (%) change of a runtime is reported.

The package, one concern per module (lower ones first; none imports a higher one):

* :mod:`~maw.benchmark.report.aggregate`: summaries over seeds, per-query averages, improvements,
  comparison pairs, timing samples, histories and router statistics, missing cells;
* :mod:`~maw.benchmark.report.tables`: value formatting, text / Markdown tables, ``results.csv``,
  ``summary.txt``;
* :mod:`~maw.benchmark.report.verdicts`: the significance tests and the verdict sentences;
* :mod:`~maw.benchmark.report.efficiency`: runtime conclusions between same-kind systems;
* :mod:`~maw.benchmark.report.notes`: the warnings shown first (subsampling, missing cells, one seed,
  validation);
* :mod:`~maw.benchmark.report.figures`: which plots a dataset gets (:mod:`maw.benchmark.plots` draws);
* :mod:`~maw.benchmark.report.markdown`: the sections of ``REPORT.md``;
* :mod:`~maw.benchmark.report.build`: :func:`dataset_report` and :func:`build_reports`.

Every public name of these modules is importable from ``maw.benchmark.report``.
"""

from __future__ import annotations

from maw.benchmark.report.aggregate import (
    BASELINES,
    CAPACITY_MATCHED,
    HEADLINE,
    LATENCY_SAMPLES,
    LOWER_IS_BETTER,
    TIMED_FIGURES,
    averaged_per_query,
    comparison_pairs,
    depth_blocks,
    distinct_cells,
    higher_is_better,
    history_curve,
    improvements,
    merged_depth,
    missing_cells,
    n_configured,
    ordered_methods,
    retriever_kind,
    router_kind,
    run_seeds,
    spread,
    summarise_method,
    timing_samples,
)
from maw.benchmark.report.build import (
    build_reports,
    dataset_report,
)
from maw.benchmark.report.efficiency import (
    MIN_TIMING_RUNS,
    MIN_TIMING_SAMPLES,
    UNITS,
    efficiency_comparisons,
    timing_conclusion,
)
from maw.benchmark.report.figures import (
    make_plots,
    remove_stale_plots,
)
from maw.benchmark.report.markdown import (
    PLOT_CAPTIONS,
    md_dataset,
    md_efficiency,
    md_efficiency_conclusions,
    md_failed,
    md_header,
    md_methods_text,
    md_metrics,
    md_plots,
    md_settings,
    md_significance,
    md_verdicts,
    report_markdown,
)
from maw.benchmark.report.notes import (
    run_notes,
    subsample_notes,
    validation_notes,
)
from maw.benchmark.report.tables import (
    csv_rows,
    csv_text,
    fmt,
    md_table,
    mean_std,
    metric_rows,
    metrics_heading,
    summary_text,
    text_table,
    timing_text,
)
from maw.benchmark.report.verdicts import (
    comparison_numbers,
    confidence,
    signed,
    significance_tests,
    untrained_methods,
    untrained_note,
    verdict,
)
from maw.evaluation.metrics import PRIMARY_METRICS, SELECTION_METRIC

__all__ = [
    "BASELINES",
    "CAPACITY_MATCHED",
    "HEADLINE",
    "LATENCY_SAMPLES",
    "LOWER_IS_BETTER",
    "MIN_TIMING_RUNS",
    "MIN_TIMING_SAMPLES",
    "PLOT_CAPTIONS",
    "PRIMARY_METRICS",
    "SELECTION_METRIC",
    "TIMED_FIGURES",
    "UNITS",
    "averaged_per_query",
    "build_reports",
    "comparison_numbers",
    "comparison_pairs",
    "confidence",
    "csv_rows",
    "csv_text",
    "dataset_report",
    "depth_blocks",
    "distinct_cells",
    "efficiency_comparisons",
    "fmt",
    "higher_is_better",
    "history_curve",
    "improvements",
    "make_plots",
    "md_dataset",
    "md_efficiency",
    "md_efficiency_conclusions",
    "md_failed",
    "md_header",
    "md_methods_text",
    "md_metrics",
    "md_plots",
    "md_settings",
    "md_significance",
    "md_table",
    "md_verdicts",
    "mean_std",
    "merged_depth",
    "ordered_methods",
    "metric_rows",
    "metrics_heading",
    "missing_cells",
    "n_configured",
    "remove_stale_plots",
    "report_markdown",
    "retriever_kind",
    "router_kind",
    "run_notes",
    "run_seeds",
    "signed",
    "significance_tests",
    "spread",
    "subsample_notes",
    "summarise_method",
    "summary_text",
    "text_table",
    "timing_conclusion",
    "timing_samples",
    "timing_text",
    "untrained_methods",
    "untrained_note",
    "validation_notes",
    "verdict",
]
