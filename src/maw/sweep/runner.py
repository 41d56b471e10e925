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

The final (:func:`run_final`) runs ``maw.benchmark.runner._run_cell`` (train + test retrieval from
the full corpus) for each arm's best configuration and each seed, plus bm25 and zeroshot once. It
uses the same trainer run folder as the sweep cell, so the seed the sweep trained with is resumed
from its finished checkpoint instead of being trained again.
"""

from __future__ import annotations

import dataclasses
import gc
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from maw.benchmark.cells import CellLock, cell_path, is_done, read_cell, write_cell
from maw.benchmark.report import PRIMARY_METRICS
from maw.benchmark.runner import _Dataset, _run_cell
from maw.config import ConfigError, to_dict
from maw.sweep.grid import Cell, Grid
from maw.utils.io import atomic_write_json, environment_info, read_json

SELECTION_METRIC = "nDCG@10"
HISTORY_KEYS = ("epoch", "train_loss", "val", "optimizer_steps", "train_seconds", "val_seconds", "seconds")


@dataclass
class SweepOutcome:
    out: Path
    ran: list[str] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)
    failed: list[tuple[str, str]] = field(default_factory=list)
    running_elsewhere: list[str] = field(default_factory=list)
    seconds: float = 0.0
    interrupted: bool = False

    @property
    def exit_code(self) -> int:
        return 130 if self.interrupted else (1 if self.failed else 0)


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


def sweep_cell_path(out: Path, grid: Grid, cell: Cell) -> Path:
    return cell_path(out, grid.key, cell.name, cell.cfg.train.seed)


def read_sweep_cell(path: Path) -> dict[str, Any] | None:
    """A sweep cell file, or None when absent or unreadable (then it runs again)."""
    try:
        data = read_json(path)
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) and "status" in data else None


def sweep_done(path: Path) -> bool:
    cell = read_sweep_cell(path)
    return cell is not None and cell["status"] == "ok"


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
    """The trainer's run folder of ``cell`` at ``seed``: where ``runner._trained_cell`` puts it for a
    benchmark run folder ``checkpoints/<arm>-<id>``, so the final resumes the sweep's training."""
    return checkpoints / cell.name / "checkpoints" / grid.key / f"{cell.method}-seed{seed}"


