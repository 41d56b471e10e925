"""`maw benchmark` flags: clear errors (exit 2) and --report-only on an existing run folder."""

from __future__ import annotations

import json

import pytest
from bench_testkit import write_synthetic_run
from typer.testing import CliRunner

from maw.cli import app


@pytest.mark.parametrize(
    "args, message",
    [
        (["--methods", "bm25,colbert"], "--methods: unknown method"),
        (["--seeds", "1,x"], "--seeds: expected comma-separated integers"),
        (["--router", "magic"], "--router: unknown router"),
        (["--tracker", "wandb"], "--tracker: unknown tracker"),
        (["--num-epochs", "0"], "--num-epochs: must be >= 1"),
        (["--resume", "/no/such/run"], "--resume: /no/such/run is not a benchmark run folder"),
        (["--report-only"], "--report-only: name the run"),
        (["--config", "/no/such.toml"], "--config: file not found"),
    ],
)
def test_bad_flags_are_one_clear_error(tmp_path, args, message):
    res = CliRunner().invoke(
        app, ["benchmark", "--out", str(tmp_path), *args] if "--resume" not in args else ["benchmark", *args]
    )
    assert res.exit_code == 2, res.output
    assert message in " ".join(res.output.split()), res.output


def test_report_only_rebuilds_reports(tmp_path):
    run = tmp_path / "runs" / "old"
    write_synthetic_run(run, "d", {"bm25": 0.0, "finetune": 0.02, "maw": 0.08}, seeds=(1,))
    (run / "config.json").write_text(json.dumps({"datasets": ["d"], "methods": ["bm25", "finetune", "maw"]}))
    res = CliRunner().invoke(app, ["benchmark", "--resume", str(run), "--report-only"])
    assert res.exit_code == 0, res.output
    assert (
        "d: MAW beat the capacity-matched baseline (finetune) significantly"
        in (run / "REPORT.md").read_text()
    )
    assert (run / "results.csv").is_file() and (run / "summary.txt").is_file()
