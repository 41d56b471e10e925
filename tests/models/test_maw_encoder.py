"""MAW injection into encoders, controls, save / load, and the real all-MiniLM-L6-v2."""

from __future__ import annotations

import contextlib
import copy
import dataclasses
import json
from pathlib import Path

import pytest
import torch

from maw.attention.maw import MAWSelfAttention
from maw.config import ConfigError, MAWConfig, ModelConfig, RuntimeConfig, TrainConfig, default_model
from maw.models.encoder import Encoder
from maw.models.maw_encoder import (
    depth_statistics,
    load_reference_state,
    maw_modules,
    maw_runtime,
    reference_state,
    refresh_reference,
    router_parameters,
    routing_records,
    set_gumbel_tau,
    shared_inputs,
)
from maw.training.checkpoint import (
    CheckpointError,
    TrainingState,
    check_config,
    checkpoint_config,
    save_checkpoint,
)
from maw.training.methods import load_trained_encoder
from tiny_bert import inject_maw, write_tiny_model

SENTENCES = [
    "Dense retrieval maps queries and documents to vectors.",
    "MAW routes each attention score through one of several depths.",
    "short one",
    "A much longer sentence about padding, masks, and whether batched encoding matches encoding one text at a time.",
]


@pytest.fixture(scope="module")
def tiny_model_dir(tmp_path_factory) -> Path:
    """A tiny random BERT with the MiniLM tokenizer, saved as a local HF model folder."""
    return write_tiny_model(tmp_path_factory.mktemp("tiny-bert"), layers=3)


@pytest.fixture(autouse=True)
def _one_thread():
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def minilm() -> Encoder:
    return Encoder.from_pretrained(default_model()).eval()


def fresh(minilm: Encoder) -> Encoder:
    """An independent copy of the pretrained MiniLM (cheaper than reloading it)."""
    return copy.deepcopy(minilm).eval()


def _encode(enc: Encoder, texts=SENTENCES, max_length=32) -> torch.Tensor:
    tok = enc.tokenize(texts, max_length)
    with torch.no_grad():
        return enc(tok["input_ids"], tok["attention_mask"])


# ---------------------------------------------------------------------------------------------- injection
def test_inject_layers_and_modules(tiny_model_dir):
    enc = Encoder.from_pretrained(str(tiny_model_dir))
    mods = inject_maw(enc, MAWConfig(maw_layers="1,3", depth_dim=4))
    assert [m.layer_number for m in mods] == [1, 3] == [m.layer_number for m in maw_modules(enc)]
    assert isinstance(enc.layers[0].attention.self, MAWSelfAttention)
    assert not isinstance(enc.layers[1].attention.self, MAWSelfAttention)
    # inherits the pretrained Q/K/V objects; output projection untouched
    base = Encoder.from_pretrained(str(tiny_model_dir))
    torch.testing.assert_close(mods[0].query.weight, base.layers[0].attention.self.query.weight)
    assert len(router_parameters(enc)) == 4
    enc2 = Encoder.from_pretrained(str(tiny_model_dir), num_layers=2)
    assert [m.layer_number for m in inject_maw(enc2, MAWConfig(maw_layers="last"))] == [2]
    enc3 = Encoder.from_pretrained(str(tiny_model_dir))
    assert len(inject_maw(enc3, MAWConfig(maw_layers="all"))) == 3
    with pytest.raises(ConfigError, match="already has MAW"):
        inject_maw(enc3, MAWConfig(maw_layers="1"))


