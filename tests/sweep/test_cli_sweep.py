"""`maw sweep` on the command line: flags from the config dataclasses, clear errors, report-only."""

from __future__ import annotations

from typer.testing import CliRunner

from conftest import grid_text
from maw.cli import app

ARMS = "[sweep.arms.finetune]\nlearning_rate = [1e-3, 1e-4]\n"


def test_help_lists_the_generated_flags():
    result = CliRunner().invoke(app, ["sweep", "--help"], env={"COLUMNS": "200"})
    assert result.exit_code == 0
    for name in (
        "--config",
        "--final",
        "--checkpoints",
        "--seeds",
        "--datasets",
        "--num-epochs",
        "--depth-dim",
    ):
        assert name in result.output


def test_errors_name_the_file_or_flag(tmp_path, tiny_data, tiny_model):
    plain = tmp_path / "plain.toml"
    plain.write_text("[train]\nnum_epochs = 1\n")
    result = CliRunner().invoke(app, ["sweep", "--config", str(plain)])
    assert result.exit_code == 2 and "no [sweep] table" in result.output
    grid = tmp_path / "grid.toml"
    grid.write_text(grid_text(tiny_data, tiny_model, ARMS))
    out = tmp_path / "results"
    result = CliRunner().invoke(
        app, ["sweep", "--config", str(grid), "--out", str(out), "--checkpoints", str(out / "ckpt")]
    )
    assert result.exit_code == 2 and "--checkpoints" in result.output
    result = CliRunner().invoke(app, ["sweep", "--config", str(grid), "--learning-rate", "0.01"])
    assert result.exit_code == 2 and "--learning-rate: set by arm 'finetune'" in result.output
    result = CliRunner().invoke(
        app,
        ["sweep", "--config", str(grid), "--out", str(out), "--checkpoints", str(tmp_path / "ck"), "--final"],
    )
    assert result.exit_code == 2 and "without --final first" in result.output


def test_report_only_writes_the_leaderboard_without_training(tmp_path, tiny_data, tiny_model):
    grid = tmp_path / "grid.toml"
    grid.write_text(grid_text(tiny_data, tiny_model, ARMS))
    out = tmp_path / "results"
    args = ["sweep", "--config", str(grid), "--out", str(out), "--checkpoints", str(tmp_path / "ck")]
    result = CliRunner().invoke(app, [*args, "--report-only"])
    assert result.exit_code == 0, result.output
    board = (out / "leaderboard.md").read_text()
    assert board.count("| missing |") == 2 and not (out / "cells").exists()
