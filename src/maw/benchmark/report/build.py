"""Building the reports of a run folder from its cells: one report per dataset, then every file."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from maw.benchmark.cells import dataset_key, load_cells
from maw.benchmark.report.aggregate import (
    distinct_cells,
    improvements,
    missing_cells,
    n_configured,
    ordered_methods,
    run_seeds,
    summarise_method,
)
from maw.benchmark.report.efficiency import efficiency_comparisons
from maw.benchmark.report.figures import make_plots, remove_stale_plots
from maw.benchmark.report.markdown import report_markdown
from maw.benchmark.report.notes import run_notes, subsample_notes, validation_notes
from maw.benchmark.report.tables import csv_text, summary_text
from maw.benchmark.report.verdicts import significance_tests, untrained_methods, verdict
from maw.benchmark.significance import DEFAULT_RESAMPLES
from maw.config import METHODS
from maw.utils.io import atomic_write_json, atomic_write_text, read_json


def dataset_report(
    dataset: str,
    cells: list[dict[str, Any]],
    method_order: Sequence[str] = (),
    n_resamples: int = DEFAULT_RESAMPLES,
    margin: float | None = None,
) -> dict[str, Any]:
    """Everything about one dataset, from its cells. ``margin``: the run's equivalence margin."""
    ok: dict[str, list[dict[str, Any]]] = {}
    failed: dict[str, list[dict[str, Any]]] = {}
    for c in cells:
        (ok if c["status"] == "ok" else failed).setdefault(c["method"], []).append(c)
    methods = ordered_methods(ok, method_order)
    ok = {m: sorted(ok[m], key=lambda c: c["seed"]) for m in methods}
    summaries = {m: summarise_method(ok[m]) for m in methods}
    comps = significance_tests(ok, n_resamples=n_resamples, margin=margin)
    untrained = untrained_methods({m: distinct_cells(ok[m]) for m in methods})
    info = next((c.get("dataset_info") for c in cells if c.get("dataset_info")), None)
    return {
        "dataset": dataset,
        "dataset_info": info,
        "methods": summaries,
        "failed": [
            {"method": c["method"], "seed": c["seed"], "error": c["error"]}
            for fs in failed.values()
            for c in fs
        ],
        "improvements": improvements(summaries),
        "efficiency": efficiency_comparisons(summaries),
        "significance": [c.to_dict() for c in comps],
        "verdict": verdict(dataset, comps, failed, methods, untrained=untrained),
        "untrained": untrained,
        "cells": cells,
        "_comparisons": comps,
        "_ok": ok,
    }


def _public(rep: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in rep.items() if not k.startswith("_")}


def build_reports(run_dir: str | Path, n_resamples: int = DEFAULT_RESAMPLES) -> dict[str, Any]:
    """Rebuild every report file of ``run_dir`` from its cells; returns the combined results."""
    run_dir = Path(run_dir)
    cells = load_cells(run_dir)
    config = read_json(run_dir / "config.json") if (run_dir / "config.json").exists() else None
    environment = read_json(run_dir / "environment.json") if (run_dir / "environment.json").exists() else None
    order = (config or {}).get("methods", [])
    by_ds: dict[str, list[dict[str, Any]]] = {}
    for c in cells:
        by_ds.setdefault(c["dataset"], []).append(c)
    ds_order = [
        d for d in dict.fromkeys(map(dataset_key, (config or {}).get("datasets") or [])) if d in by_ds
    ]
    ds_order += sorted(set(by_ds) - set(ds_order))
    margin = (config or {}).get("equivalence_margin")  # fixed when the run started, before any test
    reports = [
        dataset_report(ds, by_ds[ds], order, n_resamples=n_resamples, margin=margin) for ds in ds_order
    ]
    missing = missing_cells(config, cells)
    seeds = run_seeds(config, cells)
    notes = (
        subsample_notes(reports, config)
        + run_notes(missing, seeds, n_configured(config))
        + validation_notes(cells)
    )

    plots_made: dict[str, dict[str, str]] = {}
    plot_errors: list[str] = []
    for rep in reports:
        made, errs = make_plots(run_dir, rep)
        remove_stale_plots(run_dir, rep["dataset"], made, [*METHODS, *order])
        plots_made[rep["dataset"]] = made
        plot_errors += errs
        atomic_write_json(run_dir / "results" / f"{rep['dataset']}.json", {**_public(rep), "plots": made})

    combined = {
        "config": config,
        "environment": environment,
        "datasets": {
            rep["dataset"]: {**_public(rep), "plots": plots_made[rep["dataset"]]} for rep in reports
        },
        "n_cells": len(cells),
        "n_failed": sum(c["status"] != "ok" for c in cells),
        "missing_cells": missing,
        "seeds": seeds,
    }
    atomic_write_json(run_dir / "results.json", combined)

    atomic_write_text(run_dir / "results.csv", csv_text(cells))
    multi_seed = len(seeds) > 1
    atomic_write_text(run_dir / "summary.txt", summary_text(reports, notes, multi_seed))
    markdown = report_markdown(
        run_dir, reports, config, environment, plots_made, plot_errors, notes, multi_seed
    )
    atomic_write_text(run_dir / "REPORT.md", markdown)
    return combined
