"""The sweep's leaderboard (validation) and the study report of its final (test).

``leaderboard.md``: per arm, its configurations ranked by validation nDCG@10, and the cost of the
sweep (training seconds in total and per arm); ``curves.png``: each configuration's validation
curve, pruned ones marked. Nothing there comes from the test split.

``REPORT.md`` / ``study.json`` (after ``maw sweep --final``): per arm (its best configuration by
validation) and for bm25 / zeroshot, test nDCG@10 and R@100 as mean ± std over seeds; then the
*planned* comparisons only, fixed before the test split is read:

* the best MAW arm (by validation) vs each trained baseline arm (lora, finetune, full);
* every other MAW arm vs the baseline of its own capacity: an arm that trains every layer
  (``finetune_layers = "all"``) vs ``full``; MAW + LoRA (``lora_layers`` set) vs ``lora``.

Tests: per-query scores averaged over seeds, then a paired two-sided randomisation test across
queries (and a paired t-test as a cross-check), Holm over the planned nDCG@10 comparisons (the
R@100 ones are a second, secondary family), intervals that match the Holm verdicts; see
:mod:`maw.benchmark.significance`. The minimum detectable effect (:func:`mde`) of a comparison is
``(z_{1-a/2} + z_{power}) * sd / sqrt(n)``, ``sd`` the standard deviation of its per-query
differences, at power 0.8, for ``a = alpha`` and for ``a = alpha / m`` (the strictest Holm step of
a family of m). The headline compares the best MAW arm with the strongest baseline: the trained
baseline arm with the best *validation* score, chosen before the test split is read. Verdicts say
what was shown ("beat", "lost to", "no significant difference (could detect ≥ X)"); "equivalent
within ±m" only from an equivalence test (TOST) whose margin the grid fixed before the final
(top-level ``equivalence_margin``; none by default: no equivalence claim). An arm whose selected
epoch is 0 in every seed is flagged as untrained.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import numpy as np

from maw.benchmark.cells import load_cells
from maw.benchmark.report import averaged_per_query, untrained_note
from maw.benchmark.significance import ALPHA, DEFAULT_RESAMPLES, POWER, apply_holm, compare, mde
from maw.sweep.cells import best_cells, final_dir, read_sweep_cell, sweep_cell_path
from maw.sweep.grid import Grid
from maw.sweep.reference import EPOCHS as REFERENCE_EPOCHS
from maw.sweep.reference import METHOD as REFERENCE
from maw.utils.io import atomic_write_json, atomic_write_text, read_json

METRICS = ("nDCG@10", "R@100")
PRIMARY = METRICS[0]  # the sweep's selection metric
BASELINE_METHODS = ("lora", "finetune", "full")
SEED_FREE = ("bm25", "zeroshot", REFERENCE)  # one run each in the final


def _fmt(v: Any, digits: int = 4) -> str:
    return "—" if v is None or (isinstance(v, float) and not math.isfinite(v)) else f"{v:.{digits}f}"


def _md_table(header: list[str], rows: list[list[str]]) -> list[str]:
    out = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    return out + ["| " + " | ".join(r) + " |" for r in rows]


# ---------------------------------------------------------------------------------------------- leaderboard
def sweep_records(out: Path, grid: Grid) -> dict[str, list[dict[str, Any]]]:
    """arm -> its cells' records (None for a cell not run yet), in grid order."""
    return {
        a.name: [
            {
                "cell": c.name,
                "label": c.label(),
                "status": "missing",
                **(read_sweep_cell(sweep_cell_path(out, grid, c)) or {}),
            }
            for c in grid.arm_cells(a.name)
        ]
        for a in grid.arms
    }


def earlier_seconds(history: list[dict[str, Any]], resumed_from: dict[str, Any] | None) -> float:
    """Seconds a resumed training spent in the processes before it: the epochs it had finished
    (training and validation; epoch 0 is the pretrained model's validation). A cell's own seconds
    count only the process that finished it."""
    if not resumed_from:
        return 0.0
    return sum(
        (h.get("seconds") if "seconds" in h else h.get("val_seconds")) or 0.0
        for h in history
        if h.get("epoch", 0) < resumed_from.get("epoch", 0)
    )


def cell_wall(record: dict[str, Any]) -> float:
    """A sweep cell's wall seconds over every process that worked on it."""
    return (record.get("cell_s") or 0.0) + earlier_seconds(
        record.get("history") or [], record.get("resumed_from")
    )


