"""``REPORT.md``: its sections, from the dataset reports of :mod:`maw.benchmark.report.build`."""

from __future__ import annotations

import json
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from maw.benchmark.cells import THROUGHPUT_SAMPLE
from maw.benchmark.report.aggregate import LATENCY_SAMPLES, TIMED_FIGURES
from maw.benchmark.report.efficiency import MIN_TIMING_RUNS, MIN_TIMING_SAMPLES, UNITS
from maw.benchmark.report.tables import fmt, md_table, metric_rows, metrics_heading, timing_text
from maw.benchmark.report.verdicts import confidence, signed
from maw.benchmark.significance import ALPHA, DEFAULT_RESAMPLES
from maw.evaluation.metrics import PRIMARY_METRICS, SELECTION_METRIC


def md_header(run_dir: Path, notes: Sequence[str]) -> list[str]:
    """Title, then the warnings (missing cells, one seed) before anything else."""
    md = [
        f"# MAW benchmark report\n\nRun folder `{run_dir}`, reports generated {time.strftime('%Y-%m-%d %H:%M:%S')} "
        "from the cells on disk.\n"
    ]
    for note in notes:
        head, *items = note.split("\n")
        md.append(f"> **{head}**")
        md += [f"> {line.strip()}" for line in items]
        md.append("")
    return md


def md_verdicts(reports: list[dict[str, Any]]) -> list[str]:
    return ["## Verdicts\n", *[f"- {rep['verdict']['sentence']}" for rep in reports], ""]


def md_metrics(rep: dict[str, Any], multi_seed: bool) -> list[str]:
    rows = [
        [*row, _ci(s["per_query_ci"].get(SELECTION_METRIC)), ", ".join(map(str, s["seeds"]))]
        for row, s in zip(metric_rows(rep, multi_seed), rep["methods"].values(), strict=True)
    ]
    header = ["method", *PRIMARY_METRICS, f"{SELECTION_METRIC} 95% CI (queries)", "seeds"]
    return [f"### Test metrics: {metrics_heading(multi_seed)}\n", md_table(header, rows) + "\n"]


def _ci(ci: dict[str, Any] | None) -> str:
    return f"[{ci['ci_low']:.3f}, {ci['ci_high']:.3f}]" if ci else "—"


def md_significance(rep: dict[str, Any]) -> list[str]:
    """Tested comparisons with the Holm-adjusted interval beside the adjusted p; degenerate ones listed."""
    comps = rep["_comparisons"]
    tested = [c for c in comps if not c.degenerate]
    left_out = [c for c in comps if c.degenerate]
    md = []
    if tested:
        md.append(
            f"### Paired significance tests (Holm over the {len(tested)} tested comparisons of this dataset)\n"
        )
        header = [
            "method",
            "baseline",
            "metric",
            "diff",
            "Holm-adjusted CI",
            "p (perm., Holm)",
            "p (perm.)",
            "p (t)",
            *(["TOST p (Holm)"] if any(c.p_tost_holm is not None for c in tested) else []),
            "verdict",
        ]
        untrained = set(rep.get("untrained") or ())
        rows = [
            [
                c.method,
                c.baseline,
                c.metric,
                f"{c.diff:+.4f}",
                f"{confidence(c.holm_level)}: [{signed(c.holm_ci_low)}, {signed(c.holm_ci_high)}]",
                f"{c.p_perm_holm:.3g}",
                f"{c.p_perm:.3g}",
                f"{c.p_ttest:.3g}",
                *([f"{c.p_tost_holm:.3g}"] if c.p_tost_holm is not None else []),
                c.verdict_text + _untrained_mark([c.method, c.baseline], untrained),
            ]
            for c in tested
        ]
        margin = next((c.margin for c in tested if c.margin is not None), None)
        md += [
            "Each interval inverts the randomisation test at its Holm step's level (confidence shown), so it "
            'excludes 0 exactly when the verdict is significant. "could detect ≥ X": the minimum detectable '
            "effect (80% power) at the strictest Holm level. "
            + (
                f"Equivalence: TOST within ±{margin:g}, the margin fixed in the run's configuration.\n"
                if margin is not None
                else "No equivalence margin was set (--equivalence-margin), so no comparison is called "
                "equivalent.\n"
            ),
            md_table(header, rows) + "\n",
        ]
    if left_out:
        md.append(f"Left out of the Holm family (degenerate, not tested): {len(left_out)} comparisons.\n")
        md += [
            f"- {c.method} vs {c.baseline}, {c.metric} ({c.mean_method:.4f} vs {c.mean_baseline:.4f}): "
            f"{c.degenerate}"
            for c in left_out
        ]
        md.append("")
    return md