@pytest.mark.parametrize(
    "kw,flag",
    [
        ({"depth_dim": 3}, "--depth-dim"),  # d_h = 8
        ({"depth_dim": 0}, "--depth-dim"),
        ({"maw_layers": "4"}, "--maw-layers"),
        ({"maw_layers": "0"}, "--maw-layers"),
        ({"maw_layers": "x"}, "--maw-layers"),
        ({"router": "ppo"}, "--router"),
        ({"granularity": "token"}, "--granularity"),
        ({"depth_projection": "other"}, "--depth-projection"),
        ({"tile_size": 0}, "--tile-size"),
        ({"depth_width": 4}, "--depth-width"),
        ({"implementation": "fast"}, "--implementation"),
        ({"router": "grpo", "parametrisation": "signed"}, "--parametrisation"),
    ],
)
def test_bad_config_names_the_option(tiny_model_dir, kw, flag):
    """Raised when the config is made (most) or when it meets the model (layer range, D | d_h)."""
    enc = Encoder.from_pretrained(str(tiny_model_dir))
    with pytest.raises(ConfigError, match=flag):
        inject_maw(enc, MAWConfig(**kw))


def test_controls(tiny_model_dir):
    enc = Encoder.from_pretrained(str(tiny_model_dir))
    inject_maw(enc, MAWConfig(maw_layers="all", router="gumbel", depth_dim=2))
    assert maw_runtime(enc).gumbel_tau == MAWConfig().gumbel_tau_start
    assert all(m.runtime is maw_runtime(enc) for m in maw_modules(enc)), "one runtime per encoder"
    set_gumbel_tau(enc, 0.25)
    assert maw_runtime(enc).gumbel_tau == 0.25
    with pytest.raises(ValueError):
        set_gumbel_tau(enc, 0.0)
    refresh_reference(enc)
    m = maw_modules(enc)[0]
    assert m.reference is not None
    assert not any(p.requires_grad for p in m.reference.buffers())
    assert not any("reference" in k for k in enc.state_dict()), "the reference is not part of the weights"
    assert not any("reference" in n for n, _ in enc.named_parameters())
    state = reference_state(enc)
    assert len(state) == 3 * 2
    with torch.no_grad():
        m.router.bias.add_(1.0)
    refresh_reference(enc)  # now reference == changed router
    load_reference_state(enc, state)  # back to the saved one
    torch.testing.assert_close(m.reference.bias, state["layer1.bias"])


@pytest.mark.parametrize("granularity", ["pair", "query", "head"])
def test_shared_inputs_reuse_projections_and_match_recomputing(tiny_model_dir, granularity):
    """A GRPO group's samples start from one input: sharing its projections and states is exact."""
    cfg = MAWConfig(maw_layers="2,3", depth_dim=4, router="grpo", granularity=granularity)
    enc = Encoder.from_pretrained(str(tiny_model_dir))
    inject_maw(enc, cfg)
    refresh_reference(enc)
    torch.manual_seed(0)
    with torch.no_grad():
        for _, p in router_parameters(enc):
            p.normal_(0, 0.3)
    enc.train()
    first = maw_modules(enc)[0]
    projections = []
    project = first._project
    first._project = lambda x: projections.append(1) or project(x)
    hidden = torch.randn(3, 9, enc.hidden_size, requires_grad=True)  # "queries"
    docs = torch.randn(4, 6, enc.hidden_size)
    mask, doc_mask = torch.ones(3, 9, dtype=torch.long), torch.ones(4, 6, dtype=torch.long)
    mask[1, 5:] = 0
    doc_mask[2, 3:] = 0

    def group(share: bool):
        torch.manual_seed(7)  # same routing samples and dropout in both runs
        projections.clear()
        enc.zero_grad(set_to_none=True)
        hidden.grad = None
        with shared_inputs(enc) if share else contextlib.nullcontext():
            losses = []
            for g in range(3):  # queries and documents alternate, as in grpo_objective
                emb = enc.suffix(hidden, mask, 1)
                rec = routing_records(enc)[0]
                demb = enc.suffix(docs, doc_mask, 1)
                loss = (g + 1) * emb.square().sum() + (emb[:, :1] * demb.sum(0)).sum()
                losses.append(loss + rec.ratio_mean.sum() + rec.kl_ref_mean.sum())
            # only the first MAW layer shares: later layers' inputs depend on the samples below
            assert maw_runtime(enc).share_layer == (first.layer_number if share else None)
        sum(losses).backward()
        grads = {n: p.grad.clone() for n, p in enc.named_parameters() if p.grad is not None}
        return torch.stack([x.detach() for x in losses]), grads, hidden.grad.clone(), len(projections)

    loss_a, grads_a, dh_a, calls_a = group(share=False)
    loss_b, grads_b, dh_b, calls_b = group(share=True)
    assert (calls_a, calls_b) == (6, 2)  # layers above the first MAW layer see new inputs per sample
    torch.testing.assert_close(loss_b, loss_a, rtol=0, atol=0)
    assert grads_a.keys() == grads_b.keys() and any("router" in n for n in grads_b)
    for n in grads_a:
        torch.testing.assert_close(grads_b[n], grads_a[n], rtol=1e-5, atol=1e-6, msg=n)
    torch.testing.assert_close(dh_b, dh_a, rtol=1e-5, atol=1e-6)
    assert maw_runtime(enc).share_layer is None  # off again, memo released


