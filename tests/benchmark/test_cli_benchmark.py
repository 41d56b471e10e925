"""`maw benchmark` flags: clear errors (exit 2, no run folder) and --report-only on an existing run folder."""

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
        (["--router", "magic"], "--router: unknown value 'magic'; choose one of soft"),
        (["--tracker", "wandb"], "--tracker: unknown value 'wandb'; choose one of none"),
        (["--num-epochs", "0"], "--num-epochs: must be >= 1"),
        (["--resume", "/no/such/run"], "--resume: /no/such/run is not a benchmark run folder"),
        (["--report-only"], "--report-only: name the run"),
        (["--config", "/no/such.toml"], "--config: file not found"),
        # checked against the backbone (all-MiniLM-L6-v2: 6 layers, heads of 32) before any work
        (["--depth-dim", "3"], "--depth-dim: D=3 must divide the head size d_h=32"),
        (["--maw-layers", "9"], "--maw-layers: layer(s) [9] out of range"),
        (["--methods", "finetune", "--finetune-layers", "7"], "--finetune-layers"),
        (["--num-layers", "9"], "--num-layers: 9 > the 6 layers"),
        (["--device", "tpu"], "--device: use 'cpu' or 'cuda[:N]'"),
    ],
)
def test_bad_flags_are_one_clear_error(tmp_path, args, message):
    out = tmp_path / "runs"
    res = CliRunner().invoke(
        app, ["benchmark", "--out", str(out), *args] if "--resume" not in args else ["benchmark", *args]
    )
    assert res.exit_code == 2, res.output
    assert message in " ".join(res.output.split()), res.output
    assert "Traceback" not in res.output
    assert not out.exists() and list(tmp_path.iterdir()) == []  # nothing written, no run folder


def test_bad_toml_names_the_file(tmp_path):
    toml = tmp_path / "bad.toml"
    toml.write_text("[train]\nnum_epoch = 3\n")
    res = CliRunner().invoke(app, ["benchmark", "--out", str(tmp_path / "runs"), "--config", str(toml)])
    assert res.exit_code == 2 and f"--config {toml} [train]: unknown option(s) ['num_epoch']" in res.output
    assert not (tmp_path / "runs").exists()


def test_report_only_rebuilds_reports(tmp_path):
    run = tmp_path / "runs" / "old"
    write_synthetic_run(run, "d", {"bm25": 0.0, "finetune": 0.02, "maw": 0.08}, seeds=(1,))
    (run / "config.json").write_text(json.dumps({"datasets": ["d"], "methods": ["bm25", "finetune", "maw"]}))
    res = CliRunner().invoke(app, ["benchmark", "--resume", str(run), "--report-only"])
    assert res.exit_code == 0, res.output
    assert "d: MAW beat the capacity-matched baseline (finetune): nDCG@10" in (run / "REPORT.md").read_text()
    assert (run / "results.csv").is_file() and (run / "summary.txt").is_file()
