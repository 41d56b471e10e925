"""Put MAW blocks into an :class:`~maw.models.encoder.Encoder` and control them.

``inject_maw(encoder, cfg, layers)`` replaces the attention module of ``layers`` (1-indexed, parsed
from ``--maw-layers`` once, by ``maw.plan.resolve_maw``) with :class:`~maw.attention.maw.MAWSelfAttention` blocks that
inherit the pretrained query/key/value weights; everything else in the layer is untouched. Which
module that is, and how the block gets the output projection and position bias, is the encoder's
family's (:mod:`maw.models.families`): ``attention.self`` for BERT-like models, MPNet's
``attention.attn`` and DistilBERT's ``attention`` (both wrapped with their own output projection).

Controls used by the trainer. All MAW blocks of an encoder share one
:class:`~maw.attention.maw.MAWRuntime` (made by ``inject_maw``; ``maw_runtime(encoder)``) and each
reports through its :class:`~maw.attention.maw.MAWReport`; these functions are the API over both:

* ``force_depth(encoder, d)``: context manager; every routing unit's choice is depth ``d``
  (0-indexed; convex: one-hot scaled by D) -- used for the supervised router's oracle labels.
  ``None`` = no forcing.
* ``shared_inputs(encoder)``: context manager; repeated inputs (the same tensor) of the first MAW
  module reuse its Q/K/V projections and router states -- used for the G samples of a GRPO group.
* ``refresh_reference(encoder)``: (re)create each module's frozen reference router for the KL term;
  ``reference_state`` / ``load_reference_state`` checkpoint it.
* ``set_gumbel_tau(encoder, tau)``: temperature of the Gumbel-softmax router
  (``maw_runtime(encoder).gumbel_tau`` reads it).
* ``depth_statistics`` / ``reset_depth_statistics``: depth histogram per layer and head;
  ``set_track_statistics`` / ``statistics_paused`` switch the accumulation off.
* ``routing_records(encoder)``: the :class:`~maw.attention.maw.RoutingRecord` of each block's last
  training forward (grpo / supervised routers), in layer order.

A MAW model is saved and loaded like every trained model, in the checkpoint format of
``maw train`` (``maw.training.checkpoint.save_checkpoint``, ``maw.training.methods.load_trained_encoder``).
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import torch

from maw.attention.maw import MAWRuntime, MAWSelfAttention, RoutingRecord
from maw.config import ConfigError, MAWConfig
from maw.models.encoder import Encoder


def inject_maw(encoder: Encoder, cfg: MAWConfig, layers: tuple[int, ...]) -> list[MAWSelfAttention]:
    """Replace the attention module in ``layers`` in place; returns the new MAW blocks in layer order.

    ``layers`` (1-indexed) and ``cfg.depth_dim`` come checked against this encoder
    (``maw.plan.resolve_maw``: the plan's ``LayerPlan.maw``, or ``maw.inject_maw``'s own call);
    ``cfg.maw_layers`` is not read. Raises ConfigError (naming the option) for a layer that is
    already MAW or an attention module without the family's q/k/v.
    """
    assert layers and all(1 <= n <= encoder.num_layers for n in layers), (layers, encoder.num_layers)
    existing = maw_modules(encoder)  # a second injection joins the encoder's runtime
    runtime = existing[0].runtime if existing else MAWRuntime(gumbel_tau=float(cfg.gumbel_tau_start))
    family = encoder.family
    modules = []
    for number in layers:
        layer = encoder.layers[number - 1]
        old = family.attention_of(layer)
        if maw_modules(old):
            raise ConfigError(f"--maw-layers: layer {number} already has MAW attention")
        new = family.maw_attention(old, cfg, number, runtime)
        weight = next(old.parameters())
        new.to(device=weight.device, dtype=weight.dtype)
        new.train(old.training)
        family.set_attention(layer, new)
        modules += maw_modules(new)
    return modules


def maw_modules(encoder: torch.nn.Module) -> list[MAWSelfAttention]:
    """All MAW blocks of the encoder, in layer order."""
    return [m for m in encoder.modules() if isinstance(m, MAWSelfAttention)]


def router_parameters(encoder: torch.nn.Module) -> list[tuple[str, torch.nn.Parameter]]:
    """``(name, parameter)`` of every MAW block's router, as ``named_parameters`` names them (the
    frozen reference copies are buffers, not parameters)."""
    names = {id(m): n for n, m in encoder.named_modules()}
    return [
        (f"{names[id(m.router)]}.{n}", p)
        for m in maw_modules(encoder)
        for n, p in m.router.named_parameters()
    ]


def maw_runtime(encoder: torch.nn.Module) -> MAWRuntime:
    """The per-forward controls shared by the encoder's MAW blocks (see :class:`MAWRuntime`)."""
    modules = maw_modules(encoder)
    if not modules:
        raise ValueError("maw_runtime: the encoder has no MAW block (inject_maw first)")
    return modules[0].runtime