def pruning_cost(
    records: dict[str, list[dict[str, Any]]], max_epochs: int, first_rung: int = 1
) -> dict[str, float]:
    """The sweep's training seconds, and an estimate of what the same configurations would have cost
    unpruned: a pruned cell's mean epoch time (training + validation) times the epochs it would have
    run, taken as the median number of epochs of its arm's unpruned cells (``max_epochs`` when the
    arm has none).

    ``floor_epochs``: the fewest epochs any successive halving with its first rung at ``first_rung``
    could have spent on the same configurations: each trains to the first rung, and one per arm (its
    winner) on to the epochs it would have run. With few configurations per arm and few epochs this
    floor alone can be far above a target ratio (3 configurations x 4 epochs: 6 of 12, 50%)."""
    actual = estimate = epochs_run = epochs_unpruned = floor = 0.0
    for rs in records.values():
        ok = [r for r in rs if r["status"] == "ok"]
        full = sorted(r["epochs_run"] for r in ok if not r.get("pruned"))
        would = float(np.median(full)) if full else float(max_epochs)
        if ok:
            floor += len(ok) * min(first_rung, would) + max(would - first_rung, 0.0)
        for r in ok:
            spent = r.get("train_s") or 0.0
            actual += spent
            epochs = [h.get("seconds") or 0.0 for h in r.get("history", []) if h.get("epoch", 0) > 0]
            missed = max(would - r["epochs_run"], 0.0) if r.get("pruned") else 0.0
            estimate += spent + (missed * (sum(epochs) / len(epochs)) if epochs else 0.0)
            epochs_run += r["epochs_run"]
            epochs_unpruned += r["epochs_run"] + missed
    return {
        "train_s": actual,
        "unpruned_estimate_s": estimate,
        "epochs": epochs_run,
        "unpruned_epochs": epochs_unpruned,
        "floor_epochs": floor,
    }


def remaining_cost(
    records: dict[str, list[dict[str, Any]]], grid: Grid, final_done: dict[str, set[int]] | None = None
) -> dict[str, float] | None:
    """Seconds the sweep and its final still need, projected from the finished cells' own times
    (None before any cell finished): an epoch (training + validation) and the epoch-0 validation
    cost their median in the arm's finished cells (all arms' while it has none; the median, so that
    one slow epoch, e.g. a paused process, does not move the projection).

    A cell still to run costs from its epoch-0 validation plus ``prune_min_epochs`` epochs (pruned
    at the first rung; an arm's first configuration always runs on) up to ``num_epochs`` epochs; the
    final trains each arm's best configuration once per final seed other than the sweep's (that
    seed resumes the sweep's finished training) for as many epochs as its sweep cell ran, less the
    seeds in ``final_done`` (arm -> seeds whose final cell has finished). Test encoding, bm25,
    zeroshot and the reference are not counted."""

    def times(rs: list[dict[str, Any]]) -> tuple[float, float] | None:
        hist = [h for r in rs for h in r.get("history", [])]
        epochs = [h["seconds"] for h in hist if h.get("epoch", 0) > 0 and h.get("seconds")]
        zero = [h["val_seconds"] for h in hist if h.get("epoch") == 0 and h.get("val_seconds")]
        if not epochs:
            return None
        return float(np.median(epochs)), float(np.median(zero)) if zero else 0.0

    done = {a: [r for r in rs if r["status"] == "ok"] for a, rs in records.items()}
    overall = times([r for rs in done.values() for r in rs])
    if overall is None:
        return None
    E = grid.base.train.num_epochs
    first = grid.pruner.min_epochs if grid.pruner.enabled else E
    extra_seeds = [s for s in grid.final_seeds if s != grid.base.train.seed]
    low = high = final = 0.0
    for arm, rs in records.items():
        epoch_s, zero_s = times(done[arm]) or overall
        for i, _ in enumerate(r for r in rs if r["status"] == "missing"):
            runs_on = not done[arm] and i == 0
            low += zero_s + (E if runs_on else min(first, E)) * epoch_s
            high += zero_s + E * epoch_s
        best = max(done[arm], key=lambda r: r["score"]) if done[arm] else None
        todo = [s for s in extra_seeds if s not in (final_done or {}).get(arm, set())]
        final += len(todo) * (zero_s + (best["epochs_run"] if best else E) * epoch_s)
    return {"sweep_low_s": low, "sweep_high_s": high, "final_s": final}


