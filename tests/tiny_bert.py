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


def _minilm_vocab() -> list[str]:
    """The MiniLM (BERT uncased) WordPiece vocabulary, one token per id."""
    from maw.config import default_model

    return (Path(default_model()) / "vocab.txt").read_text(encoding="utf-8").splitlines()


def write_tiny_mpnet(folder: str | Path, layers: int = 2, seed: int = 0, dropout: float = 0.1) -> Path:
    """A random MPNet (hidden 32, 4 heads of 8, FFN 64) with an MPNet tokenizer, saved to ``folder``.

    The tokenizer is all-mpnet-base-v2's layout, built offline: ``<s> <pad> </s> <unk>`` (ids 0-3,
    padding id 1 as MPNet's position ids expect), the MiniLM WordPiece vocabulary, ``<mask>``. The
    relative position bias table is drawn with std 0.5 (HF's init, 0.02, would hide a missing bias
    in float tolerance)."""
    import torch
    from transformers import MPNetConfig, MPNetModel, MPNetTokenizer

    folder = Path(folder)
    if (folder / "config.json").is_file():
        return folder
    words = ["<s>", "<pad>", "</s>", "<unk>", *_minilm_vocab(), "<mask>"]
    tok = MPNetTokenizer(vocab={w: i for i, w in enumerate(words)})
    cfg = MPNetConfig(
        vocab_size=len(words),
        hidden_size=32,
        num_hidden_layers=layers,
        num_attention_heads=4,
        intermediate_size=64,
        max_position_embeddings=130,
        hidden_dropout_prob=dropout,
        attention_probs_dropout_prob=dropout,
        pad_token_id=1,
    )
    torch.manual_seed(seed)
    model = MPNetModel(cfg, add_pooling_layer=False)
    with torch.no_grad():
        model.encoder.relative_attention_bias.weight.normal_(0.0, 0.5)
    model.save_pretrained(folder, safe_serialization=True)
    tok.save_pretrained(folder)
    return folder


def write_tiny_distilbert(folder: str | Path, layers: int = 2, seed: int = 0, dropout: float = 0.1) -> Path:
    """A random DistilBERT (dim 32, 4 heads of 8, FFN 64) with a DistilBERT tokenizer on the MiniLM
    vocabulary, saved to ``folder``."""
    import torch
    from transformers import DistilBertConfig, DistilBertModel, DistilBertTokenizer

    folder = Path(folder)
    if (folder / "config.json").is_file():
        return folder
    vocab = _minilm_vocab()
    tok = DistilBertTokenizer(vocab={w: i for i, w in enumerate(vocab)})
    cfg = DistilBertConfig(
        vocab_size=len(vocab),
        dim=32,
        n_layers=layers,
        n_heads=4,
        hidden_dim=64,
        max_position_embeddings=128,
        dropout=dropout,
        attention_dropout=dropout,
    )
    torch.manual_seed(seed)
    DistilBertModel(cfg).save_pretrained(folder, safe_serialization=True)
    tok.save_pretrained(folder)
    return folder


def inject_maw(encoder, cfg):
    """MAW into a maw ``Encoder`` through the door ``maw.inject_maw`` uses: ``cfg.maw_layers`` parsed
    and ``cfg.depth_dim`` checked against the encoder once (``maw.plan.resolve_maw``; ConfigError
    names the option), then ``maw.models.maw_encoder.inject_maw`` with the parsed layers. Returns
    the new MAW blocks in layer order."""
    from maw.models.maw_encoder import inject_maw as inject
    from maw.plan import resolve_maw

    layers = resolve_maw(cfg, encoder.num_layers, encoder.head_size, encoder.model_name)
    return inject(encoder, cfg, layers)