def _runtimes(encoder: torch.nn.Module) -> list[MAWRuntime]:
    """The distinct runtimes of the encoder's blocks (one after inject_maw; none without MAW)."""
    out: list[MAWRuntime] = []
    for m in maw_modules(encoder):
        if not any(m.runtime is r for r in out):
            out.append(m.runtime)
    return out


def routing_records(encoder: torch.nn.Module) -> list[RoutingRecord | None]:
    """The routing record of each MAW block's last training forward (grpo / supervised; else
    None), in layer order."""
    return [m.report.record for m in maw_modules(encoder)]


@contextmanager
def force_depth(encoder: torch.nn.Module, depth: int | None) -> Iterator[None]:
    """Within the block every routing unit of every MAW module chooses depth ``depth`` (0-indexed)."""
    if depth is not None:
        for m in maw_modules(encoder):
            if not 0 <= depth < m.depth:
                raise ValueError(
                    f"force_depth: depth {depth} out of range 0..{m.depth - 1} (layer {m.layer_number})"
                )
    runtimes = _runtimes(encoder)
    previous = [rt.forced_depth for rt in runtimes]
    for rt in runtimes:
        rt.forced_depth = depth
    try:
        yield
    finally:
        for rt, p in zip(runtimes, previous, strict=True):
            rt.forced_depth = p


@contextmanager
def shared_inputs(encoder: torch.nn.Module) -> Iterator[None]:
    """Within the block, the first MAW module reuses its Q/K/V projections and router states for
    repeated inputs (the same tensor objects), e.g. the G samples of a GRPO group, which all start
    from one shared input. Later MAW modules are left alone: their inputs depend on the routing
    sampled below them, so they never repeat. Exact (the projections are deterministic). Do not
    step the optimiser inside; leaving the block releases the memo."""
    modules = maw_modules(encoder)[:1]
    for m in modules:
        m.runtime.share_layer, m.runtime._memo.value = m.layer_number, []
    try:
        yield
    finally:
        for m in modules:
            m.runtime.share_layer, m.runtime._memo.value = None, None


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
    """Temperature of the Gumbel-softmax router (every MAW block of the encoder)."""
    if tau <= 0:
        raise ValueError(f"gumbel tau must be > 0, got {tau}")
    for rt in _runtimes(encoder):
        rt.gumbel_tau = float(tau)


def set_track_statistics(encoder: torch.nn.Module, enabled: bool) -> None:
    """Switch depth-statistics accumulation on or off (on by default)."""
    for rt in _runtimes(encoder):
        rt.track_statistics = bool(enabled)


@contextmanager
def statistics_paused(encoder: torch.nn.Module) -> Iterator[None]:
    """Within the block no depth statistics accumulate (e.g. the supervised router's forced passes)."""
    runtimes = _runtimes(encoder)
    previous = [rt.track_statistics for rt in runtimes]
    for rt in runtimes:
        rt.track_statistics = False
    try:
        yield
    finally:
        for rt, p in zip(runtimes, previous, strict=True):
            rt.track_statistics = p


def reset_depth_statistics(encoder: torch.nn.Module) -> None:
    for m in maw_modules(encoder):
        m.report.reset()


def depth_statistics(encoder: torch.nn.Module) -> dict[int, dict]:
    """``{layer_number: {"counts": [[D ints] x H], "entropy": [H floats], "units": int}}``.

    Accumulated over forwards since the last reset: per head, how many valid routing units took
    each depth (argmax for soft and eval, the sample for gumbel/grpo in training, the forced depth
    under ``force_depth``); the mean entropy (nats) of the router distribution per unit; and the
    number of valid units per head (each head's counts sum to it).
    """
    return {m.layer_number: m.report.statistics() for m in maw_modules(encoder)}
