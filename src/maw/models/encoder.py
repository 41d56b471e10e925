"""The dense encoder: a Hugging Face encoder backbone, mean pooling, L2 normalisation.

This is the sentence-transformers recipe of all-MiniLM-L6-v2, written so that the layer stack is
run explicitly. That gives two things the rest of the package relies on:

* ``prefix`` / ``suffix``: run layers ``[0, k)`` once (a frozen prefix, cacheable on disk) and
  layers ``[k, N)`` many times (the trainable part; MAW layers, GRPO samples).
* MAW injection (``maw.models.maw_encoder``) swaps each layer's attention module in place;
  the residual, LayerNorm and FFN of each layer are untouched.

Where the layers are, how to embed and what each layer gets besides the hidden states (the padding
mask; MPNet's relative position bias) is the backbone's family's business
(:mod:`maw.models.families`: ``bert``, ``mpnet``, ``distilbert``), asked through ``Encoder.family``.

Shapes: ``input_ids, attention_mask: (B, L)``; hidden states ``(B, L, d_model)``;
embeddings ``(B, d_model)``. Layer indices in this module are 0-indexed.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from transformers import AutoConfig, AutoModel, AutoTokenizer

from maw.models.families import Family, additive_mask, family_of
from maw.utils.precision import inference_precision

__all__ = ["Encoder", "additive_mask", "mean_pool"]


def mean_pool(hidden: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
    """Mean of the non-padding token states. hidden (B, L, d), mask (B, L) -> (B, d)."""
    m = attention_mask.unsqueeze(-1).to(hidden.dtype)  # (B, L, 1)
    return (hidden * m).sum(1) / m.sum(1).clamp(min=1e-9)


class Encoder(nn.Module):
    """Backbone + mean pooling (+ L2 norm). ``forward(input_ids, attention_mask) -> (B, d)``."""

    def __init__(self, backbone: nn.Module, tokenizer, model_name: str, normalize: bool = True):
        super().__init__()
        self.family: Family = family_of(backbone)  # ConfigError for an unsupported model
        self.backbone = backbone
        self.tokenizer = tokenizer
        self.model_name = model_name
        self.normalize = normalize

    # ------------------------------------------------------------------ construction
    @classmethod
    def from_pretrained(
        cls, model_name_or_path: str, num_layers: int | None = None, normalize: bool = True
    ) -> Encoder:
        """Load any Hugging Face encoder (id or local path), optionally keeping only the first N layers."""
        config = AutoConfig.from_pretrained(model_name_or_path)
        total = config.num_hidden_layers
        if num_layers is not None:
            if not 1 <= num_layers <= total:
                raise ValueError(
                    f"--num-layers: must be in 1..{total} for {model_name_or_path}, got {num_layers}"
                )
        backbone = AutoModel.from_pretrained(model_name_or_path)
        if getattr(backbone, "pooler", None) is not None:
            # Loaded (so a checkpoint that has it reports no unexpected keys) but never used: we mean-pool.
            backbone.pooler = None
        tokenizer = AutoTokenizer.from_pretrained(model_name_or_path)
        encoder = cls(backbone, tokenizer, str(model_name_or_path), normalize=normalize)
        if num_layers is not None and num_layers < total:
            encoder.family.keep_layers(backbone, num_layers)
        return encoder

    # ------------------------------------------------------------------ structure
    @property
    def layers(self) -> nn.ModuleList:
        return self.family.layer_list(self.backbone)

    @property
    def num_layers(self) -> int:
        return len(self.layers)

    @property
    def hidden_size(self) -> int:
        return self.backbone.config.hidden_size

    @property
    def head_size(self) -> int:
        """Width of one attention head, d_h (what MAW's depth dimension must divide)."""
        config = self.backbone.config
        return int(config.hidden_size) // int(config.num_attention_heads)

    @property
    def device(self) -> torch.device:
        return next(self.parameters()).device

    # ------------------------------------------------------------------ forward pieces
    @property
    def weight_dtype(self) -> torch.dtype:
        """The dtype of the weights (bfloat16 during a CPU bfloat16 pass, ``inference_precision``)."""
        return self.backbone.get_input_embeddings().weight.dtype

    def embed(self, input_ids: torch.Tensor) -> torch.Tensor:
        """Token + position (+ type 0) embeddings and LayerNorm: (B, L) -> (B, L, d)."""
        return self.family.embed(self.backbone, input_ids)

    def layer_inputs(self, hidden: torch.Tensor, attention_mask: torch.Tensor) -> dict[str, torch.Tensor]:
        """Keyword arguments of every layer besides the hidden states (B, L, d), for a (B, L) padding
        mask: ``attention_mask`` (B, 1, 1, L) additive, and MPNet's ``position_bias`` (1, H, L, L)."""
        return self.family.layer_inputs(self.backbone, hidden, attention_mask)

    def run_layers(
        self, hidden: torch.Tensor, attention_mask: torch.Tensor, start: int, end: int | None = None
    ) -> torch.Tensor:
        """Run layers ``[start, end)`` on hidden states (B, L, d) with a (B, L) padding mask."""
        end = self.num_layers if end is None else end
        hidden = hidden.to(self.weight_dtype)  # cached float32 / float16 states into cast weights
        inputs = self.layer_inputs(hidden, attention_mask)
        for layer in self.layers[start:end]:
            out = layer(hidden, **inputs)
            hidden = out[0] if isinstance(out, tuple) else out
        return hidden

    def pool(self, hidden: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        """(B, L, d) -> (B, d): masked mean (in float32 at least), then L2 normalisation when enabled."""
        emb = mean_pool(hidden.to(torch.promote_types(hidden.dtype, torch.float32)), attention_mask)
        return F.normalize(emb, p=2, dim=-1) if self.normalize else emb

    def prefix(self, input_ids: torch.Tensor, attention_mask: torch.Tensor, upto: int) -> torch.Tensor:
        """Hidden states after layers ``[0, upto)`` (upto=0: after the embeddings)."""
        return self.run_layers(self.embed(input_ids), attention_mask, 0, upto)

    def suffix(self, hidden: torch.Tensor, attention_mask: torch.Tensor, start: int) -> torch.Tensor:
        """Embeddings from hidden states entering layer ``start``: runs ``[start, N)`` and pools."""
        return self.pool(self.run_layers(hidden, attention_mask, start), attention_mask)

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        return self.suffix(self.embed(input_ids), attention_mask, 0)

    # ------------------------------------------------------------------ text in, vectors out
    def tokenize(self, texts: Sequence[str], max_length: int) -> dict[str, torch.Tensor]:
        return self.tokenizer(
            list(texts), padding=True, truncation=True, max_length=max_length, return_tensors="pt"
        )

    def token_lengths(self, texts: Sequence[str], max_length: int, chunk: int = 8192) -> np.ndarray:
        """(N,) token count of each text after truncation to ``max_length`` (special tokens included).

        Tokenizes ``chunk`` texts at a time, so memory stays bounded on large corpora; costs about
        one more tokenization pass, small next to running the model.
        """
        out = np.empty(len(texts), dtype=np.int64)
        for start in range(0, len(texts), chunk):
            enc = self.tokenizer(
                list(texts[start : start + chunk]),
                truncation=True,
                max_length=max_length,
                return_attention_mask=False,
                return_token_type_ids=False,
            )
            out[start : start + len(enc["input_ids"])] = [len(ids) for ids in enc["input_ids"]]
        return out

    @torch.inference_mode()
    def encode(
        self,
        texts: Sequence[str],
        max_length: int,
        batch_size: int = 128,
        show_progress: bool = False,
        description: str = "encode",
        amp: torch.dtype | None = None,
    ) -> np.ndarray:
        """Encode texts to a float32 array (N, d), in input order.

        Texts are sorted by token count so each batch pads to similar lengths (the main CPU
        speed-up; on SciFact it pads ~4% fewer tokens than sorting by characters, as
        sentence-transformers does), and run under ``torch.inference_mode``. ``amp``
        (``torch.float16`` / ``torch.bfloat16``) runs the model in that precision
        (``maw.utils.precision.inference_precision``: autocast on CUDA, bfloat16 weights on a CPU;
        CPU float16 is not used); the pooled states are averaged in float32.
        """
        was_training = self.training
        self.eval()
        device = self.device
        n = len(texts)
        out = np.empty((n, self.hidden_size), dtype=np.float32)
        if n == 0:
            return out
        order = np.argsort(-self.token_lengths(texts, max_length), kind="stable")
        batches = range(0, n, batch_size)
        if show_progress:
            from rich.progress import track

            batches = track(batches, description=description, total=len(batches), transient=True)
        use_amp = (
            amp is not None and amp != torch.float32 and (device.type == "cuda" or amp == torch.bfloat16)
        )
        with inference_precision(self, amp if use_amp else None, device):
            for start in batches:
                idx = order[start : start + batch_size]
                tok = self.tokenize([texts[i] for i in idx], max_length)
                emb = self(tok["input_ids"].to(device), tok["attention_mask"].to(device))
                out[idx] = emb.float().cpu().numpy()
        self.train(was_training)
        return out

    # ------------------------------------------------------------------ persistence (plain encoder)
    def save_pretrained(self, path: str | Path) -> None:
        """Save backbone (safetensors) and tokenizer in Hugging Face format."""
        path = Path(path)
        path.mkdir(parents=True, exist_ok=True)
        self.backbone.save_pretrained(path, safe_serialization=True)
        self.tokenizer.save_pretrained(path)