# ---------------------------------------------------------------------------------------------- save / load
# MAW models are saved in the one checkpoint format of ``maw train`` (maw.training.checkpoint).
def _plan(model_dir, **maw):
    from maw.plan import resolve

    model = ModelConfig(model=str(model_dir), query_max_length=16, doc_max_length=32)
    return resolve(
        "maw", model=model, maw=MAWConfig(**maw), train=TrainConfig(), runtime=RuntimeConfig(progress=False)
    )


def _config(plan) -> dict:
    """checkpoint_config on a stand-in collection (a checkpoint records the data's identity)."""
    from maw.data.types import Document, RetrievalDataset, Splits

    ds = RetrievalDataset("toy", {"d1": Document("", "text")}, {"q1": "q"}, {}, fingerprint="abc")
    return checkpoint_config(plan, ds, Splits(train={"q1": {"d1": 1}}, val={}, test={}))


def _save(plan, folder: Path, perturb: bool = True) -> Encoder:
    from maw.training.methods import build_model

    enc = build_model(plan)
    if perturb:
        torch.manual_seed(3)
        with torch.no_grad():  # "trained" weights: routers and the MAW layers differ from the base
            for _, p in router_parameters(enc):
                p.normal_()
            enc.layers[2].attention.self.value.weight.add_(0.01)
    enc.eval()
    save_checkpoint(folder, enc, _config(plan), TrainingState(), include_rng=False)
    return enc


def test_save_load_round_trip_is_exact(tiny_model_dir, tmp_path):
    plan = _plan(
        tiny_model_dir, maw_layers="2,3", depth_dim=4, router="grpo", granularity="query", router_hidden=5
    )
    enc = _save(plan, tmp_path / "ckpt")
    before = _encode(enc)
    assert (tmp_path / "ckpt" / "model.safetensors").is_file()
    meta = json.loads((tmp_path / "ckpt" / "config.json").read_text())
    assert meta["plan"]["maw"]["depth_dim"] == 4 and meta["plan"]["layers"]["maw"] == [2, 3]
    assert meta["format_version"] == 2
    loaded, loaded_plan, saved = load_trained_encoder(tmp_path / "ckpt")
    assert loaded_plan == plan and saved == meta and not loaded.training
    assert [m.layer_number for m in maw_modules(loaded)] == [2, 3]
    assert torch.equal(_encode(loaded), before)
    for (k1, v1), (k2, v2) in zip(enc.state_dict().items(), loaded.state_dict().items(), strict=True):
        assert k1 == k2 and torch.equal(v1, v2)
    ref, ref_loaded = reference_state(enc), reference_state(loaded)  # GRPO's frozen reference routers
    assert ref and ref.keys() == ref_loaded.keys() and all(torch.equal(ref[k], ref_loaded[k]) for k in ref)
    # tile size / implementation are runtime choices, not structure
    fast = dataclasses.replace(plan, maw=dataclasses.replace(plan.maw, tile_size=7, implementation="naive"))
    check_config(tmp_path / "ckpt", _config(fast))


