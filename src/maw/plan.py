"""The plan: the one validated description of what a command runs, resolved once at the door.

``resolve(method, configs)`` takes the frozen configs of :mod:`maw.config` (built from CLI flags,
a TOML file and presets by ``maw.cli`` / ``maw.benchmark.presets``) and returns a frozen
:class:`Plan`:

* the model settings resolved against the backbone's own configuration: its number of layers,
  and max lengths from its sentence-transformers configuration when the user gave none;
* for trained methods, the parsed layer lists (:class:`LayerPlan`: which layers train, carry MAW,
  carry LoRA) -- the only place ``--maw-layers`` / ``--finetune-layers`` / ``--lora-layers`` are
  parsed -- and, for maw, ``--depth-dim`` checked against the backbone's head size
  (:func:`resolve_maw`, which ``maw.inject_maw`` also calls for a model in memory);
* only the sections the method uses (``maw`` for maw, ``train`` for trained methods).

Everything below (``maw.training``, ``maw.evaluation``, ``maw.benchmark``, the MAW block) reads the
plan and never re-parses or re-validates it: ``LayerPlan`` carries the parsed lists (the config's
strings stay as the record of what was asked, compared on resume, and are never read again), and
the blocks assert what was checked here. Checkpoints store ``Plan.to_dict()``
(:func:`Plan.from_dict` reads it back), so a trained model is rebuilt from exactly the plan that
trained it.
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any

from maw.config import (
    METHODS,
    TRAINED_METHODS,
    ConfigError,
    DataConfig,
    EvalConfig,
    MAWConfig,
    ModelConfig,
    RuntimeConfig,
    TrainConfig,
    from_dict,
    parse_layers,
    structural,
    to_dict,
)

# Fallback max length when a model has no sentence-transformers configuration: BERT's position limit.
FALLBACK_MAX_LENGTH = 512


@dataclass(frozen=True)
class LayerPlan:
    """Which layers of an ``num_layers``-layer encoder train, carry MAW, carry LoRA (1-indexed)."""

    num_layers: int
    trainable: tuple[int, ...]  # layers whose own weights train (finetune / maw / full)
    maw: tuple[int, ...]  # maw only
    lora: tuple[int, ...]  # lora only
    train_embeddings: bool  # full only

    @property
    def first_trainable(self) -> int:
        """0-indexed k: the embeddings and layers [0, k) hold no trainable parameter (cacheable)."""
        if self.train_embeddings:
            return 0
        return min((*self.trainable, *self.maw, *self.lora)) - 1

    @property
    def first_maw(self) -> int | None:
        """0-indexed index of the first MAW layer (GRPO / oracle samples start there)."""
        return self.maw[0] - 1 if self.maw else None


@dataclass(frozen=True)
class Plan:
    """What one command (or one benchmark cell) runs. Built by :func:`resolve` only."""

    method: str
    data: DataConfig
    model: ModelConfig  # resolved: num_layers and max lengths are set
    eval: EvalConfig
    runtime: RuntimeConfig
    maw: MAWConfig | None = None  # method maw only
    train: TrainConfig | None = None  # trained methods only
    layers: LayerPlan | None = None  # trained methods only

    @property
    def trained(self) -> bool:
        return self.method in TRAINED_METHODS

    def to_dict(self) -> dict[str, Any]:
        from maw.config import default_model

        out = to_dict(self)
        # the default backbone's path differs between installs: from_dict resolves it again
        out["model"]["model_is_default"] = self.model.model == default_model()
        return out

    def structural(self) -> dict[str, Any]:
        """The plan without runtime-only fields: what a resumed run or a checkpoint must match."""
        return structural(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any], source: str = "plan") -> Plan:
        """Read back ``to_dict()`` (a checkpoint's ``plan``); errors name ``source``."""
        try:
            layers = d.get("layers")
            model = dict(d["model"])
            if model.get("model_is_default"):
                model["model"] = None  # the default backbone's path differs between installs
            model.pop("model_is_default", None)
            train = dict(d["train"]) if d.get("train") else None
            if train is not None and "precision" in train:  # plans saved before precision moved to model
                precision = train.pop("precision")
                model.setdefault("precision", "auto" if precision == "fp32" else precision)
            return cls(
                method=d["method"],
                data=from_dict(DataConfig, d["data"], f"{source}: data"),
                model=from_dict(ModelConfig, model, f"{source}: model"),
                eval=from_dict(EvalConfig, d["eval"], f"{source}: eval"),
                runtime=from_dict(RuntimeConfig, d.get("runtime", {}), f"{source}: runtime"),
                maw=from_dict(MAWConfig, d["maw"], f"{source}: maw") if d.get("maw") else None,
                train=from_dict(TrainConfig, train, f"{source}: train") if train else None,
                layers=LayerPlan(**{k: tuple(v) if isinstance(v, list) else v for k, v in layers.items()})
                if layers
                else None,
            )
        except (KeyError, TypeError) as exc:
            raise ConfigError(f"{source}: not a maw plan ({type(exc).__name__}: {exc})") from None

    def with_runtime(self, **changes: Any) -> Plan:
        """The same plan with other runtime-only settings (device, progress, ...)."""
        return dataclasses.replace(self, runtime=dataclasses.replace(self.runtime, **changes))


# ---------------------------------------------------------------------------------------------- the model
@lru_cache(maxsize=32)
def _backbone_facts(model: str) -> tuple[int, int, int]:
    """(number of layers, max sequence length (see :func:`model_max_length`), head size) of a backbone."""
    from transformers import AutoConfig

    try:
        config = AutoConfig.from_pretrained(model)
    except (OSError, ValueError) as exc:
        raise ConfigError(f"--model: cannot load {model!r}: {exc}") from None
    num_layers = int(config.num_hidden_layers)
    head_size = int(config.hidden_size) // int(config.num_attention_heads)
    st_max = None
    path = Path(model)
    st_file = path / "sentence_bert_config.json" if path.is_dir() else None
    if st_file is None:
        try:  # a hub id: the file is in the local cache when the model was downloaded with it
            from huggingface_hub import hf_hub_download

            st_file = Path(hf_hub_download(model, "sentence_bert_config.json"))
        except Exception:  # no such file for this model (a plain transformers model), or offline
            st_file = None
    if st_file is not None and st_file.is_file():
        try:
            st_max = json.loads(st_file.read_text(encoding="utf-8")).get("max_seq_length")
        except json.JSONDecodeError as exc:
            raise ConfigError(f"{st_file}: not valid JSON ({exc})") from None
    if st_max is None:
        st_max = min(
            int(getattr(config, "max_position_embeddings", FALLBACK_MAX_LENGTH)), FALLBACK_MAX_LENGTH
        )
    return num_layers, int(st_max), head_size


def model_max_length(model: str) -> int:
    """The max sequence length sentence-transformers uses for ``model``: ``max_seq_length`` of its
    ``sentence_bert_config.json`` (256 for all-MiniLM-L6-v2), else the position limit (<= 512)."""
    return _backbone_facts(model)[1]


def resolve_model(model: ModelConfig) -> ModelConfig:
    """``model`` with ``num_layers`` and both max lengths set from the backbone where not given."""
    total, max_len, _ = _backbone_facts(model.model)
    if model.num_layers is not None and model.num_layers > total:
        raise ConfigError(f"--num-layers: {model.num_layers} > the {total} layers of {model.model}")
    return dataclasses.replace(
        model,
        num_layers=model.num_layers or total,
        query_max_length=model.query_max_length or max_len,
        doc_max_length=model.doc_max_length or max_len,
    )


# ---------------------------------------------------------------------------------------------- layers
def _some_layers(spec: str | None, num_layers: int, option: str) -> tuple[int, ...]:
    layers = tuple(parse_layers(spec, num_layers, option))
    if not layers:
        raise ConfigError(f"{option}: at least one layer is needed")
    return layers


def resolve_maw(maw: MAWConfig, num_layers: int, head_size: int, model: str) -> tuple[int, ...]:
    """The MAW options that need the model, parsed and checked once: ``--maw-layers`` against its
    ``num_layers`` layers (returned, 1-indexed) and ``--depth-dim`` against its head size. Called by
    :func:`resolve` for a plan and by ``maw.inject_maw`` for a model in memory; below them the MAW
    block only asserts."""
    if head_size % maw.depth_dim:
        raise ConfigError(
            f"--depth-dim: D={maw.depth_dim} must divide the head size d_h={head_size} of "
            f"{model} (choose a divisor of {head_size})"
        )
    return _some_layers(maw.maw_layers or "last", num_layers, "--maw-layers")


def resolve_layers(
    method: str, num_layers: int, maw_layers: tuple[int, ...], train: TrainConfig
) -> LayerPlan:
    """Which layers train / carry MAW (``maw_layers``, from :func:`resolve_maw`) / carry LoRA for
    ``method`` (see ``maw.training.methods``)."""
    lora_layers: tuple[int, ...] = ()
    trainable: tuple[int, ...] = ()
    if method == "lora":
        lora_layers = _some_layers(train.lora_layers or "last", num_layers, "--lora-layers")
    elif method == "finetune":
        trainable = _some_layers(train.finetune_layers or "last", num_layers, "--finetune-layers")
    elif method == "maw":  # MAW blocks, plus full layers (default: the MAW layers) and/or LoRA adapters
        if train.finetune_layers is None:
            trainable = maw_layers
        else:
            trainable = tuple(parse_layers(train.finetune_layers, num_layers, "--finetune-layers"))
        if train.lora_layers:
            lora_layers = _some_layers(train.lora_layers, num_layers, "--lora-layers")
    elif method == "full":
        trainable = tuple(range(1, num_layers + 1))
    else:
        raise ConfigError(
            f"--method: {method!r} is not trainable; choose one of {', '.join(TRAINED_METHODS)}"
        )
    return LayerPlan(num_layers, trainable, maw_layers, lora_layers, train_embeddings=method == "full")


# ---------------------------------------------------------------------------------------------- resolve
def resolve(
    method: str,
    data: DataConfig | None = None,
    model: ModelConfig | None = None,
    maw: MAWConfig | None = None,
    train: TrainConfig | None = None,
    eval: EvalConfig | None = None,
    runtime: RuntimeConfig | None = None,
) -> Plan:
    """The plan of ``method`` from (validated, frozen) configs; see the module docstring."""
    if method not in METHODS:
        raise ConfigError(f"--method: unknown method {method!r}; choose one of {', '.join(METHODS)}")
    data = data or DataConfig()
    eval = eval or EvalConfig()
    runtime = runtime or RuntimeConfig()
    if method == "bm25":
        return Plan(method, data, model or ModelConfig(), eval, runtime)
    model = resolve_model(model or ModelConfig())
    if method == "zeroshot":
        return Plan(method, data, model, eval, runtime)
    train = train or TrainConfig()
    maw = (maw or MAWConfig()) if method == "maw" else None
    maw_layers: tuple[int, ...] = ()
    if maw is not None:  # checked here, before anything runs or is written
        maw_layers = resolve_maw(maw, model.num_layers, _backbone_facts(model.model)[2], model.model)
    layers = resolve_layers(method, model.num_layers, maw_layers, train)
    return Plan(method, data, model, eval, runtime, maw=maw, train=train, layers=layers)
