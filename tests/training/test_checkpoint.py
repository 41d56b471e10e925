"""Checkpoint building blocks: no pickles, exact optimizer / RNG round trips, atomic folder swaps."""

from __future__ import annotations

import dataclasses
import json
import random

import numpy as np
import pytest
import torch
from transformers import get_linear_schedule_with_warmup

from maw.config import MAWConfig, TrainConfig, differences, runtime_fields, structural, to_dict
from maw.training.checkpoint import (
    FORMAT_VERSION,
    CheckpointError,
    TrainingState,
    checkpoint_config,
    load_checkpoint,
    read_config,
    recover_checkpoint_dir,
    rng_state,
    save_checkpoint,
    set_rng_state,
)
from maw.training.methods import build_model
from maw.training.state import EpochPartial, StepResult
from maw.utils.io import _umask

# ``state`` of a mid-epoch ``training_state.json`` as the trainer wrote it before its state was typed
# (``epoch_partial``: a dict of eight running sums; ``{}`` between epochs)
OLD_STATE = {
    "epoch": 2,
    "step_in_epoch": 4,
    "global_step": 13,
    "history": [
        {"epoch": 0, "val": {"nDCG@10": 0.5}},
        {"epoch": 1, "train_loss": 2.4, "val": {"nDCG@10": 0.6}},
    ],
    "best_score": 0.6,
    "best_epoch": 1,
    "bad_epochs": 0,
    "finished": False,
    "train_seconds": 3.25,
    "epoch_partial": {
        "loss_sum": 38.5,
        "n": 16.0,
        "step_losses": [2.5, 2.3125],
        "stats": {"ce_count": 48.0, "ce_sum": 66.5},
        "labels": [10, 2, 3, 1],
        "depth_statistics": {"2": {"counts": [[3, 1, 0, 0]], "entropy": [1.25], "units": 4}},
        "train_seconds": 1.5,
        "grad_norms": [0.75, 0.5],
    },
    "last_ref_refresh": 0,
}


def test_differences_lists_every_changed_key():
    a = {"method": "maw", "maw": {"depth_dim": 8, "router": "soft"}, "train": {"lr": 1e-3}}
    b = {"method": "maw", "maw": {"depth_dim": 4, "router": "soft"}, "train": {"lr": 2e-3}, "extra": 1}
    assert differences(a, b) == [
        "extra: saved '<absent>', now 1",
        "maw.depth_dim: saved 8, now 4",
        "train.lr: saved 0.001, now 0.002",
    ]
    assert differences(a, a) == []


def test_an_option_added_since_a_config_was_saved_is_its_default():
    old = {"method": "maw", "maw": {"depth_dim": 8, "router": "grpo"}}  # saved before grpo_baseline existed
    assert differences(old, {**old, "maw": {**old["maw"], "grpo_baseline": "group"}}) == []
    assert differences(old, {**old, "maw": {**old["maw"], "grpo_baseline": "leave_one_out"}}) == [
        "maw.grpo_baseline: saved '<absent>', now 'leave_one_out'"
    ]
    # a field removed since (present in saved, absent now) is still a difference
    assert differences({**old, "maw": {**old["maw"], "x": 1}}, old) == ["maw.x: saved 1, now '<absent>'"]


def test_runtime_fields_are_not_structure():
    assert {"checkpoint_every", "resume", "prefix_cache_dir"} <= set(runtime_fields(TrainConfig))
    assert {"tile_size", "tile_elements", "implementation"} == set(runtime_fields(MAWConfig))
    fast = MAWConfig(tile_size=7, implementation="naive")
    assert structural(fast) == structural(MAWConfig()) and to_dict(fast) != to_dict(MAWConfig())
    assert differences(
        structural(TrainConfig(temperature=0.1)), structural(TrainConfig(checkpoint_every=3))
    ) == ["temperature: saved 0.1, now 0.05"]


def test_rng_state_round_trip_through_json_and_tensors():
    tensors, js = rng_state()
    js = json.loads(json.dumps(js))
    expected = (torch.rand(3), np.random.rand(3), random.random())
    set_rng_state(tensors, js)
    got = (torch.rand(3), np.random.rand(3), random.random())
    assert torch.equal(expected[0], got[0]) and np.array_equal(expected[1], got[1]) and expected[2] == got[2]


