"""``--precision bf16`` on the CPU: training steps, validation and the prefix cache under bfloat16
autocast, recorded in the result; float32 stays the default (maw.utils.precision)."""

from __future__ import annotations

import math

import pytest
import torch

from maw.config import ConfigError, ModelConfig
from maw.training.trainer import train
from maw.utils.precision import autocast_dtype, precision_info


def test_what_each_precision_runs_in():
    assert autocast_dtype("auto", "cpu") is None and autocast_dtype("fp32", "cpu") is None
    assert (
        autocast_dtype("bf16", "cpu") == torch.bfloat16
        and autocast_dtype("bf16", "cpu", training=True) == torch.bfloat16
    )
    assert autocast_dtype("fp16", "cpu") is None  # CPU float16: not used
    assert (
        autocast_dtype("auto", "cuda") == torch.float16
        and autocast_dtype("auto", "cuda", training=True) is None
    )
    info = precision_info("bf16", "cpu")
    assert info["encode_dtype"] == info["train_dtype"] == "bfloat16" and "cpu_bf16" in info
    with pytest.raises(ConfigError, match="--precision"):
        ModelConfig(precision="fp8")


@pytest.mark.parametrize(
    "method, extra",
    [("finetune", {}), ("maw", {"granularity": "query"}), ("maw", {"granularity": "pair"})],
)
def test_bf16_trains_and_validates_and_records_it(tiny, tmp_path, method, extra):
    fp32 = train(tiny.plan(method, num_epochs=1, **extra), tiny.dataset, tiny.splits, tmp_path / "fp32")
    bf16 = train(
        tiny.plan(method, num_epochs=1, precision="bf16", **extra),
        tiny.dataset,
        tiny.splits,
        tmp_path / "bf16",
    )
    assert bf16.setup["precision"]["train_dtype"] == "bfloat16"
    assert fp32.setup["precision"]["train_dtype"] == "float32"
    for h32, h16 in zip(fp32.history, bf16.history, strict=True):
        for metric in ("nDCG@10", "R@100"):  # same model, other rounding: close, not equal
            assert math.isfinite(h16["val"][metric]) and abs(h16["val"][metric] - h32["val"][metric]) < 0.1
    assert all(math.isfinite(x) for x in bf16.history[1]["step_losses"])
    if fp32.setup.get("prefix_cache"):  # a bfloat16 prefix pass is cached apart from the float32 one
        assert bf16.setup["amp"] == "bfloat16" and bf16.setup["doc_cache"] != fp32.setup["doc_cache"]


TEXTS = [
    "dense retrieval with multiple attention weights",
    "a short one",
    "bfloat16 weights on a CPU: the encoder casts its weights for the pass and restores them after",
    "scientific claims and their evidence",
]


@pytest.mark.parametrize(
    "router, granularity",
    [
        (None, None),
        ("soft", "pair"),
        ("soft", "query"),
        ("gumbel", "head"),
        ("supervised", "query"),
        ("grpo", "pair"),
    ],
)
def test_cpu_bf16_encoding_runs_on_cast_weights_and_restores_them(tmp_path, router, granularity):
    """``Encoder.encode(amp=bfloat16)`` on a CPU runs every layer in bfloat16 (cast weights, not
    autocast), gives the float32 embeddings to bfloat16 rounding, and leaves the float32 weights
    exactly as they were (same tensors, same values), MAW layers and routers included."""
    import numpy as np

    from maw.config import MAWConfig
    from maw.models.encoder import Encoder
    from tiny_bert import inject_maw, write_tiny_model

    enc = Encoder.from_pretrained(str(write_tiny_model(tmp_path / "tiny", dropout=0.0)))
    if router is not None:
        inject_maw(enc, MAWConfig(maw_layers="all", depth_dim=4, router=router, granularity=granularity))
        with torch.no_grad():  # trained-like routers, so the depths differ
            g = torch.Generator().manual_seed(5)
            for name, p in enc.named_parameters():
                if "router" in name:
                    p.copy_(torch.randn(p.shape, generator=g))
    params = dict(enc.named_parameters())
    before = {k: v.detach().clone() for k, v in enc.state_dict().items()}
    ref = enc.encode(TEXTS, 32, 3)
    seen: list[torch.dtype] = []
    hooks = [
        layer.register_forward_hook(lambda m, i, o: seen.append((o[0] if isinstance(o, tuple) else o).dtype))
        for layer in enc.layers
    ]
    low = enc.encode(TEXTS, 32, 3, amp=torch.bfloat16)
    for h in hooks:
        h.remove()
    assert seen and set(seen) == {torch.bfloat16}
    assert low.dtype == np.float32 and np.isfinite(low).all()
    cos = (ref * low).sum(1) / (np.linalg.norm(ref, axis=1) * np.linalg.norm(low, axis=1))
    assert cos.min() > 0.99, cos
    assert dict(enc.named_parameters()).keys() == params.keys()
    assert all(enc.get_parameter(k) is p for k, p in params.items())
    after = enc.state_dict()
    for k, v in before.items():
        assert after[k].dtype == v.dtype and torch.equal(after[k], v), k
    np.testing.assert_array_equal(enc.encode(TEXTS, 32, 3), ref)  # float32 again, bit for bit


def test_inference_precision_restores_weights_on_error():
    from maw.utils.precision import inference_precision

    lin = torch.nn.Linear(4, 4)
    w = lin.weight.detach().clone()
    with pytest.raises(RuntimeError, match="boom"), inference_precision(lin, torch.bfloat16, "cpu"):
        assert lin.weight.dtype == torch.bfloat16
        raise RuntimeError("boom")
    assert lin.weight.dtype == torch.float32 and torch.equal(lin.weight, w)
    with inference_precision(lin, torch.float16, "cpu"):  # not CPU bfloat16: autocast, weights kept
        assert lin.weight.dtype == torch.float32 and torch.is_autocast_enabled("cpu")
