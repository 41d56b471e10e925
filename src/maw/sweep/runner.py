"""Running a sweep cell by cell, resumably, and its final: best configuration x seeds on test.

Folders (``out`` is meant to be committed; ``checkpoints`` is not, e.g. ``runs/sweep-checkpoints``)::

    out/sweep.json                                  the grid, its cells and the shared configuration
    out/cells/<dataset>/<arm>-<id>-seed<seed>.json  one sweep cell: validation history and score
    out/final/cells/<dataset>/<arm>-seed<seed>.json one final cell (a benchmark cell: test metrics)
    out/leaderboard.md, out/REPORT.md, out/study.json   (maw.sweep.study)
    checkpoints/<arm>-<id>/checkpoints/<dataset>/<method>-seed<seed>/   the trainer's run folder
    checkpoints/prefix_cache/, checkpoints/embeddings/                  shared caches

Sweep cells train with the benchmark's machinery (``maw.training.trainer.train`` on the plan of
``maw.benchmark.runner.cell_plan``) and are scored by the best validation nDCG@10 of their history
(epoch 0 is the pretrained model). The trainer gets the splits with the test split *removed*, and
no retrieval or evaluation of test queries runs: the sweep cannot look at the test split.

A cell file is written atomically when the cell ends; a rerun skips cells whose file says ``ok``
(failed ones run again; an interrupted training resumes from its ``latest`` checkpoint), and the
per-cell lock of ``maw.benchmark.cells.CellLock`` keeps two processes on the same ``out`` apart.

The final (:func:`run_final`) runs ``maw.benchmark.runner.run_cell`` (train + test retrieval from
the full corpus) for each arm's best configuration and each seed, plus bm25 and zeroshot once. It
uses the same trainer run folder as the sweep cell, so the seed the sweep trained with is resumed
from its finished checkpoint instead of being trained again.

Both loops are the benchmark's (:func:`maw.benchmark.schedule.run_jobs`: claim -> run -> log).
"""

from __future__ import annotations

import dataclasses
import functools
import gc
import time
import traceback
from collections.abc import Callable
from pathlib import Path
from typing import Any

from maw.benchmark.cells import cell_path, is_done, read_cell, write_cell
from maw.benchmark.runner import CellDataset, run_cell
from maw.benchmark.runner import trainer_dir as benchmark_trainer_dir
from maw.benchmark.schedule import Job, Outcome, run_jobs
from maw.config import ConfigError, to_dict
from maw.evaluation.metrics import PRIMARY_METRICS, SELECTION_METRIC
from maw.sweep.cells import best_cells, final_dir, read_sweep_cell, sweep_cell_path, sweep_done
from maw.sweep.grid import Cell, Grid
from maw.sweep.pruning import SweepTrials
from maw.sweep.reference import METHOD as REFERENCE
from maw.sweep.reference import st_finetune_cell
from maw.utils.io import atomic_write_json, environment_info
from maw.utils.portable import PathLabels, portable

HISTORY_KEYS = ("epoch", "train_loss", "val", "optimizer_steps", "train_seconds", "val_seconds", "seconds")


def check_folders(out: str | Path, checkpoints: str | Path) -> tuple[Path, Path]:
    """``out`` and ``checkpoints`` as paths; checkpoints must not be inside ``out`` (it is committed)."""
    out, checkpoints = Path(out), Path(checkpoints)
    o, c = out.resolve(), checkpoints.resolve()
    if c == o or o in c.parents:
        raise ConfigError(
            f"--checkpoints {checkpoints}: inside --out {out}, which holds the small committed results; "
            "put checkpoints elsewhere (e.g. runs/sweep-checkpoints/<dataset>)"
        )
    return out, checkpoints


def _with_caches(cfg, checkpoints: Path):
    """The cell config with the shared caches under ``checkpoints`` (runtime fields: no result changes)."""
    train = cfg.train
    if train.prefix_cache_dir is None:
        train = dataclasses.replace(train, prefix_cache_dir=str(checkpoints / "prefix_cache"))
    ev = cfg.eval
    if ev.embedding_cache_dir is None:
        ev = dataclasses.replace(ev, embedding_cache_dir=str(checkpoints / "embeddings"))
    return dataclasses.replace(cfg, train=train, eval=ev)


def trainer_dir(checkpoints: Path, grid: Grid, cell: Cell, seed: int) -> Path:
    """The trainer's run folder of ``cell`` at ``seed``: the benchmark's (``maw.benchmark.runner.
    trainer_dir``) in the run folder ``checkpoints/<arm>-<id>``, so the final resumes the sweep's training."""
    return benchmark_trainer_dir(checkpoints / cell.name, grid.key, cell.method, seed)


