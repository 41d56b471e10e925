"""End to end: a real ``maw benchmark`` subprocess on the demo collection is interrupted (Ctrl-C)
in the middle of training, then rerun: it completes without redoing finished cells.

A tiny random BERT (with the MiniLM tokenizer) keeps it fast; everything else is the real code
path: CLI, TOML config, data loading, BM25, dense retrieval, training with checkpoints, reports.
"""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from maw.benchmark.cells import load_cells

pytestmark = pytest.mark.slow


def _cmd(out: Path, model: Path, config: Path, quiet: bool = True) -> list[str]:
    return [
        sys.executable,
        "-m",
        "maw.cli",
        "benchmark",
        "--datasets",
        "demo",
        "--methods",
        "bm25,zeroshot,finetune,maw",
        "--seeds",
        "1",
        "--model",
        str(model),
        "--train-samples",
        "40",
        "--val-samples",
        "10",
        "--query-max-length",
        "16",
        "--doc-max-length",
        "48",
        "--out",
        str(out),
        "--run-name",
        "e2e",
        "--config",
        str(config),
        *(["--quiet"] if quiet else []),
    ]


def _default_sigint() -> None:
    """Run in the child before exec: a shell starts background jobs with SIGINT ignored, and Python
    then keeps ignoring it (no KeyboardInterrupt). Ctrl-C must reach the child however CI is run."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def test_interrupt_and_resume_demo(tmp_path, tiny_model):
    config = tmp_path / "bench.toml"
    config.write_text(
        "[train]\nnum_epochs = 2\nbatch_size = 8\ncheckpoint_every = 1\nlearning_rate = 1e-3\n"
        f"[eval]\neval_batch_size = 64\nlatency_queries = 5\nembedding_cache_dir = '{tmp_path / 'emb'}'\n"
        "[runtime]\nnum_threads = 1\n"
    )
    out = tmp_path / "runs"
    run = out / "e2e"
    cells = run / "cells" / "demo"
    latest = run / "checkpoints" / "demo" / "finetune-seed1" / "latest" / "config.json"

    proc = subprocess.Popen(
        _cmd(out, tiny_model, config),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        preexec_fn=_default_sigint,
    )
    deadline = time.monotonic() + 120
    while not latest.exists() and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.02)
    interrupted_mid_training = not (cells / "finetune-seed1.json").exists()
    proc.send_signal(signal.SIGINT)  # Ctrl-C
    log1, _ = proc.communicate(timeout=120)
    assert latest.exists(), log1
    assert proc.returncode == 130, log1
    first = {p.name: p.stat().st_mtime_ns for p in cells.glob("*.json")}
    assert {"bm25-seed1.json", "zeroshot-seed1.json"} <= set(first), log1
    # the folder is consistent after the interruption: reports rebuilt from the finished cells
    assert "bm25" in (run / "summary.txt").read_text()
    assert not [p for p in run.rglob("*") if p.name.endswith(".tmp")]

    proc2 = subprocess.run(
        _cmd(out, tiny_model, config, quiet=False), capture_output=True, text=True, timeout=300
    )
    log2 = proc2.stdout + proc2.stderr
    assert proc2.returncode == 0, log2
    assert "bm25 seed 1: done before, skipped" in log2 and "zeroshot seed 1: done before, skipped" in log2
    for name, mtime in first.items():  # finished cells were not redone
        assert (cells / name).stat().st_mtime_ns == mtime, name

    by_method = {c["method"]: c for c in load_cells(run)}
    assert set(by_method) == {"bm25", "zeroshot", "finetune", "maw"}
    assert all(c["status"] == "ok" for c in by_method.values())
    ft = by_method["finetune"]
    if interrupted_mid_training:
        assert ft["train_setup"]["resumed_from"] is not None  # training continued from latest/
    assert [h["epoch"] for h in ft["history"]][0] == 0 and ft["params"]["trainable"] > 0
    assert ft["checkpoint"] and (run / ft["checkpoint"]).is_dir()  # relative to the run folder
    assert by_method["maw"]["router_stats"]

    for name in (
        "results.json",
        "results.csv",
        "summary.txt",
        "REPORT.md",
        "results/demo.json",
        "config.json",
    ):
        assert (run / name).is_file(), name
    res = json.loads((run / "results" / "demo.json").read_text())
    assert set(res["plots"]) == {"metrics", "curves", "depth_maw", "tradeoff"}
    # "not tested": identical per-query scores (possible with a tiny random model) are not a test
    assert res["verdict"]["outcome"] in ("better", "worse", "n.s.", "not tested")
    assert res["verdict"]["sentence"] in (run / "REPORT.md").read_text()
    saved = json.loads((run / "config.json").read_text())
    assert (
        saved["eval"]["latency_queries"] == 5
        and saved["train"]["num_epochs"] == 2
        and saved["train"]["batch_size"] == 8
        and saved["runtime"]["num_threads"] == 1
    )
    # every cell stores the plan it ran; the trained ones with the cell's seed
    assert ft["config"]["train"]["seed"] == 1 and ft["config"]["layers"]["trainable"] == [2]
    assert by_method["maw"]["config"]["maw"]["depth_dim"] == saved["maw"]["depth_dim"]
    assert by_method["bm25"]["config"]["train"] is None