def leaderboard_markdown(
    out: Path, grid: Grid, records: dict[str, list[dict[str, Any]]] | None = None
) -> str:
    records = sweep_records(out, grid) if records is None else records
    ok = {a: [r for r in rs if r["status"] == "ok"] for a, rs in records.items()}
    total = sum(r.get("train_s") or 0.0 for rs in ok.values() for r in rs)
    wall = sum(cell_wall(r) for rs in records.values() for r in rs if r["status"] != "missing")
    val_n = next(
        (
            r["dataset_info"]["counts"]["val_queries"]
            for rs in ok.values()
            for r in rs
            if r.get("dataset_info")
        ),
        None,
    )
    lines = [
        f"# Sweep leaderboard: {grid.key}",
        "",
        *([f"> {grid.note}", ""] if grid.note else []),
        f"Grid `{grid.file_label}`; budget {grid.budget} configurations per arm (the whole grid of an arm when it "
        f"is smaller, else a sample with seed {grid.sample_seed}); training seed {grid.base.train.seed}. "
        f"Scores are **validation** nDCG@10 ({val_n if val_n is not None else '?'} queries): the best epoch of "
        "each training (epoch 0 is the pretrained model); the test split was not read by the sweep.",
        "",
        f'Cost: {total:.0f} s in the training runs ("train s" below: steps, per-epoch validation and caches, a '
        f"resumed run's earlier processes included); {wall:.0f} s wall over every cell (also data loading).",
        "",
        f"Pruning: {grid.pruner.describe(grid.base.train.num_epochs)}.",
        "",
    ]
    if rungs := grid.pruner.rungs(grid.base.train.num_epochs):
        cost = pruning_cost(records, grid.base.train.num_epochs, rungs[0])
        n_pruned = sum(1 for rs in ok.values() for r in rs if r.get("pruned"))
        if cost["unpruned_estimate_s"] > 0:
            lines += [
                f"{n_pruned} configuration(s) pruned. Without pruning the same configurations would have cost about "
                f"{cost['unpruned_estimate_s']:.0f} s of training (estimate: a pruned configuration's mean epoch time "
                "x the median number of epochs of its arm's unpruned configurations); the pruned sweep cost "
                f"{100 * cost['train_s'] / cost['unpruned_estimate_s']:.0f}% of that. In epochs trained (the measure "
                f"that does not move with the machine's load): {cost['epochs']:.0f} of {cost['unpruned_epochs']:.0f}, "
                f"{100 * cost['epochs'] / cost['unpruned_epochs']:.0f}%. The least any successive halving with its "
                f"first rung at epoch {rungs[0]} could have spent on these configurations (each to that rung, one "
                f"per arm to the end): {cost['floor_epochs']:.0f} epochs, "
                f"{100 * cost['floor_epochs'] / cost['unpruned_epochs']:.0f}%.",
                "",
            ]
    if any(r["status"] == "ok" and r.get("history") for rs in records.values() for r in rs):
        lines += [
            f"Validation curves: [{CURVES}]({CURVES}) (one panel per arm, one line per configuration in the order they "
            "finished; a cross marks where a configuration was pruned).",
            "",
        ]
    left = remaining_cost(records, grid)
    missing = sum(1 for rs in records.values() for r in rs if r["status"] == "missing")
    if left is not None and missing:
        lines += [
            f"Still to run (projected from the finished cells' epoch times): {missing} cell(s), "
            f"{left['sweep_low_s'] / 3600:.1f} to {left['sweep_high_s'] / 3600:.1f} h (every later configuration "
            f"pruned at the first rung, or none), then the final's training, about {left['final_s'] / 3600:.1f} h "
            "(a final seed equal to the sweep's reuses its cell; test encoding and the baselines not counted).",
            "",
        ]
    rows = []
    for a in grid.arms:
        rs = ok[a.name]
        best = max(rs, key=lambda r: r["score"]) if rs else None
        rows.append(
            [
                a.name,
                a.method,
                f"{len(grid.arm_cells(a.name))} of {a.size}",
                f"{len(rs)}",
                _fmt(best["score"]) if best else "—",
                best["label"] if best else "—",
                f"{sum(r.get('train_s') or 0.0 for r in rs):.0f}",
            ]
        )
    lines += _md_table(
        [
            "arm",
            "method",
            "configurations (of grid)",
            "finished",
            "best val nDCG@10",
            "best configuration",
            "train s",
        ],
        rows,
    )
    sizes = {len(grid.arm_cells(a.name)) for a in grid.arms}
    if len(sizes) > 1:
        small = [
            f"{a.name} ({len(grid.arm_cells(a.name))})"
            for a in grid.arms
            if len(grid.arm_cells(a.name)) < grid.budget
        ]
        lines += [
            "",
            f"Unequal counts: {', '.join(small)} had fewer configurations than the budget (their whole grid).",
        ]
    for a in grid.arms:
        lines += ["", f"## {a.name} (method {a.method})", ""]
        if a.fixed:
            lines += ["Fixed: " + ", ".join(f"`{k} = {v}`" for k, v in a.fixed.items()), ""]
        ranked = sorted(records[a.name], key=lambda r: (r["status"] != "ok", -(r.get("score") or 0.0)))
        table = []
        for i, r in enumerate(ranked, 1):
            if r["status"] == "ok":
                table.append(
                    [
                        str(i),
                        r["label"],
                        _fmt(r["score"]),
                        _fmt((r.get("val") or {}).get("R@100")),
                        f"{r['best_epoch']} / {r['epochs_run']}",
                        f"after epoch {r['pruned_at_epoch']}" if r.get("pruned") else "no",
                        f"{r['train_s']:.0f}",
                        f"`{r['cell']}`",
                    ]
                )
            else:
                why = r["status"] if r["status"] == "missing" else f"failed: {str(r.get('error'))[:80]}"
                table.append(["—", r["label"], why, "", "", "", "", f"`{r['cell']}`"])
        lines += _md_table(
            [
                "rank",
                "configuration",
                "val nDCG@10",
                "val R@100",
                "best epoch / epochs",
                "pruned",
                "train s",
                "cell",
            ],
            table,
        )
    return "\n".join(lines) + "\n"