def test_checkpoint_round_trip_is_exact_and_pickle_free(tiny, tmp_path):
    plan = tiny.plan("finetune")
    config = checkpoint_config(plan, tiny.dataset, tiny.splits)
    enc = build_model(plan)
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
    save_checkpoint(tmp_path / "latest", enc, config, state, opt, sched, None, names)
    files = sorted(p.name for p in (tmp_path / "latest").iterdir())
    assert files == ["config.json", "model.safetensors", "training_state.json", "training_state.safetensors"]
    assert (tmp_path / "latest").stat().st_mode & 0o777 == 0o777 & ~_umask()  # not mkdtemp's 0700
    saved = read_config(tmp_path / "latest")
    assert saved["format_version"] == FORMAT_VERSION == 2
    assert saved["plan"] == json.loads(json.dumps(plan.to_dict()))
    assert saved["structure"]["data_identity"]["dataset_fingerprint"] == tiny.dataset.fingerprint

    enc2 = build_model(plan)
    params2 = [(n, p) for n, p in enc2.named_parameters() if p.requires_grad]
    opt2 = torch.optim.AdamW([p for _, p in params2], lr=1e-3)
    sched2 = get_linear_schedule_with_warmup(opt2, 2, 10)
    # runtime-only settings (checkpoint_every, eval batch size, device, ...) may differ on resume
    resumed = dataclasses.replace(
        plan,
        train=dataclasses.replace(plan.train, checkpoint_every=5),
        eval=dataclasses.replace(plan.eval, eval_batch_size=4),
    ).with_runtime(num_threads=2)
    st = load_checkpoint(
        tmp_path / "latest",
        enc2,
        checkpoint_config(resumed, tiny.dataset, tiny.splits),
        opt2,
        sched2,
        None,
        names,
    )
    assert st == state
    for (n, p), (_, p2) in zip(params, params2, strict=True):
        assert torch.equal(p, p2), n
        for key in ("exp_avg", "exp_avg_sq", "step"):
            assert torch.equal(opt.state[p][key], opt2.state[p2][key])
    assert sched2.get_last_lr() == sched.get_last_lr() and sched2.last_epoch == sched.last_epoch
    # a setting that changes results is refused, naming it with the saved and the current value
    other = dataclasses.replace(plan, train=dataclasses.replace(plan.train, temperature=0.1))
    with pytest.raises(CheckpointError, match=r"train.temperature: saved 0.05, now 0.1"):
        load_checkpoint(tmp_path / "latest", enc2, checkpoint_config(other, tiny.dataset, tiny.splits))
    # so is other training data
    fewer = dataclasses.replace(tiny.splits, train=dict(list(tiny.splits.train.items())[:-1]))
    with pytest.raises(CheckpointError, match=r"data_identity.train_queries"):
        load_checkpoint(tmp_path / "latest", enc2, checkpoint_config(plan, tiny.dataset, fewer))
    with pytest.raises(CheckpointError, match="parameters differ"):
        load_checkpoint(tmp_path / "latest", enc2, config, opt2, None, None, names[::-1])


def test_unreadable_checkpoints_name_the_file(tmp_path):
    with pytest.raises(CheckpointError, match=r"config.json: not found"):
        read_config(tmp_path)
    (tmp_path / "config.json").write_text("{not json")
    with pytest.raises(CheckpointError, match=r"config.json: not valid JSON"):
        read_config(tmp_path)
    (tmp_path / "config.json").write_text(json.dumps({"format_version": 1, "structure": {}}))
    with pytest.raises(CheckpointError, match=r"checkpoint format 1 is not supported"):
        read_config(tmp_path)


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


def test_an_epoch_partial_in_the_old_dict_form_loads(tiny, tmp_path):
    state = TrainingState.from_dict(json.loads(json.dumps(OLD_STATE)))
    part = state.epoch_partial
    assert isinstance(part, EpochPartial) and part.train_loss == 38.5 / 16.0
    assert part.labels == [10, 2, 3, 1] and part.depth_statistics["2"]["units"] == 4
    assert state.to_dict() == OLD_STATE  # and it is written back in the same form
    between = TrainingState.from_dict({**OLD_STATE, "step_in_epoch": 0, "epoch_partial": {}})
    assert between.epoch_partial is None and between.to_dict()["epoch_partial"] == {}
    # the epoch's sums go on from the loaded ones
    part.add(StepResult(loss_sum=20.0, n=8.0, stats={"ce_sum": 1.0}, labels=[1, 0, 0, 1], grad_norm=0.25))
    assert part.step_losses == [2.5, 2.3125, 2.5] and part.grad_norms == [0.75, 0.5, 0.25]
    assert part.stats == {"ce_count": 48.0, "ce_sum": 67.5} and part.labels == [11, 2, 3, 2]

    # through a checkpoint folder: an old training_state.json loads into the typed state
    plan = tiny.plan("finetune")
    config = checkpoint_config(plan, tiny.dataset, tiny.splits)
    enc = build_model(plan)
    save_checkpoint(tmp_path / "latest", enc, config, TrainingState(), include_rng=False)
    path = tmp_path / "latest" / "training_state.json"
    path.write_text(json.dumps({**json.loads(path.read_text()), "state": OLD_STATE}))
    loaded = load_checkpoint(tmp_path / "latest", build_model(plan), config)
    assert loaded == TrainingState.from_dict(OLD_STATE) and loaded.epoch_partial.n == 16.0
    save_checkpoint(tmp_path / "again", enc, config, loaded, include_rng=False)
    assert json.loads((tmp_path / "again" / "training_state.json").read_text())["state"] == OLD_STATE
