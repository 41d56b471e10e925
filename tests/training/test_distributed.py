"""Two CPU processes (torchrun, gloo) with half the batch each reproduce one process with the full batch."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from maw.training.distributed import DistributedContext, gather_with_grad, shard

HERE = Path(__file__).resolve().parent


def test_single_process_helpers_are_identity():
    ctx = DistributedContext()
    assert shard(list(range(5)), ctx) == list(range(5))
    x = torch.randn(3, 2, requires_grad=True)
    assert gather_with_grad(x, ctx) is x


def test_shards_are_contiguous_and_cover_the_batch():
    parts = [shard(list(range(7)), DistributedContext(rank=r, world_size=2)) for r in range(2)]
    assert parts == [[0, 1, 2, 3], [4, 5, 6]]


@pytest.mark.slow
def test_two_processes_match_one_process(tiny_data_dir, tiny_model_nodrop, tmp_path):
    torchrun = shutil.which("torchrun", path=str(Path(sys.executable).parent))
    if torchrun is None:
        pytest.skip("torchrun is not installed next to this Python")
    sys.path.insert(0, str(HERE))
    from _tiny import Tiny

    from maw.training.trainer import train

    # no dropout: the two runs must compute the same function
    tiny = Tiny.load(tiny_data_dir, tiny_model_nodrop)
    plan = tiny.plan("finetune", num_epochs=2, checkpoint_every=0, batch_size=8)
    single = train(plan, tiny.dataset, tiny.splits, tmp_path / "one")

    cmd = [
        torchrun,
        "--standalone",
        "--nproc_per_node",
        "2",
        str(HERE / "train_script.py"),
        "--data",
        str(tiny_data_dir),
        "--model",
        str(tiny_model_nodrop),
        "--run-dir",
        str(tmp_path / "two"),
        "--out",
        str(tmp_path / "two.json"),
        "--epochs",
        "2",
        "--checkpoint-every",
        "0",
        "--batch-size",
        "8",
    ]
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-4000:]
    two = json.loads((tmp_path / "two.json").read_text())
    assert two["world_size"] == 2
    for h1, h2 in zip(single.history[1:], two["history"][1:], strict=True):
        assert len(h1["step_losses"]) == len(h2["step_losses"]) > 0
        np.testing.assert_allclose(h1["step_losses"], h2["step_losses"], atol=1e-4, rtol=0)
        assert h1["val"]["nDCG@10"] == pytest.approx(h2["val"]["nDCG@10"], abs=1e-4)
    a = load_file(str(tmp_path / "one" / "latest" / "model.safetensors"))
    b = load_file(str(tmp_path / "two" / "latest" / "model.safetensors"))
    assert a.keys() == b.keys()
    for k in a:
        torch.testing.assert_close(a[k], b[k], atol=1e-4, rtol=0, msg=k)


def test_depth_statistics_of_ranks_merge_like_one_pass():
    from maw.training.validation import merge_depth_statistics

    a = {"6": {"counts": [[3, 1], [0, 4]], "entropy": [0.5, 0.1], "units": 4}}
    b = {"6": {"counts": [[1, 1], [2, 0]], "entropy": [0.2, 0.4], "units": 2}}
    merged = merge_depth_statistics([a, b])
    assert merged["6"]["counts"] == [[4, 2], [2, 4]] and merged["6"]["units"] == 6
    assert merged["6"]["entropy"] == pytest.approx([(0.5 * 4 + 0.2 * 2) / 6, (0.1 * 4 + 0.4 * 2) / 6])
    assert merge_depth_statistics([a]) == a and merge_depth_statistics([{}, {}]) == {}
    assert a["6"]["counts"] == [[3, 1], [0, 4]]  # inputs untouched
