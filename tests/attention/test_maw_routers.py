"""Depth routers: network init, policies, argmax helper, tiling-independent noise, frozen copies."""

from __future__ import annotations

import pytest
import torch

from maw.attention.routers import DepthRouter, RowNoise, first_argmax, freeze_copy, route


@pytest.mark.parametrize("hidden", [0, 5])
def test_router_starts_with_zero_logits_and_layouts_agree(hidden):
    r = DepthRouter(num_heads=3, in_features=8, depth=4, hidden=hidden)
    x = torch.randn(2, 3, 7, 8)
    assert torch.equal(r(x), torch.zeros(2, 3, 7, 4))
    with torch.no_grad():
        for p in r.parameters():
            p.normal_()
    a = r(x)  # features last
    b = r.forward_dmajor(x.transpose(-1, -2)).transpose(-1, -2)  # depth-major layout
    torch.testing.assert_close(a, b)
    # per-head weights: head h only uses its own parameters
    x2 = x.clone()
    x2[:, 1] += 1.0
    assert torch.equal(r(x2)[:, 0], a[:, 0]) and not torch.equal(r(x2)[:, 1], a[:, 1])


def test_first_argmax_equals_argmax_including_ties_and_nan():
    torch.manual_seed(0)
    z = torch.randn(4, 5, 6, 7)
    for dim in range(4):
        assert torch.equal(first_argmax(z, dim), z.argmax(dim))
    ties = torch.zeros(3, 8)
    ties[1, 5] = ties[1, 2] = 1.0
    assert first_argmax(ties, 1).tolist() == [0, 2, 0]
    nan = torch.tensor([[float("nan"), 1.0, 2.0]])
    assert 0 <= first_argmax(nan, 1).item() <= 2


def test_route_policies():
    torch.manual_seed(0)
    logits = torch.randn(2, 3, 5, 4)
    u = torch.rand(logits.shape)
    soft = route(logits, "soft", True, -1, tau=0.5)
    torch.testing.assert_close(soft.weights, torch.softmax(logits / 0.5, -1))
    assert not soft.hard and torch.equal(soft.choice, logits.argmax(-1))
    for kind in ("gumbel", "grpo", "supervised"):
        ev = route(logits, kind, False, -1)
        assert ev.hard and ev.weights is None and torch.equal(ev.choice, logits.argmax(-1))
    sup = route(logits, "supervised", True, -1)
    assert torch.equal(sup.choice, logits.argmax(-1))
    grpo = route(logits, "grpo", True, -1, uniform_noise=u)
    gumbel_max = (logits - torch.log(-torch.log(u))).argmax(-1)
    assert torch.equal(grpo.choice, gumbel_max) and grpo.weights is None
    lg = logits.clone().requires_grad_(True)
    gs = route(lg, "gumbel", True, -1, gumbel_tau=0.7, uniform_noise=u)
    assert torch.equal(gs.weights.detach(), torch.nn.functional.one_hot(gs.choice, 4).float())
    (gs.weights * torch.randn(4)).sum().backward()
    assert lg.grad.abs().sum() > 0  # straight-through gradient
    forced = route(logits, "soft", True, 2, forced_depth=1)
    assert forced.hard and forced.choice.shape == (2, 3, 4) and (forced.choice == 1).all()
    with pytest.raises(ValueError, match="needs noise"):
        route(logits, "grpo", True, -1)


def test_grpo_samples_follow_the_policy():
    """Gumbel-max sampling is an exact categorical sample: frequencies match softmax(logits)."""
    logits = torch.tensor([0.0, 1.0, -1.0, 2.0]).expand(20000, 4)
    u = RowNoise(11, "cpu").uniform(0, (20000, 4))
    freq = torch.bincount(route(logits, "grpo", True, -1, uniform_noise=u).choice, minlength=4) / 20000
    torch.testing.assert_close(freq, torch.softmax(logits[0], 0), atol=0.015, rtol=0)


def test_row_noise_is_a_function_of_seed_and_row():
    n = RowNoise(123, "cpu")
    full = n.rows(0, 10, (2, 3), axis=1)  # (2, 10, 3)
    parts = torch.cat([n.rows(0, 4, (2, 3), axis=1), n.rows(4, 10, (2, 3), axis=1)], dim=1)
    assert torch.equal(full, parts)
    assert not torch.equal(n.uniform(0, (5,)), n.uniform(1, (5,)))
    assert not torch.equal(RowNoise(124, "cpu").uniform(0, (5,)), n.uniform(0, (5,)))
    torch.manual_seed(0)
    a = RowNoise.draw("cpu").seed
    torch.manual_seed(0)
    assert RowNoise.draw("cpu").seed == a


def test_freeze_copy_is_frozen_and_not_in_state_dict():
    r = DepthRouter(2, 4, 4, hidden=3)
    ref = freeze_copy(r)
    assert list(ref.parameters()) == [] and len(list(ref.buffers())) == 4
    assert ref.state_dict() == {}
    x = torch.randn(1, 2, 5, 4)
    torch.testing.assert_close(ref(x), r(x))
    with torch.no_grad():
        r.bias.add_(1.0)
    assert not torch.equal(ref(x), r(x))
