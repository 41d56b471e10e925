"""``maw train``: runs end to end on a tiny collection, resumes, and reports bad flags by name."""

from __future__ import annotations

import json

from typer.testing import CliRunner

from maw.cli import app

runner = CliRunner()


def _args(data, model, run_dir, *extra):
    return [
        "train",
        "--dataset",
        str(data),
        "--model",
        str(model),
        "--run-dir",
        str(run_dir),
        "--method",
        "finetune",
        "--num-epochs",
        "1",
        "--batch-size",
        "8",
        "--learning-rate",
        "1e-3",
        "--query-max-length",
        "16",
        "--doc-max-length",
        "48",
        "--hard-negative-depth",
        "5",
        "--num-threads",
        "1",
        "--quiet",
        *extra,
    ]


def test_train_command_writes_result_and_resumes(tiny_data_dir, tiny_model_dir, tmp_path):
    res = runner.invoke(app, _args(tiny_data_dir, tiny_model_dir, tmp_path / "run"))
    assert res.exit_code == 0, res.output
    out = json.loads((tmp_path / "run" / "result.json").read_text())
    assert [h["epoch"] for h in out["history"]] == [0, 1]
    assert out["config"]["train"]["batch_size"] == 8 and out["dataset"]["provenance"]["val"]["carved"]
    assert (tmp_path / "run" / "best" / "model.safetensors").is_file()
    # same command again: the finished run is resumed, not redone
    again = runner.invoke(app, _args(tiny_data_dir, tiny_model_dir, tmp_path / "run"))
    assert again.exit_code == 0, again.output
    assert json.loads((tmp_path / "run" / "result.json").read_text())["resumed_from"]["epoch"] == 2
    # a different setting on the same run folder is refused with what differs
    clash = runner.invoke(app, _args(tiny_data_dir, tiny_model_dir, tmp_path / "run", "--temperature", "0.1"))
    assert clash.exit_code == 1 and "run.temperature" in clash.output


def test_bad_flags_are_named(tiny_data_dir, tiny_model_dir, tmp_path):
    res = runner.invoke(app, _args(tiny_data_dir, tiny_model_dir, tmp_path / "x", "--method", "bm25"))
    assert res.exit_code == 2 and "--method" in res.output
    res = runner.invoke(
        app, _args(tiny_data_dir, tiny_model_dir, tmp_path / "x", "--method", "maw", "--router", "nope")
    )
    assert res.exit_code == 2 and "--router" in res.output
    res = runner.invoke(app, _args(tiny_data_dir, tiny_model_dir, tmp_path / "x", "--warmup-ratio", "2"))
    assert res.exit_code == 2 and "--warmup-ratio" in res.output