def _sweep_cell(
    ds: CellDataset, grid: Grid, cell: Cell, checkpoints: Path, trials: SweepTrials
) -> dict[str, Any]:
    """Train one configuration and score it on validation, the arm's pruner deciding after every
    epoch whether it goes on (:mod:`maw.sweep.pruning`); never raises except KeyboardInterrupt."""
    from maw.data.types import Splits
    from maw.training.trainer import train

    seed = cell.cfg.train.seed
    plan = cell.plan()
    record: dict[str, Any] = {
        "cell": cell.name,
        "arm": cell.arm,
        "method": cell.method,
        "id": cell.id,
        "dataset": grid.key,
        "seed": seed,
        "options": cell.options,
        "axes": list(cell.axes),
        "label": cell.label(),
        "status": "failed",
        "error": None,
        "selection_metric": SELECTION_METRIC,
        "plan": plan.to_dict(),
        "pruner": grid.pruner.to_dict(),
    }
    t0 = time.perf_counter()
    trial = trials.trial(cell.arm, cell.name, cell.options)
    try:
        if ds.dataset is None:
            ds.load()
        # the test split is withheld from training: the sweep selects on validation only
        splits = Splits(ds.splits.train, ds.splits.val, {}, {**ds.splits.provenance, "test": "withheld"})
        cfg = _with_caches(cell.cfg, checkpoints)
        plan = dataclasses.replace(
            plan, train=dataclasses.replace(plan.train, prefix_cache_dir=cfg.train.prefix_cache_dir)
        )
        result = train(
            plan,
            ds.dataset,
            splits,
            trainer_dir(checkpoints, grid, cell, seed),
            on_epoch_end=SweepTrials.reporter(trial, SELECTION_METRIC) if grid.pruner.enabled else None,
        )
        history = [{k: h[k] for k in HISTORY_KEYS if k in h} for h in result.history]
        pruned_at = next((h["epoch"] for h in result.history if h.get("pruned")), None)
        scores = [(h.get("val") or {}).get(SELECTION_METRIC) for h in history]
        best = max(range(len(history)), key=lambda i: -1.0 if scores[i] is None else scores[i])
        record.update(
            status="ok",
            score=scores[best],
            best_epoch=history[best]["epoch"],
            val=history[best].get("val"),
            epochs_run=len(history) - 1,
            early_stopped=any(h.get("early_stopped") for h in result.history),
            pruned=pruned_at is not None,
            pruned_at_epoch=pruned_at,
            history=history,
            params=dict(result.params),
            train_s=float(result.train_seconds),
            checkpoint=str(result.best_dir) if result.best_dir else None,
            precision=(result.setup or {}).get("precision"),
            resumed_from=result.resumed_from,
            dataset_info={k: v for k, v in ds.info.items() if k != "loader_report"},
            test_split="withheld: not given to the trainer, not retrieved, not evaluated",
        )
        del result
    except Exception as exc:  # one failing cell must not stop the sweep
        record["error"] = f"{type(exc).__name__}: {exc}".strip()
        record["traceback"] = traceback.format_exc()
    finally:
        gc.collect()
    record["cell_s"] = time.perf_counter() - t0
    record["finished_at"] = time.strftime("%Y-%m-%dT%H:%M:%S%z")
    trials.finish(cell.arm, trial, record)
    return portable(record, _labels(ds, checkpoints))


def _labels(ds: CellDataset, checkpoints: Path) -> PathLabels:
    """Machine paths of a sweep's results -> names (the dataset's key, ``<checkpoints>``)."""
    source = ds.dataset.source if ds.dataset is not None else None
    return PathLabels.standard(
        [(ds.name, ds.key), (source, ds.key)], checkpoints=checkpoints, models=[ds.cfg.model.model]
    )


def check_fingerprints(out: Path, grid: Grid, ds: CellDataset) -> None:
    """Finished cells must come from this dataset's content: the id names the dataset by its key
    (so data can move), the fingerprint recorded in every cell guards against other content under
    the same name."""
    fp = ds.dataset.fingerprint
    for cell in grid.cells:
        rec = read_sweep_cell(sweep_cell_path(out, grid, cell))
        info = (rec or {}).get("dataset_info") or {}
        if rec and rec.get("status") == "ok" and info.get("fingerprint") not in (None, fp):
            raise ConfigError(
                f"{sweep_cell_path(out, grid, cell)}: computed on dataset {grid.key!r} with content fingerprint "
                f"{info['fingerprint']}, but {grid.dataset} now has {fp}; use another --out for other data"
            )


