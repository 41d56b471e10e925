"""Parametrisations of the depth weights (convex / gated / signed): identity at initialisation for
every router, the gate's gradient, the gate's limits, signed weights, tiled == naive."""

from __future__ import annotations

import copy
import itertools

import pytest
import torch
from maw_testkit import padded_batch, randomize_routers, tiny_encoder

from maw.config import ConfigError, MAWConfig
from maw.models.encoder import Encoder
from maw.models.maw_encoder import (
    maw_modules,
    reference_state,
    refresh_reference,
    router_parameters,
)
from tiny_bert import inject_maw

GRANS = ["pair", "query", "head"]
# every router with each parametrisation it accepts (hard routers: one depth, so never signed)
IDENTITY_CASES = [
    ("soft", "convex"),
    ("soft", "signed"),
    ("gumbel", "gated"),
    ("grpo", "gated"),
    ("supervised", "gated"),
]


def sharpened_encoder(dropout: float = 0.0) -> Encoder:
    """The tiny random BERT with Q/K scaled up: peaked, pretrained-like attention, so that a depth
    choice visibly changes the output (tests below would pass trivially on near-uniform attention)."""
    enc = tiny_encoder(dropout=dropout)
    with torch.no_grad():
        for layer in enc.layers:
            layer.attention.self.query.weight.mul_(20)
            layer.attention.self.key.weight.mul_(20)
    return enc


def maw(router: str, parametrisation: str, granularity: str, impl: str = "tiled", **kw) -> Encoder:
    enc = sharpened_encoder()
    kw = {"maw_layers": "all", "tile_size": 4, **kw}
    cfg = MAWConfig(
        depth_dim=4,
        router=router,
        parametrisation=parametrisation,
        granularity=granularity,
        implementation=impl,
        **kw,
    )
    inject_maw(enc, cfg)
    return enc


def test_defaults_and_signed_needs_the_soft_router():
    assert MAWConfig(router="soft").parametrisation == "convex"
    for router in ("gumbel", "grpo", "supervised"):
        assert MAWConfig(router=router).parametrisation == "gated"
        with pytest.raises(ConfigError, match="--parametrisation signed"):
            MAWConfig(router=router, parametrisation="signed")


@pytest.mark.parametrize("router,parametrisation", IDENTITY_CASES)
@pytest.mark.parametrize("granularity", GRANS)
@pytest.mark.parametrize("impl", ["naive", "tiled"])
def test_every_router_at_init_is_the_pretrained_attention(router, parametrisation, granularity, impl):
    """Block outputs (every MAW layer's hidden states) and embeddings equal the pretrained model's
    to 1e-6, in eval and in training mode (sampling on, dropout off)."""
    ids, mask = padded_batch()
    base = sharpened_encoder()
    valid = mask.bool()
    with torch.no_grad():
        ref = base.backbone(input_ids=ids, attention_mask=mask, output_hidden_states=True).hidden_states
        ref_emb = base(ids, mask)
    enc = maw(router, parametrisation, granularity, impl)
    for train_mode in (False, True):
        enc.train(train_mode)
        torch.manual_seed(0)
        with torch.no_grad():
            out = enc.backbone(input_ids=ids, attention_mask=mask, output_hidden_states=True).hidden_states
            emb = enc(ids, mask)
        for layer, (a, b) in enumerate(zip(out, ref, strict=True)):
            torch.testing.assert_close(
                a[valid], b[valid], atol=1e-6, rtol=0, msg=lambda m, i=layer: f"{i}: {m}"
            )
        torch.testing.assert_close(emb, ref_emb, atol=1e-6, rtol=0)


@pytest.mark.parametrize(
    "router,granularity", list(itertools.product(["gumbel", "grpo", "supervised"], GRANS))
)
@pytest.mark.parametrize("impl", ["naive", "tiled"])
def test_the_gate_learns_from_the_embedding_loss_at_init(router, granularity, impl):
    """At a = 0 the output is the pretrained one, and dL/da = <dL/dA, A_convex - S_total>: nonzero
    for the hard routers (one-hot A_convex = D S[choice]), so their gate moves on the first step
    (GRPO's samples then start to differ). The soft router's A_convex is S_total at init, so soft +
    gated starts at a saddle: neither the gate nor the router gets a gradient (use convex)."""
    ids, mask = padded_batch()
    enc = maw(router, "gated", granularity, impl, maw_layers="2")
    enc.train()
    m = maw_modules(enc)[0]
    gate = m.router.gate
    assert torch.equal(gate, torch.zeros(4)) and any(p is gate for _, p in router_parameters(enc))
    torch.manual_seed(0)
    emb = enc(ids, mask)
    (emb * torch.randn_like(emb)).sum().backward()
    if router == "soft":
        assert gate.grad is not None and not gate.grad.any()
        assert all(p.grad is None or not p.grad.any() for p in m.router.parameters())
        return
    assert gate.grad is not None and (gate.grad.abs() > 0).all(), gate.grad
    if router in ("grpo", "supervised"):  # the policy network learns only from its own losses
        assert all(p.grad is None or not p.grad.any() for n, p in m.router.named_parameters() if n != "gate")


