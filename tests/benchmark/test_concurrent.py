"""Two ``maw benchmark`` processes on one run folder split the cells: each cell runs exactly once;
under torchrun, every cell runs on all ranks and gives the cells of one process.

Real subprocesses on the demo collection with a tiny random BERT (MiniLM tokenizer): the lock per
cell (``maw.benchmark.cells.CellLock``) is what keeps them apart.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from maw.benchmark.cells import CellLock, cell_path, load_cells

pytestmark = pytest.mark.slow


def _cmd(out: Path, model: Path, config: Path, run_name: str = "two") -> list[str]:
    return [
        sys.executable, "-m", "maw.cli", "benchmark",
        "--datasets", "demo", "--methods", "bm25,zeroshot,finetune,maw", "--seeds", "1",
        "--model", str(model), "--train-samples", "24", "--val-samples", "8",
        "--query-max-length", "16", "--doc-max-length", "32",
        "--out", str(out), "--run-name", run_name, "--config", str(config),
    ]  # fmt: skip


def test_two_processes_on_one_run_folder_run_each_cell_once(tmp_path, tiny_model):
    config = tmp_path / "bench.toml"
    config.write_text(
        "[train]\nnum_epochs = 1\nbatch_size = 8\nlearning_rate = 1e-3\n"
        "[eval]\neval_batch_size = 64\nlatency_queries = 2\n[runtime]\nnum_threads = 1\n"
    )
    out = tmp_path / "runs"
    procs = [
        subprocess.Popen(
            _cmd(out, tiny_model, config), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
        )
        for _ in range(2)
    ]
    logs = [p.communicate(timeout=600)[0] for p in procs]
    assert all(p.returncode == 0 for p in procs), logs
    ran = [line for log in logs for line in log.splitlines() if ": ok in " in line]
    # every cell ran in exactly one of the two processes
    tags = sorted(line.split("]", 1)[1].split(":")[0].strip() for line in ran)
    assert tags == ["demo bm25 seed 1", "demo finetune seed 1", "demo maw seed 1", "demo zeroshot seed 1"], (
        logs
    )
    cells = load_cells(out / "two")
    assert sorted(c["method"] for c in cells) == ["bm25", "finetune", "maw", "zeroshot"]
    assert all(c["status"] == "ok" for c in cells)
    assert not list((out / "two" / "cells").rglob("*.lock"))  # every claim was released
    assert json.loads((out / "two" / "results.json").read_text())


def test_a_dead_process_lock_is_taken_over_and_a_live_one_is_respected(tmp_path):
    path = cell_path(tmp_path, "demo", "bm25", 1).with_suffix(".lock")
    path.parent.mkdir(parents=True)
    dead = subprocess.run(
        [sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True
    )
    import socket

    path.write_text(json.dumps({"host": socket.gethostname(), "pid": int(dead.stdout), "since": 0}))
    lock = CellLock.acquire(tmp_path, "demo", "bm25", 1)  # its owner is gone: taken over
    assert lock is not None and json.loads(path.read_text())["pid"] != int(dead.stdout)
    live = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)"])
    try:
        lock.release()
        path.write_text(json.dumps({"host": socket.gethostname(), "pid": live.pid, "since": 0}))
        assert CellLock.acquire(tmp_path, "demo", "bm25", 1) is None  # held by a live process
        path.write_text(json.dumps({"host": "another-node", "pid": 1, "since": 0}))
        assert CellLock.acquire(tmp_path, "demo", "bm25", 1) is None  # another host's claim is respected
    finally:
        live.kill()


def test_torchrun_runs_each_cell_on_all_ranks(tmp_path):
    """Under torchrun every cell runs on both ranks (DDP training, corpus shards split between the
    ranks) and gives the cells of one process; rank 0 alone logs and writes each cell once."""
    import shutil

    from tiny_bert import write_tiny_model

    torchrun = shutil.which("torchrun", path=str(Path(sys.executable).parent))
    if torchrun is None:
        pytest.skip("torchrun is not installed next to this Python")
    model = write_tiny_model(tmp_path / "bert", dropout=0.0)  # no dropout: both runs compute one function
    config = tmp_path / "bench.toml"
    config.write_text(
        "[train]\nnum_epochs = 1\nbatch_size = 8\nlearning_rate = 1e-3\n"
        "[eval]\neval_batch_size = 64\nlatency_queries = 2\nshard_size = 50\n[runtime]\nnum_threads = 1\n"
    )
    out = tmp_path / "runs"
    one = subprocess.run(_cmd(out, model, config, "one"), capture_output=True, text=True, timeout=600)
    assert one.returncode == 0, one.stdout[-3000:] + one.stderr[-3000:]
    cmd = [torchrun, "--standalone", "--nproc-per-node", "2", "-m", *_cmd(out, model, config, "two")[2:]]
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
    log = done.stdout + done.stderr
    assert done.returncode == 0, log[-6000:]
    ran = [line for line in log.splitlines() if ": ok in " in line]  # rank 0 logs, once per cell
    tags = sorted(line.split("]", 1)[1].split(":")[0].strip() for line in ran)
    assert tags == ["demo bm25 seed 1", "demo finetune seed 1", "demo maw seed 1", "demo zeroshot seed 1"], log
    assert "each cell on 2 processes" in log
    single = {c["method"]: c for c in load_cells(out / "one")}
    ddp = {c["method"]: c for c in load_cells(out / "two")}
    assert sorted(ddp) == ["bm25", "finetune", "maw", "zeroshot"]
    assert all(c["status"] == "ok" for c in ddp.values())
    for method, cell in ddp.items():
        for metric, value in single[method]["metrics"].items():
            assert cell["metrics"][metric] == pytest.approx(value, abs=1e-3), (method, metric)
        if method == "bm25":
            continue
        t = cell["timings"]
        assert t["doc_shards"] == 8 and t["doc_shards_encoded"] == 4, (method, t)  # rank 0: its half
    for method in ("finetune", "maw"):
        assert ddp[method]["train_setup"]["world_size"] == 2
        for h1, h2 in zip(single[method]["history"], ddp[method]["history"], strict=True):
            assert h1["val"]["nDCG@10"] == pytest.approx(h2["val"]["nDCG@10"], abs=1e-4), method
            assert len(h1.get("step_losses", [])) == len(h2.get("step_losses", []))
            assert h1.get("step_losses", []) == pytest.approx(h2.get("step_losses", []), abs=1e-4), method
    assert not list((out / "two" / "cells").rglob("*.lock"))
    no_name = [a for a in cmd if a not in ("--run-name", "two")]
    refused = subprocess.run(no_name, capture_output=True, text=True, timeout=300)
    assert refused.returncode != 0 and "--run-name" in refused.stdout + refused.stderr