CURVES = "curves.png"


def sweep_curves(records: dict[str, list[dict[str, Any]]]) -> dict[str, list[dict[str, Any]]]:
    """arm -> the validation curve of each finished configuration (the figure's data), in the order
    they finished (``finished_at``)."""
    out: dict[str, list[dict[str, Any]]] = {}
    for arm, rs in records.items():
        ok = sorted(
            (r for r in rs if r["status"] == "ok" and r.get("history")),
            key=lambda r: str(r.get("finished_at", "")),
        )
        best = max(ok, key=lambda r: r["score"])["cell"] if ok else None
        out[arm] = []
        for r in ok:
            pts = [(h["epoch"], h["val"][PRIMARY]) for h in r["history"] if PRIMARY in (h.get("val") or {})]
            out[arm].append(
                {
                    "name": r["cell"],
                    "epochs": [e for e, _ in pts],
                    "scores": [v for _, v in pts],
                    "pruned_at": r.get("pruned_at_epoch") if r.get("pruned") else None,
                    "best": r["cell"] == best,
                }
            )
    return out


def write_leaderboard(out: Path, grid: Grid) -> Path:
    """leaderboard.md, and curves.png (validation curves per arm) once a configuration has finished."""
    from maw.benchmark.plots import plot_sweep_curves

    out = Path(out)
    path = out / "leaderboard.md"
    records = sweep_records(out, grid)
    curves = sweep_curves(records)
    if any(curves.values()):
        plot_sweep_curves(
            out / CURVES,
            f"Sweep of {grid.key}: validation {PRIMARY} per epoch",
            curves,
            grid.pruner.rungs(grid.base.train.num_epochs),
            PRIMARY,
        )
    atomic_write_text(path, leaderboard_markdown(out, grid, records))
    return path


# ---------------------------------------------------------------------------------------------- the study
def planned_pairs(arms: dict[str, dict[str, Any]]) -> tuple[str | None, list[tuple[str, str]], str | None]:
    """(best MAW arm, planned (method, baseline) pairs, strongest baseline) from the arms' sweep facts
    ``{name: {"method", "val_score", "options"}}`` (validation only)."""
    maw = {n: a for n, a in arms.items() if a["method"] == "maw"}
    bases = {n: a for n, a in arms.items() if a["method"] in BASELINE_METHODS}
    best_maw = max(maw, key=lambda n: maw[n]["val_score"]) if maw else None
    strongest = max(bases, key=lambda n: bases[n]["val_score"]) if bases else None
    pairs = [(best_maw, b) for b in bases] if best_maw else []
    fulls = [n for n, a in bases.items() if a["method"] == "full"]
    loras = [n for n, a in bases.items() if a["method"] == "lora"]
    for n, a in maw.items():  # every other MAW arm against the baseline of its own capacity
        if n == best_maw:
            continue
        if str(a["options"].get("finetune_layers", "")).lower() == "all":
            pairs += [(n, f) for f in fulls]
        elif a["options"].get("lora_layers"):  # MAW + LoRA
            pairs += [(n, b) for b in loras]
    return best_maw, pairs, strongest


def _family(
    cells: dict[str, list[dict]],
    pairs: list[tuple[str, str]],
    metric: str,
    alpha: float,
    margin: float | None = None,
) -> list[dict[str, Any]]:
    todo = []
    for m, b in pairs:
        a_scores, b_scores = averaged_per_query(cells[m], metric), averaged_per_query(cells[b], metric)
        if set(a_scores) & set(b_scores):
            todo.append((m, b, a_scores, b_scores))
    n_resamples = max(DEFAULT_RESAMPLES, math.ceil(10 * len(todo) / alpha))
    comps = [
        compare(m, b, metric, x, y, n_resamples=n_resamples, seed=0, margin=margin) for m, b, x, y in todo
    ]
    apply_holm(comps, alpha=alpha)
    tested = sum(1 for c in comps if not c.degenerate)
    rows = []
    for (_, _, x, y), c in zip(todo, comps, strict=True):
        q = sorted(set(x) & set(y))
        d = np.array([x[k] - y[k] for k in q])
        sd = float(d.std(ddof=1)) if len(d) > 1 else 0.0
        rows.append(
            {
                **c.to_dict(),
                "verdict": c.verdict,
                "verdict_text": c.verdict_text,
                "sd_diff": sd,
                "mde": mde(sd, len(d), alpha),
                "mde_holm": mde(sd, len(d), alpha / max(tested, 1)),
                "family_size": tested,
            }
        )
    return rows