def _untrained_mark(methods: Sequence[str], untrained: set[str]) -> str:
    flagged = [m for m in methods if m in untrained]
    return f" ({', '.join(flagged)} untrained: epoch 0 in every seed)" if flagged else ""


def md_efficiency(rep: dict[str, Any]) -> list[str]:
    """Timed figures as median [IQR] (n), sizes and parameters; then the same-kind conclusions."""
    rows = [
        [
            m,
            s["kind"],
            *[timing_text(s["timings"][k]) for k in TIMED_FIGURES],
            fmt(s["runtimes"]["index_bytes"]["mean"]),
            *[
                fmt(None if s["params"][k]["mean"] is None else round(s["params"][k]["mean"]))
                for k in ("trainable", "total")
            ],
        ]
        for m, s in rep["methods"].items()
    ]
    header = [
        "method",
        "kind",
        *[f"{k} ({UNITS[k]})" for k in TIMED_FIGURES],
        "index_bytes",
        "trainable params",
        "total params",
    ]
    return [
        "### Efficiency\n",
        "Timed figures: median [interquartile range] (number of samples). Samples are per-query timings where "
        f"the cell recorded them (`timings.{LATENCY_SAMPLES}`), otherwise one value per run; a figure marked "
        "'single measurement' has no spread and supports no comparison.\n",
        md_table(header, rows) + "\n",
        *md_efficiency_conclusions(rep),
    ]


def md_efficiency_conclusions(rep: dict[str, Any]) -> list[str]:
    """Same-kind timing conclusions, and which systems are not compared at all."""
    summaries, rows, md = rep["methods"], rep["efficiency"], []
    pairs = list(dict.fromkeys((r["method"], r["baseline"]) for r in rows))
    if rows and all("single measurement" in r["text"] or r["text"] == "not applicable" for r in rows):
        md.append(
            "No runtime difference resolved: every timed figure is a single measurement per method, with no "
            "spread to compare against (repeated timings are needed for a conclusion).\n"
        )
    elif pairs:
        text = {(r["method"], r["baseline"], r["figure"]): r["text"] for r in rows}
        md += [
            f"Same-kind comparisons (a difference is stated only when both sides have at least {MIN_TIMING_SAMPLES} "
            f"samples from at least {MIN_TIMING_RUNS} runs, the interquartile ranges do not overlap and every run "
            "of one side is on the same side of every run of the other: cells are timed at different moments "
            "and the machine's load between them is not controlled):\n",
            md_table(
                ["method", "baseline", *TIMED_FIGURES],
                [[m, b, *[text[(m, b, f)] for f in TIMED_FIGURES]] for m, b in pairs],
            )
            + "\n",
        ]
    kinds = sorted({s["kind"] for s in summaries.values()})
    if len(kinds) > 1:
        md.append(
            "Systems of different kinds ("
            + ", ".join(f"{k}: {', '.join(m for m, s in summaries.items() if s['kind'] == k)}" for k in kinds)
            + ") are not compared on runtime: no ratio or relative change between them is meaningful.\n"
        )
    return md


PLOT_CAPTIONS = {
    "metrics": "primary test metrics per method, error bars = 95% CI over test queries",
    "curves": "validation nDCG@10 and training loss per epoch",
    "tradeoff": "nDCG@10 against median query latency (bars: interquartile range when per-query timings exist)",
}


def md_plots(made: dict[str, str]) -> list[str]:
    if not made:
        return []
    caption = lambda kind: PLOT_CAPTIONS.get(  # noqa: E731
        kind, "router depth use: weight entropy per head (soft) or depth-choice frequencies (hard routers)"
    )
    return ["### Plots\n", *[f"- [{kind}]({p}): {caption(kind)}" for kind, p in made.items()], ""]


def md_failed(rep: dict[str, Any]) -> list[str]:
    if not rep["failed"]:
        return []
    return [
        "### Failed cells\n",
        *[f"- {f['method']} seed {f['seed']}: `{f['error']}`" for f in rep["failed"]],
        "",
    ]


