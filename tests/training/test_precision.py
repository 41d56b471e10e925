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
