"""The trainable methods and what each one trains.

=========  ===================================================================================
method     trainable parameters
=========  ===================================================================================
lora       PEFT LoRA adapters (rank ``lora_rank``, alpha ``lora_alpha``, dropout ``lora_dropout``)
           on the attention's query, key, value and output projections of ``--lora-layers``
           (default the last layer): ``attention.self.{query,key,value}`` and
           ``attention.output.dense`` in BERT, the family's own names elsewhere
           (``Family.lora_targets``, :mod:`maw.models.families`); everything else frozen.
finetune   every parameter of ``--finetune-layers`` (default the last layer): the
           capacity-matched baseline of ``maw``.
maw        MAW self-attention in ``--maw-layers`` (``maw.models.maw_encoder.inject_maw``); every
           parameter of ``--finetune-layers`` (default: the MAW layers; ``all`` = MAW on top of a
           full fine-tune; ``none``) plus all router parameters; with ``--lora-layers``, LoRA
           adapters there too (MAW + LoRA: e.g. ``--finetune-layers none --lora-layers all``).
full       every parameter, the embeddings (and MPNet's relative position bias table) included.
=========  ===================================================================================

Layer lists are 1-indexed ("6", "5,6", "all", "last"); they are parsed once, into the plan's
:class:`~maw.plan.LayerPlan`, by ``maw.plan.resolve``.

``first trainable index`` ``k`` (0-indexed): layers ``[0, k)`` and the embeddings hold no trainable
parameter, so their output can be computed once and cached (``maw.training.prefix_cache``). It is 0
when the embeddings or layer 1 train. LoRA adapters are injected with ``peft.inject_adapter_in_model``
into the backbone itself, so ``Encoder.layers`` stays the plain Hugging Face ``ModuleList``.

:func:`build_model` builds the model of a plan (a fresh run's, and the one every checkpoint loads
into: :func:`load_trained_encoder`); :func:`warm_start` (``--router-init``) is applied by a fresh
training run only, so loading or resuming a run never opens the run it was warm-started from.

Module names come from the encoder's family (``encoder.family``): where its layers are, its LoRA
targets, and its input modules (what feeds every layer from outside the stack: the embeddings, and
MPNet's position bias table), which train and leave eval mode only with the embeddings.
"""

from __future__ import annotations

import re
from pathlib import Path

import torch
from torch import nn

from maw.config import ConfigError, TrainConfig
from maw.models.encoder import Encoder
from maw.models.maw_encoder import inject_maw, maw_modules, refresh_reference, router_parameters
from maw.plan import LayerPlan, Plan
from maw.training.checkpoint import (
    CONFIG_FILE,
    MODEL_FILE,
    CheckpointError,
    checkpoint_folder,
    load_weights,
    read_config,
)

__all__ = [
    "build_model",
    "count_parameters",
    "frozen_prefix_eval_mode",
    "load_trained_encoder",
    "router_parameters",
    "warm_start",
]


def _inject_lora(encoder: Encoder, layers: tuple[int, ...], train_cfg: TrainConfig) -> None:
    from peft import LoraConfig, inject_adapter_in_model

    family = encoder.family
    idx = "|".join(str(i - 1) for i in layers)
    targets = "|".join(re.escape(t) for t in family.lora_targets)
    config = LoraConfig(
        r=train_cfg.lora_rank,
        lora_alpha=train_cfg.lora_alpha,
        lora_dropout=train_cfg.lora_dropout,
        target_modules=rf"{re.escape(family.layers)}\.({idx})\.({targets})",
        bias="none",
    )
    inject_adapter_in_model(config, encoder.backbone)


