"""Kill a real training process with SIGKILL after its first checkpoint, rerun it, and check that it
ends with exactly the weights of an uninterrupted run (MAW GRPO: dropout, policy samples, the
reference router, the optimiser and scheduler state and the mid-epoch data order must all resume)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

HERE = Path(__file__).resolve().parent
SCRIPT = HERE / "train_script.py"
ARGS = ["--method", "maw", "--router", "grpo", "--epochs", "3", "--checkpoint-every", "3"]


def _cmd(data, model, run_dir, out):
    return [
        sys.executable,
        str(SCRIPT),
        "--data",
        str(data),
        "--model",
        str(model),
        "--run-dir",
        str(run_dir),
        "--out",
        str(out),
        *ARGS,
    ]


@pytest.mark.slow
def test_killed_run_resumes_to_the_same_weights(tiny_data_dir, tiny_model_dir, tmp_path):
    # the uninterrupted reference, in this process
    sys.path.insert(0, str(HERE))
    from _tiny import Tiny

    from maw.training.trainer import train

    tiny = Tiny.load(tiny_data_dir, tiny_model_dir)
    plan = tiny.plan("maw", router="grpo", num_epochs=3, checkpoint_every=3)
    ref = train(plan, tiny.dataset, tiny.splits, tmp_path / "ref")

    run_dir = tmp_path / "killed"
    proc = subprocess.Popen(
        _cmd(tiny_data_dir, tiny_model_dir, run_dir, tmp_path / "a.json"),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    marker = run_dir / "latest" / "training_state.json"
    deadline = time.monotonic() + 120
    while not marker.exists():
        if proc.poll() is not None:
            pytest.fail(f"training exited before its first checkpoint: {proc.stderr.read().decode()[-2000:]}")
        if time.monotonic() > deadline:
            proc.kill()
            pytest.fail("no checkpoint within 120 s")
        time.sleep(0.005)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    proc.stderr.close()
    state = json.loads(marker.read_text())["state"]
    assert not state["finished"], "the run finished before it could be killed"
    assert not (tmp_path / "a.json").exists()

    done = subprocess.run(
        _cmd(tiny_data_dir, tiny_model_dir, run_dir, tmp_path / "b.json"), capture_output=True, text=True
    )
    assert done.returncode == 0, done.stderr[-3000:]
    out = json.loads((tmp_path / "b.json").read_text())
    assert out["resumed_from"] is not None and out["resumed_from"]["global_step"] >= 3

    for sub in ("latest", "best"):
        a = load_file(str(tmp_path / "ref" / sub / "model.safetensors"))
        b = load_file(str(run_dir / sub / "model.safetensors"))
        assert a.keys() == b.keys() and any(k.startswith("maw_reference.") for k in a)
        for k in a:
            assert torch.equal(a[k], b[k]), f"{sub}/{k} differs by {(a[k] - b[k]).abs().max()}"
    ref_hist = json.loads(json.dumps(ref.history))
    for h_ref, h_res in zip(ref_hist, out["history"], strict=True):
        assert h_ref.get("step_losses") == pytest.approx(h_res.get("step_losses"), abs=1e-6)
        assert h_ref["val"] == pytest.approx(h_res["val"], abs=1e-6)