def write_manifest(out: Path, grid: Grid, checkpoints: Path, labels: PathLabels | None = None) -> None:
    """``out/sweep.json``: the grid, the budget, the cells it selected and the shared config."""
    manifest = {
        "grid_file": grid.file_label,
        "grid": grid.raw,
        "dataset": grid.dataset,
        "budget": grid.budget,
        "sample_seed": grid.sample_seed,
        "final_seeds": list(grid.final_seeds),
        "pruner": grid.pruner.to_dict(),
        "arms": [
            {
                "name": a.name,
                "method": a.method,
                "grid_size": a.size,
                "configurations": len(grid.arm_cells(a.name)),
                "fixed": a.fixed,
                "axes": a.axes,
            }
            for a in grid.arms
        ],
        "cells": [c.name for c in grid.cells],
        "base_config": to_dict(grid.base),
        "checkpoints": str(checkpoints),
        "environment": environment_info(),
    }
    labels = labels or PathLabels.standard(
        [(grid.dataset, grid.key)], checkpoints=checkpoints, models=[grid.base.model.model]
    )
    atomic_write_json(out / "sweep.json", portable(manifest, labels))


def run_sweep(
    grid: Grid, out: str | Path, checkpoints: str | Path, log: Callable[[str], None] | None = None
) -> Outcome:
    """Train every missing cell of the grid (validation only), then write the leaderboard."""
    from maw.sweep.study import write_leaderboard

    log = log or (lambda msg: None)
    out, checkpoints = check_folders(out, checkpoints)
    out.mkdir(parents=True, exist_ok=True)
    ds = CellDataset(grid.dataset, grid.key, grid.base)
    ds.load()
    check_fingerprints(out, grid, ds)
    write_manifest(out, grid, checkpoints, _labels(ds, checkpoints))
    trials = SweepTrials(out, grid.key, grid.pruner)
    log(
        f"sweep of {grid.dataset}: {len(grid.cells)} cells ({len(grid.arms)} arms, budget {grid.budget}) into {out}"
    )

    def run(cell: Cell) -> dict[str, Any]:
        record = _sweep_cell(ds, grid, cell, checkpoints, trials)
        atomic_write_json(sweep_cell_path(out, grid, cell), record)
        write_leaderboard(out, grid)  # current after every cell: a stopped sweep leaves it up to date
        return record

    def ok(c: dict[str, Any]) -> str:
        pruned = f", pruned after epoch {c['pruned_at_epoch']}" if c.get("pruned") else ""
        return (
            f"val {SELECTION_METRIC} {c['score']:.4f} (epoch {c['best_epoch']}{pruned}), "
            f"{c['train_s']:.0f} s training"
        )

    jobs = (
        Job(
            label=cell.name,
            tag=f"[{i}/{len(grid.cells)}] {cell.name} ({cell.label()})",
            folder=out,
            dataset=grid.key,
            name=cell.name,
            seed=cell.cfg.train.seed,
            run=functools.partial(run, cell),
            done=functools.partial(sweep_done, sweep_cell_path(out, grid, cell)),
            ok=ok,
        )
        for i, cell in enumerate(grid.cells, 1)
    )
    try:
        outcome = run_jobs(jobs, Outcome(folder=out), log)
    finally:
        write_leaderboard(out, grid)
    log(
        f"{out / 'leaderboard.md'}: {len(outcome.ran)} ran, {len(outcome.skipped)} skipped, "
        f"{len(outcome.failed)} failed, {outcome.seconds:.0f} s"
    )
    return outcome


# ---------------------------------------------------------------------------------------------- final
def _final_run_dir(ds: CellDataset, checkpoints: Path, grid: Grid, cell: Cell, seed: int) -> Path:
    """The benchmark run folder of a final cell: the sweep cell's (so its finished training at the
    sweep's seed is resumed, not repeated), unless that checkpoint no longer matches the plan (the
    library changed in between): then ``<arm>-<id>-retrain``, trained anew."""
    from maw.training.checkpoint import CheckpointError, check_config, checkpoint_config

    shared = checkpoints / cell.name
    latest = trainer_dir(checkpoints, grid, cell, seed) / "latest"
    if not (latest / "config.json").is_file():
        return shared
    try:
        if ds.dataset is None:
            ds.load()
        check_config(latest, checkpoint_config(cell.plan(seed), ds.dataset, ds.splits))
    except CheckpointError:
        return checkpoints / f"{cell.name}-retrain"
    except Exception:  # the data cannot be loaded: run_cell records that error in the cell
        pass
    return shared


