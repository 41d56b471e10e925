"""Checkpoint building blocks: no pickles, exact optimizer / RNG round trips, atomic folder swaps."""

from __future__ import annotations

import json
import random

import numpy as np
import pytest
import torch
from transformers import get_linear_schedule_with_warmup

from maw.training.checkpoint import (
    CheckpointError,
    TrainingState,
    config_differences,
    load_checkpoint,
    recover_checkpoint_dir,
    rng_state,
    save_checkpoint,
    set_rng_state,
)
from maw.training.methods import build_model_with_plan
from maw.utils.io import _umask


def test_config_differences_lists_every_changed_key():
    a = {"structure": {"method": "maw", "maw": {"depth_dim": 8, "router": "soft"}}, "run": {"lr": 1e-3}}
    b = {
        "structure": {"method": "maw", "maw": {"depth_dim": 4, "router": "soft"}, "extra": 1},
        "run": {"lr": 2e-3},
    }
    assert config_differences(a, b) == [
        "run.lr: saved=0.001, current=0.002",
        "structure.extra: saved='<absent>', current=1",
        "structure.maw.depth_dim: saved=8, current=4",
    ]
    assert config_differences(a, b, ignore=("run", "structure.extra")) == [
        "structure.maw.depth_dim: saved=8, current=4"
    ]


def test_rng_state_round_trip_through_json_and_tensors():
    tensors, js = rng_state()
    js = json.loads(json.dumps(js))
    expected = (torch.rand(3), np.random.rand(3), random.random())
    set_rng_state(tensors, js)
    got = (torch.rand(3), np.random.rand(3), random.random())
    assert torch.equal(expected[0], got[0]) and np.array_equal(expected[1], got[1]) and expected[2] == got[2]


def test_checkpoint_round_trip_is_exact_and_pickle_free(tiny, tmp_path):
    _, _, _, model, maw, tcfg, _ = tiny
    enc, plan = build_model_with_plan("finetune", model, maw, tcfg)
    params = [(n, p) for n, p in enc.named_parameters() if p.requires_grad]
    opt = torch.optim.AdamW([p for _, p in params], lr=1e-3)
    sched = get_linear_schedule_with_warmup(opt, 2, 10)
    for _ in range(3):
        opt.zero_grad()
        sum((p**2).sum() for _, p in params).backward()
        opt.step()
        sched.step()
    names = [n for n, _ in params]
    state = TrainingState(
        epoch=2, step_in_epoch=3, global_step=7, history=[{"epoch": 0, "val": {"nDCG@10": 0.5}}]
    )
    save_checkpoint(tmp_path / "latest", enc, {"structure": {"x": 1}}, state, opt, sched, None, names)
    files = sorted(p.name for p in (tmp_path / "latest").iterdir())
    assert files == ["config.json", "model.safetensors", "training_state.json", "training_state.safetensors"]
    assert (tmp_path / "latest").stat().st_mode & 0o777 == 0o777 & ~_umask()  # not mkdtemp's 0700

    enc2, _ = build_model_with_plan("finetune", model, maw, tcfg)
    params2 = [(n, p) for n, p in enc2.named_parameters() if p.requires_grad]
    opt2 = torch.optim.AdamW([p for _, p in params2], lr=1e-3)
    sched2 = get_linear_schedule_with_warmup(opt2, 2, 10)
    st = load_checkpoint(tmp_path / "latest", enc2, {"structure": {"x": 1}}, opt2, sched2, None, names)
    assert st == state
    for (n, p), (_, p2) in zip(params, params2, strict=True):
        assert torch.equal(p, p2), n
        for key in ("exp_avg", "exp_avg_sq", "step"):
            assert torch.equal(opt.state[p][key], opt2.state[p2][key])
    assert sched2.get_last_lr() == sched.get_last_lr() and sched2.last_epoch == sched.last_epoch
    with pytest.raises(CheckpointError, match=r"structure.x: saved=1, current=2"):
        load_checkpoint(tmp_path / "latest", enc2, {"structure": {"x": 2}})
    with pytest.raises(CheckpointError, match="parameters differ"):
        load_checkpoint(tmp_path / "latest", enc2, {"structure": {"x": 1}}, opt2, None, None, names[::-1])


def test_interrupted_swap_is_recovered(tmp_path):
    old = tmp_path / ".latest.old"
    old.mkdir()
    (old / "config.json").write_text("{}")
    recover_checkpoint_dir(tmp_path / "latest")  # crash between "move old aside" and "move new in"
    assert (tmp_path / "latest" / "config.json").is_file() and not old.exists()
    junk = tmp_path / ".latest.abc.tmp"
    junk.mkdir()
    recover_checkpoint_dir(tmp_path / "latest")
    assert not junk.exists()