def test_mismatched_config_errors(tiny_model_dir, tmp_path):
    plan = _plan(tiny_model_dir, maw_layers="3", depth_dim=4)
    _save(plan, tmp_path / "c", perturb=False)
    with pytest.raises(CheckpointError, match=r"maw.depth_dim: saved 4, now 8"):
        check_config(tmp_path / "c", _config(_plan(tiny_model_dir, maw_layers="3", depth_dim=8)))
    with pytest.raises(CheckpointError, match=r"layers.maw: saved \[3\], now \[2, 3\]") as err:
        check_config(tmp_path / "c", _config(_plan(tiny_model_dir, maw_layers="2,3", depth_dim=4)))
    assert "maw.maw_layers: saved '3', now '2,3'" in str(err.value)
    # weights of one plan, config.json of another -> the load names the tensors / shapes
    meta = json.loads((tmp_path / "c" / "config.json").read_text())

    def rewrite(**changes):
        (tmp_path / "c" / "config.json").write_text(json.dumps({**meta, **changes}))

    head = json.loads(json.dumps(meta["plan"]))
    head["maw"]["granularity"] = "head"  # router input 3D instead of 2D
    rewrite(plan=head)
    with pytest.raises(CheckpointError, match=r"tensor shapes differ.*router"):
        load_trained_encoder(tmp_path / "c")
    more = json.loads(json.dumps(meta["plan"]))
    more["layers"]["maw"] = more["layers"]["trainable"] = [2, 3]
    rewrite(plan=more)
    with pytest.raises(
        CheckpointError, match=r"do not match this model: missing \['backbone.encoder.layer.1."
    ):
        load_trained_encoder(tmp_path / "c")
    rewrite(format_version=99)
    with pytest.raises(CheckpointError, match="checkpoint format 99 is not supported"):
        load_trained_encoder(tmp_path / "c")
    # missing files
    with pytest.raises(CheckpointError, match="not a maw checkpoint"):
        load_trained_encoder(tmp_path / "nothing")
    rewrite()
    (tmp_path / "c" / "model.safetensors").unlink()
    with pytest.raises(
        CheckpointError,
        match=r"not a maw checkpoint \(no config.json \+ model.safetensors \+ training_state.json\)",
    ):
        load_trained_encoder(tmp_path / "c")


# ---------------------------------------------------------------------------------------------- real MiniLM
def test_minilm_soft_gated_and_depth_one_at_init_equal_pretrained(minilm):
    base = _encode(minilm)
    tok = minilm.tokenize(SENTENCES, 32)
    assert (tok["attention_mask"] == 0).any(), "the batch must contain padding"
    cases = [
        MAWConfig(maw_layers="6", depth_dim=32, granularity="pair", router="soft"),
        MAWConfig(maw_layers="5,6", depth_dim=8, granularity="query", router="soft"),
        MAWConfig(
            maw_layers="all", depth_dim=4, granularity="head", router="soft", depth_projection="project"
        ),
        MAWConfig(maw_layers="6", depth_dim=1, granularity="pair", router="grpo"),
        MAWConfig(maw_layers="6", depth_dim=1, granularity="query", router="supervised"),
        # gated hard routers (their default): the gate starts at 0
        MAWConfig(maw_layers="6", depth_dim=8, granularity="query", router="supervised"),
        MAWConfig(maw_layers="5,6", depth_dim=32, granularity="pair", router="grpo"),
        MAWConfig(maw_layers="6", depth_dim=4, granularity="head", router="gumbel"),
    ]
    for cfg in cases:
        enc = fresh(minilm)
        inject_maw(enc, cfg)
        torch.testing.assert_close(_encode(enc), base, atol=1e-5, rtol=0, msg=lambda m, c=cfg: f"{c}: {m}")


def test_minilm_hf_native_forward_matches_encoder_path(minilm):
    """Hugging Face's own forward passes its own mask format; the MAW block must read it too."""
    enc = fresh(minilm)
    inject_maw(enc, MAWConfig(maw_layers="6", depth_dim=8, granularity="query", router="supervised"))
    torch.manual_seed(0)
    with torch.no_grad():
        for _, p in router_parameters(enc):
            p.normal_(0, 0.5)
    tok = enc.tokenize(SENTENCES, 32)
    with torch.no_grad():
        hidden = enc.backbone(
            input_ids=tok["input_ids"], attention_mask=tok["attention_mask"]
        ).last_hidden_state
        ours = enc.run_layers(enc.embed(tok["input_ids"]), tok["attention_mask"], 0)
    valid = tok["attention_mask"].bool()
    torch.testing.assert_close(hidden[valid], ours[valid], atol=1e-5, rtol=0)