def run_final(
    grid: Grid,
    out: str | Path,
    checkpoints: str | Path,
    seeds: tuple[int, ...],
    log: Callable[[str], None] | None = None,
) -> Outcome:
    """Each arm's best configuration (by validation) at every seed on test, plus bm25 and zeroshot;
    then REPORT.md (``maw.sweep.study``)."""
    from maw.sweep.study import write_report

    log = log or (lambda msg: None)
    out, checkpoints = check_folders(out, checkpoints)
    best = best_cells(grid, out)
    missing = [a.name for a in grid.arms if a.name not in best]
    if missing:
        raise ConfigError(
            f"--final: arm(s) {missing} have no finished sweep cell in {out}; run `maw sweep` without --final first"
        )
    fin = final_dir(out)
    ds = CellDataset(grid.dataset, grid.key, grid.base)
    baseline_cfg = _with_caches(dataclasses.replace(grid.base, methods=("bm25", "zeroshot")), checkpoints)
    todo: list[tuple[str, str, int, Any, Path, dict[str, Any]]] = []
    for method in ("bm25", "zeroshot"):  # seed-independent: one run
        todo.append((method, method, seeds[0], baseline_cfg, checkpoints / "baselines", {}))
    if grid.reference:  # sentence-transformers' own fine-tune: the time reference of the report
        ref_cfg = _with_caches(grid.base, checkpoints)
        todo.append((REFERENCE, REFERENCE, seeds[0], ref_cfg, checkpoints / "reference", {}))
    per_arm = {}
    for arm in grid.arms:
        cell, rec = best[arm.name]
        extra = {
            "sweep_cell": cell.name,
            "options": cell.options,
            "label": cell.label(),
            "val_score": rec["score"],
        }
        per_arm[arm.name] = (
            cell,
            extra,
            _with_caches(dataclasses.replace(cell.cfg, seeds=tuple(seeds)), checkpoints),
        )
    for seed in seeds:  # seed by seed: after each round every arm has as many runs (a usable partial report)
        for arm in grid.arms:
            cell, extra, cfg = per_arm[arm.name]
            todo.append(
                (arm.name, cell.method, seed, cfg, _final_run_dir(ds, checkpoints, grid, cell, seed), extra)
            )
    log(f"final on {grid.dataset}: {len(todo)} cells into {fin}")

    def done(name: str, seed: int, extra: dict[str, Any]) -> bool:
        if not is_done(fin, grid.key, name, seed):
            return False
        return read_cell(cell_path(fin, grid.key, name, seed)).get("sweep_cell") == extra.get("sweep_cell")

    def run(name: str, method: str, seed: int, cfg, run_dir: Path, extra: dict[str, Any]) -> dict[str, Any]:
        if method == REFERENCE:
            c = st_finetune_cell(ds, seed, cfg, run_dir)
        else:
            c = run_cell(ds, method, seed, cfg, run_dir)
        c = {**c, **extra, "method": name, "library_method": method}
        # per-query scores of the primary metrics only (all metrics stay in "metrics"): small JSON
        c["per_query"] = {m: v for m, v in c["per_query"].items() if m in PRIMARY_METRICS}
        write_cell(fin, portable(c, _labels(ds, checkpoints)))
        return c

    def ok(c: dict[str, Any]) -> str:
        m = c["metrics"]
        return f"test nDCG@10 {m.get('nDCG@10', float('nan')):.4f}, R@100 {m.get('R@100', float('nan')):.4f}"

    jobs = (
        Job(
            label=f"{name}-seed{seed}",
            tag=f"[{i}/{len(todo)}] {name} seed {seed}",
            folder=fin,
            dataset=grid.key,
            name=name,
            seed=seed,
            run=functools.partial(run, name, method, seed, cfg, run_dir, extra),
            done=functools.partial(done, name, seed, extra),
            ok=ok,
            # rebuilt from the cells on disk after every cell
            after=lambda cell: write_report(out, grid, tuple(seeds)),
        )
        for i, (name, method, seed, cfg, run_dir, extra) in enumerate(todo, 1)
    )
    outcome = run_jobs(jobs, Outcome(folder=out), log)
    write_report(out, grid, tuple(seeds))
    log(
        f"{out / 'REPORT.md'}: {len(outcome.ran)} ran, {len(outcome.skipped)} skipped, {len(outcome.failed)} failed"
    )
    return outcome
