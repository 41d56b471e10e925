"""Pruned sweeps (Optuna's successive halving) and portable sweep folders (move, resume, no paths)."""

from __future__ import annotations

import json
import shutil
import sys
from pathlib import Path

import pytest

from conftest import grid_text
from maw.config import ConfigError
from maw.sweep.grid import load_grid
from maw.sweep.runner import run_sweep, sweep_cell_path

ARMS = """
pruner = "successive-halving"
prune_min_epochs = 1
prune_reduction_factor = 3
[sweep.arms.finetune]
learning_rate = [1e-3, 1e-7, 3e-4]
"""


def _grid(
    tmp_path: Path, data: Path, model: Path, arms: str = ARMS, epochs: int = 3, name: str = "grid.toml"
):
    path = tmp_path / name
    path.write_text(grid_text(data, model, arms, budget=3, epochs=epochs))
    return load_grid(path)


def _epoch_scores(rec: dict) -> dict[int, float]:
    return {h["epoch"]: h["val"]["nDCG@10"] for h in rec["history"]}


def test_successive_halving_prunes_by_optunas_rule(tmp_path, tiny_data, tiny_model):
    grid = _grid(tmp_path, tiny_data, tiny_model)
    out, ckpt = tmp_path / "out", tmp_path / "ckpt"
    outcome = run_sweep(grid, out, ckpt)
    assert not outcome.failed, outcome.failed
    recs = [json.loads(sweep_cell_path(out, grid, c).read_text()) for c in grid.cells]
    first, *rest = recs
    # the first configuration has no competitor: it is never pruned
    assert not first["pruned"] and first["pruned_at_epoch"] is None
    seen = [_epoch_scores(first)[1]]
    for rec in rest:
        e1 = _epoch_scores(rec)[1]
        # rung 0 (epoch 1), reduction factor 3: with fewer than 3 scores only the best so far goes on
        should_prune = e1 < max(seen)
        assert rec["pruned"] == should_prune, (rec["label"], e1, seen)
        if should_prune:
            assert rec["pruned_at_epoch"] == 1 and rec["epochs_run"] == 1
            assert rec["score"] == max(_epoch_scores(rec).values())  # the best epoch so far is kept
        seen.append(e1)
    assert (out / "optuna.journal").is_file()
    board = (out / "leaderboard.md").read_text()
    assert "successive halving" in board and "| pruned |" in board
    if any(r["pruned"] for r in rest):
        assert "after epoch 1" in board and "would have cost about" in board


def test_pruner_none_trains_every_configuration_to_its_end(tmp_path, tiny_data, tiny_model):
    arms = ARMS.replace('pruner = "successive-halving"', 'pruner = "none"')
    grid = _grid(tmp_path, tiny_data, tiny_model, arms, epochs=2)
    out = tmp_path / "out"
    assert not run_sweep(grid, out, tmp_path / "ckpt").failed
    for c in grid.cells:
        rec = json.loads(sweep_cell_path(out, grid, c).read_text())
        assert not rec["pruned"] and (rec["epochs_run"] == 2 or rec["early_stopped"])


def test_bad_pruner_settings_name_the_key(tmp_path, tiny_data, tiny_model):
    with pytest.raises(ConfigError, match="prune_reduction_factor"):
        _grid(
            tmp_path,
            tiny_data,
            tiny_model,
            ARMS.replace("prune_reduction_factor = 3", "prune_reduction_factor = 1"),
        )
    with pytest.raises(ConfigError, match=r"\[sweep\] pruner"):
        _grid(tmp_path, tiny_data, tiny_model, ARMS.replace('"successive-halving"', '"hyperband"'))


def test_a_moved_study_resumes_with_every_cell_done_and_names_no_path(tmp_path, tiny_data, tiny_model):
    # a study on data and a model at one place ...
    home = tmp_path / "machine-a"
    data = shutil.copytree(tiny_data, home / "data" / tiny_data.name)
    grid = _grid(home, data, tiny_model, epochs=2)
    out, ckpt = home / "study" / "sweep", home / "ckpt"
    assert not run_sweep(grid, out, ckpt).failed
    names = {c.name for c in grid.cells}
    # ... moves, with its data, to another machine's paths (the same command, new paths)
    other = tmp_path / "machine-b" / "deep" / "er"
    moved_out = shutil.copytree(out, other / "results" / "sweep")
    moved_data = shutil.copytree(data, other / "datasets" / tiny_data.name)
    shutil.rmtree(home)
    moved = _grid(other, moved_data, tiny_model, epochs=2)
    assert {c.name for c in moved.cells} == names  # ids come from the experiment, not from paths
    again = run_sweep(moved, moved_out, other / "ckpt")
    assert sorted(again.skipped) == sorted(names) and not again.ran and not again.failed
    # nothing written under the results folder names a path of either machine
    for f in moved_out.rglob("*"):
        if f.is_file():
            text = f.read_text(encoding="utf-8", errors="replace")
            for path in (str(tmp_path), str(Path.home()), sys.prefix, str(tiny_data), str(tiny_model)):
                assert path not in text, (f, path)
