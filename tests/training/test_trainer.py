"""The training loop on a tiny random BERT: what trains, validation, checkpoints, errors, routers."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from maw.config import ConfigError
from maw.training import router_objectives
from maw.training.checkpoint import CheckpointError, checkpoint_config, load_checkpoint
from maw.training.methods import build_model, load_trained_encoder
from maw.training.trainer import TrainingError, train


def _run(tiny, tmp_path, method="finetune", name="run", **overrides):
    """Train ``method`` on the tiny collection; ``overrides`` are config fields of any section."""
    return train(tiny.plan(method, **overrides), tiny.dataset, tiny.splits, tmp_path / name)


def test_finetune_trains_only_the_trainable_layer_and_records_history(tiny, tmp_path):
    before = build_model(tiny.plan("finetune"))
    before_state = {k: v.clone() for k, v in before.state_dict().items()}
    res = _run(tiny, tmp_path, num_epochs=2, patience=5)
    assert [h["epoch"] for h in res.history] == [0, 1, 2]
    for h in res.history:
        assert 0.0 <= h["val"]["nDCG@10"] <= 1.0 and set(h["val"]) == {"nDCG@10", "R@100", "RR@10", "AP"}
    assert all(np.isfinite(h["train_loss"]) for h in res.history[1:])
    assert (
        len(res.history[1]["step_losses"])
        == res.setup["optimizer_steps_per_epoch"]
        == -(-res.setup["examples"] // 8)
    )
    assert res.best_epoch == int(np.argmax([h["val"]["nDCG@10"] for h in res.history]))
    assert json.loads((tmp_path / "run" / "history.json").read_text()) == json.loads(json.dumps(res.history))
    # the latest checkpoint holds the last epoch's weights: frozen tensors unchanged, trainable ones moved
    latest = load_file(str(res.latest_dir / "model.safetensors"))
    assert latest and all(k.startswith("backbone.encoder.layer.1.") for k in latest)
    assert any(not torch.equal(latest[k], before_state[k]) for k in latest)
    after = res.encoder.state_dict()
    for k, v in before_state.items():
        if not k.startswith("backbone.encoder.layer.1."):
            assert torch.equal(after[k], v), k
    assert res.params["trainable"] < res.params["total"]
    assert (
        res.setup["prefix_cache"] and res.setup["warmup_steps"] <= 2 * res.setup["optimizer_steps_per_epoch"]
    )


def test_validation_uses_val_queries_only_and_best_weights_are_returned(tiny, tmp_path, monkeypatch):
    import maw.retrieval.dense as dense

    ds, splits = tiny.dataset, tiny.splits
    seen: list[set] = []
    real = dense.search_embeddings

    def spy(q_emb, q_ids, d_emb, d_ids, k=1000):
        seen.append(set(q_ids))
        assert len(d_ids) == len(ds.corpus)  # full-corpus retrieval
        return real(q_emb, q_ids, d_emb, d_ids, k)

    monkeypatch.setattr(dense, "search_embeddings", spy)
    res = _run(tiny, tmp_path, num_epochs=2)
    assert len(seen) == 3 and all(s == set(splits.val) for s in seen)
    assert not set(splits.val) & set(splits.test)
    # the returned encoder holds the best epoch's weights == best/ checkpoint, loadable on its own
    enc, plan, saved = load_trained_encoder(res.best_dir)
    texts = [ds.queries[q] for q in sorted(splits.val)[:4]]
    np.testing.assert_allclose(enc.encode(texts, 16), res.encoder.encode(texts, 16), atol=1e-6)
    assert plan == tiny.plan("finetune", num_epochs=2) and plan.to_dict() == res.plan
    assert saved["structure"]["method"] == "finetune" and not enc.training
    # the run folder means its best checkpoint; latest/ holds the last epoch's weights
    by_run, _, _ = load_trained_encoder(res.best_dir.parent)
    np.testing.assert_array_equal(by_run.encode(texts, 16), enc.encode(texts, 16))
    latest, latest_plan, _ = load_trained_encoder(res.latest_dir)
    assert latest_plan == plan
    if res.best_epoch != 2:
        assert not np.allclose(latest.encode(texts, 16), enc.encode(texts, 16))
    with pytest.raises(CheckpointError, match="not a maw checkpoint"):
        load_trained_encoder(tmp_path)


def test_prefix_cache_and_live_prefix_train_identically(tiny_data_dir, tiny_model_nodrop, tmp_path):
    from _tiny import Tiny

    tiny = Tiny.load(tiny_data_dir, tiny_model_nodrop)
    losses = []
    for cache in (True, False):
        res = train(
            tiny.plan("finetune", num_epochs=1, prefix_cache=cache),
            tiny.dataset,
            tiny.splits,
            tmp_path / f"c{cache}",
        )
        assert res.setup["prefix_cache"] is cache
        losses.append(
            (
                res.history[1]["step_losses"],
                res.history[1]["val"]["nDCG@10"],
                res.history[0]["val"]["nDCG@10"],
            )
        )
    np.testing.assert_allclose(losses[0][0], losses[1][0], atol=1e-5)
    assert losses[0][1:] == pytest.approx(losses[1][1:], abs=1e-6)


def test_same_seed_same_weights(tiny, tmp_path):
    a = _run(tiny, tmp_path, name="a", num_epochs=1, save_checkpoints=False)
    sa = {k: v.clone() for k, v in a.encoder.state_dict().items()}
    b = _run(tiny, tmp_path, name="b", num_epochs=1, save_checkpoints=False)
    assert a.history[1]["step_losses"] == b.history[1]["step_losses"]
    assert all(torch.equal(v, b.encoder.state_dict()[k]) for k, v in sa.items())
    assert a.best_dir is None


def test_early_stopping_keeps_epoch_zero_when_nothing_improves(tiny, tmp_path):
    res = _run(tiny, tmp_path, num_epochs=4, patience=1, learning_rate=1e-12)
    assert len(res.history) == 2 and res.history[-1].get("early_stopped")
    assert res.best_epoch == 0
    # rerunning a finished run does no work and returns the same result
    again = _run(tiny, tmp_path, num_epochs=4, patience=1, learning_rate=1e-12)
    assert again.history == json.loads(json.dumps(res.history)) and again.resumed_from["epoch"] == 2


def test_non_finite_loss_stops_with_epoch_and_step_and_keeps_the_last_good_checkpoint(
    tiny, tmp_path, monkeypatch
):
    real = router_objectives.info_nce_per_query
    calls = {"n": 0}

    def exploding(*args, **kwargs):  # simulate a numerical blow-up at the 5th micro-batch
        calls["n"] += 1
        out = real(*args, **kwargs)
        return out * float("nan") if calls["n"] >= 5 else out

    monkeypatch.setattr(router_objectives, "info_nce_per_query", exploding)
    with pytest.raises(TrainingError, match=r"epoch 1, optimiser step 5") as err:
        _run(tiny, tmp_path, checkpoint_every=2)
    assert "latest" in str(err.value)
    state = json.loads((tmp_path / "run" / "latest" / "training_state.json").read_text())["state"]
    assert state["global_step"] == 4
    weights = load_file(str(tmp_path / "run" / "latest" / "model.safetensors"))
    assert all(torch.isfinite(v).all() for v in weights.values())


def test_loading_a_checkpoint_into_another_config_says_what_differs(tiny, tmp_path):
    res = _run(tiny, tmp_path, num_epochs=1)
    plan = tiny.plan("maw", num_epochs=1)
    with pytest.raises(CheckpointError) as err:
        load_checkpoint(res.latest_dir, build_model(plan), checkpoint_config(plan, tiny.dataset, tiny.splits))
    msg = str(err.value)
    assert "method: saved 'finetune', now 'maw'" in msg and "maw.depth_dim: saved '<absent>', now 4" in msg
    # resuming the same run directory with other settings is refused, naming the setting
    with pytest.raises(CheckpointError, match=r"train.learning_rate: saved 0.001, now 0.002"):
        _run(tiny, tmp_path, num_epochs=1, learning_rate=2e-3)
    with pytest.raises(CheckpointError, match=r"layers.trainable: saved \[2\], now \[1, 2\]"):
        _run(tiny, tmp_path, num_epochs=1, finetune_layers="1,2")
    # runtime-only settings may differ: the (finished) run resumes
    again = _run(tiny, tmp_path, num_epochs=1, checkpoint_every=7, eval_batch_size=4, num_threads=2)
    assert again.resumed_from == {
        "epoch": 2,
        "step_in_epoch": 0,
        "global_step": res.setup["optimizer_steps_per_epoch"],
    }
    assert again.history == json.loads(json.dumps(res.history))


def test_bad_training_flags_name_the_flag(tiny, tmp_path):
    with pytest.raises(ConfigError, match="--batch-size"):
        _run(tiny, tmp_path, batch_size=0)
    with pytest.raises(ConfigError, match="--hard-negative-depth"):
        _run(tiny, tmp_path, batch_size=8, hard_negatives=4, hard_negative_depth=2)


def test_lora_and_full_train(tiny, tmp_path):
    res = _run(tiny, tmp_path, method="lora", name="lora", num_epochs=1, learning_rate=5e-3)
    latest = load_file(str(res.latest_dir / "model.safetensors"))
    assert any("lora_B" in k and v.abs().sum() > 0 for k, v in latest.items())  # B starts at zero
    full = _run(tiny, tmp_path, method="full", name="full", num_epochs=1)
    assert not full.setup["prefix_cache"] and full.params["trainable"] == full.params["total"]


@pytest.mark.parametrize("router", ["soft", "gumbel", "grpo", "supervised"])
def test_maw_routers_train_and_log(tiny, tmp_path, router):
    res = _run(tiny, tmp_path, "maw", router, router=router, ref_update=3, num_epochs=2)
    maw = tiny.plan("maw", router=router).maw
    assert res.plan["maw"]["router"] == router
    assert res.plan["maw"]["parametrisation"] == ("convex" if router == "soft" else "gated")
    log = res.history[1]["router"]
    assert log["router"] == router
    stats = log["depth_statistics"]["2"]
    assert sum(stats["counts"][0]) == stats["units"] > 0 and len(stats["counts"]) == 4
    assert res.router_stats["eval_depth_statistics"]["2"]["units"] > 0
    latest = load_file(str(res.latest_dir / "model.safetensors"))
    router_w = [v for k, v in latest.items() if ".router." in k]
    assert router_w and any(v.abs().sum() > 0 for v in router_w)  # zero-initialised router has learned
    if router == "gumbel":
        assert res.history[2]["router"]["gumbel_tau"] == pytest.approx(maw.gumbel_tau_end)
    if router == "grpo":
        assert log["mean_reward"] < 0 and log["advantage_spread"] >= 0 and log["kl_ref"] is not None
        assert any(k.startswith("maw_reference.") for k in latest)  # reference policy is checkpointed
    if router == "supervised":
        hist = log["oracle_label_histogram"]
        assert len(hist) == maw.depth_dim and sum(hist) == res.setup["examples"]


def test_gradient_checkpointing_path_gives_the_same_steps(tiny_data_dir, tiny_model_nodrop, tmp_path):
    """The per-layer checkpointed forward (used on CUDA) computes the same losses and updates."""
    from _tiny import Tiny

    from maw.training.distributed import DistributedContext
    from maw.training.state import TrainingState
    from maw.training.trainer import Trainer

    tiny = Tiny.load(tiny_data_dir, tiny_model_nodrop)
    plan = tiny.plan("finetune", finetune_layers="all", prefix_cache=False)
    out = []
    for ckpt in (False, True):
        tr = Trainer(plan, tiny.dataset, tiny.splits, tmp_path / str(ckpt), DistributedContext())
        tr.setup()
        tr.step.grad_ckpt = ckpt
        state = TrainingState()
        batches, negatives = tr.epoch_data(1)
        losses = [tr.step(batches[i : i + 1], negatives, state).loss for i in range(3)]
        out.append((losses, [p.detach().clone() for _, p in tr.step.named_params]))
    np.testing.assert_allclose(out[0][0], out[1][0], atol=1e-6)
    for a, b in zip(out[0][1], out[1][1], strict=True):
        torch.testing.assert_close(a, b, atol=1e-6, rtol=0)


TIMES = ("seconds", "train_seconds", "val_seconds", "setup_seconds")


def test_a_mid_epoch_checkpoint_resumes_to_the_uninterrupted_run(tiny, tmp_path, monkeypatch):
    """``latest`` saved inside an epoch holds the epoch's running sums as the plain dict of eight keys
    that the trainer wrote before its state was typed; resuming from it (supervised router: loss,
    objective stats, oracle labels, depth histograms) ends as an uninterrupted run does."""
    import maw.training.trainer as trainer_mod

    opts = {"router": "supervised", "num_epochs": 2, "checkpoint_every": 2}
    ref = _run(tiny, tmp_path, "maw", name="ref", **opts)
    real, calls = trainer_mod.Trainer._validate_all_ranks, []

    def stop_at_epoch_1(self):  # validations: epoch 0, then the end of epoch 1: interrupted
        calls.append(1)
        if len(calls) == 2:
            raise KeyboardInterrupt
        return real(self)

    monkeypatch.setattr(trainer_mod.Trainer, "_validate_all_ranks", stop_at_epoch_1)
    with pytest.raises(KeyboardInterrupt):
        _run(tiny, tmp_path, "maw", **opts)
    monkeypatch.setattr(trainer_mod.Trainer, "_validate_all_ranks", real)
    state = json.loads((tmp_path / "run" / "latest" / "training_state.json").read_text())["state"]
    assert state["epoch"] == 1 and state["step_in_epoch"] > 0
    partial = state["epoch_partial"]
    assert list(partial) == [
        "loss_sum",
        "n",
        "step_losses",
        "stats",
        "labels",
        "depth_statistics",
        "train_seconds",
        "grad_norms",
    ]
    assert partial["labels"] and partial["stats"] and partial["depth_statistics"]
    res = _run(tiny, tmp_path, "maw", **opts)
    assert res.resumed_from["step_in_epoch"] == state["step_in_epoch"]

    def untimed(history):
        return [{k: v for k, v in h.items() if k not in TIMES} for h in json.loads(json.dumps(history))]

    assert untimed(res.history) == untimed(ref.history)
    ref_weights = ref.encoder.state_dict()
    assert all(torch.equal(v, ref_weights[k]) for k, v in res.encoder.state_dict().items())