def _freeze(encoder: Encoder, plan: LayerPlan) -> None:
    for p in encoder.parameters():
        p.requires_grad_(False)
    if plan.train_embeddings:
        for _, module in encoder.family.input_modules(encoder.backbone):
            for p in module.parameters():
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
    """Load the backbone, inject LoRA / MAW as the plan says, freeze all but the trainable parts.

    The model every trained checkpoint of ``plan`` is loaded into (:func:`load_trained_encoder`,
    a resumed run). ``--router-init`` is not applied here: a fresh run does that (:func:`warm_start`).
    """
    encoder = Encoder.from_pretrained(
        plan.model.model, num_layers=plan.model.num_layers, normalize=plan.model.normalize
    )
    layers = plan.layers
    if layers.lora:
        _inject_lora(encoder, layers.lora, plan.train)
    if layers.maw:
        inject_maw(encoder, plan.maw, layers.maw)
    _freeze(encoder, layers)
    if layers.maw and plan.maw.router == "grpo":
        refresh_reference(encoder)  # after freezing: the reference copy stays frozen
    return encoder


def warm_start(encoder: Encoder, plan: Plan) -> list[int]:
    """``--router-init RUN``: what a fresh training run does to :func:`build_model`'s model before its
    first step (never a resumed run, never a loaded checkpoint: their routers are the checkpoint's).

    Copies the policy network (not the gate) of every MAW layer's router from the ``maw train``
    checkpoint ``RUN`` (``RUN``, ``RUN/best`` or ``RUN/latest``) and refreshes GRPO's reference to
    it. A soft source's last layer is divided by its ``tau``, so the hard policy ``softmax(z)`` is
    the soft router's distribution ``softmax(z / tau)``; the gate stays at 0, so the model is still
    the pretrained one. The source must have MAW on the same layers with the same router network
    (D, granularity, ``router_hidden``); a ``signed`` soft router is refused (its logits are not a
    softmax policy). Returns the layers warm-started ([] without ``--router-init``). Errors
    (ConfigError) name ``--router-init``.
    """
    if plan.maw is None or not plan.maw.router_init:
        return []
    from safetensors.torch import load_file

    try:
        folder = checkpoint_folder(plan.maw.router_init)
        source = read_config(folder)["plan"].get("maw") or {}
    except CheckpointError as exc:
        raise ConfigError(f"--router-init: {exc}") from None
    if source.get("parametrisation") == "signed":
        raise ConfigError(f"--router-init: {folder} has a signed soft router (not a softmax policy)")
    tau = float(source.get("tau", 1.0)) if source.get("router") == "soft" else 1.0
    tensors = load_file(str(folder / MODEL_FILE))
    names = {id(m): n for n, m in encoder.named_modules()}
    done = []
    for m in maw_modules(encoder):
        prefix = names[id(m.router)]
        with torch.no_grad():
            for name, p in m.router.named_parameters():
                if name == "gate":
                    continue
                key = f"{prefix}.{name}"
                t = tensors.get(key)
                if t is None or t.shape != p.shape:
                    got = "missing" if t is None else f"shape {tuple(t.shape)}"
                    raise ConfigError(
                        f"--router-init: {folder / MODEL_FILE}: {key} is {got}, this model needs "
                        f"{tuple(p.shape)} (same --maw-layers, --depth-dim, --granularity, --router-hidden)"
                    )
                last = name in ("weight", "bias")  # the logits' layer: soft z / tau -> hard z
                p.copy_(t.to(p) / tau if last else t.to(p))
        if m.reference is not None:
            m.refresh_reference()
        done.append(m.layer_number)
    return done


def load_trained_encoder(path: str | Path, device: str | None = None):
    """Rebuild the model of a checkpoint (``RUN/best``, ``RUN/latest``, or ``RUN`` meaning its best) from
    the plan it stores and load its weights. Returns ``(encoder in eval mode, plan, config.json)``.

    Reads nothing but the checkpoint: the plan's ``--router-init`` run is not opened (its routers
    are in the weights), so a model loads after that run has moved."""
    folder = checkpoint_folder(path)
    saved = read_config(folder)
    plan = Plan.from_dict(saved["plan"], source=str(folder / CONFIG_FILE))
    encoder = build_model(plan)
    load_weights(folder, encoder)
    encoder.eval()
    if device is not None:
        encoder.to(device)
    return encoder, plan, saved


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
        for _, module in encoder.family.input_modules(encoder.backbone):
            module.eval()
    for layer in encoder.layers:
        if not any(p.requires_grad for p in layer.parameters()):
            layer.eval()
