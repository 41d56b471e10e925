"""The final's sentence-transformers reference (timed fine-tune) and the goals in REPORT.md."""

from __future__ import annotations

import json

import pytest

from conftest import grid_text
from maw.config import ConfigError
from maw.sweep.grid import load_grid
from maw.sweep.runner import run_final, run_sweep

pytest.importorskip("sentence_transformers")
pytest.importorskip("datasets")

ARMS = """
reference = "st-finetune"
goals = {full = 0.01}
[sweep.arms.full]
learning_rate = [1e-3]
"""


def test_final_times_the_sentence_transformers_fine_tune(tmp_path, tiny_data, tiny_model):
    path = tmp_path / "grid.toml"
    path.write_text(grid_text(tiny_data, tiny_model, ARMS, budget=1))
    grid = load_grid(path)
    assert grid.reference and grid.goals == (("full", 0.01),)
    out, ckpt = tmp_path / "results", tmp_path / "ckpt"
    assert not run_sweep(grid, out, ckpt).failed
    outcome = run_final(grid, out, ckpt, (7, 8))  # seed 7 is the sweep's: its training is reused
    assert not outcome.failed, outcome.failed
    cell = json.loads((out / "final" / "cells" / grid.key / "st-finetune-seed7.json").read_text())
    assert cell["status"] == "ok" and cell["runtimes"]["train_s"] > 0 and 0 <= cell["metrics"]["nDCG@10"] <= 1
    assert cell["train_setup"]["epochs"] == 3 and cell["train_setup"]["optimizer_steps"] > 0
    study = json.loads((out / "study.json").read_text())
    goal = study["goals"][0]
    assert goal["arm"] == "full" and goal["runs"] == 2 and goal["met"] == (goal["mean"] >= 0.01)
    assert goal["time_ratio"] == pytest.approx(goal["train_s_per_run"] / cell["runtimes"]["train_s"])
    full = json.loads((out / "final" / "cells" / grid.key / "full-seed8.json").read_text())
    assert (
        grid.base.train.seed == 7 and goal["timed_runs"] == 1
    )  # timed: the run trained beside the reference
    assert goal["train_s_per_run"] == pytest.approx(full["runtimes"]["train_s"])
    # like for like: seconds per optimizer step, training steps only (no validation), both sides
    steps = max(h.get("optimizer_steps") or 0 for h in full["history"])
    step_s = sum(h.get("train_seconds") or 0.0 for h in full["history"]) / steps
    ref_step_s = cell["runtimes"]["train_s"] / cell["train_setup"]["optimizer_steps"]
    assert (
        steps > 0
        and goal["step_s"] == pytest.approx(step_s)
        and goal["step_s"] < goal["train_s_per_run"] / steps
    )
    assert goal["step_ratio"] == pytest.approx(step_s / ref_step_s)
    assert study["final_cells"]["expected"] == 5 and study["cost"]["total_s"] > 0
    report = (out / "REPORT.md").read_text()
    assert "## Goals" in report and "sentence-transformers' 3-epoch fine-tune" in report
    assert f"= {goal['step_ratio']:.2f}x." in report and "per optimizer step (training only" in report
    assert "h of machine time" in report


def test_goals_must_name_arms(tmp_path, tiny_data, tiny_model):
    path = tmp_path / "grid.toml"
    path.write_text(grid_text(tiny_data, tiny_model, ARMS.replace("full = 0.01", "nope = 0.5"), budget=1))
    with pytest.raises(ConfigError, match="goals"):
        load_grid(path)
