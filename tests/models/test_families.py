"""MAW in MPNet and DistilBERT encoders (``maw.models.families``), on tiny random models built offline.

For each family: the plain encoder runs its layers as Hugging Face does (MPNet's relative position
bias included); MAW at initialisation is the plain model; the tiled paths equal the naive reference
with a position bias; a training step reaches the router; the frozen-prefix cache's suffix equals
the full forward; LoRA targets the family's projections; and ``maw train`` end to end starts (epoch
0) exactly at the plain model's zero-shot validation, while lora / finetune train. MAW export of a
new family is refused by name; a plain (finetune) export verifies against sentence-transformers.
"""

from __future__ import annotations

import json
import math

import pytest
import torch
from typer.testing import CliRunner

from maw.config import SECTIONS, ConfigError, MAWConfig
from maw.models.encoder import Encoder
from maw.models.families import BERT, DISTILBERT, MPNET, family_of
from maw.models.maw_encoder import maw_modules, router_parameters
from tiny_bert import inject_maw, write_tiny_distilbert, write_tiny_model, write_tiny_mpnet

WRITERS = {"mpnet": write_tiny_mpnet, "distilbert": write_tiny_distilbert}
SENTENCES = [
    "Dense retrieval maps queries and documents to vectors.",
    "MAW routes each attention score through one of several depths.",
    "short one",
    "A much longer sentence about padding, masks, and whether batched encoding matches encoding one text at a time.",
]
# (router, granularity): each with its default parametrisation (convex soft, gated hard routers)
AT_INIT = [
    ("soft", "query"),
    ("soft", "pair"),
    ("soft", "head"),
    ("grpo", "pair"),
    ("gumbel", "query"),
    ("supervised", "head"),
]


@pytest.fixture(autouse=True)
def _one_thread():
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module", params=list(WRITERS))
def family_dir(request, tmp_path_factory):
    """(family name, folder of a tiny random model of that family, 2 layers, no dropout)."""
    name = request.param
    return name, WRITERS[name](tmp_path_factory.mktemp(f"tiny-{name}"), dropout=0.0)


def _load(folder, **kw) -> Encoder:
    return Encoder.from_pretrained(str(folder), **kw).eval()


def _embed(enc: Encoder, texts=SENTENCES, max_length: int = 32) -> torch.Tensor:
    tok = enc.tokenize(texts, max_length)
    return enc(tok["input_ids"], tok["attention_mask"])


def _hf_embed(enc: Encoder, texts=SENTENCES, max_length: int = 32) -> torch.Tensor:
    """Hugging Face's own forward of the backbone (its own masks and position bias), mean-pooled."""
    tok = enc.tokenize(texts, max_length)
    hidden = enc.backbone(input_ids=tok["input_ids"], attention_mask=tok["attention_mask"]).last_hidden_state
    return enc.pool(hidden, tok["attention_mask"])


def _load_sharp(folder) -> Encoder:
    """The model with its query and key projections scaled by 8: attention scores of order 1, so
    depth weights change the output visibly (at HF's init they are ~1e-2 and any routing is ~1e-5)."""
    enc = _load(folder)
    with torch.no_grad():
        for layer in enc.layers:
            attention = enc.family.attention_of(layer)
            for name in enc.family.qkv[:2]:
                getattr(attention, name).weight.mul_(8.0)
    return enc


def _randomise_routers(enc: Encoder, seed: int = 0) -> None:
    """Router weights (and gates) away from 0, the same for every encoder with the same blocks."""
    torch.manual_seed(seed)
    with torch.no_grad():
        for _, p in router_parameters(enc):
            p.normal_(0.0, 0.5)


# ---------------------------------------------------------------------------------------------- families
def test_families_are_detected_and_an_unsupported_model_is_named(family_dir, tmp_path):
    name, folder = family_dir
    assert _load(folder).family.name == name
    assert _load(write_tiny_model(tmp_path / "bert")).family is BERT
    assert MPNET.lora_targets == (
        "attention.attn.q",
        "attention.attn.k",
        "attention.attn.v",
        "attention.attn.o",
    )
    assert DISTILBERT.lora_targets == (
        "attention.q_lin",
        "attention.k_lin",
        "attention.v_lin",
        "attention.out_lin",
    )
    from transformers import GPT2Config, GPT2Model

    gpt2 = GPT2Model(GPT2Config(n_embd=16, n_layer=1, n_head=2, vocab_size=50, n_positions=16))
    with pytest.raises(ConfigError, match="--model: GPT2Model .* not a supported encoder family"):
        family_of(gpt2)


@torch.no_grad()
def test_plain_encoder_runs_its_layers_as_hugging_face_does(family_dir):
    name, folder = family_dir
    enc = _load(folder)
    torch.testing.assert_close(_embed(enc), _hf_embed(enc), atol=1e-6, rtol=0)
    assert _load(folder, num_layers=1).num_layers == 1
    if name == "mpnet":  # the fixture's position bias matters: leaving it out changes the model
        tok = enc.tokenize(SENTENCES, 32)
        hidden, mask = enc.embed(tok["input_ids"]), tok["attention_mask"]
        inputs = enc.layer_inputs(hidden, mask)
        assert inputs["position_bias"].shape == (1, 4, hidden.shape[1], hidden.shape[1])
        del inputs["position_bias"]
        for layer in enc.layers:
            hidden = layer(hidden, **inputs)[0]
        assert (enc.pool(hidden, mask) - _embed(enc)).abs().max() > 1e-3


