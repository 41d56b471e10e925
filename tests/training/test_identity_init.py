"""Every router starts at the pretrained model: epoch-0 validation equals the zero-shot model's.

Epoch 0 of a run is validation before any step. ``finetune``'s epoch 0 is the backbone as is
(zero-shot); a ``maw`` run's epoch 0 is the same backbone with MAW attention at initialisation,
whose default parametrisation (``convex`` for soft, ``gated`` for the hard routers) must leave the
model unchanged, so its validation scores must equal zero-shot's.
"""

from __future__ import annotations

import pytest

from maw.training.trainer import train

ROUTERS = ["soft", "gumbel", "grpo", "supervised"]


def _epoch0(tiny, tmp_path, method, **overrides):
    plan = tiny.plan(method, num_epochs=1, checkpoint_every=0, **overrides)
    result = train(plan, tiny.dataset, tiny.splits, tmp_path / f"{method}-{overrides.get('router', '')}")
    return result.history[0]["val"]


@pytest.mark.parametrize("granularity", ["query", "pair"])
def test_epoch0_validation_of_every_router_equals_zero_shot(tiny, tmp_path, granularity):
    zero_shot = _epoch0(tiny, tmp_path, "finetune")
    for router in ROUTERS:
        val = _epoch0(tiny, tmp_path / granularity, "maw", router=router, granularity=granularity)
        for metric, value in zero_shot.items():
            assert val[metric] == pytest.approx(value, abs=1e-6), (router, metric)


def test_a_convex_hard_router_is_not_the_pretrained_model_at_init(tiny, tmp_path):
    """The reason for the gate: a one-hot depth scaled by D changes every attention score."""
    from maw.config import MAWConfig
    from maw.models.encoder import Encoder
    from tiny_bert import inject_maw

    texts = [tiny.dataset.queries[q] for q in sorted(tiny.dataset.queries)[:6]]
    base = Encoder.from_pretrained(str(tiny.model_dir)).eval()
    ref = base.encode(texts, 16)
    for parametrisation, same in (("convex", False), ("gated", True)):
        enc = Encoder.from_pretrained(str(tiny.model_dir)).eval()
        inject_maw(
            enc, MAWConfig(router="grpo", depth_dim=4, maw_layers="all", parametrisation=parametrisation)
        )
        assert (abs(enc.encode(texts, 16) - ref).max() < 1e-6) == same, parametrisation


def test_maw_on_top_of_lora_trains_adapters_and_routers_only(tiny, tmp_path):
    """MAW + LoRA: MAW attention in the last layer, LoRA adapters everywhere, no full layer."""
    from maw.training.methods import build_model

    plan = tiny.plan("maw", finetune_layers="none", lora_layers="all", num_epochs=1, checkpoint_every=0)
    assert plan.layers.trainable == () and plan.layers.lora == (1, 2) and plan.layers.maw == (2,)
    enc = build_model(plan)
    trainable = [n for n, p in enc.named_parameters() if p.requires_grad]
    assert trainable and all("lora_" in n or ".router." in n for n in trainable), trainable
    assert any(".router." in n for n in trainable) and any(
        "layer.1.attention.self.query.lora_A" in n for n in trainable
    )
    result = train(plan, tiny.dataset, tiny.splits, tmp_path / "maw-lora")
    assert result.history[0]["val"] == pytest.approx(_epoch0(tiny, tmp_path, "finetune"))  # identity at init
    assert len(result.history) == 2