def test_minilm_hard_router_changes_the_model_at_step_zero(minilm):
    """Measured on the real model: a one-hot depth scaled by D is a different attention, so the
    convex hard routers start away from the zero-shot model (spec section 2: report, do not
    hide); the gated ones (the default) start at it, see the test above."""
    base = _encode(minilm)
    enc = fresh(minilm)
    cfg = MAWConfig(
        maw_layers="6", depth_dim=8, granularity="query", router="supervised", parametrisation="convex"
    )
    inject_maw(enc, cfg)
    out = _encode(enc)
    cos = (out * base).sum(-1)  # both L2-normalised
    assert (cos < 0.999).all(), f"cosine to the pretrained embeddings: {cos.tolist()}"
    assert (cos > 0.5).all(), f"cosine to the pretrained embeddings: {cos.tolist()}"
    stats = depth_statistics(enc)[6]
    assert all(sum(r) == stats["units"] for r in stats["counts"])


def test_minilm_batched_equals_one_by_one(minilm):
    enc = fresh(minilm)
    inject_maw(enc, MAWConfig(maw_layers="6", depth_dim=8, granularity="pair", router="soft", tile_size=8))
    torch.manual_seed(1)
    with torch.no_grad():
        for _, p in router_parameters(enc):
            p.normal_(0, 0.5)
    batched = _encode(enc)
    for i, s in enumerate(SENTENCES):
        torch.testing.assert_close(_encode(enc, [s])[0], batched[i], atol=1e-5, rtol=0)
    # the Encoder.encode path (length-sorted batches, inference mode) agrees too
    enc_np = torch.from_numpy(enc.encode(SENTENCES, max_length=32, batch_size=3))
    torch.testing.assert_close(enc_np, batched, atol=1e-5, rtol=0)


def test_oracle_labels_with_shared_projections_equal_forced_passes(tiny_model_dir):
    """The supervised router's D forced passes share the first MAW layer's projections: same losses."""
    from maw.models.maw_encoder import force_depth
    from maw.training.losses import info_nce_per_query
    from maw.training.router_objectives import LocalBatch, oracle_labels

    enc = Encoder.from_pretrained(str(tiny_model_dir))
    inject_maw(enc, MAWConfig(maw_layers="2,3", depth_dim=4, router="supervised", granularity="query"))
    torch.manual_seed(1)
    b = LocalBatch(
        q_hidden=torch.randn(3, 7, enc.hidden_size),
        q_mask=torch.ones(3, 7, dtype=torch.long),
        d_hidden=torch.randn(6, 9, enc.hidden_size),
        d_mask=torch.ones(6, 9, dtype=torch.long),
        positive_index=torch.tensor([0, 2, 4]),
        mask=torch.zeros(3, 6, dtype=torch.bool),
        doc_owner=torch.tensor([0, 0, 1, 1, 2, 2]),
        denom_queries=3.0,
        denom_texts=9.0,
    )
    b.d_mask[4, 5:] = 0

    def head(h, m):
        return enc.suffix(h, m, 1)

    enc.train()
    labels, losses = oracle_labels(enc, head, b, lambda x: x, 0.05, 4)
    enc.eval()
    with torch.no_grad():
        expected = []
        for d in range(4):
            with force_depth(enc, d):
                expected.append(
                    info_nce_per_query(
                        head(b.q_hidden, b.q_mask), head(b.d_hidden, b.d_mask), b.positive_index, 0.05, b.mask
                    )
                )
    torch.testing.assert_close(losses, torch.stack(expected))
    assert torch.equal(labels, torch.stack(expected).argmin(0))
    assert maw_runtime(enc).share_layer is None
