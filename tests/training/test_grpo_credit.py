"""GRPO credit assignment (group vs leave-one-out baselines), its gradients, and the router logs."""

from __future__ import annotations

import dataclasses
import math

import pytest
import torch

from maw.models.maw_encoder import maw_modules
from maw.training.methods import build_model
from maw.training.router_objectives import (
    LocalBatch,
    advantages,
    group_advantages,
    grpo_objective,
    leave_one_out_advantages,
)
from maw.training.trainer import train


def with_baseline(plan, baseline: str):
    """``plan`` whose MAW config has ``grpo_baseline = baseline``."""
    return dataclasses.replace(plan, maw=dataclasses.replace(plan.maw, grpo_baseline=baseline))


# ---------------------------------------------------------------------------------------------- advantages
def test_leave_one_out_advantages_sum_to_zero_and_match_the_hand_formula():
    g = torch.Generator().manual_seed(0)
    r = -torch.rand(5, 7, generator=g, dtype=torch.float64) * 3  # (G, B) rewards
    adv = leave_one_out_advantages(r)
    torch.testing.assert_close(adv.sum(0), torch.zeros(7, dtype=torch.float64), atol=1e-12, rtol=0)
    G = r.shape[0]
    for gi in range(G):
        for b in range(r.shape[1]):
            others = [float(r[j, b]) for j in range(G) if j != gi]
            assert float(adv[gi, b]) == pytest.approx(float(r[gi, b]) - sum(others) / (G - 1), abs=1e-12)
    torch.testing.assert_close(adv, G / (G - 1) * (r - r.mean(0)))  # the same, rescaled group mean
    torch.testing.assert_close(advantages(r, "leave_one_out"), adv)


def test_with_two_samples_leave_one_out_has_the_group_relative_sign():
    r = torch.tensor([[-1.0, -0.2, -3.0, -0.5], [-2.0, -0.1, -1.0, -0.5]])  # (G=2, B=4), last: a tie
    loo, grp = leave_one_out_advantages(r), group_advantages(r)
    torch.testing.assert_close(loo, torch.stack([r[0] - r[1], r[1] - r[0]]))
    assert torch.equal(torch.sign(loo), torch.sign(grp))
    torch.testing.assert_close(grp[:, :3].abs(), torch.full((2, 3), 1 / math.sqrt(2)), atol=1e-4, rtol=0)


def test_group_advantages_are_trl_grpo_and_unknown_baselines_are_rejected():
    r = torch.tensor([[-1.0, -2.0], [-3.0, -2.5], [-2.0, -2.0]])
    expected = (r - r.mean(0)) / (r.std(0) + 1e-6)
    torch.testing.assert_close(advantages(r, "group"), expected)
    with pytest.raises(ValueError, match="grpo_baseline.*leave_one_out"):
        advantages(r, "mean")


# ---------------------------------------------------------------------------------------------- gradients
def _batch(encoder, plan, one_query: bool = False) -> LocalBatch:
    """4 queries and their 4 positives (in-batch negatives), or the first query against all 4
    documents: the hidden states entering the first MAW layer."""
    queries = ["which bridge is in osmar", "when was the tower built", "old maps of delt", "a garden"]
    docs = ["The bridge stands in osmar.", "The tower was built in 1801.", "Maps of delt.", "A garden."]
    queries = queries[:1] if one_query else queries
    B = len(queries)
    m = plan.layers.first_maw
    with torch.no_grad():
        q, d = encoder.tokenize(queries, 16), encoder.tokenize(docs, 24)
        qh = encoder.prefix(q["input_ids"], q["attention_mask"], m)
        dh = encoder.prefix(d["input_ids"], d["attention_mask"], m)
    return LocalBatch(
        q_hidden=qh,
        q_mask=q["attention_mask"],
        d_hidden=dh,
        d_mask=d["attention_mask"],
        positive_index=torch.arange(B),
        mask=torch.zeros(B, 4, dtype=torch.bool),
        doc_owner=torch.zeros(4, dtype=torch.long) if one_query else torch.arange(4),
        denom_queries=float(B),
        denom_texts=float(B + 4),
    )


def _router_grads(plan, gate: float, seed: int = 0, one_query: bool = False):
    torch.manual_seed(seed)
    encoder = build_model(plan)
    block = maw_modules(encoder)[0]
    with torch.no_grad():
        block.router.gate.fill_(gate)
    encoder.train()
    b = _batch(encoder, plan, one_query)
    m = plan.layers.first_maw

    def head(h, mask):
        return encoder.pool(encoder.run_layers(h, mask, m, None), mask)

    out = grpo_objective(encoder, head, b, lambda x: x, 0.05, plan.maw)
    out.loss.backward()
    return block.router, out