def _seed_stats(cells: list[dict[str, Any]], metric: str) -> dict[str, Any]:
    vals = [c["metrics"].get(metric) for c in cells if c["metrics"].get(metric) is not None]
    return {
        "mean": float(np.mean(vals)) if vals else None,
        "std": float(np.std(vals, ddof=1)) if len(vals) > 1 else None,
        "n": len(vals),
        "values": vals,
    }


def headline(
    best_maw: str | None,
    strongest: str | None,
    rows: list[dict[str, Any]],
    alpha: float = ALPHA,
    untrained: tuple[str, ...] | list[str] = (),
) -> str:
    """The one plain sentence, saying what the test of the best MAW arm against the strongest baseline
    on test nDCG@10 showed: it beat or lost to it (Holm-significant), or there was no significant
    difference (and the smallest difference the study could have detected), or -- only from an
    equivalence test (TOST) with the margin fixed in the grid before the final -- it was equivalent
    within ±m. An arm whose selected epoch was 0 in every seed (``untrained``) is flagged."""
    if best_maw is None or strongest is None:
        return "No verdict: the study needs a MAW arm and at least one trained baseline arm."
    row = next((r for r in rows if r["method"] == best_maw and r["baseline"] == strongest), None)
    who = (
        f"the strongest capacity-matched baseline ({strongest}, best of the trained baselines on validation)"
    )
    if row is None:
        return f"No verdict: the final has no test scores of {best_maw} and {strongest} in common (cells missing or failed)."
    flag = untrained_note(
        [a for a in (best_maw, strongest) if a in untrained],
        {a: f"the {a} arm" for a in (best_maw, strongest)},
    )
    nums = f"test nDCG@10 {row['mean_method']:.4f} vs {row['mean_baseline']:.4f}, difference {row['diff']:+.4f}, n = {row['n']} queries"
    if row["degenerate"]:
        return f"MAW ({best_maw}) could not be tested against {who}: {row['degenerate']} ({nums}).{flag}"
    ci = f"Holm-adjusted p = {row['p_perm_holm']:.3g}, {100 * (1 - row['holm_level']):.4g}% CI [{_fmt(row['holm_ci_low'])}, {_fmt(row['holm_ci_high'])}]"
    margin = row.get("margin")
    tost = f"Holm-adjusted TOST p = {row['p_tost_holm']:.3g}" if row.get("p_tost_holm") is not None else ""
    power = (
        f"; with 80% power the test detects a difference of ≥ {row['mde_holm']:.4f} nDCG@10 at alpha = "
        f"{alpha}/{row['family_size']}"
        if row.get("mde_holm") is not None
        else ""
    )
    if row["verdict"] == "better":
        return f"MAW ({best_maw}) beat {who} ({nums}; {ci}{power}).{flag}"
    if row["verdict"] == "worse":
        return f"MAW ({best_maw}) lost to {who} ({nums}; {ci}{power}).{flag}"
    if row["verdict"] == "equivalent":
        return (
            f"MAW ({best_maw}) was equivalent to {who} within ±{margin:g} nDCG@10 (equivalence test, TOST, with "
            f"the margin fixed in the grid before the final; {tost}; {nums}; {ci}).{flag}"
        )
    equivalence = (
        f" Equivalence within ±{margin:g} nDCG@10 was not shown ({tost})."
        if margin is not None
        else " No equivalence margin was fixed in the grid (equivalence_margin), so no equivalence is claimed."
    )
    return (
        f"MAW ({best_maw}) showed no significant difference from {who} ({nums}; {ci}); the study could have "
        f"detected a difference of ≥ {row['mde_holm']:.4f} nDCG@10 (80% power, two-sided, alpha = "
        f"{alpha}/{row['family_size']}; ≥ {row['mde']:.4f} at alpha = {alpha} unadjusted).{equivalence}{flag}"
    )


