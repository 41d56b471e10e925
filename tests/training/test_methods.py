"""build_model: what each method trains, layer choices, parameter counts, bad flags."""

from __future__ import annotations

import pytest
import torch

from maw.config import ConfigError
from maw.training.methods import build_model, build_model_with_plan, count_parameters, frozen_prefix_eval_mode


def _trainable(enc):
    return {n for n, p in enc.named_parameters() if p.requires_grad}


def test_finetune_trains_only_the_last_layer_by_default(tiny):
    _, _, _, model, maw, train, _ = tiny
    enc, k = build_model("finetune", model, maw, train)
    assert k == 1  # 2 layers: the prefix is embeddings + layer 1
    names = _trainable(enc)
    assert names and all(n.startswith("backbone.encoder.layer.1.") for n in names)
    assert names == {f"backbone.encoder.layer.1.{n}" for n, _ in enc.layers[1].named_parameters()}
    counts = count_parameters(enc)
    assert counts["trainable"] == sum(p.numel() for p in enc.layers[1].parameters())
    assert counts["total"] == sum(p.numel() for p in enc.parameters())


def test_layer_choices(tiny):
    _, _, _, model, maw, train, _ = tiny
    train.finetune_layers = "1,2"
    enc, k = build_model("finetune", model, maw, train)
    assert k == 0 and not any(p.requires_grad for p in enc.backbone.embeddings.parameters())
    train.finetune_layers = "all"
    assert build_model("finetune", model, maw, train)[1] == 0
    train.finetune_layers = "7"
    with pytest.raises(ConfigError, match="--finetune-layers"):
        build_model("finetune", model, maw, train)


def test_lora_adapters_on_attention_projections_of_the_chosen_layers(tiny):
    _, _, _, model, maw, train, _ = tiny
    enc, plan = build_model_with_plan("lora", model, maw, train)
    names = _trainable(enc)
    assert plan.first_trainable == 1 and plan.lora_layers == [2]
    targets = {"attention.self.query", "attention.self.key", "attention.self.value", "attention.output.dense"}
    found = {n.split(".lora_")[0].split("layer.1.")[1] for n in names}
    assert found == targets and all("lora_" in n and "layer.1." in n for n in names)
    assert len(names) == 8  # A and B for each of the 4 projections
    r = enc.layers[1].attention.self.query.lora_A["default"].weight.shape[0]
    assert r == 8
    # layers stay addressable and the model still runs
    tok = enc.tokenize(["a short text", "another"], 16)
    assert enc(tok["input_ids"], tok["attention_mask"]).shape == (2, 32)
    train.lora_layers = "1"
    enc1, plan1 = build_model_with_plan("lora", model, maw, train)
    assert plan1.first_trainable == 0 and all("layer.0." in n for n in _trainable(enc1))


def test_maw_trains_the_maw_layer_and_its_router(tiny):
    _, _, _, model, maw, train, _ = tiny
    from maw.models.maw_encoder import maw_modules

    enc, plan = build_model_with_plan("maw", model, maw, train)
    mods = maw_modules(enc)
    assert len(mods) == 1 and mods[0].layer_number == 2 and plan.first_trainable == 1
    names = _trainable(enc)
    assert any(".router." in n for n in names)
    assert all(n.startswith("backbone.encoder.layer.1.") for n in names)
    # MAW on layer 2, but fine-tuning layer 1 as well: the router still trains, k moves down
    train.finetune_layers = "1"
    enc2, plan2 = build_model_with_plan("maw", model, maw, train)
    names2 = _trainable(enc2)
    assert plan2.first_trainable == 0 and plan2.first_maw == 1
    assert {n for n in names2 if "layer.1." in n} == {n for n in names2 if ".router." in n}


def test_full_trains_everything_and_frozen_modules_run_in_eval_mode(tiny):
    _, _, _, model, maw, train, _ = tiny
    enc, plan = build_model_with_plan("full", model, maw, train)
    assert plan.first_trainable == 0 and count_parameters(enc)["trainable"] == count_parameters(enc)["total"]
    enc2, plan2 = build_model_with_plan("finetune", model, maw, train)
    frozen_prefix_eval_mode(enc2, plan2)
    assert not enc2.backbone.embeddings.training and not enc2.layers[0].training and enc2.layers[1].training


def test_unknown_method_and_bad_maw_config(tiny):
    _, _, _, model, maw, train, _ = tiny
    with pytest.raises(ConfigError, match="--method"):
        build_model("bm25", model, maw, train)
    maw.depth_dim = 3  # does not divide d_h = 8
    with pytest.raises(ConfigError, match="--depth-dim"):
        build_model("maw", model, maw, train)
    maw.depth_dim = 4
    maw.maw_layers = "3"
    with pytest.raises(ConfigError, match="--maw-layers"):
        build_model("maw", model, maw, train)


def test_soft_maw_model_equals_the_pretrained_model_at_init(tiny):
    _, _, _, model, maw, train, _ = tiny
    base, _ = build_model("finetune", model, maw, train)
    enc, _ = build_model("maw", model, maw, train)
    texts = ["which tower in osmar is known for old maps", "short"]
    torch.testing.assert_close(
        torch.from_numpy(enc.encode(texts, 16)), torch.from_numpy(base.encode(texts, 16)), atol=1e-5, rtol=0
    )