@pytest.mark.parametrize("baseline", ["group", "leave_one_out"])
def test_policy_gradient_reaches_the_router_once_the_gate_is_open(tiny_data_dir, tiny_model_nodrop, baseline):
    from _tiny import Tiny

    tiny = Tiny.load(tiny_data_dir, tiny_model_nodrop)  # no dropout: rewards differ by the routing only
    plan = with_baseline(tiny.plan("maw", router="grpo", group_size=4, prefix_cache=False), baseline)
    # gate closed (a = 0): the samples give the same output, every advantage is 0, and so is the
    # policy gradient (the KL to the reference, the initial policy, has zero gradient there too)
    router, out = _router_grads(plan, gate=0.0)
    assert out.stats["advantage_abs_sum"] == pytest.approx(0.0, abs=1e-4)
    assert float(router.weight.grad.abs().max()) < 1e-6 and float(router.bias.grad.abs().max()) < 1e-6
    assert router.gate.grad is not None and float(router.gate.grad.abs().sum()) > 0  # the gate learns
    # gate open: the sampled depths change the rewards and the policy network gets a gradient
    router, out = _router_grads(plan, gate=0.5)
    assert out.stats["advantage_abs_sum"] > 0 and out.stats["kl_count"] > 0
    assert float(router.weight.grad.abs().sum()) > 0 and float(router.bias.grad.abs().sum()) > 0
    assert torch.isfinite(out.loss)


def test_leave_one_out_gradient_is_the_group_gradient_without_std_scaling(tiny_data_dir, tiny_model_nodrop):
    """One query, G = 2, same samples: the group advantages are (r - mean) / (std + 1e-6), the RLOO
    ones 2 (r - mean), so the policy gradient (no KL) of RLOO is the group one times 2 (std + 1e-6)."""
    from _tiny import Tiny

    tiny = Tiny.load(tiny_data_dir, tiny_model_nodrop)
    base = tiny.plan("maw", router="grpo", group_size=2, prefix_cache=False, kl_beta=0.0)
    grads = {}
    for baseline in ("group", "leave_one_out"):
        router, out = _router_grads(with_baseline(base, baseline), gate=0.5, seed=3, one_query=True)
        grads[baseline] = (torch.cat([router.weight.grad.flatten(), router.bias.grad.flatten()]), out.stats)
    (gg, sg), (gl, sl) = grads["group"], grads["leave_one_out"]
    assert sg["reward_sum"] == sl["reward_sum"] and sg["reward_std_sum"] > 0  # the same two samples
    assert float(gg.abs().sum()) > 0
    torch.testing.assert_close(gl, gg * 2 * (sg["reward_std_sum"] + 1e-6), rtol=1e-4, atol=1e-9)


# ---------------------------------------------------------------------------------------------- logs
@pytest.mark.parametrize("router,baseline", [("grpo", "group"), ("grpo", "leave_one_out"), ("gumbel", None)])
def test_router_logs_have_entropy_kl_and_gates_every_epoch(tiny, tmp_path, router, baseline):
    plan = tiny.plan("maw", router=router, num_epochs=2)
    if baseline is not None:
        plan = with_baseline(plan, baseline)
    res = train(plan, tiny.dataset, tiny.splits, tmp_path / "run")
    D, H = plan.maw.depth_dim, maw_modules(res.encoder)[0].num_heads
    for h in res.history[1:]:
        log = h["router"]
        assert 0 < log["policy_entropy"] <= math.log(D) + 1e-6 and log["max_entropy"] == pytest.approx(
            math.log(D)
        )
        assert set(log["gate"]) == set(log["gate_abs_mean"]) == {"2"}
        gates = log["gate"]["2"]
        assert len(gates) == H and all(-1 < a < 1 for a in gates)
        assert log["gate_abs_mean"]["2"] == pytest.approx(sum(abs(a) for a in gates) / H)
        if router == "grpo":
            assert log["grpo_baseline"] == baseline
            assert log["kl_ref"] is not None and log["kl_ref"] >= 0
            assert log["advantage_abs"] is not None and log["advantage_abs"] >= 0
            assert 0 < log["record_entropy"] <= math.log(D) + 1e-6
    assert res.history[-1]["router"]["gate_abs_mean"]["2"] > 0  # the gate opened from 0


# ---------------------------------------------------------------------------------------------- config
def test_router_init_and_baseline_options_are_checked_with_the_config(tmp_path):
    """(The warm start itself: tests/training/test_router_init.py.)"""
    from maw.config import ConfigError, MAWConfig

    with pytest.raises(ConfigError, match="--router-init: only with a hard router"):
        MAWConfig(router="soft", router_init=str(tmp_path / "s"))
    with pytest.raises(ConfigError, match="--router-init"):
        MAWConfig(router="grpo", parametrisation="convex", router_init=str(tmp_path / "s"))
    with pytest.raises(ConfigError, match="grpo.baseline"):
        MAWConfig(router="grpo", grpo_baseline="mean")