def _goals(grid: Grid, methods: dict[str, Any], cells: dict[str, list[dict]]) -> list[dict[str, Any]]:
    """Each goal arm's test nDCG@10 mean against its goal, and its training time per run as a ratio
    to the sentence-transformers reference's (when the final ran it)."""
    ref = cells.get(REFERENCE, [])
    ref_s = ref[0]["runtimes"].get("train_s") if ref else None
    ref_steps = (ref[0].get("train_setup") or {}).get("optimizer_steps") if ref else None
    ref_step_s = ref_s / ref_steps if ref_s and ref_steps else None
    out = []
    for arm, goal in grid.goals:
        info = methods.get(arm)
        if info is None:
            continue
        mean = info["test"]["nDCG@10"]["mean"]
        runs = len(info["seeds"])
        # timed in the same final as the reference: the seeds this final trained (the sweep's seed
        # reuses the sweep's training, which ran under other conditions), else every run
        fresh = [
            c["runtimes"]["train_s"]
            for c in cells.get(arm, [])
            if c["seed"] != grid.base.train.seed and c["runtimes"].get("train_s")
        ]
        per_run = float(np.mean(fresh)) if fresh else (info["train_s"] / runs if runs else None)
        # like for like: seconds per optimizer step, the training steps only (no validation)
        per_step = [
            t / n
            for t, n in (
                (
                    sum(h.get("train_seconds") or 0.0 for h in c.get("history") or []),
                    max((h.get("optimizer_steps") or 0 for h in c.get("history") or []), default=0),
                )
                for c in cells.get(arm, [])
                if c["seed"] != grid.base.train.seed
            )
            if n
        ]
        step_s = float(np.mean(per_step)) if per_step else None
        out.append(
            {
                "arm": arm,
                "goal": goal,
                "mean": mean,
                "runs": runs,
                "met": None if mean is None else mean >= goal,
                "train_s_per_run": per_run,
                "timed_runs": len(fresh) if fresh else runs,
                "reference_train_s": ref_s,
                "time_ratio": per_run / ref_s if per_run and ref_s else None,
                "step_s": step_s,
                "reference_step_s": ref_step_s,
                "step_ratio": step_s / ref_step_s if step_s and ref_step_s else None,
            }
        )
    return out


def _cost(out: Path, grid: Grid, cells: dict[str, list[dict]]) -> dict[str, float]:
    """Wall seconds of the study: every sweep cell (training, validation, setup) and every final cell,
    with the processes before a resume (not the sweep's training that a final cell at the sweep's seed
    reuses: that is counted in the sweep)."""
    sweep = sum(
        cell_wall(r) for rs in sweep_records(out, grid).values() for r in rs if r["status"] != "missing"
    )
    final = sum(
        (c.get("cell_seconds") or 0.0)
        + (
            0.0
            if c.get("seed") == grid.base.train.seed and c.get("sweep_cell")
            else earlier_seconds(c.get("history") or [], (c.get("train_setup") or {}).get("resumed_from"))
        )
        for cs in cells.values()
        for c in cs
    )
    return {"sweep_s": sweep, "final_s": final, "total_s": sweep + final}


def study(out: Path, grid: Grid, seeds: tuple[int, ...], alpha: float = ALPHA) -> dict[str, Any]:
    """Everything REPORT.md shows, from the final cells on disk (JSON-safe)."""
    best = best_cells(grid, out)
    cells: dict[str, list[dict[str, Any]]] = {}
    for c in load_cells(final_dir(out)):
        if c["status"] != "ok" or c["seed"] not in seeds:
            continue
        if c["method"] in SEED_FREE or (
            c["method"] in best and c.get("sweep_cell") == best[c["method"]][0].name
        ):
            cells.setdefault(c["method"], []).append(c)
    for m in SEED_FREE:  # seed-independent (or a one-run reference): one run counts
        if m in cells:
            cells[m] = cells[m][:1]
    arms = {
        a.name: {
            "method": a.method,
            "val_score": best[a.name][1]["score"],
            "options": best[a.name][0].options,
            "label": best[a.name][0].label(),
            "sweep_cell": best[a.name][0].name,
        }
        for a in grid.arms
        if a.name in best
    }
    best_maw, pairs, strongest = planned_pairs(arms)
    pairs = [(m, b) for m, b in pairs if m in cells and b in cells]
    margin = getattr(grid.base, "equivalence_margin", None)  # fixed in the grid, before the final
    families = {metric: _family(cells, pairs, metric, alpha, margin) for metric in METRICS}
    order = [m for m in SEED_FREE if m in cells] + [a.name for a in grid.arms]
    methods = {
        m: {
            **arms.get(m, {"method": m}),
            "seeds": sorted(c["seed"] for c in cells.get(m, [])),
            "test": {metric: _seed_stats(cells.get(m, []), metric) for metric in METRICS},
            "train_s": sum(c["runtimes"].get("train_s") or 0.0 for c in cells.get(m, [])),
            "best_epochs": [c.get("best_epoch") for c in sorted(cells.get(m, []), key=lambda c: c["seed"])],
        }
        for m in order
    }
    n_test = next(
        (
            c["dataset_info"]["counts"]["test_queries"]
            for cs in cells.values()
            for c in cs
            if c.get("dataset_info")
        ),
        None,
    )
    expected = 2 + int(grid.reference) + len(grid.arms) * len(seeds)
    finished = sum(len(v) for v in cells.values())
    left = None
    if finished < expected:
        done = {a.name: {c["seed"] for c in cells.get(a.name, [])} for a in grid.arms}
        left = remaining_cost(sweep_records(out, grid), grid, done)
    untrained = [m for m, i in methods.items() if i["best_epochs"] and all(e == 0 for e in i["best_epochs"])]
    return {
        "dataset": grid.key,
        "seeds": list(seeds),
        "note": grid.note,
        "final_cells": {
            "finished": finished,
            "expected": expected,
            "training_left_s": left["final_s"] if left else None,
        },
        "alpha": alpha,
        "power": POWER,
        "equivalence_margin": margin,
        "untrained": untrained,
        "goals": _goals(grid, methods, cells),
        "cost": _cost(out, grid, cells),
        "test_queries": n_test,
        "best_maw": best_maw,
        "strongest_baseline": strongest,
        "planned": [list(p) for p in pairs],
        "methods": methods,
        "comparisons": families,
        "headline": headline(best_maw, strongest, families["nDCG@10"], alpha, untrained),
    }


