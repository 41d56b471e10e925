"""Tiny random BERT encoders and inputs for the MAW block tests (built in-test, no downloads)."""

from __future__ import annotations

import pytest
import torch
from transformers import BertConfig, BertModel

from maw.models.encoder import Encoder

VOCAB = 120


def tiny_bert_config(dropout: float = 0.0, hidden: int = 32, heads: int = 4, layers: int = 2) -> BertConfig:
    return BertConfig(
        hidden_size=hidden,
        num_hidden_layers=layers,
        num_attention_heads=heads,
        intermediate_size=2 * hidden,
        vocab_size=VOCAB,
        max_position_embeddings=64,
        attention_probs_dropout_prob=dropout,
        hidden_dropout_prob=dropout,
    )


def tiny_encoder(seed: int = 0, **kw) -> Encoder:
    """A deterministic tiny random BERT wrapped in the package Encoder (eval mode)."""
    torch.manual_seed(seed)
    backbone = BertModel(tiny_bert_config(**kw), add_pooling_layer=False).eval()
    return Encoder(backbone, tokenizer=None, model_name="tiny-random-bert")


def padded_batch(seed: int = 1, lengths=(11, 7, 3), max_len: int | None = None):
    """(input_ids, attention_mask) with right padding; pad ids are 0."""
    g = torch.Generator().manual_seed(seed)
    L = max_len or max(lengths)
    ids = torch.randint(1, VOCAB, (len(lengths), L), generator=g)
    mask = torch.zeros(len(lengths), L, dtype=torch.long)
    for b, n in enumerate(lengths):
        mask[b, :n] = 1
    ids = ids * mask
    return ids, mask


def randomize_routers(encoder, scale: float = 1.0, seed: int = 5) -> None:
    """Give every router non-zero weights (as after training) so depths differ."""
    from maw.models.maw_encoder import maw_modules

    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for m in maw_modules(encoder):
            for p in m.router.parameters():
                p.copy_(torch.randn(p.shape, generator=g) * scale)


@pytest.fixture(autouse=True)
def _one_thread():
    """Tiny tensors: one intra-op thread is faster (and steadier on a shared CPU)."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)
