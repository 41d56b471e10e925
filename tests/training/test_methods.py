"""build_model: what each method trains, layer choices, parameter counts, bad flags."""

from __future__ import annotations

import pytest
import torch

from maw.config import ConfigError
from maw.plan import resolve, resolve_layers
from maw.training.methods import build_model, count_parameters, frozen_prefix_eval_mode


def _trainable(enc):
    return {n for n, p in enc.named_parameters() if p.requires_grad}


def test_finetune_trains_only_the_last_layer_by_default(tiny):
    plan = tiny.plan("finetune")
    enc = build_model(plan)
    assert plan.layers.first_trainable == 1  # 2 layers: the prefix is embeddings + layer 1
    assert plan.layers.trainable == (2,) and plan.layers.maw == plan.layers.lora == ()
    names = _trainable(enc)
    assert names and all(n.startswith("backbone.encoder.layer.1.") for n in names)
    assert names == {f"backbone.encoder.layer.1.{n}" for n, _ in enc.layers[1].named_parameters()}
    counts = count_parameters(enc)
    assert counts["trainable"] == sum(p.numel() for p in enc.layers[1].parameters())
    assert counts["total"] == sum(p.numel() for p in enc.parameters())


def test_layer_choices(tiny):
    plan = tiny.plan("finetune", finetune_layers="1,2")
    enc = build_model(plan)
    assert plan.layers.first_trainable == 0 and plan.layers.trainable == (1, 2)
    assert not any(p.requires_grad for p in enc.backbone.embeddings.parameters())
    assert tiny.plan("finetune", finetune_layers="all").layers.first_trainable == 0
    with pytest.raises(ConfigError, match="--finetune-layers"):  # refused when the plan is resolved
        tiny.plan("finetune", finetune_layers="7")


def test_lora_adapters_on_attention_projections_of_the_chosen_layers(tiny):
    plan = tiny.plan("lora")
    enc = build_model(plan)
    names = _trainable(enc)
    assert plan.layers.first_trainable == 1 and plan.layers.lora == (2,) and plan.layers.trainable == ()
    targets = {"attention.self.query", "attention.self.key", "attention.self.value", "attention.output.dense"}
    found = {n.split(".lora_")[0].split("layer.1.")[1] for n in names}
    assert found == targets and all("lora_" in n and "layer.1." in n for n in names)
    assert len(names) == 8  # A and B for each of the 4 projections
    r = enc.layers[1].attention.self.query.lora_A["default"].weight.shape[0]
    assert r == 8
    # layers stay addressable and the model still runs
    tok = enc.tokenize(["a short text", "another"], 16)
    assert enc(tok["input_ids"], tok["attention_mask"]).shape == (2, 32)
    plan1 = tiny.plan("lora", lora_layers="1")
    enc1 = build_model(plan1)
    assert plan1.layers.first_trainable == 0 and all("layer.0." in n for n in _trainable(enc1))


def test_maw_trains_the_maw_layer_and_its_router(tiny):
    from maw.models.maw_encoder import maw_modules

    plan = tiny.plan("maw")
    enc = build_model(plan)
    mods = maw_modules(enc)
    assert len(mods) == 1 and mods[0].layer_number == 2 and plan.layers.first_trainable == 1
    assert plan.layers.maw == plan.layers.trainable == (2,) and plan.layers.first_maw == 1
    names = _trainable(enc)
    assert any(".router." in n for n in names)
    assert all(n.startswith("backbone.encoder.layer.1.") for n in names)
    # MAW on layer 2, but fine-tuning layer 1 as well: the router still trains, k moves down
    plan2 = tiny.plan("maw", finetune_layers="1")
    names2 = _trainable(build_model(plan2))
    assert plan2.layers.first_trainable == 0 and plan2.layers.first_maw == 1
    assert {n for n in names2 if "layer.1." in n} == {n for n in names2 if ".router." in n}


def test_full_trains_everything_and_frozen_modules_run_in_eval_mode(tiny):
    plan = tiny.plan("full")
    enc = build_model(plan)
    assert plan.layers.first_trainable == 0 and plan.layers.train_embeddings
    assert count_parameters(enc)["trainable"] == count_parameters(enc)["total"]
    plan2 = tiny.plan("finetune")
    enc2 = build_model(plan2)
    frozen_prefix_eval_mode(enc2, plan2.layers)
    assert not enc2.backbone.embeddings.training and not enc2.layers[0].training and enc2.layers[1].training


def test_plans_hold_only_the_sections_their_method_uses(tiny):
    assert tiny.plan("finetune").maw is None and tiny.plan("maw").maw is not None
    for method in ("bm25", "zeroshot"):
        plan = resolve(method)
        assert plan.train is None and plan.layers is None and plan.maw is None and not plan.trained


def test_unknown_method_and_bad_maw_config(tiny):
    with pytest.raises(ConfigError, match="--method"):
        resolve("colbert")
    with pytest.raises(ConfigError, match="--method"):
        resolve_layers("bm25", 2, (), tiny.plan("finetune").train)
    with pytest.raises(ConfigError, match="--depth-dim"):  # does not divide d_h = 8
        tiny.plan("maw", depth_dim=3)
    with pytest.raises(ConfigError, match="--maw-layers"):
        tiny.plan("maw", maw_layers="3")


def test_soft_maw_model_equals_the_pretrained_model_at_init(tiny):
    base = build_model(tiny.plan("finetune"))
    enc = build_model(tiny.plan("maw"))
    texts = ["which tower in osmar is known for old maps", "short"]
    torch.testing.assert_close(
        torch.from_numpy(enc.encode(texts, 16)), torch.from_numpy(base.encode(texts, 16)), atol=1e-5, rtol=0
    )