def md_dataset(rep: dict[str, Any], made: dict[str, str], multi_seed: bool) -> list[str]:
    return [
        f"## {rep['dataset']}\n\n{rep['verdict']['sentence']}\n",
        *md_metrics(rep, multi_seed),
        *md_significance(rep),
        *md_efficiency(rep),
        *md_plots(made),
        *md_failed(rep),
    ]


def md_settings(reports: list[dict[str, Any]], config: Any, environment: Any) -> list[str]:
    md = ["## Settings\n", "### Datasets\n"]
    for rep in reports:
        info = rep["dataset_info"] or {}
        md.append(
            f"- **{rep['dataset']}**: source `{info.get('source', '?')}`, fingerprint `{info.get('fingerprint', '?')}`, "
            f"counts {json.dumps(info.get('counts', {}))}"
        )
        if info.get("provenance"):
            md.append(f"  - split provenance: `{json.dumps(info['provenance'], sort_keys=True)}`")
    md.append("\n### Resolved configuration\n")
    md.append(
        "```json\n" + json.dumps(config, indent=2, sort_keys=True) + "\n```\n"
        if config
        else "(config.json not found)\n"
    )
    md.append("### Environment\n")
    if environment:
        md.append(md_table(["package", "version"], [[k, str(v)] for k, v in environment.items()]) + "\n")
    return md


def md_methods_text() -> list[str]:
    """How the statistics and runtimes were obtained."""
    statistics = (
        "Per-query scores are averaged over seeds, then each method is compared with each baseline "
        "(bm25, zeroshot, lora, finetune) on the primary metrics by a two-sided paired randomisation test "
        f"(sign flips; at least {DEFAULT_RESAMPLES:,} resamples, and at least 10 m / alpha for m comparisons; "
        "exact for small n) and, as a cross-check, a two-sided paired t-test. Comparisons whose per-query "
        "differences have zero variance (e.g. identical scores on every query) are not tested and are left out of "
        "the Holm family. Holm's correction runs over the remaining comparisons of a dataset; a difference is "
        f"called significant when the Holm-adjusted randomisation p-value is <= {ALPHA}. The interval beside it "
        "inverts the same randomisation test at level min(alpha / (m - i), alpha p / p_Holm) for the test of rank i, "
        "so it excludes 0 exactly when the verdict is significant (the unadjusted 95% t interval is in the JSON). "
        "Verdicts say what was shown: 'beat' / 'lost to' (significant), 'no significant difference (could "
        "detect ≥ X)' with X the minimum detectable effect at 80% power and the strictest Holm level, and "
        "'equivalent within ±m' only from an equivalence test (TOST: two one-sided paired randomisation "
        "tests, Holm over the family) with the margin m fixed in the run's configuration before the test "
        "split was read (--equivalence-margin; none by default: no equivalence is claimed). A trained method "
        "whose selected epoch is 0 in every seed is flagged as untrained. "
        "bm25 and zeroshot do not depend on the seed: they run once and count once. "
        "'± std' is the sample standard deviation of the aggregate metric over seeds, shown only with two or more.\n"
    )
    runtimes = (
        "train_s: wall seconds of training (all epochs and validations). query_latency_ms: one test query at a "
        "time (encode + search) over the first `latency_queries` test queries; qps: all test queries "
        "batched. encode_docs_per_s: document-encoding throughput of the whole model (bm25: indexing). "
        "For the trained methods the test corpus embeddings reuse the trainer's frozen-prefix cache (only the "
        "trainable top layers run; encode_s is that pass) and encode_docs_per_s is measured by encoding "
        f"{THROUGHPUT_SAMPLE} documents spread over the corpus with the whole model, after a warm-up batch. "
        "index_bytes: FAISS flat index (dense) or BM25 score matrix.\n"
    )
    return ["### Statistics\n", statistics, "### Runtimes\n", runtimes]


def report_markdown(
    run_dir: Path,
    reports: list[dict[str, Any]],
    config: Any,
    environment: Any,
    plots_made: dict[str, dict[str, str]],
    plot_errors: list[str],
    notes: Sequence[str] = (),
    multi_seed: bool = True,
) -> str:
    md = [*md_header(run_dir, notes), *md_verdicts(reports)]
    for rep in reports:
        md += md_dataset(rep, plots_made.get(rep["dataset"], {}), multi_seed)
    md += [*md_settings(reports, config, environment), *md_methods_text()]
    if plot_errors:
        md += ["### Plot errors\n", *[f"- {e}" for e in plot_errors]]
    return "\n".join(md).rstrip() + "\n"