# ---------------------------------------------------------------------------------------------- MAW at init
@pytest.mark.parametrize("router,granularity", AT_INIT)
@torch.no_grad()
def test_maw_at_init_is_the_plain_model(family_dir, router, granularity):
    _, folder = family_dir
    plain = _embed(_load_sharp(folder))
    enc = _load_sharp(folder)
    mods = inject_maw(enc, MAWConfig(maw_layers="all", depth_dim=4, router=router, granularity=granularity))
    assert [m.layer_number for m in mods] == [1, 2] == [m.layer_number for m in maw_modules(enc)]
    torch.testing.assert_close(_embed(enc), plain, atol=1e-5, rtol=0)
    torch.testing.assert_close(_hf_embed(enc), plain, atol=1e-5, rtol=0)  # HF's forward reaches MAW too
    with pytest.raises(ConfigError, match="already has MAW"):
        inject_maw(enc, MAWConfig(maw_layers="1", depth_dim=4))


def test_maw_inherits_the_pretrained_projections(family_dir):
    name, folder = family_dir
    enc, base = _load(folder), _load(folder)
    (block,) = inject_maw(enc, MAWConfig(maw_layers="2", depth_dim=4))
    old = base.family.attention_of(base.layers[1])
    for new, pre in zip((block.query, block.key, block.value), enc.family.qkv, strict=True):
        torch.testing.assert_close(new.weight, getattr(old, pre).weight)
    wrapper = enc.family.attention_of(enc.layers[1])  # MAW + the module's own output projection
    torch.testing.assert_close(wrapper.output.weight, old.get_submodule(enc.family.inner_output).weight)


@pytest.mark.parametrize(
    "router,granularity", [("soft", "pair"), ("grpo", "pair"), ("soft", "query"), ("supervised", "head")]
)
@torch.no_grad()
def test_tiled_paths_equal_the_naive_reference(family_dir, router, granularity):
    """With trained-looking routers (and open gates), the fast paths add the position bias exactly as
    the reference does; small tiles split the bias over rows and texts."""
    _, folder = family_dir
    out = {}
    for impl in ("naive", "tiled"):
        enc = _load_sharp(folder)
        cfg = MAWConfig(
            maw_layers="all",
            depth_dim=4,
            router=router,
            granularity=granularity,
            implementation=impl,
            tile_size=3,
            tile_elements=2000,
        )
        inject_maw(enc, cfg)
        _randomise_routers(enc)
        out[impl] = _embed(enc)
    assert (out["tiled"] - _embed(_load_sharp(folder))).abs().max() > 1e-3  # the routers change the model
    torch.testing.assert_close(out["tiled"], out["naive"], atol=1e-5, rtol=0)


# ---------------------------------------------------------------------------------------------- training
@pytest.mark.parametrize("router,granularity", [("soft", "query"), ("gumbel", "pair")])
def test_a_training_step_reaches_the_router_and_changes_the_output(family_dir, router, granularity):
    _, folder = family_dir
    enc = _load_sharp(folder)
    inject_maw(enc, MAWConfig(maw_layers="2", depth_dim=4, router=router, granularity=granularity))
    for p in enc.parameters():
        p.requires_grad_(False)
    params = [p for _, p in router_parameters(enc)]
    for p in params:
        p.requires_grad_(True)
    with torch.no_grad():
        before = _embed(enc)
    enc.train()
    q, d = _embed(enc, SENTENCES[:2]), _embed(enc, SENTENCES[2:])
    loss = torch.nn.functional.cross_entropy(q @ d.T / 0.05, torch.arange(2))  # InfoNCE, in-batch
    loss.backward()
    assert sum(float(p.grad.abs().sum()) for p in params if p.grad is not None) > 0
    torch.optim.SGD(params, lr=1.0).step()
    enc.eval()
    with torch.no_grad():
        assert (_embed(enc) - before).abs().max() > 1e-5  # float noise here is ~1e-7


@torch.no_grad()
def test_the_prefix_cache_suffix_equals_the_full_forward(family_dir, tmp_path):
    """Layer 1 cached, layer 2 (MAW, with its position bias for MPNet) run from the cache."""
    from maw.training.prefix_cache import PrefixCache, prefix_fingerprint

    _, folder = family_dir
    enc = _load(folder)
    inject_maw(enc, MAWConfig(maw_layers="2", depth_dim=4, granularity="pair"))
    _randomise_routers(enc)
    cache = PrefixCache.open_or_build(enc, SENTENCES, 32, 1, tmp_path, dtype="float32", batch_size=3)
    hidden, mask = cache.batch(range(len(SENTENCES)))
    torch.testing.assert_close(enc.suffix(hidden, mask, 1), _embed(enc), atol=1e-5, rtol=0)
    key = prefix_fingerprint(enc, 1)
    _, last = enc.family.input_modules(enc.backbone)[-1]  # MPNet: the position bias table
    next(last.parameters()).data.add_(1.0)
    assert prefix_fingerprint(enc, 1) != key


