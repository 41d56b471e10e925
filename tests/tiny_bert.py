"""A tiny random BERT for tests of every package (tests/ is on sys.path, see tests/conftest.py)."""

from __future__ import annotations

from pathlib import Path


def write_tiny_model(folder: str | Path, layers: int = 2, seed: int = 0, dropout: float = 0.1) -> Path:
    """A random BERT (hidden 32, 4 heads of 8, FFN 64) + the MiniLM tokenizer, saved to ``folder``."""
    import torch
    from transformers import AutoTokenizer, BertConfig, BertModel

    from maw.config import default_model

    folder = Path(folder)
    if (folder / "config.json").is_file():
        return folder
    tok = AutoTokenizer.from_pretrained(default_model())
    cfg = BertConfig(
        vocab_size=len(tok),
        hidden_size=32,
        num_hidden_layers=layers,
        num_attention_heads=4,
        intermediate_size=64,
        max_position_embeddings=128,
        hidden_dropout_prob=dropout,
        attention_probs_dropout_prob=dropout,
    )
    torch.manual_seed(seed)
    BertModel(cfg, add_pooling_layer=False).save_pretrained(folder, safe_serialization=True)
    tok.save_pretrained(folder)
    return folder