@pytest.mark.parametrize("router", ["gumbel", "grpo", "supervised"])  # soft + gated is refused by MAWConfig
@pytest.mark.parametrize("granularity", GRANS)
@pytest.mark.parametrize("impl", ["naive", "tiled"])
def test_gated_with_an_open_gate_equals_convex(router, granularity, impl):
    """a = tanh(20) = 1 in float32: the gated block is the convex one (same router weights, same
    samples), in eval and training mode."""
    ids, mask = padded_batch()
    convex = maw(router, "convex", granularity, impl)
    randomize_routers(convex, seed=3)
    gated = maw(router, "gated", granularity, impl)
    for m, c in zip(maw_modules(gated), maw_modules(convex), strict=True):
        missing = m.router.load_state_dict(c.router.state_dict(), strict=False).missing_keys
        assert missing == ["gate"]
        with torch.no_grad():
            m.router.gate.fill_(20.0)
        assert torch.equal(m.router.gate_value(), torch.ones(4))
    for train_mode in (False, True):
        outs = []
        for enc in (gated, convex):
            enc.train(train_mode)
            torch.manual_seed(0)
            with torch.no_grad():
                outs.append(enc(ids, mask))
        torch.testing.assert_close(outs[0], outs[1], atol=1e-6, rtol=0)


@pytest.mark.parametrize("granularity", GRANS)
def test_signed_with_a_trained_router_is_another_model_and_tiled_equals_naive(granularity):
    """signed with random router weights (as after training): tiled == naive, and not the convex
    model of the same weights."""
    ids, mask = padded_batch()
    outs = {}
    for impl in ("naive", "tiled"):
        enc = maw("soft", "signed", granularity, impl, tau=0.5)
        randomize_routers(enc, seed=4)
        enc.eval()
        with torch.no_grad():
            outs[impl] = enc(ids, mask)
    torch.testing.assert_close(outs["tiled"], outs["naive"], atol=1e-6, rtol=0)
    convex = maw("soft", "convex", granularity, tau=0.5)
    randomize_routers(convex, seed=4)
    with torch.no_grad():
        assert (convex(ids, mask) - outs["naive"]).abs().max() > 1e-4  # a different model


def test_signed_coefficients_follow_the_formula():
    """Block level, head granularity with a bias-only router: coefficients 1 + tanh(b_d) per depth,
    so depth 0 is removed and depth 1 doubled: A = 2 S_1 + S_2 + S_3."""
    enc = sharpened_encoder()
    inject_maw(
        enc,
        MAWConfig(depth_dim=4, router="soft", parametrisation="signed", granularity="head", maw_layers="1"),
    )
    m = maw_modules(enc)[0]
    forced = copy.deepcopy(m)
    with torch.no_grad():
        m.router.bias.copy_(torch.tensor([-1e4, 1e4, 0.0, 0.0]).expand(4, 4))
    x = torch.randn(2, 6, 32)
    out = m(x, None)[0]
    q, k, v = forced._project(x)  # (B, H, D, L, g)
    S = torch.einsum("bhdig,bhdjg->bhdij", q, k)
    A = 2 * S[:, :, 1] + S[:, :, 2] + S[:, :, 3]
    expected = (torch.softmax(A, -1) @ v).transpose(1, 2).reshape(2, 6, 32)
    torch.testing.assert_close(out, expected, atol=1e-6, rtol=0)


@pytest.mark.parametrize("router,parametrisation", [("soft", "signed"), ("grpo", "gated")])
@pytest.mark.parametrize("granularity", GRANS)
def test_tiled_equals_naive_with_gates_and_signs(router, parametrisation, granularity):
    """Values, records and every gradient (gate included) of tiled == naive for the new weights."""
    ids, mask = padded_batch()
    results = []
    for impl in ("naive", "tiled"):
        enc = maw(router, parametrisation, granularity, impl)
        randomize_routers(enc, seed=6, scale=0.5)
        refresh_reference(enc)
        enc.train()
        enc.zero_grad(set_to_none=True)
        torch.manual_seed(1)
        emb = enc(ids, mask)
        loss = (emb * torch.randn(emb.shape, generator=torch.Generator().manual_seed(2))).sum()
        loss.backward()
        results.append((emb.detach(), {n: p.grad for n, p in enc.named_parameters() if p.grad is not None}))
    (e0, g0), (e1, g1) = results
    torch.testing.assert_close(e1, e0, atol=1e-5, rtol=0)
    assert set(g0) == set(g1)
    if parametrisation == "gated":
        assert any(n.endswith("router.gate") for n in g0)
    for n in g0:
        torch.testing.assert_close(g1[n], g0[n], atol=1e-5, rtol=1e-4, msg=lambda m, n=n: f"{n}: {m}")


def test_the_reference_policy_leaves_the_gate_out():
    enc = maw("grpo", "gated", "query")
    refresh_reference(enc)
    assert all(not k.endswith("gate") for k in reference_state(enc))
    assert all(k.endswith("router.gate") or "router.gate" not in k for k in enc.state_dict())
    assert sum(k.endswith("router.gate") for k in enc.state_dict()) == len(maw_modules(enc))


@pytest.mark.parametrize("router", ["gumbel", "grpo", "supervised"])
def test_tiny_bert_encoder_with_hard_routers_starts_at_the_pretrained_model(tmp_path, router):
    """The tiny BERT of tests/tiny_bert.py through Encoder.from_pretrained (real tokenizer, padding),
    all layers MAW, every granularity: embeddings equal the pretrained encoder's to 1e-6."""
    from tiny_bert import write_tiny_model

    folder = write_tiny_model(tmp_path / "tiny", layers=2, dropout=0.0)
    base = Encoder.from_pretrained(str(folder)).eval()
    tok = base.tokenize(["a short text", "a much longer text about dense retrieval and padding"], 16)
    with torch.no_grad():
        ref = base(tok["input_ids"], tok["attention_mask"])
    for granularity in GRANS:
        enc = Encoder.from_pretrained(str(folder))
        inject_maw(enc, MAWConfig(maw_layers="all", depth_dim=4, router=router, granularity=granularity))
        for train_mode in (False, True):
            enc.train(train_mode)
            with torch.no_grad():
                out = enc(tok["input_ids"], tok["attention_mask"])
            torch.testing.assert_close(out, ref, atol=1e-6, rtol=0)
