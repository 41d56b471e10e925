"""Put MAW blocks into an :class:`~maw.models.encoder.Encoder`, control them, save and load them.

``inject_maw(encoder, cfg)`` replaces ``layer.attention.self`` of the layers in ``cfg.maw_layers``
(1-indexed: "6", "5,6", "all", "last") with :class:`~maw.attention.maw.MAWSelfAttention` blocks that
inherit the pretrained query/key/value weights; everything else in the layer is untouched.

Controls used by the trainer (all act on every MAW module of the encoder):

* ``force_depth(encoder, d)``: context manager; every routing unit takes depth ``d`` (0-indexed,
  one-hot, scaled by D) -- used for the supervised router's oracle labels. ``None`` = no forcing.
* ``shared_inputs(encoder)``: context manager; repeated inputs (the same tensor) of the first MAW
  module reuse its Q/K/V projections and router states -- used for the G samples of a GRPO group.
* ``refresh_reference(encoder)``: (re)create each module's frozen reference router for the KL term.
* ``set_gumbel_tau(encoder, tau)``: temperature of the Gumbel-softmax router.
* ``depth_statistics`` / ``reset_depth_statistics``: depth histogram per layer and head.
* after each training forward, ``module.last_record`` (:class:`~maw.attention.maw.RoutingRecord`)
  for grpo / supervised routers; ``routing_records(encoder)`` lists them in layer order.

Checkpoints (``save_maw_encoder`` / ``load_maw_encoder``): a folder with ``model.safetensors``
(full ``state_dict``) and ``maw_config.json`` (format version, base model, ``num_layers``, MAW
config). Loading rebuilds the encoder from the base model and the config, injects MAW, and loads
the weights strictly; a checkpoint whose config differs from what the caller expects raises a
:class:`~maw.config.ConfigError` listing the differing fields.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import torch

from maw.attention.maw import MAWSelfAttention, RoutingRecord
from maw.config import ConfigError, MAWConfig, ModelConfig, default_model, parse_layers
from maw.models.encoder import Encoder
from maw.utils.io import atomic_path, atomic_write_json, read_json

FORMAT_VERSION = 1
WEIGHTS_FILE = "model.safetensors"
CONFIG_FILE = "maw_config.json"


def inject_maw(encoder: Encoder, cfg: MAWConfig) -> list[MAWSelfAttention]:
    """Replace ``attention.self`` in the layers of ``cfg.maw_layers`` (1-indexed) in place.

    Returns the new modules in layer order. Raises ConfigError (naming the option) for a bad
    config, a layer out of range, or a depth that does not divide the head size.
    """
    cfg.validate()
    layers = parse_layers(cfg.maw_layers, encoder.num_layers, "--maw-layers")
    if not layers:
        raise ConfigError("--maw-layers: no layer selected")
    modules = []
    for number in layers:
        attention = encoder.layers[number - 1].attention
        old = attention.self
        if isinstance(old, MAWSelfAttention):
            raise ConfigError(f"--maw-layers: layer {number} already has MAW attention")
        for name in ("query", "key", "value", "num_attention_heads", "attention_head_size"):
            if not hasattr(old, name):
                raise ConfigError(
                    f"--model: layer {number}'s attention.self ({type(old).__name__}) is not BERT-like (no {name!r})"
                )
        new = MAWSelfAttention.from_bert(old, dataclasses.replace(cfg), layer_number=number)
        new.to(device=old.query.weight.device, dtype=old.query.weight.dtype)
        new.train(old.training)
        attention.self = new
        modules.append(new)
    return modules


def maw_modules(encoder: torch.nn.Module) -> list[MAWSelfAttention]:
    """All MAW blocks of the encoder, in layer order."""
    return [m for m in encoder.modules() if isinstance(m, MAWSelfAttention)]


def router_parameters(encoder: torch.nn.Module) -> list[torch.nn.Parameter]:
    """The router parameters of every MAW block (always trainable)."""
    return [p for m in maw_modules(encoder) for p in m.router.parameters()]


def routing_records(encoder: torch.nn.Module) -> list[RoutingRecord | None]:
    """``last_record`` of each MAW block, in layer order."""
    return [m.last_record for m in maw_modules(encoder)]


@contextmanager
def force_depth(encoder: torch.nn.Module, depth: int | None) -> Iterator[None]:
    """Within the block every routing unit of every MAW module takes depth ``depth`` (0-indexed)."""
    modules = maw_modules(encoder)
    if depth is not None:
        for m in modules:
            if not 0 <= depth < m.depth:
                raise ValueError(
                    f"force_depth: depth {depth} out of range 0..{m.depth - 1} (layer {m.layer_number})"
                )
    previous = [m.forced_depth for m in modules]
    for m in modules:
        m.forced_depth = depth
    try:
        yield
    finally:
        for m, p in zip(modules, previous, strict=True):
            m.forced_depth = p


@contextmanager
def shared_inputs(encoder: torch.nn.Module) -> Iterator[None]:
    """Within the block, the first MAW module reuses its Q/K/V projections and router states for
    repeated inputs (the same tensor objects), e.g. the G samples of a GRPO group, which all start
    from one shared input (:meth:`MAWSelfAttention.share_inputs`). Later MAW modules are left alone:
    their inputs depend on the routing sampled below them, so they never repeat. Do not step the
    optimiser inside."""
    modules = maw_modules(encoder)[:1]
    for m in modules:
        m.share_inputs(True)
    try:
        yield
    finally:
        for m in modules:
            m.share_inputs(False)


def refresh_reference(encoder: torch.nn.Module) -> None:
    """(Re)create each module's frozen reference router (a copy, ``requires_grad=False``).

    The reference is kept as non-persistent buffers: it moves with ``.to()`` but is not in
    ``state_dict()`` nor ``parameters()``. Use :func:`reference_state` / :func:`load_reference_state`
    to checkpoint it for an exact resume.
    """
    for m in maw_modules(encoder):
        m.refresh_reference()


def reference_state(encoder: torch.nn.Module) -> dict[str, torch.Tensor]:
    """Tensors of the reference routers (empty when none), keyed ``layer<N>.<name>``."""
    out = {}
    for m in maw_modules(encoder):
        if m.reference is not None:
            for name, t in m.reference.named_buffers():
                out[f"layer{m.layer_number}.{name}"] = t.detach().clone()
    return out


def load_reference_state(encoder: torch.nn.Module, state: dict[str, torch.Tensor]) -> None:
    """Restore reference routers saved by :func:`reference_state` (no-op for an empty dict)."""
    if not state:
        return
    for m in maw_modules(encoder):
        m.refresh_reference()
        for name, buf in m.reference.named_buffers():
            key = f"layer{m.layer_number}.{name}"
            if key not in state:
                raise ValueError(f"reference state: missing {key!r}")
            buf.copy_(state[key])


def set_gumbel_tau(encoder: torch.nn.Module, tau: float) -> None:
    if tau <= 0:
        raise ValueError(f"gumbel tau must be > 0, got {tau}")
    for m in maw_modules(encoder):
        m.gumbel_tau = float(tau)


def set_track_statistics(encoder: torch.nn.Module, enabled: bool) -> None:
    """Switch depth-statistics accumulation on or off (on by default)."""
    for m in maw_modules(encoder):
        m.track_statistics = bool(enabled)


def reset_depth_statistics(encoder: torch.nn.Module) -> None:
    for m in maw_modules(encoder):
        m.reset_statistics()


def depth_statistics(encoder: torch.nn.Module) -> dict[int, dict]:
    """``{layer_number: {"counts": [[D ints] x H], "entropy": [H floats], "units": int}}``.

    Accumulated over forwards since the last reset: per head, how many valid routing units took
    each depth (argmax for soft and eval, the sample for gumbel/grpo in training, the forced depth
    under ``force_depth``); the mean entropy (nats) of the router distribution per unit; and the
    number of valid units per head (each head's counts sum to it).
    """
    return {m.layer_number: m.statistics() for m in maw_modules(encoder)}


# ---------------------------------------------------------------------------------------------- save / load
def _cfg_dict(cfg: MAWConfig) -> dict:
    return dataclasses.asdict(cfg)


def save_maw_encoder(encoder: Encoder, path: str | Path, model_cfg: ModelConfig, maw_cfg: MAWConfig) -> Path:
    """Write ``path/model.safetensors`` (full state_dict) and ``path/maw_config.json`` atomically."""
    from safetensors.torch import save_file

    path = Path(path)
    path.mkdir(parents=True, exist_ok=True)
    state = {k: v.detach().contiguous().cpu() for k, v in encoder.state_dict().items()}
    # tied / shared tensors would make safetensors refuse; clone to be safe
    state = {k: v.clone() for k, v in state.items()}
    with atomic_path(path / WEIGHTS_FILE) as tmp:
        save_file(state, str(tmp), metadata={"format": "pt", "maw_format_version": str(FORMAT_VERSION)})
    meta = {
        "format_version": FORMAT_VERSION,
        "model": str(model_cfg.model),
        # the default backbone's path differs between installs; resolve it again when loading
        "model_is_default": str(model_cfg.model) == default_model(),
        "num_layers": model_cfg.num_layers,
        "normalize": model_cfg.normalize,
        "query_max_length": model_cfg.query_max_length,
        "doc_max_length": model_cfg.doc_max_length,
        "maw": _cfg_dict(maw_cfg),
    }
    atomic_write_json(path / CONFIG_FILE, meta)
    return path


def read_maw_config(path: str | Path) -> tuple[ModelConfig, MAWConfig]:
    """The model and MAW configs stored in a checkpoint folder (clear errors for bad files)."""
    path = Path(path)
    cfg_file = path / CONFIG_FILE
    if not cfg_file.is_file():
        raise FileNotFoundError(f"{cfg_file}: not a MAW checkpoint (missing {CONFIG_FILE})")
    meta = read_json(cfg_file)
    version = meta.get("format_version")
    if version != FORMAT_VERSION:
        raise ConfigError(
            f"{cfg_file}: format_version {version!r} is not supported (expected {FORMAT_VERSION})"
        )
    known = {f.name for f in dataclasses.fields(MAWConfig)}
    unknown = sorted(set(meta["maw"]) - known)
    if unknown:
        raise ConfigError(f"{cfg_file}: unknown MAW option(s) {unknown}")
    maw_cfg = MAWConfig(**meta["maw"])
    model_cfg = ModelConfig(
        model=default_model() if meta.get("model_is_default") else meta["model"],
        num_layers=meta.get("num_layers"),
        normalize=meta.get("normalize", True),
        query_max_length=meta.get("query_max_length", 64),
        doc_max_length=meta.get("doc_max_length", 256),
    )
    return model_cfg, maw_cfg


def config_differences(expected: MAWConfig, found: MAWConfig) -> list[str]:
    """Human-readable ``field: expected X, checkpoint has Y`` lines for fields that differ."""
    a, b = _cfg_dict(expected), _cfg_dict(found)
    return [f"{k}: expected {a[k]!r}, checkpoint has {b[k]!r}" for k in a if a[k] != b.get(k)]


# fields that do not change the structure or weights' meaning (checked only when the caller asks)
_RUNTIME_FIELDS = ("tile_size", "tile_elements", "implementation")


def load_maw_encoder(
    path: str | Path,
    expected: MAWConfig | None = None,
    model: str | None = None,
    device: str | torch.device | None = None,
) -> tuple[Encoder, MAWConfig]:
    """Rebuild the encoder from the checkpoint's base model + config and load the weights strictly.

    ``expected``: when given, every structural MAW field (all but tile_size/implementation) must
    match, else ConfigError listing the differences. ``model``: override the base model path (the
    weights are loaded anyway; the base model provides the architecture and tokenizer).
    """
    from safetensors.torch import load_file

    path = Path(path)
    model_cfg, maw_cfg = read_maw_config(path)
    if expected is not None:
        diffs = [d for d in config_differences(expected, maw_cfg) if d.split(":")[0] not in _RUNTIME_FIELDS]
        if diffs:
            raise ConfigError(
                f"{path}: checkpoint MAW config differs from the requested one: " + "; ".join(diffs)
            )
    weights = path / WEIGHTS_FILE
    if not weights.is_file():
        raise FileNotFoundError(f"{weights}: missing weights file")
    encoder = Encoder.from_pretrained(
        model or model_cfg.model, num_layers=model_cfg.num_layers, normalize=model_cfg.normalize
    )
    inject_maw(encoder, maw_cfg)
    state = load_file(str(weights))
    load_state_strict(encoder, state, str(weights))
    if device is not None:
        encoder.to(device)
    return encoder, maw_cfg


def load_state_strict(encoder: torch.nn.Module, state: dict[str, torch.Tensor], source: str) -> None:
    """``load_state_dict(strict=True)`` with an error that lists missing / unexpected / mis-shaped keys."""
    own = encoder.state_dict()
    missing = sorted(set(own) - set(state))
    unexpected = sorted(set(state) - set(own))
    shapes = sorted(
        f"{k}: model {tuple(own[k].shape)} vs file {tuple(state[k].shape)}"
        for k in set(own) & set(state)
        if own[k].shape != state[k].shape
    )
    if missing or unexpected or shapes:
        parts = []
        if missing:
            parts.append(f"missing keys {missing[:8]}{' ...' if len(missing) > 8 else ''}")
        if unexpected:
            parts.append(f"unexpected keys {unexpected[:8]}{' ...' if len(unexpected) > 8 else ''}")
        if shapes:
            parts.append(f"shape mismatches {shapes[:8]}")
        raise ConfigError(
            f"{source}: weights do not match the model built from its config: " + "; ".join(parts)
        )
    encoder.load_state_dict(state, strict=True)
