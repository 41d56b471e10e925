"""The sweep end to end on the tiny collection: validation only, resumable, the final and its report."""

from __future__ import annotations

import json

import pytest

import maw.evaluation.metrics as metrics_mod
import maw.sweep.runner as sweep_runner
from conftest import grid_text
from maw.config import ConfigError
from maw.retrieval.dense import DenseRetriever
from maw.sweep.grid import load_grid
from maw.sweep.runner import check_folders, run_final, run_sweep, sweep_cell_path

ARMS = """
[sweep.arms.finetune]
learning_rate = [1e-3, 3e-4, 1e-4]
[sweep.arms.maw]
maw_layers = ["2"]
policy_lr = [1e-3, 1e-2]
"""


@pytest.fixture
def grid(tmp_path, tiny_data, tiny_model):
    path = tmp_path / "grid.toml"
    path.write_text(grid_text(tiny_data, tiny_model, ARMS, budget=2))
    return load_grid(path)


def test_sweep_reads_validation_only_and_resumes(tmp_path, grid, monkeypatch):
    from maw.data import load_beir, make_splits

    splits = make_splits(load_beir(grid.dataset), grid.base.data)
    test_ids, val_ids = set(splits.test), set(splits.val)
    assert test_ids and val_ids
    seen: list[set[str]] = []
    evaluate_run = metrics_mod.evaluate_run

    def spy_evaluate(qrels, run, *args, **kwargs):
        seen.append(set(qrels) | set(run))
        return evaluate_run(qrels, run, *args, **kwargs)

    def no_retrieval(self, *args, **kwargs):
        raise AssertionError("the sweep ran a test retrieval")

    monkeypatch.setattr(metrics_mod, "evaluate_run", spy_evaluate)
    monkeypatch.setattr(DenseRetriever, "retrieve", no_retrieval)
    out, ckpt = tmp_path / "results" / "sweep", tmp_path / "runs" / "ckpt"
    outcome = run_sweep(grid, out, ckpt)
    assert not outcome.failed, outcome.failed
    assert len(outcome.ran) == 4  # 2 finetune configurations of 3 (the budget), the 2 of maw
    assert seen and all(ids <= val_ids for ids in seen)  # validation evaluated, never a test query
    assert not any(ids & test_ids for ids in seen)
    for cell in grid.cells:
        rec = json.loads(sweep_cell_path(out, grid, cell).read_text())
        vals = [h["val"]["nDCG@10"] for h in rec["history"]]
        assert rec["status"] == "ok" and rec["score"] == max(vals) and len(vals) == 2  # epoch 0 and 1
        assert rec["options"] == cell.options and rec["test_split"].startswith("withheld")
    board = (out / "leaderboard.md").read_text()
    assert (
        "## finetune (method finetune)" in board and "Cost:" in board and "test split was not read" in board
    )
    assert "[curves.png](curves.png)" in board and (out / "curves.png").read_bytes()[:4] == b"\x89PNG"
    assert not list(out.rglob("*.safetensors")) and list(ckpt.rglob("*.safetensors"))  # checkpoints elsewhere

    # a rerun skips every finished cell; a removed cell file runs again, alone
    calls = []
    real = sweep_runner._sweep_cell
    monkeypatch.setattr(sweep_runner, "_sweep_cell", lambda *a: calls.append(a[2].name) or real(*a))
    again = run_sweep(grid, out, ckpt)
    assert calls == [] and len(again.skipped) == 4
    victim = grid.cells[1]
    sweep_cell_path(out, grid, victim).unlink()
    again = run_sweep(grid, out, ckpt)
    assert calls == [victim.name] and again.ran == [victim.name] and len(again.skipped) == 3


def test_a_locked_cell_is_left_to_its_owner(tmp_path, grid, monkeypatch):
    from maw.benchmark.cells import CellLock

    out, ckpt = tmp_path / "out", tmp_path / "ckpt"
    monkeypatch.setattr(CellLock, "_stale", staticmethod(lambda path: False))  # held by a live process
    first = grid.cells[0]
    lock = CellLock.acquire(out, grid.key, first.name, first.cfg.train.seed)
    assert lock is not None
    ran = []
    monkeypatch.setattr(
        sweep_runner,
        "_sweep_cell",
        lambda ds, g, cell, *rest: ran.append(cell.name) or {"status": "failed", "error": "x"},
    )
    outcome = run_sweep(grid, out, ckpt)
    assert outcome.running_elsewhere == [first.name] and first.name not in ran and len(ran) == 3
    lock.release()


def test_checkpoints_never_inside_results(tmp_path):
    with pytest.raises(ConfigError, match="--checkpoints"):
        check_folders(tmp_path / "results", tmp_path / "results" / "ckpt")


def test_final_evaluates_the_best_configurations_on_test(tmp_path, grid):
    out, ckpt = tmp_path / "results", tmp_path / "ckpt"
    with pytest.raises(ConfigError, match="run `maw sweep` without --final first"):
        run_final(grid, out, ckpt, (7, 8))
    assert not run_sweep(grid, out, ckpt).failed
    outcome = run_final(grid, out, ckpt, (7, 8))
    assert not outcome.failed, outcome.failed
    assert sorted(outcome.ran) == sorted(
        ["bm25-seed7", "zeroshot-seed7", "finetune-seed7", "finetune-seed8", "maw-seed7", "maw-seed8"]
    )
    study = json.loads((out / "study.json").read_text())
    best = sweep_runner.best_cells(grid, out)
    for arm in ("finetune", "maw"):
        cell = json.loads((out / "final" / "cells" / grid.key / f"{arm}-seed7.json").read_text())
        assert cell["sweep_cell"] == best[arm][0].name and cell["per_query"]["nDCG@10"]
        # seed 7 is the sweep's training seed: the final resumed the sweep's finished training
        assert cell["train_setup"]["resumed_from"] is not None
        assert study["methods"][arm]["test"]["nDCG@10"]["n"] == 2
    assert study["planned"] == [["maw", "finetune"]] and study["best_maw"] == "maw"
    report = (out / "REPORT.md").read_text()
    assert study["headline"] in report and "mean ± std over seeds" in report
    assert run_final(grid, out, ckpt, (7, 8)).ran == []  # resumable: nothing left to do


def test_final_retrains_when_the_sweep_checkpoint_no_longer_matches(tmp_path, grid):
    out, ckpt = tmp_path / "results", tmp_path / "ckpt"
    assert not run_sweep(grid, out, ckpt).failed
    best = sweep_runner.best_cells(grid, out)["finetune"][0]
    latest = sweep_runner.trainer_dir(ckpt, grid, best, 7) / "latest" / "config.json"
    saved = json.loads(latest.read_text())
    saved["structure"]["train"]["num_epochs"] = 99  # as if made by another version of the library
    latest.write_text(json.dumps(saved))
    outcome = run_final(grid, out, ckpt, (7,))
    assert not outcome.failed, outcome.failed
    cell = json.loads((out / "final" / "cells" / grid.key / "finetune-seed7.json").read_text())
    assert cell["train_setup"]["resumed_from"] is None and f"{best.name}-retrain" in cell["checkpoint"]
