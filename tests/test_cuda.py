"""Checks of the CUDA path (skipped without a GPU; ``speed/gpu_check.sh`` runs them on a GPU machine).

The same code runs on CPU and CUDA: these tests compare the two on a tiny random BERT.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from maw.config import MAWConfig
from maw.models.encoder import Encoder
from tiny_bert import inject_maw, write_tiny_model

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")

TEXTS = ["a short query", "a somewhat longer document about retrieval with attention", "x"] * 4


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    return write_tiny_model(tmp_path_factory.mktemp("tiny-cuda"), layers=2, dropout=0.0)


@pytest.mark.parametrize("granularity", ["pair", "query", "head"])
@pytest.mark.parametrize("router", ["soft", "gumbel", "grpo", "supervised"])
def test_maw_encoder_on_cuda_equals_cpu(model_dir, granularity, router):
    cfg = MAWConfig(depth_dim=4, router=router, granularity=granularity, maw_layers="all")
    cpu = Encoder.from_pretrained(str(model_dir))
    inject_maw(cpu, cfg)
    gpu = Encoder.from_pretrained(str(model_dir))
    inject_maw(gpu, cfg)
    gpu.load_state_dict(cpu.state_dict())
    gpu.to("cuda")
    a = cpu.encode(TEXTS, 32, batch_size=4)
    b = gpu.encode(TEXTS, 32, batch_size=4)
    np.testing.assert_allclose(a, b, atol=1e-4)


def test_maw_backward_on_cuda_equals_cpu(model_dir):
    cfg = MAWConfig(depth_dim=4, router="soft", granularity="pair", maw_layers="all")
    grads = []
    for device in ("cpu", "cuda"):
        torch.manual_seed(0)
        enc = Encoder.from_pretrained(str(model_dir))
        inject_maw(enc, cfg)
        enc.to(device).train()
        batch = {k: v.to(device) for k, v in enc.tokenize(TEXTS, 32).items()}
        enc(batch["input_ids"], batch["attention_mask"]).sum().backward()
        grads.append({n: p.grad.detach().cpu() for n, p in enc.named_parameters() if p.grad is not None})
    assert grads[0].keys() == grads[1].keys()
    for name in grads[0]:
        torch.testing.assert_close(grads[0][name], grads[1][name], atol=1e-4, rtol=1e-3, msg=name)


def test_fp16_encode_is_close_to_fp32(model_dir):
    enc = Encoder.from_pretrained(str(model_dir)).to("cuda")
    a = enc.encode(TEXTS, 32, batch_size=4)
    enc.half()
    b = enc.encode(TEXTS, 32, batch_size=4)
    cos = (a * b).sum(1) / (np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1))
    assert cos.min() > 0.999
