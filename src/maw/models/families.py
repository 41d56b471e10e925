"""Encoder families: where a Hugging Face encoder keeps what the toolkit needs.

The toolkit runs an encoder's layer stack itself (``maw.models.encoder``), puts MAW into its
attention (``maw.models.maw_encoder``), LoRA adapters on its projections and trains or caches parts
of it (``maw.training``). Everything that differs between model families is answered here, by the
encoder's :class:`Family` (``Encoder.family``), and nowhere else:

==========  =================  ==============  ===================  ============================
family      layers             MAW replaces    q, k, v in it        output projection (kept)
==========  =================  ==============  ===================  ============================
bert        encoder.layer      attention.self  query, key, value    attention.output.dense
mpnet       encoder.layer      attention.attn  q, k, v              attention.attn.o (inside)
distilbert  transformer.layer  attention       q_lin, k_lin, v_lin  attention.out_lin (inside)
==========  =================  ==============  ===================  ============================

Each layer gets the padding mask besides the hidden states; MPNet's also get the relative position
bias.

``bert`` is every model with that structure (BERT, MiniLM, RoBERTa, XLM-R, ELECTRA, ...); ``mpnet``
(all-mpnet-base-v2) and ``distilbert`` are matched by ``config.model_type``. Other families
(ModernBERT: fused ``Wqkv``, rotary positions, unpadded batches) raise :class:`ConfigError` when
the encoder is built.

* **MAW.** :meth:`Family.maw_attention` builds the block that replaces the family's attention
  module from its pretrained q/k/v (:class:`~maw.attention.maw.MAWSelfAttention`). Where the output
  projection lives inside that module (MPNet, DistilBERT), the block is wrapped with it
  (:class:`MAWWithOutput`), so the layer around it runs unchanged.
* **MPNet's relative position bias** ``(1, H, L, L)``: the plain model computes it once per forward
  (``MPNetEncoder.compute_position_bias``, from the table ``encoder.relative_attention_bias``) and
  adds it to every layer's attention scores before the mask. :meth:`Family.layer_inputs` computes it
  the same way for ``Encoder.run_layers``, so any run of layers ``[k, N)`` (the frozen-prefix
  cache's suffix included) gets it, and the MAW block adds it to the combined score ``A`` exactly as
  the plain layer adds it to ``q.k / sqrt(d_h)`` (not routed: the router still sees ``S`` only).
  It depends on token indices only, so right padding leaves the valid tokens' bias unchanged and
  cached prefix states stay exact.
* **Input modules** (:meth:`Family.input_modules`): what feeds every layer outside the layer stack
  -- the embeddings, and MPNet's bias table. They train with the embeddings (method ``full``), are
  hashed into the prefix-cache key, and run in eval mode while frozen.
* **LoRA targets** (:attr:`Family.lora_targets`): q, k, v and the output projection, relative to a
  layer.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from maw.config import ConfigError


def additive_mask(attention_mask: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """(B, L) 1/0 mask -> (B, 1, 1, L) additive bias: 0 where attended, dtype-min on padding."""
    return (1.0 - attention_mask[:, None, None, :].to(dtype)) * torch.finfo(dtype).min


class MAWWithOutput(nn.Module):
    """A MAW block followed by the output projection that the replaced attention module held.

    ``forward(hidden (B, L, d), attention_mask, position_bias=None) -> (out (B, L, d), None)``:
    the call signature of MPNet's ``attention.attn`` (mask and position bias positional) and of
    DistilBERT's ``attention`` (keywords), and their ``(output, attention weights)`` return.
    """

    def __init__(self, maw: nn.Module, output: nn.Module):
        super().__init__()
        self.maw = maw
        self.output = output

    def forward(self, hidden_states, attention_mask=None, position_bias=None, *args, **kwargs):
        context, _ = self.maw(hidden_states, attention_mask, position_bias=position_bias)  # (B, L, H*d_h)
        return self.output(context), None


@dataclass(frozen=True)
class Family:
    """How to find and run the parts of one encoder family (the ``bert`` layout by default).

    ``layers``: path of the layer ``ModuleList`` in the backbone; ``attention``: path, in a layer, of
    the module MAW replaces; ``qkv``: names of the query, key and value ``nn.Linear`` in it;
    ``output``: path, in a layer, of the attention output projection (inside ``attention`` or
    not); ``heads``: the attention module's attribute holding the number of heads;
    ``token_types``: the embeddings take ``token_type_ids``; ``model_types``: the
    ``config.model_type`` values of the family (empty: any model with this layout).
    """

    name: str = "bert"
    layers: str = "encoder.layer"
    attention: str = "attention.self"
    qkv: tuple[str, str, str] = ("query", "key", "value")
    output: str = "attention.output.dense"
    heads: str = "num_attention_heads"
    token_types: bool = True
    model_types: tuple[str, ...] = ()

    # ------------------------------------------------------------------ finding things
    def matches(self, backbone: nn.Module) -> bool:
        """Whether ``backbone`` (a Hugging Face base model) belongs to this family."""
        if self.model_types and getattr(backbone.config, "model_type", None) not in self.model_types:
            return False
        try:
            attention = self.attention_of(self.layer_list(backbone)[0])
        except (AttributeError, IndexError, TypeError):
            return False
        return all(hasattr(attention, n) for n in self.qkv)

    def layer_list(self, backbone: nn.Module) -> nn.ModuleList:
        return backbone.get_submodule(self.layers)

    def keep_layers(self, backbone: nn.Module, n: int) -> None:
        """Keep only the first ``n`` layers (``--num-layers``)."""
        parent, _, name = self.layers.rpartition(".")
        owner = backbone.get_submodule(parent) if parent else backbone
        setattr(owner, name, self.layer_list(backbone)[:n])
        backbone.config.num_hidden_layers = n

    def attention_of(self, layer: nn.Module) -> nn.Module:
        """The module of ``layer`` that MAW replaces."""
        return layer.get_submodule(self.attention)

    @property
    def lora_targets(self) -> tuple[str, ...]:
        """Module paths, relative to a layer, that LoRA adapts: q, k, v and the output projection."""
        return (*(f"{self.attention}.{n}" for n in self.qkv), self.output)

    def input_modules(self, backbone: nn.Module) -> list[tuple[str, nn.Module]]:
        """(name, module) of what feeds every layer from outside the layer stack."""
        return [("embeddings", backbone.embeddings)]

    # ------------------------------------------------------------------ running
    def embed(self, backbone: nn.Module, input_ids: torch.Tensor) -> torch.Tensor:
        """Embeddings of ``input_ids`` (B, L) -> (B, L, d) (token type 0 where the family has types)."""
        extra = {"token_type_ids": torch.zeros_like(input_ids)} if self.token_types else {}
        return backbone.embeddings(input_ids=input_ids, **extra)

    def layer_inputs(
        self, backbone: nn.Module, hidden: torch.Tensor, attention_mask: torch.Tensor
    ) -> dict[str, torch.Tensor]:
        """Keyword arguments every layer gets besides the hidden states (B, L, d), for a (B, L) 1/0
        padding mask: the additive mask (B, 1, 1, L)."""
        return {"attention_mask": additive_mask(attention_mask, hidden.dtype)}

    # ------------------------------------------------------------------ MAW
    def maw_attention(self, module: nn.Module, cfg, layer_number: int, runtime) -> nn.Module:
        """The MAW replacement of ``module`` (this family's attention module of layer
        ``layer_number``), inheriting its pretrained q/k/v (and output projection, when inside)."""
        from maw.attention.maw import MAWSelfAttention

        missing = [n for n in (*self.qkv, self.heads, "attention_head_size") if not hasattr(module, n)]
        if missing:
            raise ConfigError(
                f"--model: layer {layer_number}'s {self.attention} ({type(module).__name__}) does not have "
                f"the {self.name} attention layout (no {missing[0]!r})"
            )
        q, k, v = (getattr(module, n) for n in self.qkv)
        dropout = getattr(module, "dropout", None)
        p = float(dropout.p) if isinstance(dropout, nn.Dropout) else 0.0
        heads, head_size = int(getattr(module, self.heads)), int(module.attention_head_size)
        block = MAWSelfAttention(cfg, heads, head_size, q, k, v, p, layer_number, runtime)
        inner = self.inner_output
        return block if inner is None else MAWWithOutput(block, module.get_submodule(inner))

    @property
    def inner_output(self) -> str | None:
        """Path of the output projection inside the attention module, or None when it is outside."""
        prefix = f"{self.attention}."
        return self.output[len(prefix) :] if self.output.startswith(prefix) else None

    def set_attention(self, layer: nn.Module, module: nn.Module) -> None:
        parent, _, name = self.attention.rpartition(".")
        setattr(layer.get_submodule(parent) if parent else layer, name, module)


@dataclass(frozen=True)
class MPNetFamily(Family):
    """MPNet: the BERT layout with the output projection inside ``attention.attn`` and a relative
    position bias, shared by every layer, added to the attention scores."""

    def input_modules(self, backbone: nn.Module) -> list[tuple[str, nn.Module]]:
        return [
            *super().input_modules(backbone),
            ("relative_attention_bias", backbone.encoder.relative_attention_bias),
        ]

    def layer_inputs(
        self, backbone: nn.Module, hidden: torch.Tensor, attention_mask: torch.Tensor
    ) -> dict[str, torch.Tensor]:
        """The padding mask and the position bias (1, H, L, L), computed as ``MPNetEncoder`` does
        (from token indices: the same for every text of the batch)."""
        inputs = super().layer_inputs(backbone, hidden, attention_mask)
        inputs["position_bias"] = backbone.encoder.compute_position_bias(hidden[:1])  # (1, H, L, L)
        return inputs


BERT = Family()
MPNET = MPNetFamily(
    name="mpnet",
    attention="attention.attn",
    qkv=("q", "k", "v"),
    output="attention.attn.o",
    token_types=False,
    model_types=("mpnet",),
)
DISTILBERT = Family(
    name="distilbert",
    layers="transformer.layer",
    attention="attention",
    qkv=("q_lin", "k_lin", "v_lin"),
    output="attention.out_lin",
    heads="n_heads",
    token_types=False,
    model_types=("distilbert",),
)
FAMILIES = (MPNET, DISTILBERT, BERT)  # the specific ones first: bert matches by layout alone


def family_of(backbone: nn.Module) -> Family:
    """The family of a Hugging Face base model; ConfigError (naming ``--model``) when none fits."""
    for family in FAMILIES:
        if family.matches(backbone):
            return family
    model_type = getattr(getattr(backbone, "config", None), "model_type", None)
    raise ConfigError(
        f"--model: {type(backbone).__name__} (model_type {model_type!r}) is not a supported encoder family; "
        f"supported: {', '.join(f.name for f in FAMILIES)} (bert: any model whose layers are "
        "encoder.layer[i] with attention.self.{query,key,value}, e.g. BERT, MiniLM, RoBERTa)"
    )
