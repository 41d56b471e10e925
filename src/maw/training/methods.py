"""The trainable methods and what each one trains.

=========  ===================================================================================
method     trainable parameters
=========  ===================================================================================
lora       PEFT LoRA adapters (rank ``lora_rank``, alpha ``lora_alpha``, dropout ``lora_dropout``)
           on ``attention.self.{query,key,value}`` and ``attention.output.dense`` of
           ``--lora-layers`` (default the last layer); everything else frozen.
finetune   every parameter of ``--finetune-layers`` (default the last layer): the
           capacity-matched baseline of ``maw``.
maw        MAW self-attention in ``--maw-layers`` (``maw.models.maw_encoder.inject_maw``); every
           parameter of ``--finetune-layers`` (default: the MAW layers; ``all`` = MAW on top of a
           full fine-tune; ``none``) plus all router parameters; with ``--lora-layers``, LoRA
           adapters there too (MAW + LoRA: e.g. ``--finetune-layers none --lora-layers all``).
full       every parameter, the embeddings included.
=========  ===================================================================================

Layer lists are 1-indexed ("6", "5,6", "all", "last"); they are parsed once, into the plan's
:class:`~maw.plan.LayerPlan`, by ``maw.plan.resolve``.

``first trainable index`` ``k`` (0-indexed): layers ``[0, k)`` and the embeddings hold no trainable
parameter, so their output can be computed once and cached (``maw.training.prefix_cache``). It is 0
when the embeddings or layer 1 train. LoRA adapters are injected with ``peft.inject_adapter_in_model``
into the backbone itself, so ``Encoder.layers`` stays the plain Hugging Face ``ModuleList``.
"""

from __future__ import annotations

import re

from torch import nn

from maw.config import TrainConfig
from maw.models.encoder import Encoder
from maw.plan import LayerPlan, Plan

LORA_TARGETS = (
    "attention.self.query",
    "attention.self.key",
    "attention.self.value",
    "attention.output.dense",
)


def _inject_lora(encoder: Encoder, layers: tuple[int, ...], train_cfg: TrainConfig) -> None:
    from peft import LoraConfig, inject_adapter_in_model

    idx = "|".join(str(i - 1) for i in layers)
    targets = "|".join(re.escape(t) for t in LORA_TARGETS)
    config = LoraConfig(
        r=train_cfg.lora_rank,
        lora_alpha=train_cfg.lora_alpha,
        lora_dropout=train_cfg.lora_dropout,
        target_modules=rf"encoder\.layer\.({idx})\.({targets})",
        bias="none",
    )
    inject_adapter_in_model(config, encoder.backbone)


def router_parameters(encoder: nn.Module) -> list[tuple[str, nn.Parameter]]:
    """(name, parameter) of every MAW router (the frozen reference copies excluded)."""
    from maw.models.maw_encoder import maw_modules

    out = []
    module_names = {id(m): n for n, m in encoder.named_modules()}
    for module in maw_modules(encoder):
        router = getattr(module, "router", None)
        if router is None:
            continue
        prefix = module_names[id(router)]
        out.extend((f"{prefix}.{n}", p) for n, p in router.named_parameters())
    return out


def _freeze(encoder: Encoder, plan: LayerPlan) -> None:
    for p in encoder.parameters():
        p.requires_grad_(False)
    if plan.train_embeddings:
        for p in encoder.backbone.embeddings.parameters():
            p.requires_grad_(True)
    for layer in plan.trainable:
        for p in encoder.layers[layer - 1].parameters():
            p.requires_grad_(True)
    if plan.lora:
        for name, p in encoder.named_parameters():
            if "lora_" in name:
                p.requires_grad_(True)
    if plan.maw:
        for _, p in router_parameters(encoder):
            p.requires_grad_(True)


def build_model(plan: Plan) -> Encoder:
    """Load the backbone, inject LoRA / MAW as the plan says, freeze all but the trainable parts."""
    encoder = Encoder.from_pretrained(
        plan.model.model, num_layers=plan.model.num_layers, normalize=plan.model.normalize
    )
    layers = plan.layers
    if layers.lora:
        _inject_lora(encoder, layers.lora, plan.train)
    if layers.maw:
        from maw.models.maw_encoder import inject_maw

        inject_maw(encoder, plan.maw, layers.maw)
    _freeze(encoder, layers)
    if layers.maw and plan.maw.router == "grpo":
        from maw.models.maw_encoder import refresh_reference

        refresh_reference(encoder)  # after freezing: the reference copy stays frozen
    if layers.maw and plan.maw.router_init:
        from maw.training.router_objectives import warm_start_routers

        warm_start_routers(encoder, plan.maw.router_init)  # policy only: the gate stays at 0
    return encoder


def count_parameters(encoder: nn.Module) -> dict[str, int]:
    """``{"total", "trainable"}`` parameter counts (shared tensors counted once)."""
    seen: set[int] = set()
    total = trainable = 0
    for p in encoder.parameters():
        if id(p) in seen:
            continue
        seen.add(id(p))
        total += p.numel()
        if p.requires_grad:
            trainable += p.numel()
    return {"total": total, "trainable": trainable}


def frozen_prefix_eval_mode(encoder: Encoder, plan: LayerPlan) -> None:
    """Put the model in training mode except the modules without any trainable parameter.

    Frozen modules (the embeddings and layers [0, k) in particular) run in eval mode: no dropout.
    The frozen-prefix cache stores their deterministic (eval-mode) output, so the uncached path
    must compute the same thing; frozen layers above ``k`` follow the same rule.
    """
    encoder.train()
    if not plan.train_embeddings:
        encoder.backbone.embeddings.eval()
    for layer in encoder.layers:
        if not any(p.requires_grad for p in layer.parameters()):
            layer.eval()
