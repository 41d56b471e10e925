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
           parameter of ``--finetune-layers`` (default: the MAW layers) plus all router parameters.
full       every parameter, the embeddings included.
=========  ===================================================================================

Layer lists are 1-indexed ("6", "5,6", "all", "last"); see ``maw.config.parse_layers``.

``first trainable index`` ``k`` (0-indexed): layers ``[0, k)`` and the embeddings hold no trainable
parameter, so their output can be computed once and cached (``maw.training.prefix_cache``). It is 0
when the embeddings or layer 1 train. LoRA adapters are injected with ``peft.inject_adapter_in_model``
into the backbone itself, so ``Encoder.layers`` stays the plain Hugging Face ``ModuleList``.
"""

from __future__ import annotations

import re
from dataclasses import asdict, dataclass

from torch import nn

from maw.config import TRAINED_METHODS, ConfigError, MAWConfig, ModelConfig, TrainConfig, parse_layers
from maw.models.encoder import Encoder

LORA_TARGETS = (
    "attention.self.query",
    "attention.self.key",
    "attention.self.value",
    "attention.output.dense",
)


@dataclass
class ModelPlan:
    """The resolved structure of a trainable model (everything a checkpoint must match)."""

    method: str
    num_layers: int
    trainable_layers: list[int]  # 1-indexed layers whose own weights train (finetune / maw / full)
    maw_layers: list[int]  # 1-indexed, maw only
    lora_layers: list[int]  # 1-indexed, lora only
    train_embeddings: bool
    first_trainable: int  # 0-indexed k: layers [0, k) and the embeddings are frozen

    @property
    def first_maw(self) -> int | None:
        """0-indexed index of the first MAW layer (GRPO / oracle samples start there)."""
        return self.maw_layers[0] - 1 if self.maw_layers else None

    def to_dict(self) -> dict:
        return asdict(self)


def resolve_plan(method: str, num_layers: int, maw_cfg: MAWConfig, train_cfg: TrainConfig) -> ModelPlan:
    """Which layers train / carry MAW / carry LoRA for ``method`` on an encoder with ``num_layers``."""
    if method not in TRAINED_METHODS:
        raise ConfigError(
            f"--method: {method!r} is not a trainable method; choose one of {', '.join(TRAINED_METHODS)}"
        )
    maw_layers: list[int] = []
    lora_layers: list[int] = []
    train_embeddings = False
    if method == "lora":
        lora_layers = parse_layers(train_cfg.lora_layers or "last", num_layers, "--lora-layers")
        if not lora_layers:
            raise ConfigError("--lora-layers: at least one layer is needed")
        trainable: list[int] = []
        first = lora_layers[0] - 1
    elif method == "finetune":
        trainable = parse_layers(train_cfg.finetune_layers or "last", num_layers, "--finetune-layers")
        if not trainable:
            raise ConfigError("--finetune-layers: at least one layer is needed")
        first = trainable[0] - 1
    elif method == "maw":
        maw_cfg.validate()
        maw_layers = parse_layers(maw_cfg.maw_layers or "last", num_layers, "--maw-layers")
        if not maw_layers:
            raise ConfigError("--maw-layers: at least one layer is needed")
        if train_cfg.finetune_layers:
            trainable = parse_layers(train_cfg.finetune_layers, num_layers, "--finetune-layers")
        else:
            trainable = list(maw_layers)
        first = min(trainable + maw_layers) - 1
    else:  # full
        trainable = list(range(1, num_layers + 1))
        train_embeddings = True
        first = 0
    return ModelPlan(
        method=method,
        num_layers=num_layers,
        trainable_layers=trainable,
        maw_layers=maw_layers,
        lora_layers=lora_layers,
        train_embeddings=train_embeddings,
        first_trainable=first,
    )


def _inject_lora(encoder: Encoder, layers: list[int], train_cfg: TrainConfig) -> None:
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


def _freeze(encoder: Encoder, plan: ModelPlan) -> None:
    for p in encoder.parameters():
        p.requires_grad_(False)
    if plan.train_embeddings:
        for p in encoder.backbone.embeddings.parameters():
            p.requires_grad_(True)
    for layer in plan.trainable_layers:
        for p in encoder.layers[layer - 1].parameters():
            p.requires_grad_(True)
    if plan.lora_layers:
        for name, p in encoder.named_parameters():
            if "lora_" in name:
                p.requires_grad_(True)
    if plan.maw_layers:
        for _, p in router_parameters(encoder):
            p.requires_grad_(True)


def build_model_with_plan(
    method: str, model_cfg: ModelConfig, maw_cfg: MAWConfig, train_cfg: TrainConfig
) -> tuple[Encoder, ModelPlan]:
    """Load the backbone, inject LoRA / MAW as ``method`` says, freeze all but the trainable parts."""
    encoder = Encoder.from_pretrained(
        model_cfg.model, num_layers=model_cfg.num_layers, normalize=model_cfg.normalize
    )
    plan = resolve_plan(method, encoder.num_layers, maw_cfg, train_cfg)
    if plan.lora_layers:
        _inject_lora(encoder, plan.lora_layers, train_cfg)
    if plan.maw_layers:
        from maw.models.maw_encoder import inject_maw

        inject_maw(encoder, maw_cfg)
    _freeze(encoder, plan)
    if plan.maw_layers and maw_cfg.router == "grpo":
        from maw.models.maw_encoder import refresh_reference

        refresh_reference(encoder)  # after freezing: the reference copy stays frozen
    return encoder, plan


def build_model(
    method: str, model_cfg: ModelConfig, maw_cfg: MAWConfig, train_cfg: TrainConfig
) -> tuple[Encoder, int]:
    """``(encoder, first_trainable_layer_index)``; see the module docstring for what trains."""
    encoder, plan = build_model_with_plan(method, model_cfg, maw_cfg, train_cfg)
    return encoder, plan.first_trainable


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


def frozen_prefix_eval_mode(encoder: Encoder, plan: ModelPlan) -> None:
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


def structure_config(
    plan: ModelPlan, model_cfg: ModelConfig, maw_cfg: MAWConfig, train_cfg: TrainConfig
) -> dict:
    """Everything that defines the model's structure (saved in every checkpoint's config.json)."""
    out = {
        "method": plan.method,
        "model": {
            "model": str(model_cfg.model),
            "num_layers": plan.num_layers,
            "normalize": model_cfg.normalize,
        },
        "plan": plan.to_dict(),
    }
    if plan.method == "maw":
        out["maw"] = asdict(maw_cfg)
        for key in ("tile_size", "implementation"):  # how it is computed, not what: may differ
            out["maw"].pop(key, None)
    if plan.method == "lora":
        out["lora"] = {
            "rank": train_cfg.lora_rank,
            "alpha": train_cfg.lora_alpha,
            "dropout": train_cfg.lora_dropout,
            "targets": list(LORA_TARGETS),
        }
    return out