def _sweep_cell(ds: _Dataset, grid: Grid, cell: Cell, checkpoints: Path) -> dict[str, Any]:
    """Train one configuration and score it on validation; never raises except KeyboardInterrupt."""
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
    }
    t0 = time.perf_counter()
    try:
        if ds.dataset is None:
            ds.load()
        # the test split is withheld from training: the sweep selects on validation only
        splits = Splits(ds.splits.train, ds.splits.val, {}, {**ds.splits.provenance, "test": "withheld"})
        cfg = _with_caches(cell.cfg, checkpoints)
        plan = dataclasses.replace(
            plan, train=dataclasses.replace(plan.train, prefix_cache_dir=cfg.train.prefix_cache_dir)
        )
        result = train(plan, ds.dataset, splits, trainer_dir(checkpoints, grid, cell, seed))
        history = [{k: h[k] for k in HISTORY_KEYS if k in h} for h in result.history]
        scores = [(h.get("val") or {}).get(SELECTION_METRIC) for h in history]
        best = max(range(len(history)), key=lambda i: -1.0 if scores[i] is None else scores[i])
        record.update(
            status="ok",
            score=scores[best],
            best_epoch=history[best]["epoch"],
            val=history[best].get("val"),
            epochs_run=len(history) - 1,
            early_stopped=any(h.get("early_stopped") for h in result.history),
            history=history,
            params=dict(result.params),
            train_s=float(result.train_seconds),
            checkpoint=str(result.best_dir) if result.best_dir else None,
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
    return record


def write_manifest(out: Path, grid: Grid, checkpoints: Path) -> None:
    """``out/sweep.json``: the grid, the budget, the cells it selected and the shared config."""
    manifest = {
        "grid_file": grid.path,
        "grid": grid.raw,
        "dataset": grid.dataset,
        "budget": grid.budget,
        "sample_seed": grid.sample_seed,
        "final_seeds": list(grid.final_seeds),
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
    atomic_write_json(out / "sweep.json", manifest)


def _locked(
    out: Path, key: str, name: str, seed: int, done: Callable[[], bool], run: Callable[[], None]
) -> str:
    """Run ``run`` under the cell's lock unless done; returns "done" | "elsewhere" | "ran"."""
    if done():
        return "done"
    lock = CellLock.acquire(out, key, name, seed)
    if lock is None:
        return "elsewhere"
    try:
        if done():  # finished by another process meanwhile
            return "done"
        run()
    finally:
        lock.release()
    return "ran"


def run_sweep(
    grid: Grid, out: str | Path, checkpoints: str | Path, log: Callable[[str], None] | None = None
) -> SweepOutcome:
    """Train every missing cell of the grid (validation only), then write the leaderboard."""
    from maw.sweep.study import write_leaderboard

    log = log or (lambda msg: None)
    out, checkpoints = check_folders(out, checkpoints)
    out.mkdir(parents=True, exist_ok=True)
    write_manifest(out, grid, checkpoints)
    outcome = SweepOutcome(out=out)
    ds = _Dataset(grid.dataset, grid.key, grid.base)
    t_start = time.perf_counter()
    log(
        f"sweep of {grid.dataset}: {len(grid.cells)} cells ({len(grid.arms)} arms, budget {grid.budget}) into {out}"
    )
    try:
        for i, cell in enumerate(grid.cells, 1):
            path = sweep_cell_path(out, grid, cell)
            tag = f"[{i}/{len(grid.cells)}] {cell.name} ({cell.label()})"
            box: dict[str, Any] = {}

            def run(cell=cell, path=path, box=box) -> None:
                box["cell"] = _sweep_cell(ds, grid, cell, checkpoints)
                atomic_write_json(path, box["cell"])

            state = _locked(out, grid.key, cell.name, cell.cfg.train.seed, lambda p=path: sweep_done(p), run)
            if state == "done":
                outcome.skipped.append(cell.name)
                log(f"{tag}: done before, skipped")
            elif state == "elsewhere":
                outcome.running_elsewhere.append(cell.name)
                log(f"{tag}: being run by another process (lock file), skipped")
            elif box["cell"]["status"] == "ok":
                outcome.ran.append(cell.name)
                c = box["cell"]
                log(
                    f"{tag}: val {SELECTION_METRIC} {c['score']:.4f} (epoch {c['best_epoch']}), {c['train_s']:.0f} s training"
                )
            else:
                outcome.failed.append((cell.name, box["cell"]["error"]))
                log(f"{tag}: FAILED: {box['cell']['error']}")
    except KeyboardInterrupt:
        outcome.interrupted = True
        log("interrupted: finished cells are kept")
    finally:
        write_leaderboard(out, grid)
        outcome.seconds = time.perf_counter() - t_start
    log(
        f"{out / 'leaderboard.md'}: {len(outcome.ran)} ran, {len(outcome.skipped)} skipped, "
        f"{len(outcome.failed)} failed, {outcome.seconds:.0f} s"
    )
    return outcome


# ---------------------------------------------------------------------------------------------- final
def best_cells(grid: Grid, out: Path) -> dict[str, tuple[Cell, dict[str, Any]]]:
    """arm -> (its best finished cell by validation score, the cell record); arms without any
    finished cell are absent. Ties keep the earlier cell in grid order."""
    best: dict[str, tuple[Cell, dict[str, Any]]] = {}
    for cell in grid.cells:
        rec = read_sweep_cell(sweep_cell_path(out, grid, cell))
        if rec is None or rec["status"] != "ok" or rec.get("score") is None:
            continue
        if cell.arm not in best or rec["score"] > best[cell.arm][1]["score"]:
            best[cell.arm] = (cell, rec)
    return best


def _final_run_dir(ds: _Dataset, checkpoints: Path, grid: Grid, cell: Cell, seed: int) -> Path:
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
    except Exception:  # the data cannot be loaded: _run_cell records that error in the cell
        pass
    return shared


def final_dir(out: Path) -> Path:
    return out / "final"


def run_final(
    grid: Grid,
    out: str | Path,
    checkpoints: str | Path,
    seeds: tuple[int, ...],
    log: Callable[[str], None] | None = None,
) -> SweepOutcome:
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
    outcome = SweepOutcome(out=out)
    ds = _Dataset(grid.dataset, grid.key, grid.base)
    baseline_cfg = _with_caches(dataclasses.replace(grid.base, methods=("bm25", "zeroshot")), checkpoints)
    todo: list[tuple[str, str, int, Any, Path, dict[str, Any]]] = []
    for method in ("bm25", "zeroshot"):  # seed-independent: one run
        todo.append((method, method, seeds[0], baseline_cfg, checkpoints / "baselines", {}))
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
    t_start = time.perf_counter()
    log(f"final on {grid.dataset}: {len(todo)} cells into {fin}")
    try:
        for i, (name, method, seed, cfg, run_dir, extra) in enumerate(todo, 1):
            tag = f"[{i}/{len(todo)}] {name} seed {seed}"
            path = cell_path(fin, grid.key, name, seed)

            def done(path=path, extra=extra, name=name, seed=seed) -> bool:
                if not is_done(fin, grid.key, name, seed):
                    return False
                return read_cell(path).get("sweep_cell") == extra.get("sweep_cell")

            box: dict[str, Any] = {}

            def run(
                name=name, method=method, seed=seed, cfg=cfg, run_dir=run_dir, extra=extra, box=box
            ) -> None:
                c = _run_cell(ds, method, seed, cfg, run_dir)
                c = {**c, **extra, "method": name, "library_method": method}
                # per-query scores of the primary metrics only (all metrics stay in "metrics"): small JSON
                c["per_query"] = {m: v for m, v in c["per_query"].items() if m in PRIMARY_METRICS}
                box["cell"] = c
                write_cell(fin, c)

            state = _locked(fin, grid.key, name, seed, done, run)
            if state == "done":
                outcome.skipped.append(f"{name}-seed{seed}")
                log(f"{tag}: done before, skipped")
            elif state == "elsewhere":
                outcome.running_elsewhere.append(f"{name}-seed{seed}")
                log(f"{tag}: being run by another process (lock file), skipped")
            elif box["cell"]["status"] == "ok":
                outcome.ran.append(f"{name}-seed{seed}")
                m = box["cell"]["metrics"]
                log(
                    f"{tag}: test nDCG@10 {m.get('nDCG@10', float('nan')):.4f}, R@100 {m.get('R@100', float('nan')):.4f}"
                )
            else:
                outcome.failed.append((f"{name}-seed{seed}", box["cell"]["error"]))
                log(f"{tag}: FAILED: {box['cell']['error']}")
            if state == "ran":
                write_report(out, grid, tuple(seeds))  # rebuilt from the cells on disk after every cell
    except KeyboardInterrupt:
        outcome.interrupted = True
        log("interrupted: finished cells are kept")
    finally:
        outcome.seconds = time.perf_counter() - t_start
    write_report(out, grid, tuple(seeds))
    log(
        f"{out / 'REPORT.md'}: {len(outcome.ran)} ran, {len(outcome.skipped)} skipped, {len(outcome.failed)} failed"
    )
    return outcome