def report_markdown(s: dict[str, Any], out: Path) -> str:
    seeds = ", ".join(map(str, s["seeds"]))
    lines = [
        f"# MAW study: {s['dataset']}",
        "",
        f"**{s['headline']}**",
        "",
    ]
    cost = s.get("cost") or {}
    if cost.get("total_s"):
        lines += [
            f"The study cost {cost['total_s'] / 3600:.2f} h of machine time in all (sweep "
            f"{cost.get('sweep_s', 0.0) / 3600:.2f} h, final {cost.get('final_s', 0.0) / 3600:.2f} h; see Cost).",
            "",
        ]
    if s.get("note"):
        lines += [f"> {s['note']}", ""]
    done = s["final_cells"]
    if done["finished"] < done["expected"]:
        lines += [
            f"**Incomplete: {done['finished']} of {done['expected']} final cells finished**; the figures below use "
            "the runs that exist (rerun `maw sweep --final` to finish; it resumes cell by cell)."
            + (
                f" About {done['training_left_s'] / 3600:.1f} h of training left (projected from each arm's epoch "
                "times in the sweep; test encoding and the baselines not counted)."
                if done.get("training_left_s") is not None
                else ""
            ),
            "",
        ]
    lines += [
        f"Each arm's best configuration by validation nDCG@10 (see [leaderboard.md](leaderboard.md)) trained with "
        f"seeds {seeds} and evaluated once on the test split ({s['test_queries']} queries, full corpus); bm25 and "
        "zeroshot do not depend on the seed and ran once.",
        "",
        "## Test results (mean ± std over seeds)",
        "",
    ]
    rows = []
    for m, info in s["methods"].items():
        cols = []
        for metric in METRICS:
            st = info["test"][metric]
            cols.append(
                "—"
                if st["mean"] is None
                else _fmt(st["mean"]) + (f" ± {st['std']:.4f}" if st["std"] is not None else "")
            )
        rows.append(
            [
                m,
                info["method"],
                info.get("label", "-"),
                _fmt(info.get("val_score")),
                *cols,
                str(len(info["seeds"])),
                ", ".join("—" if e is None else str(e) for e in info["best_epochs"]) or "—",
            ]
        )
    lines += _md_table(
        ["arm", "method", "configuration", "val nDCG@10", "test nDCG@10", "test R@100", "runs", "best epoch"],
        rows,
    )
    untrained = s.get("untrained")
    if untrained is None:  # a study.json written before the field existed
        untrained = [
            m for m, i in s["methods"].items() if i["best_epochs"] and all(e == 0 for e in i["best_epochs"])
        ]
    if untrained:
        lines += [
            "",
            f"Best epoch 0 in every seed for {', '.join(untrained)}: training never beat the pretrained model on "
            "validation, so the model evaluated on test is the pretrained encoder (its test score is zeroshot's).",
        ]
    lines += [
        "",
        "## Planned comparisons",
        "",
        f"Fixed before the test split was read: the best MAW arm by validation ({s['best_maw']}) vs each trained "
        "baseline arm, plus an all-layer MAW arm vs full when the grid has one. Per-query scores are averaged over "
        "the seeds, then compared across queries with a paired two-sided randomisation (sign-flip) test; Holm over "
        f"the planned nDCG@10 comparisons (R@100: a second, secondary family); alpha = {s['alpha']}. The interval is "
        "the Holm-adjusted randomisation interval, so it excludes 0 exactly when the verdict is significant. MDE: "
        f"the smallest true difference the test finds with {int(100 * s['power'])}% power, "
        "(z_{1-a/2} + z_{0.8}) · sd(differences) / sqrt(n), at a = alpha/m (strictest Holm step) and a = alpha. "
        'Verdicts say what was shown: "beat" / "lost to" (Holm-significant), "no significant difference '
        '(could detect ≥ MDE at alpha/m)", and "equivalent within ±m" only from an equivalence test (TOST, '
        "two one-sided paired randomisation tests, Holm over the family) whose margin m the grid fixed before "
        "the final"
        + (
            f": here m = {s['equivalence_margin']:g}."
            if s.get("equivalence_margin") is not None
            else "; this grid fixed none (equivalence_margin), so nothing is called equivalent."
        ),
        "",
    ]
    for metric, fam in s["comparisons"].items():
        lines += [f"### {metric}", ""]
        if not fam:
            lines += ["No comparison could be run (final cells missing).", ""]
            continue
        table = []
        for r in fam:
            if r["degenerate"]:
                table.append(
                    [
                        f"{r['method']} vs {r['baseline']}",
                        _fmt(r["diff"]),
                        "not tested: " + r["degenerate"],
                        "",
                        "",
                        "",
                        "",
                        str(r["n"]),
                    ]
                )
                continue
            table.append(
                [
                    f"{r['method']} vs {r['baseline']}",
                    f"{r['diff']:+.4f}",
                    f"[{_fmt(r['holm_ci_low'])}, {_fmt(r['holm_ci_high'])}] ({100 * (1 - r['holm_level']):.4g}%)",
                    f"{r['p_perm_holm']:.3g}",
                    f"{r['p_ttest']:.3g}",
                    _verdict_cell(r, untrained),
                    f"{r['mde_holm']:.4f} / {r['mde']:.4f}",
                    str(r["n"]),
                ]
            )
        lines += _md_table(
            [
                "comparison",
                "difference",
                "Holm CI",
                "Holm p (randomisation)",
                "t-test p (raw)",
                "verdict",
                "MDE (alpha/m / alpha)",
                "n",
            ],
            table,
        )
        lines.append("")
    if s.get("goals"):
        lines += ["## Goals", ""]
        for g in s["goals"]:
            verdict = "not measured yet" if g["met"] is None else ("met" if g["met"] else "not met")
            ratio = (
                f"; training {g['train_s_per_run']:.0f} s per run (mean of the {g.get('timed_runs', g['runs'])} run(s) "
                "trained in the final; up to the grid's epochs with early stopping, each epoch's validation "
                f"included) = {g['time_ratio']:.2f}x sentence-transformers' {REFERENCE_EPOCHS}-epoch fine-tune of the "
                f"same model and data ({g['reference_train_s']:.0f} s, no validation, timed in this final)"
                if g["time_ratio"]
                else ""
            )
            if g.get("step_ratio"):
                ratio += (
                    f"; per optimizer step (training only, same batch size) {g['step_s']:.1f} s against "
                    f"{g['reference_step_s']:.1f} s = {g['step_ratio']:.2f}x"
                )
            lines.append(
                f"- {g['arm']}: test nDCG@10 {_fmt(g['mean'])} (mean of {g['runs']} run(s)) against the goal "
                f"{g['goal']:.2f}: {verdict}{ratio}."
            )
        lines.append("")
    lines += [
        "## Cost",
        "",
        f"The study took {cost.get('total_s', 0.0) / 3600:.2f} h of machine time: sweep {cost.get('sweep_s', 0.0) / 3600:.2f} h "
        f"(every cell: training, validation, setup), final {cost.get('final_s', 0.0) / 3600:.2f} h.",
        "",
        *[
            f"- {m}: {info['train_s']:.0f} s training over {len(info['seeds'])} run(s)"
            for m, info in s["methods"].items()
            if info["train_s"]
        ],
        "- a final seed equal to the sweep's training seed reuses the sweep's finished training (its seconds are "
        "the sweep's); see leaderboard.md for the sweep's cost.",
        "",
        "Data: `final/cells/` (one JSON per arm and seed, with per-query scores), `study.json`.",
    ]
    return "\n".join(lines) + "\n"


def _verdict_cell(row: dict[str, Any], untrained: list[str]) -> str:
    """A comparison's verdict in words (with its TOST p when a margin was fixed), untrained arms flagged."""
    text = row.get("verdict_text") or row["verdict"]
    if row.get("p_tost_holm") is not None:
        text += f" (TOST Holm p = {row['p_tost_holm']:.3g})"
    flagged = [a for a in (row["method"], row["baseline"]) if a in untrained]
    return text + (f"; {', '.join(flagged)} untrained (epoch 0 in every seed)" if flagged else "")


def write_report(out: Path, grid: Grid, seeds: tuple[int, ...]) -> Path:
    out = Path(out)
    s = study(out, grid, seeds)
    atomic_write_json(out / "study.json", s)
    path = out / "REPORT.md"
    atomic_write_text(path, report_markdown(s, out))
    return path


def load_study(out: Path) -> dict[str, Any]:
    return read_json(Path(out) / "study.json")