def _plan(method: str, folder, **overrides):
    from maw.plan import resolve

    values = {s: {} for s in SECTIONS}
    values["model"].update(model=str(folder), query_max_length=16, doc_max_length=32)
    values["maw"]["depth_dim"] = 4
    for name, value in overrides.items():
        section = next(s for s, cls in SECTIONS.items() if name in cls.__dataclass_fields__)
        values[section][name] = value
    return resolve(method, *(cls(**values[s]) for s, cls in SECTIONS.items()))


def test_lora_targets_the_family_projections(family_dir):
    from maw.training.methods import build_model

    _, folder = family_dir
    enc = build_model(_plan("lora", folder))
    trainable = [n for n, p in enc.named_parameters() if p.requires_grad]
    layer = f"{enc.family.layers}.1."
    for target in enc.family.lora_targets:
        assert any(f"{layer}{target}.lora_A" in n for n in trainable), (target, trainable)
    assert all("lora_" in n for n in trainable) and len(trainable) == 2 * len(enc.family.lora_targets)
    # MAW + LoRA: adapters everywhere, MAW in the last layer, no full layer; still the plain model at init
    maw = build_model(_plan("maw", folder, finetune_layers="none", lora_layers="all"))
    assert all("lora_" in n or ".router." in n for n, p in maw.named_parameters() if p.requires_grad)
    with torch.no_grad():
        torch.testing.assert_close(_embed(maw.eval()), _embed(_load(folder)), atol=1e-5, rtol=0)
    full = build_model(_plan("full", folder))
    assert all(p.requires_grad for _, m in full.family.input_modules(full.backbone) for p in m.parameters())


# ---------------------------------------------------------------------------------------------- maw train
@pytest.fixture(scope="module")
def trained(family_dir, tmp_path_factory):
    """``maw train --dataset demo`` of maw, finetune and lora on the family's tiny model, one epoch
    each: {method: (run folder, result.json)}."""
    from maw.cli import app

    name, folder = family_dir
    root = tmp_path_factory.mktemp(f"runs-{name}")
    runner = CliRunner(env={"COLUMNS": "1000"})
    out = {}
    for method in ("maw", "finetune", "lora"):
        run = root / method
        args = ["train", "--dataset", "demo", "--model", str(folder), "--run-dir", str(run)]
        args += ["--method", method, "--num-epochs", "1", "--query-max-length", "16"]
        args += ["--doc-max-length", "64", "--depth-dim", "4", "--num-threads", "1"]
        args += ["--precision", "fp32", "--prefix-cache-dtype", "float32", "--quiet"]
        res = runner.invoke(app, args)
        assert res.exit_code == 0, (method, res.output)
        out[method] = run, json.loads((run / "result.json").read_text())
    return out


def test_maw_train_epoch0_is_the_zero_shot_model(trained):
    """Epoch 0 is validation before any step; finetune's is the plain model's zero-shot validation."""
    (_, maw), (_, plain) = trained["maw"], trained["finetune"]
    assert maw["history"][0]["epoch"] == 0 and plain["history"][0]["epoch"] == 0
    assert maw["plan"]["layers"]["maw"] == [2] and maw["setup"]["prefix_cache"]
    zero_shot, at_init = plain["history"][0]["val"], maw["history"][0]["val"]
    assert zero_shot["nDCG@10"] > 0
    for metric, value in zero_shot.items():
        assert at_init[metric] == pytest.approx(value, abs=1e-4), metric


@pytest.mark.parametrize("method", ["maw", "finetune", "lora"])
def test_every_method_trains(trained, method):
    _, result = trained[method]
    epochs = [h["epoch"] for h in result["history"]]
    assert epochs == [0, 1] and math.isfinite(result["history"][1]["train_loss"])
    grad_norms = result["history"][1]["grad_norms"]
    assert result["history"][1]["optimizer_steps"] == len(grad_norms) >= 1
    assert all(math.isfinite(g) and g > 0 for g in grad_norms)


def test_export_refuses_maw_of_a_new_family_and_exports_plain_models(trained, family_dir, tmp_path):
    from maw.export.sentence_transformers import ExportError, export_sentence_transformers

    name, _ = family_dir
    with pytest.raises(ExportError, match=f"MAW in a {name} encoder cannot be exported"):
        export_sentence_transformers(trained["maw"][0], tmp_path / "maw")
    assert not (tmp_path / "maw").exists()
    # finetune: plain Hugging Face weights, verified against sentence-transformers at export (1e-5)
    out = export_sentence_transformers(trained["finetune"][0], tmp_path / "finetune")
    assert (out / "modules.json").is_file()
