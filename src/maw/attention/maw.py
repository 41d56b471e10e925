"""The MAW (Multi-Attention-Weight) self-attention block. Definition: ``docs/maw-spec.md``.

Read top to bottom: first the definition, :func:`maw_attention_reference` (the naive reference: it
materialises the 5D score), then the block :class:`MAWSelfAttention` and its fast paths (tiled
pair, the fused C++ kernel, folded query/head), which compute the same thing without the 5D
tensor. Notation: ``B`` batch, ``L`` tokens, ``H`` heads, ``d_h`` head size, ``D`` depths, ``g``
width of one depth slice (``d_h / D`` in ``split`` mode), ``T`` rows of a query tile.

    q, k         : (B, H, D, L, g)   depth slices, q pre-scaled by 1/sqrt(d_h)
    S[b,h,i,j,d] = <q[b,h,d,i], k[b,h,d,j]>                    (B, H, Lq, Lk, D);  sum_d S = q.k / sqrt(d_h)
    z            = router(state)     logits per unit: pair (B,H,Lq,Lk,D), query (B,H,Lq,D), head (B,H,D)
    r            = route(z)          the policy: softmax(z / tau) (soft) or one-hot of a choice (hard routers)
    w            = depth weights     from r by cfg.parametrisation (below)
    A[b,h,i,j]   = D * sum_d w[..., d] * S[b,h,i,j,d]                            (B, H, Lq, Lk)
    P            = softmax_j(A + mask_bias);  out = dropout(P) @ V               (B, H, Lq, d_h)

Parametrisations (``cfg.parametrisation``; by default convex for ``soft``, gated for the hard
routers), with ``S_total = sum_d S_d`` the pretrained score:

* ``convex``: ``w = r``. Soft: ``A = D sum_d softmax(z / tau)_d S_d``, which is ``S_total`` at
  ``z = 0`` (the zero-initialised router). Hard: ``A = D S[choice]``, *not* the pretrained model at
  init.
* ``gated``: ``w = (1 - a_h) / D + a_h r``, i.e. ``A = (1 - a_h) S_total + a_h A_convex``, with a
  per-head gate ``a_h = tanh(gate_h)`` and ``gate`` a router parameter from 0. Every router starts
  at exactly the pretrained model, and the choice enters as the gate opens. The gate learns from
  the embedding loss through ``A`` (``dA/da = A_convex - S_total``, nonzero at ``a = 0``) for every
  router; a negative ``a`` moves the score away from the chosen depth. While ``a = 0`` the choice
  does not change the output, so GRPO's group advantages (and a forced depth's oracle losses) are
  all equal until the gate has moved.
* ``signed`` (soft only): ``w_d = (1 + tanh(z_d / tau)) / D``, i.e.
  ``A = S_total + sum_d tanh(z_d / tau) S_d``: the pretrained score at ``z = 0`` plus a signed
  correction per depth, so a head can remove (``tanh -> -1``), damp or double a depth (the
  Differential Transformer subtracts one attention map from another).

The block replaces a BERT layer's ``attention.self``; it inherits that module's pretrained
query/key/value ``nn.Linear`` weights. The layer's output projection, residual, LayerNorm and FFN
stay untouched.

Design decisions (the spec leaves them to us):

* **The router's input state is always detached** (stop-gradient). q/k/v learn through the
  combined score ``A`` only; the router learns through ``w`` (``soft``: softmax or tanh;
  ``gumbel``: straight-through, scaled by the gate when gated) or, for ``grpo``/``supervised``,
  only through its own losses computed from :class:`RoutingRecord` (policy surrogate + KL, or
  cross-entropy on oracle labels). For those two routers ``r`` is one-hot from a sample/argmax, so
  the embedding (InfoNCE) loss reaches only their gate, never the policy network. Detaching also
  lets the state be computed without keeping anything for backward.
* Router states (``F`` features per depth, router is ``F*D -> D`` per head), :func:`routing_state`:
  ``pair``: ``S[b,h,i,j,:]``; ``query``: ``[mean_j S, max_j S]`` over valid keys;
  ``head``: ``[mean, std, max]`` of ``S`` over valid (i, j) (population std).
* Masking: a routing unit is valid when its query (and, for pairs, its key) is a real token.
  Padded keys never enter a state, records or statistics; padded query rows get a choice that
  is never used (their outputs are ignored by pooling and by every later layer's valid rows).
* ``project`` depth mode: new ``depth_query``/``depth_key`` projections ``d_model -> H*D*g'``
  (``g' = depth_width``, default ``d_h / D``) replace the layer's query/key. They are initialised
  from the pretrained Q/K slices (extra width: random for queries, zero for keys), so ``S`` sums
  to the pretrained score at step 0. With the default width this is a reparametrisation of
  ``split`` with separately named parameters.
* ``force_depth`` fixes the router's *choice* (``r`` = one-hot of that depth); the
  parametrisation still applies (gated: ``A = (1 - a) S_total + a D S_d``).

Configuration, controls, reports. A block is configured by its :class:`~maw.config.MAWConfig`
(constructor) alone. Per-forward controls are the fields of one :class:`MAWRuntime` that all MAW
blocks of an encoder share (made by :func:`maw.models.maw_encoder.inject_maw`, whose functions
``force_depth``, ``shared_inputs``, ``set_gumbel_tau``, ... are its API). What a block reports
(depth statistics, the routing record of its last training forward) is in its :class:`MAWReport`,
``block.report``; nothing else is read from outside.

Implementations (``cfg.implementation``):

* ``naive``: :func:`maw_attention_reference` on the whole 5D ``S``; the reference of the tests.
* ``tiled`` (default): never materialises the full 5D tensor.
  - ``pair``: tiles of at most ``tile_size`` query rows and at most ``tile_elements`` elements
    of the 5D tile (the batch is split first, rows shrink only for a single text), each in
    ``torch.utils.checkpoint`` (non-reentrant; ``MAWRuntime.checkpoint_tiles``) so backward
    recomputes the tile; peak memory grows with the tile, not with ``Lq*Lk*D``. The convex soft
    router's 5D part is one fused autograd function (:class:`_SoftPairScore`, closed-form
    backward, no autograd graph over the 5D tensors); depth statistics are computed in the first
    run of a tile only, not in its recompute.
    On CPU in float32 with a linear convex soft router, the whole tile (attention tail included)
    runs in the C++ kernel of :mod:`maw.attention.soft_pair_kernel` instead. It never writes a 5D
    value to memory and saves only its inputs (plus the dropout keep-mask), so it is not
    checkpointed and runs the whole batch in one call; only with dropout (training) are its tiles
    sized, as 4D tensors, to bound the ``(b, H, t, Lk)`` keep-mask. ``MAWRuntime.fused_kernel =
    False`` selects the PyTorch path (same results to float32 rounding).
  - ``query`` / ``head``: exact algebraic shortcuts. The weighted score is
    ``A = <q * (D w expanded over g), k>`` so attention runs as ordinary (memory-efficient)
    ``scaled_dot_product_attention`` on re-weighted queries. States: ``mean_j S = <q, mean_j k>``;
    ``sum_ij S^2 = trace(Q_d^T Q_d K_d^T K_d)``; ``max`` for ``g = 1`` from the extreme values
    of ``k`` (and ``q``) since ``q*k`` is monotone in ``k`` (bit-exact in floating point); for
    ``g > 1`` a no-grad pass over query tiles.
  Records and statistics are reduced per tile (sums and counts), so they stay small.

Randomness (Gumbel noise, GRPO samples) is a pure function of a per-forward seed and the query
row (:class:`maw.attention.routers.RowNoise`), so it is identical in tiled, naive and the checkpoint
recompute. Attention dropout uses torch's global RNG, which ``torch.utils.checkpoint`` restores for
the recompute.
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Callable
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.checkpoint import checkpoint

from maw.attention import soft_pair_kernel
from maw.attention.routers import (
    POLICY_ROUTERS,
    DepthRouter,
    Routed,
    RowNoise,
    first_argmax,
    freeze_copy,
    route,
)
from maw.config import MAWConfig
from maw.utils.precision import cast_weights

log = logging.getLogger(__name__)


@functools.lru_cache(maxsize=8)
def _log_once(message: str) -> None:
    log.info(message)


# ============================================================================================ the definition
def maw_attention_reference(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    valid: torch.Tensor,
    granularity: str,
    router: Callable[[torch.Tensor], torch.Tensor],
    policy: Callable[[torch.Tensor, torch.Tensor, torch.Tensor], Routed],
    gate: torch.Tensor | None = None,
    dropout_p: float = 0.0,
    score_bias: torch.Tensor | None = None,
) -> torch.Tensor:
    """MAW attention as the spec defines it (section 2), materialising the whole 5D score.

    q, k (B, H, D, L, g): depth slices, q pre-scaled by 1/sqrt(d_h); v (B, H, L, d_h); valid (B, L)
    bool, True = real token. ``router``: state -> logits, depth last (a :class:`DepthRouter`).
    ``policy(z, state, unit_valid) -> Routed``: the router's policy over the last axis (weights, or
    a choice). ``gate`` (H,): the mixing gate ``a`` of the gated parametrisation, else None.
    ``score_bias`` (1 or B, H, Lq, Lk): an additive score bias of the family (MPNet's relative
    position bias), added to ``A`` before the mask as the plain model adds it; not routed.
    Returns out (B, H, L, d_h).
    """
    B, H, D, L, _ = q.shape
    S = torch.einsum("bhdig,bhdjg->bhijd", q, k)  # (B, H, Lq, Lk, D); sum_d S = q.k / sqrt(d_h)
    state, unit_valid = routing_state(S.detach(), valid, granularity)  # the router's input, detached
    z = router(state)  # logits: (B, H, Lq, Lk, D) pair | (B, H, Lq, D) query | (B, H, D) head
    r = policy(z, state, unit_valid)
    w = F.one_hot(r.choice, D).to(S.dtype) if r.weights is None else r.weights  # (units, D); convex | signed
    if gate is not None:  # gated: mix with the uniform weights 1/D; a = 0 at init
        a = gate.view(1, H, *([1] * (w.dim() - 2)))
        w = (1 - a) / D + a * w
    if granularity == "query":
        w = w[:, :, :, None]  # (B, H, Lq, 1, D): one choice per query, broadcast over keys
    elif granularity == "head":
        w = w[:, :, None, None]  # (B, H, 1, 1, D)
    A = D * (w * S).sum(-1)  # (B, H, Lq, Lk) combined score
    if score_bias is not None:
        A = A + score_bias  # e.g. MPNet's relative position bias, as the plain layer adds it
    P = torch.softmax(A + _bias_from_valid(valid, A.dtype), dim=-1)  # softmax over KEYS
    if dropout_p > 0:
        P = F.dropout(P, dropout_p, True)
    return torch.matmul(P, v)  # (B, H, Lq, d_h)


def routing_state(
    S: torch.Tensor, valid: torch.Tensor, granularity: str
) -> tuple[torch.Tensor, torch.Tensor]:
    """The router's input per routing unit, from the (detached) 5D score over valid tokens only,
    and which units are valid. S (B, H, Lq, Lk, D), valid (B, L) ->

        pair : S itself                            (B, H, Lq, Lk, D)   units (B, 1, Lq, Lk)
        query: [mean_j S, max_j S], valid keys j   (B, H, Lq, 2D)      units (B, 1, Lq)
        head : [mean, std, max] over valid (i, j)  (B, H, 3D)          units (B, 1)

    (population std; the max of a text without tokens is 0)."""
    kv = valid[:, None, None, :, None]  # (B, 1, 1, Lk, 1) valid keys
    has = valid.any(-1)  # (B,) texts with at least one token
    if granularity == "pair":
        return S, (valid[:, :, None] & valid[:, None, :])[:, None]
    if granularity == "query":
        n = kv.sum(3).clamp_min(1)  # (B, 1, 1, 1) valid keys per text
        mean = (S * kv).sum(3) / n  # (B, H, Lq, D)
        mx = S.masked_fill(~kv, float("-inf")).amax(3).masked_fill(~has[:, None, None, None], 0.0)
        return torch.cat([mean, mx], dim=-1), valid[:, None, :]
    pm = kv & valid[:, None, :, None, None]  # (B, 1, Lq, Lk, 1) valid pairs
    n = pm.sum((2, 3)).clamp_min(1)  # (B, 1, 1)
    mean = (S * pm).sum((2, 3)) / n  # (B, H, D)
    std = ((S**2 * pm).sum((2, 3)) / n - mean**2).clamp_min(0.0).sqrt()
    mx = S.masked_fill(~pm, float("-inf")).amax((2, 3)).masked_fill(~has[:, None, None], 0.0)
    return torch.cat([mean, std, mx], dim=-1), has[:, None]


def depth_scores(q: torch.Tensor, kT: torch.Tensor) -> torch.Tensor:
    """The 5D score depth-major, as the fast paths use it: q (B, H, D, T, g), kT (B, H, D, g, Lk)
    -> S (B, H, D, T, Lk)."""
    if q.shape[-1] == 1:
        return q * kT  # outer product, cheaper than a K=1 matmul
    return torch.matmul(q, kT)


# ---------------------------------------------------------------------------------------------- masks
def key_validity(attention_mask: torch.Tensor | None, batch: int, length: int, device) -> torch.Tensor:
    """(B, Lk) bool, True = real token, from any mask convention a BERT layer may receive.

    * ``None`` -> all valid;
    * bool (True = attend), shapes (B, L), (B, 1, 1, L), (B, 1, L, L) -> a key is valid if any
      query may attend to it;
    * float additive bias (0 = attend, large negative = padding), same shapes -> valid where
      the bias is > -1 (for 4D: at any query row);
    * float/int (B, L) 0/1 keep-mask -> valid where nonzero.
    Only padding masks are supported (MAW is for bidirectional encoders).
    """
    if attention_mask is None:
        return torch.ones(batch, length, dtype=torch.bool, device=device)
    m = attention_mask
    if m.dim() == 2:
        valid = m.bool() if m.dtype == torch.bool else m != 0
    elif m.dim() == 4:
        if m.dtype == torch.bool:
            valid = m.any(dim=-2)[:, 0]
        else:
            valid = (m > -1.0).any(dim=-2)[:, 0]
    elif m.dim() == 3:
        valid = m.bool().any(dim=-2) if m.dtype == torch.bool else (m > -1.0).any(dim=-2)
    else:
        raise ValueError(f"MAW attention: unsupported attention_mask shape {tuple(m.shape)}")
    if valid.shape[-1] != length:
        raise ValueError(
            f"MAW attention: mask has {valid.shape[-1]} keys, hidden states have {length} tokens"
        )
    return valid.expand(batch, length).to(device)


def _bias_from_valid(valid: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """(B, L) bool -> (B, 1, 1, L) additive bias (0 keep, dtype-min pad), as the Encoder builds it."""
    return (~valid)[:, None, None, :].to(dtype) * torch.finfo(dtype).min


# ======================================================================================= controls, reports
class _Slot:
    """Holds a value that must not be copied (a RoutingRecord, or the shared-input memo: both hold
    autograd graph tensors, which ``copy.deepcopy`` cannot copy, e.g. when a trainer deep-copies the
    best model). Copies start empty."""

    def __init__(self):
        self.value = None

    def __deepcopy__(self, memo) -> _Slot:
        return _Slot()

    def __getstate__(self) -> dict:
        return {"value": None}


@dataclass
class MAWRuntime:
    """Per-forward controls of the MAW blocks of one encoder (one object, shared by all of them;
    made by :func:`maw.models.maw_encoder.inject_maw`, whose functions set it).

    forced_depth: every routing unit's choice is this depth (0-indexed), or None (``force_depth``).
    gumbel_tau: temperature of the Gumbel-softmax router (``set_gumbel_tau``; annealed by the trainer).
    track_statistics: accumulate depth statistics in each block's report (``set_track_statistics``).
    fused_kernel: let the convex soft router at pair granularity use the C++ kernel where it
        applies (False: the PyTorch tiles; for comparisons).
    checkpoint_tiles: run the PyTorch pair tiles in ``torch.utils.checkpoint`` when gradients are
        needed (False: keep every tile's graph; for comparisons).
    share_layer: the layer whose repeated inputs reuse their projections and router states
        (``shared_inputs``), else None; the memo itself is private.
    """

    forced_depth: int | None = None
    gumbel_tau: float = 1.0
    track_statistics: bool = True
    fused_kernel: bool = True
    checkpoint_tiles: bool = True
    share_layer: int | None = None
    _memo: _Slot = field(default_factory=_Slot, repr=False, compare=False)  # list[_SharedInput] or None


@dataclass
class _SharedInput:
    """What a MAW block computes from its input alone, kept while ``MAWRuntime.share_layer`` names
    it: the projections (with their autograd graph) and the detached router state. Valid for the
    exact ``hidden`` object it was computed from (identity, not value) and an equal padding mask
    (the encoder rebuilds its additive mask on every call)."""

    hidden: torch.Tensor
    q: torch.Tensor
    k: torch.Tensor
    v: torch.Tensor
    valid: torch.Tensor
    state: torch.Tensor | None = None


@dataclass
class RoutingRecord:
    """Per-text routing summaries of one MAW module's last training forward (grpo / supervised).

    All tensors have shape ``(B,)`` (``log_probs_per_depth``: ``(B, D)``) and carry gradient to
    the router parameters only (the state is detached). Means are over the text's valid routing
    units (all heads).

    ratio_mean: ``exp(m - m.detach())`` with ``m`` the mean of ``log pi(a | s)`` over units. Value 1,
        gradient ``mean_u grad log pi(a_u | s_u)`` -- the same value and gradient as the mean of
        per-unit ratios ``exp(logp - logp.detach())``. Since samples are drawn from the current
        policy and used for one update, this is the exact PPO clipped-surrogate ratio for one
        on-policy update per sampled group (clipping is inactive at ratio 1).
    entropy_mean: mean policy entropy (nats).
    kl_ref_mean: mean ``KL(pi_theta || pi_ref)``; ``None`` until :func:`refresh_reference`.
    log_probs_per_depth: mean over units of ``log pi(d | s)``; supervised CE is
        ``-log_probs_per_depth[b, label_b]``.
    units: number of valid routing units per text (no gradient).
    """

    ratio_mean: torch.Tensor
    entropy_mean: torch.Tensor
    kl_ref_mean: torch.Tensor | None
    log_probs_per_depth: torch.Tensor
    units: torch.Tensor


class MAWReport:
    """What one MAW block reports: depth statistics summed since the last :meth:`reset`, and the
    :class:`RoutingRecord` of its last training forward (grpo / supervised; else None). Written by
    the block only; a deep copy keeps the statistics and drops the record."""

    def __init__(self, heads: int, depth: int):
        self.heads, self.depth = heads, depth
        self.sums: tuple[torch.Tensor, torch.Tensor, torch.Tensor] | None = None  # counts, entropy, units
        self._record = _Slot()

    @property
    def record(self) -> RoutingRecord | None:
        return self._record.value

    def reset(self) -> None:
        self.sums = None

    def statistics(self) -> dict:
        """{"counts": [[D] x H], "entropy": [H] mean entropy per unit (nats), "units": int per head}."""
        H, D = self.heads, self.depth
        if self.sums is None:
            return {"counts": [[0] * D for _ in range(H)], "entropy": [0.0] * H, "units": 0}
        counts, ent, units = (t.detach().cpu() for t in self.sums)
        n = float(units)
        return {
            "counts": [[int(round(c)) for c in row] for row in counts.tolist()],
            "entropy": [e / n if n > 0 else 0.0 for e in ent.tolist()],
            "units": int(round(n)),
        }

    def _add(self, stats, record: RoutingRecord | None) -> None:
        if stats is not None:
            self.sums = _add(self.sums, stats)
        self._record.value = record


# ============================================================================================ the block
class MAWSelfAttention(nn.Module):
    """Drop-in replacement of a BERT ``attention.self``: ``forward(hidden (B, L, d_model),
    attention_mask=None, **kw) -> (out (B, L, H*d_h), None)``.

    Configured by ``cfg`` alone; per-forward controls come from ``runtime`` (shared with the other
    blocks of the encoder; a fresh one when not given); results are in ``self.report``.
    """

    def __init__(
        self,
        cfg: MAWConfig,
        num_heads: int,
        head_size: int,
        query: nn.Linear,
        key: nn.Linear,
        value: nn.Linear,
        dropout_p: float = 0.0,
        layer_number: int = 0,
        runtime: MAWRuntime | None = None,
    ):
        super().__init__()
        D = cfg.depth_dim
        assert head_size % D == 0, f"D={D} must divide d_h={head_size} (maw.plan.resolve_maw checks it)"
        self.cfg = cfg
        self.layer_number = layer_number
        self.num_heads, self.head_size, self.depth = num_heads, head_size, D
        self.width = head_size // D if cfg.depth_width is None else cfg.depth_width  # g
        self.scale = head_size**-0.5
        self.dropout_p = float(dropout_p)
        self.value = value
        if cfg.depth_projection == "split":
            self.query, self.key = query, key
        else:
            self.depth_query = self._init_projection(query, random_extra=True)
            self.depth_key = self._init_projection(key, random_extra=False)
        n_stats = {"pair": 1, "query": 2, "head": 3}[cfg.granularity]
        gated = cfg.parametrisation == "gated"
        self.router = DepthRouter(num_heads, n_stats * D, D, cfg.router_hidden, gated=gated)
        self.reference: DepthRouter | None = None  # frozen copy of the router (refresh_reference)
        self.runtime = runtime if runtime is not None else MAWRuntime(gumbel_tau=float(cfg.gumbel_tau_start))
        self.report = MAWReport(num_heads, D)

    @classmethod
    def from_bert(
        cls, module: nn.Module, cfg: MAWConfig, layer_number: int = 0, runtime: MAWRuntime | None = None
    ) -> MAWSelfAttention:
        """Wrap a Hugging Face ``BertSelfAttention``-like module (query/key/value Linears)."""
        H = int(module.num_attention_heads)
        d_h = int(module.attention_head_size)
        p = float(module.dropout.p) if isinstance(getattr(module, "dropout", None), nn.Dropout) else 0.0
        return cls(cfg, H, d_h, module.query, module.key, module.value, p, layer_number, runtime)

    def _init_projection(self, pre: nn.Linear, random_extra: bool) -> nn.Linear:
        """``d_model -> H*D*g'`` initialised from the pretrained ``d_model -> H*d_h`` projection."""
        H, D, g0, g = self.num_heads, self.depth, self.head_size // self.depth, self.width
        d_model = pre.in_features
        lin = nn.Linear(d_model, H * D * g, bias=pre.bias is not None).to(pre.weight.device, pre.weight.dtype)
        with torch.no_grad():
            W = torch.zeros(H, D, g, d_model, dtype=pre.weight.dtype, device=pre.weight.device)
            if random_extra and g > g0:
                W.normal_(0.0, pre.weight.std().item())
            k = min(g, g0)
            W[:, :, :k] = pre.weight.view(H, D, g0, d_model)[:, :, :k]
            lin.weight.copy_(W.view(H * D * g, d_model))
            if pre.bias is not None:
                bvec = torch.zeros(H, D, g, dtype=pre.bias.dtype, device=pre.bias.device)
                bvec[:, :, :k] = pre.bias.view(H, D, g0)[:, :, :k]
                lin.bias.copy_(bvec.view(-1))
        return lin

    # ------------------------------------------------------------------ forward
    def forward(
        self,
        hidden_states: torch.Tensor,
        attention_mask: torch.Tensor | None = None,
        *args,
        position_bias: torch.Tensor | None = None,
        **kwargs,
    ):
        """``position_bias`` (1 or B, H, L, L): an additive score bias (MPNet's relative position
        bias, passed by :mod:`maw.models.families`), added to ``A`` like the mask; not routed."""
        if kwargs.get("encoder_hidden_states") is not None:
            raise ValueError("MAW attention is self-attention only (no cross-attention)")
        B, L, _ = hidden_states.shape
        inputs = self._inputs(hidden_states, attention_mask)
        q, k, v, valid = inputs.q, inputs.k, inputs.v, inputs.valid
        noise = None
        if self.training and self.runtime.forced_depth is None and self.kind in ("gumbel", "grpo"):
            noise = RowNoise.draw(hidden_states.device)
        if self.cfg.implementation == "naive":
            out, stats, rec = self._naive(q, k, v, valid, noise, position_bias)
        elif self.cfg.granularity == "pair":
            out, stats, rec = self._tiled_pair(q, k, v, valid, noise, position_bias)
        else:
            out, stats, rec = self._folded(q, k, v, valid, noise, inputs, position_bias)
        self.report._add(stats, self._finish_record(rec) if rec is not None else None)
        return out.transpose(1, 2).reshape(B, L, -1), None

    @property
    def kind(self) -> str:
        return self.cfg.router

    @property
    def attention_dropout(self) -> float:
        """The dropout probability on attention weights in this forward (0 in eval mode)."""
        return self.dropout_p if self.training else 0.0

    def _project(self, x: torch.Tensor):
        """x (B, L, d_model) -> q, k (B, H, D, L, g) with q pre-scaled; v (B, H, L, d_h)."""
        B, L, _ = x.shape
        H, D, g = self.num_heads, self.depth, self.width
        qproj, kproj = (
            (self.query, self.key)
            if self.cfg.depth_projection == "split"
            else (self.depth_query, self.depth_key)
        )
        q = (qproj(x) * self.scale).view(B, L, H, D, g).permute(0, 2, 3, 1, 4).contiguous()
        k = kproj(x).view(B, L, H, D, g).permute(0, 2, 3, 1, 4).contiguous()
        v = self.value(x).view(B, L, H, -1).transpose(1, 2)
        return q, k, v

    def _inputs(self, hidden: torch.Tensor, mask: torch.Tensor | None) -> _SharedInput:
        """Projections of ``hidden`` and validity of ``mask``. While ``runtime.share_layer`` is this
        layer, forwards that receive the *same* hidden-state tensor (identity) and mask reuse the
        first one's projections and router state (the G samples of a GRPO group: the projections'
        graph is shared, so their backward runs once with the summed gradient)."""
        B, L, _ = hidden.shape
        valid = key_validity(mask, B, L, hidden.device)  # (B, L)
        rt = self.runtime
        memo = rt._memo.value if rt.share_layer == self.layer_number else None
        for hit in memo or ():
            if hit.hidden is hidden and torch.equal(hit.valid, valid):
                return hit
        q, k, v = self._project(hidden)
        entry = _SharedInput(hidden, q, k, v, valid)
        if memo is not None:
            memo.append(entry)  # the graph keeps q/k/v alive anyway until backward
        return entry

    # ------------------------------------------------------------------ the policy, shared by all paths
    def _policy(self, z, dim: int, unit_valid, u, reference_logits: Callable[[], torch.Tensor], track=None):
        """Route logits ``z`` (depth on ``dim``) and summarise: (Routed, statistics sums or None,
        record sums or None). ``u``: uniform noise like ``z`` (gumbel / grpo in training);
        ``reference_logits()``: the reference router's logits of the same state (for the KL)."""
        rt = self.runtime
        signed = self.cfg.parametrisation == "signed"
        r = route(z, self.kind, self.training, dim, self.cfg.tau, rt.gumbel_tau, u, rt.forced_depth, signed)
        stats = rec = None
        if rt.track_statistics if track is None else track:
            ent = entropy_from_logits(self._stat_logits(z.detach()), dim)
            stats = _Summaries.stats(r.choice, ent, unit_valid, self.depth)
        if self._want_record():
            ref = None
            if self.reference is not None:
                with torch.no_grad():
                    ref = reference_logits()
            rec = _Summaries.record(z, ref, r.choice, unit_valid, dim)
        return r, stats, rec

    def _unit_noise(self, noise: RowNoise, shape) -> torch.Tensor:
        """Uniform noise for logits of ``shape``, depth last: (B,H,Lq,Lk,D) pair, (B,H,Lq,D) query,
        (B,H,D) head; row i's values equal those the tiles draw for row i."""
        if self.cfg.granularity == "pair":
            B, H, Lq, Lk, D = shape
            return noise.rows(0, Lq, (B, H, D, Lk), axis=3).movedim(2, -1)
        if self.cfg.granularity == "query":
            B, H, Lq, D = shape
            return noise.rows(0, Lq, (B, H, D), axis=2)
        return noise.uniform(-1, tuple(shape))

    def _stat_logits(self, logits: torch.Tensor) -> torch.Tensor:
        """Logits of the distribution whose entropy is logged (soft: softmax(z / tau))."""
        return logits / self.cfg.tau if self.kind == "soft" else logits

    def _want_record(self) -> bool:
        return self.training and self.kind in POLICY_ROUTERS

    def _finish_record(self, rec) -> RoutingRecord:
        sum_lp_a, sum_ent, sum_kl, sum_lp_depth, units = rec
        n = units.clamp_min(1.0)
        m = sum_lp_a / n
        return RoutingRecord(
            ratio_mean=torch.exp(m - m.detach()),
            entropy_mean=sum_ent / n,
            kl_ref_mean=None if sum_kl is None else sum_kl / n,
            log_probs_per_depth=sum_lp_depth / n[:, None],
            units=units,
        )

    def _gate(self, dims: int) -> torch.Tensor | None:
        """The gate ``a`` (H,) viewed as (1, H, 1, ...) with ``dims`` axes, or None (not gated)."""
        a = self.router.gate_value()
        return None if a is None else a.view(1, self.num_heads, *([1] * (dims - 2)))

    # ------------------------------------------------------------------ naive: the definition
    def _naive(self, q, k, v, valid, noise, position_bias=None):
        """:func:`maw_attention_reference` with this block's router, policy and gate."""
        found = []

        def policy(z, state, unit_valid):
            u = None if noise is None else self._unit_noise(noise, z.shape)
            r, stats, rec = self._policy(z, -1, unit_valid, u, lambda: self.reference(state))
            found.append((stats, rec))
            return r

        gate = self.router.gate_value()
        out = maw_attention_reference(
            q,
            k,
            v,
            valid,
            self.cfg.granularity,
            self.router,
            policy,
            gate,
            self.attention_dropout,
            position_bias,
        )
        return out, *found[0]

    # ------------------------------------------------------------------ fast path 1: tiled pair
    def _uses_kernel(self, q: torch.Tensor, position_bias: torch.Tensor | None = None) -> bool:
        """Whether the soft pair combine runs in the fused C++ kernel (:mod:`soft_pair_kernel`); it
        takes a per-key padding bias only, so not with a position bias."""
        return (
            position_bias is None
            and self.runtime.fused_kernel
            and self.kind == "soft"
            and self.cfg.parametrisation == "convex"
            and self.runtime.forced_depth is None
            and self.cfg.implementation == "tiled"
            and soft_pair_kernel.applicable(q, self.cfg.router_hidden)
        )

    def tile_shape(self, batch: int, rows: int, keys: int, depth: int | None = None) -> tuple[int, int]:
        """(texts, query rows) per 5D tile (pair tiles, and the no-grad max pass): at most
        ``cfg.tile_size`` rows and, when ``cfg.tile_elements`` > 0, at most that many elements in a
        5D tile ``(b, H, D, t, Lk)``. The batch is split first, rows shrink only for a single text:
        tiles of many rows keep the matmuls large, and small tiles stay in the CPU cache.
        ``depth=1``: tiles whose largest tensors are 4D (the fused kernel never stores the 5D tile)."""
        T = max(1, min(self.cfg.tile_size, rows))
        budget = self.cfg.tile_elements
        if not budget:
            return batch, T
        per = self.num_heads * (self.depth if depth is None else depth) * keys  # elements per (text, row)
        if per * T <= budget:
            return max(1, min(batch, budget // (per * T))), T
        return 1, max(1, budget // per)

    def _tiled_pair(self, q, k, v, valid, noise, position_bias=None):
        if q.dtype == torch.bfloat16 and self._uses_kernel(q.detach()[..., :0].float(), position_bias):
            # CPU bfloat16 (autocast in training, cast weights in encoding): the fused kernel is
            # float32-only and beats the bfloat16 5D path; the router runs in float32 with it
            _log_once("MAW pair granularity in bfloat16: the fused CPU kernel runs in float32")
            with torch.autocast("cpu", enabled=False), cast_weights(self.router, torch.float32):
                out, stats, rec = self._tiled_pair(
                    q.float(), k.float(), v.float(), valid, noise, position_bias
                )
            return out.to(q.dtype), stats, rec
        B, H, D, L, _ = q.shape
        key_bias = _bias_from_valid(valid, q.dtype)
        kT = k.transpose(-1, -2).contiguous()  # (B, H, D, g, Lk)
        v = v.contiguous()
        kernel = self._uses_kernel(q, position_bias)  # 4D tiles, save only their inputs: no checkpoint
        if kernel and self.attention_dropout == 0:
            Bc, T = B, L  # nothing of the kernel's grows with the tile: one call, no (B,H,L,L) mask
        else:
            Bc, T = self.tile_shape(B, L, L, 1 if kernel else None)
        needs_grad = any(t.requires_grad for t in (q, k, v)) or any(
            p.requires_grad for p in self.router.parameters()
        )
        use_ckpt = self.runtime.checkpoint_tiles and torch.is_grad_enabled() and needs_grad and not kernel
        # the position bias as a (B, H, Lq, Lk) view (no copy) split like the batch, or no bias
        pos = position_bias.expand(B, -1, -1, -1).split(Bc, 0) if position_bias is not None else None
        # split (not index) so backward assembles each input's gradient once, not one full-size
        # zero-filled gradient per tile
        chunks = zip(
            q.split(Bc, 0),
            kT.split(Bc, 0),
            v.split(Bc, 0),
            key_bias.split(Bc, 0),
            valid.split(Bc, 0),
            pos or [None] * len(range(0, B, Bc)),
            strict=True,
        )
        outs, stats, recs = [], None, []
        for c, (qb, kTb, vb, biasb, validb, posb) in enumerate(chunks):
            row_outs, rec = [], None
            for t, q_t in enumerate(qb.split(T, 3)):
                i0 = t * T
                pos_t = None if posb is None else posb[:, :, i0 : i0 + T]  # (b, H, T, Lk)
                args = (q_t, kTb, vb, biasb, validb[:, i0 : i0 + T], validb, noise, i0, (c * Bc, B), pos_t)
                if use_ckpt:
                    o, s, r = checkpoint(self._pair_block, *args, [0], use_reentrant=False)
                else:
                    o, s, r = self._pair_block(*args)
                row_outs.append(o)
                stats, rec = _add(stats, s), _add(rec, r)
            outs.append(torch.cat(row_outs, dim=2) if len(row_outs) > 1 else row_outs[0])
            recs.append(rec)
        out = torch.cat(outs, dim=0) if len(outs) > 1 else outs[0]
        if recs[0] is None:
            return out, stats, None
        rec = tuple(None if parts[0] is None else torch.cat(parts, 0) for parts in zip(*recs, strict=True))
        return out, stats, rec

    def _pair_block(
        self,
        q_t,
        kT,
        v,
        key_bias,
        row_valid,
        key_valid,
        noise,
        i0: int,
        batch=(0, None),
        position_bias=None,
        calls=None,
    ):
        """One block of query rows [i0, i0+T) of texts [b0, b0+B) at pair granularity.

        q_t (B,H,D,T,g), kT (B,H,D,g,Lk), v (B,H,Lk,d_h), key_bias (B,1,1,Lk), row_valid (B,T),
        key_valid (B,Lk); ``batch = (b0, full batch size)`` locates the texts (noise is drawn for the
        full batch); ``position_bias`` (B,H,T,Lk): the tile's rows of the position bias, or None.
        Returns out (B,H,T,d_h), stats sums (or None), record sums (or None).
        ``calls``: a one-element counter when run inside checkpoint: statistics are computed in
        the first run only, not in the recompute during backward (whose outputs are discarded).
        """
        B, H, D, T, _ = q_t.shape
        Lk = kT.shape[-1]
        in_ckpt = calls is not None
        track = self.runtime.track_statistics and (not in_ckpt or calls[0] == 0)
        if in_ckpt:
            calls[0] += 1
        if self._uses_kernel(q_t, position_bias):  # fast path 2: the whole tile, attention tail too, in C++
            p = self.attention_dropout
            out, counts, ent_sum = soft_pair_kernel.SoftPairAttention.apply(
                q_t,
                kT,
                v,
                key_bias[:, 0, 0],
                self.router.weight / self.cfg.tau,
                self.router.bias / self.cfg.tau,
                row_valid,
                key_valid,
                track,
                p,
            )
            units = (row_valid.sum(1) * key_valid.sum(1)).sum().to(torch.float64)  # per head
            return out, ((counts, ent_sum, units) if track else None), None
        stats = rec = None
        unit_mask = (row_valid[:, :, None] & key_valid[:, None, :])[:, None]  # (B, 1, T, Lk)
        fused = self.cfg.router_hidden == 0 and self.cfg.parametrisation == "convex"
        if self.kind == "soft" and self.runtime.forced_depth is None and fused:
            W, b = self.router.weight, self.router.bias
            if torch.is_grad_enabled():
                A, choice, ent = _SoftPairScore.apply(q_t, kT, W, b, self.cfg.tau, track, in_ckpt)
            else:
                A, choice, ent, _, _ = soft_pair_forward(q_t, kT, W, b, self.cfg.tau, track)
            stats = _Summaries.stats(choice, ent, unit_mask, D) if track else None
        else:
            S = depth_scores(q_t, kT)  # (B, H, D, T, Lk)
            Sd = S.detach().reshape(B, H, D, T * Lk)
            logits = self.router.forward_dmajor(Sd).view(B, H, D, T, Lk)
            u = None
            if noise is not None:
                b0, b_full = batch[0], batch[1] or B
                u = noise.rows(i0, i0 + T, (b_full, H, D, Lk), axis=3)[b0 : b0 + B]

            def reference_logits():
                return self.reference.forward_dmajor(Sd).view(B, H, D, T, Lk)

            r, stats, rec = self._policy(logits, 2, unit_mask, u, reference_logits, track)
            if r.weights is None:
                A = S.gather(2, r.choice.unsqueeze(2)).squeeze(2) * D
            else:
                A = (r.weights * S).sum(2) * D
            a = self._gate(4)
            if a is not None:  # gated: A = (1 - a) S_total + a A_convex
                A = (1 - a) * S.sum(2) + a * A
        if position_bias is not None:
            A = A + position_bias  # as the plain layer adds it, before the mask
        P = torch.softmax(A + key_bias, dim=-1)  # (B, H, T, Lk) softmax over KEYS
        if self.attention_dropout > 0:
            P = F.dropout(P, self.attention_dropout, True)
        out = torch.matmul(P, v)  # (B, H, T, d_h)
        return out, stats, rec

    # ------------------------------------------------------------------ fast path 3: folded query / head
    def _folded(self, q, k, v, valid, noise, shared: _SharedInput, position_bias=None):
        """Query/head granularity: route, fold D*w into the queries, run ordinary attention.
        The (detached) state is kept in ``shared`` for forwards that share this input."""
        B, H, D, L, g = q.shape
        query = self.cfg.granularity == "query"
        if shared.state is None:
            shared.state = self._query_state(q, k, valid) if query else self._head_state(q, k, valid)
        state = shared.state  # (B, H, L, 2D) or (B, H, 3D)
        row_valid = valid[:, None, :] if query else valid.any(-1)[:, None]  # (B, 1, L) or (B, 1)
        logits = self.router(state)  # (B, H, [L,] D)
        u = None if noise is None else self._unit_noise(noise, logits.shape)
        r, stats, rec = self._policy(logits, -1, row_valid, u, lambda: self.reference(state))
        if r.weights is None:
            coef = F.one_hot(r.choice, D).to(q.dtype) * D
        else:
            coef = r.weights * D  # (B, H, L, D) or (B, H, D): D * w
        a = self._gate(coef.dim())
        if a is not None:  # gated: D w = (1 - a) + a D r
            coef = (1 - a) + a * coef
        coef = coef.transpose(-1, -2) if query else coef  # (B,H,D,L) or (B,H,D)
        coef = coef.unsqueeze(-1) if query else coef[..., None, None]
        qw = (q * coef).permute(0, 1, 3, 2, 4).reshape(B, H, L, D * g)
        kf = k.permute(0, 1, 3, 2, 4).reshape(B, H, L, D * g)
        bias = _bias_from_valid(valid, q.dtype)  # (B, 1, 1, L)
        if position_bias is not None:  # (B, H, L, L): position bias + mask, as the plain layer adds them
            bias = position_bias.to(q.dtype) + bias
        p = self.attention_dropout
        out = F.scaled_dot_product_attention(qw, kf, v, attn_mask=bias, dropout_p=p, scale=1.0)
        return out, stats, rec

    def _max_pass(self, q, k, valid, over_rows: bool):
        """No-grad tiled max of S over valid keys: (B,H,D,L) (or over valid (i,j): (B,H,D))."""
        B, H, D, L, _ = q.shape
        key_bias = _bias_from_valid(valid, q.dtype)[
            :, :, None
        ]  # (B,1,1,1,Lk): 0, or dtype-min on padded keys
        kT = k.transpose(-1, -2)
        Bc, T = self.tile_shape(B, L, L)
        rows = []
        for b0 in range(0, B, Bc):
            parts = []
            for i0 in range(0, L, T):
                S = depth_scores(q[b0 : b0 + Bc, :, :, i0 : i0 + T], kT[b0 : b0 + Bc])
                parts.append(S.add_(key_bias[b0 : b0 + Bc]).amax(-1))  # (b, H, D, T)
            rows.append(torch.cat(parts, dim=-1))
        mx = torch.cat(rows, dim=0)
        if over_rows:
            mx = mx.masked_fill((~valid)[:, None, None, :], float("-inf")).amax(-1)
        return mx

    @torch.no_grad()
    def _query_state(self, q, k, valid):
        """[mean_j S, max_j S] over valid keys: (B, H, L, 2D), without the 5D tensor when g = 1."""
        qd, kd = q.detach(), k.detach()
        km = valid[:, None, None, :, None].to(q.dtype)  # (B,1,1,Lk,1)
        n = km.sum(3, keepdim=True).clamp_min(1.0)
        kmean = (kd * km).sum(3, keepdim=True) / n  # (B,H,D,1,g)
        mean = (qd * kmean).sum(-1)  # (B,H,D,L)
        if self.width == 1:
            big = torch.finfo(q.dtype).max
            kmax = kd.masked_fill(km == 0, -big).amax(3, keepdim=True)  # (B,H,D,1,1)
            kmin = kd.masked_fill(km == 0, big).amin(3, keepdim=True)
            mx = (qd * torch.where(qd >= 0, kmax, kmin)).squeeze(-1)  # (B,H,D,L)
        else:
            mx = self._max_pass(qd, kd, valid, over_rows=False)
        mx = mx.masked_fill(~valid.any(-1)[:, None, None, None], 0.0)
        return torch.cat([mean, mx], dim=2).transpose(2, 3)  # (B, H, L, 2D)

    @torch.no_grad()
    def _head_state(self, q, k, valid):
        """[mean, std, max] of S over valid (i, j): (B, H, 3D), without the 5D tensor when g = 1."""
        qd, kd = q.detach(), k.detach()
        vm = valid[:, None, None, :, None].to(q.dtype)  # (B,1,1,L,1)
        qm, km = qd * vm, kd * vm
        n = (vm.sum((1, 2, 3, 4)) ** 2).clamp_min(1.0)[:, None, None]  # (B,1,1) valid pairs
        s1 = (qm.sum(3) * km.sum(3)).sum(-1)  # (B,H,D) sum_ij S
        gq = torch.matmul(qm.transpose(-1, -2), qm)  # (B,H,D,g,g)
        gk = torch.matmul(km.transpose(-1, -2), km)
        s2 = (gq * gk).sum((-1, -2))  # (B,H,D) sum_ij S^2
        mean = s1 / n
        std = (s2 / n - mean**2).clamp_min(0.0).sqrt()
        if self.width == 1:
            big = torch.finfo(q.dtype).max
            m = vm == 0
            qmax, qmin = qd.masked_fill(m, -big).amax(3), qd.masked_fill(m, big).amin(3)  # (B,H,D,1)
            kmax, kmin = kd.masked_fill(m, -big).amax(3), kd.masked_fill(m, big).amin(3)
            corners = torch.stack([qmax * kmax, qmax * kmin, qmin * kmax, qmin * kmin], -1)
            mx = corners.amax(-1).squeeze(-1)
        else:
            mx = self._max_pass(qd, kd, valid, over_rows=True)
        mx = mx.masked_fill(~valid.any(-1)[:, None, None], 0.0)
        return torch.cat([mean, std, mx], dim=-1)  # (B, H, 3D)

    # ------------------------------------------------------------------ reference policy
    def refresh_reference(self) -> None:
        """(Re)make the frozen reference router (non-persistent buffers) for the KL term."""
        self.reference = freeze_copy(self.router)

    def extra_repr(self) -> str:
        c = self.cfg
        return (
            f"layer={self.layer_number}, heads={self.num_heads}, head_size={self.head_size}, D={self.depth}, "
            f"g={self.width}, router={c.router}, parametrisation={c.parametrisation}, "
            f"granularity={c.granularity}, projection={c.depth_projection}, "
            f"implementation={c.implementation}, tile={c.tile_size}"
        )


# ============================================================================================ fused soft pair
def _soft_pair_logits(q, kT, W, b, tau: float):
    """S (B,H,D,T,Lk) and router logits z = (W S + b) / tau, same shape (linear router).

    One ``baddbmm`` per tile: the per-head (D, D) weights are expanded over the batch (tiny) so
    the GEMMs run without a broadcast copy, with the bias (and 1/tau) folded in."""
    S = depth_scores(q, kT)
    Bn, H, D, T, Lk = S.shape
    if tau != 1.0:
        W, b = W / tau, b / tau
    We = W.unsqueeze(0).expand(Bn, H, D, D).reshape(Bn * H, D, D)
    be = b.unsqueeze(0).expand(Bn, H, D).reshape(Bn * H, D, 1)
    z = torch.baddbmm(be, We, S.reshape(Bn * H, D, T * Lk)).view(Bn, H, D, T, Lk)
    return S, z


@torch.no_grad()
def soft_pair_forward(q, kT, W, b, tau: float, want_stats: bool, keep: bool = False):
    """No-grad fused soft pair combine for one tile: ``A = D * sum_d softmax(z)_d S_d`` (B,H,T,Lk).

    Also returns, when asked, the per-unit choice (argmax of w) and entropy of w, and with
    ``keep`` the tensors ``S`` and ``w`` for a backward. Keeps at most four tile-sized tensors alive.
    """
    S, z = _soft_pair_logits(q, kT, W, b, tau)
    D = S.shape[2]
    z.sub_(z.amax(2, keepdim=True))  # z - max: (B,H,D,T,Lk), maxima are exactly 0
    ent = choice = None
    if want_stats:
        choice = first_argmax(z, 2, centered=True)
        e = z.exp()  # unnormalised softmax
        s = e.sum(2, keepdim=True)  # (B,H,1,T,Lk)
        ent = s.squeeze(2).log() - (e * z).sum(2) / s.squeeze(2)
        del z
    else:
        e = z.exp_()
        s = e.sum(2, keepdim=True)
    if keep:
        w = e.div_(s)  # in place: e -> w
        A = (w * S).sum(2).mul_(D)
        return A, choice, ent, S, w
    A = e.mul_(S).sum(2).div_(s.squeeze(2)).mul_(D)  # normalise after the depth sum (1/D the work)
    return A, choice, ent, None, None


class _SoftPairScore(torch.autograd.Function):
    """Fused soft pair combine: ``A = D * sum_d softmax(router(S)/tau)_d * S_d`` for one tile,
    with ``S = q k^T`` per depth and the router state ``S`` detached.

    The backward is the closed form (with ``Abar = A / D``):

        dS = D * dA * w                         (to q and k; the state is detached)
        dz = dS * (S - Abar) / tau              (to the router: dW = dz S^T, db = sum dz)

    ``keep=True`` saves ``S`` and ``w`` (used inside ``torch.utils.checkpoint``, where saved tensors
    only live while that tile is back-propagated); ``keep=False`` saves only the inputs and
    recomputes ``S`` and ``w`` in backward. Linear router only (``router_hidden == 0``).
    Shapes: q (B,H,D,T,g), kT (B,H,D,g,Lk), W (H,D,D), b (H,D) -> A (B,H,T,Lk), plus no-grad
    per-unit choice and entropy (or None).
    """

    @staticmethod
    def forward(ctx, q, kT, W, b, tau: float, want_stats: bool, keep: bool):
        A, choice, ent, S, w = soft_pair_forward(q, kT, W, b, tau, want_stats, keep)
        ctx.keep = keep
        ctx.tau = tau
        if keep:
            ctx.save_for_backward(q, kT, S, w, A)
        else:
            ctx.save_for_backward(q, kT, W, b)
        if want_stats:
            ctx.mark_non_differentiable(choice, ent)
        return A, choice, ent

    @staticmethod
    def backward(ctx, dA, _dchoice, _dent):
        tau = ctx.tau
        with torch.no_grad():
            if ctx.keep:
                q, kT, S, w, A = ctx.saved_tensors
                Bn, H, D, T, Lk = S.shape
                Abar = (A / D).unsqueeze(2)  # (B,H,1,T,Lk)
            else:
                q, kT, W, b = ctx.saved_tensors
                S, z = _soft_pair_logits(q, kT, W, b, tau)
                w = torch.softmax(z, dim=2)
                del z
                Bn, H, D, T, Lk = S.shape
                Abar = (w * S).sum(2, keepdim=True)  # (B,H,1,T,Lk)
            dS = w * (dA.unsqueeze(2) * D)  # D dA w
            dq = dkT = dW = db = None
            if ctx.needs_input_grad[2] or ctx.needs_input_grad[3]:
                dz = (S - Abar).mul_(dS)
                if tau != 1.0:
                    dz.div_(tau)
                dz2 = dz.view(Bn, H, D, T * Lk)
                if ctx.needs_input_grad[2]:
                    dW = torch.matmul(dz2, S.reshape(Bn, H, D, T * Lk).transpose(-1, -2)).sum(0)
                if ctx.needs_input_grad[3]:
                    db = dz2.sum((0, 3))
                del dz, dz2
            g = q.shape[-1]
            if ctx.needs_input_grad[0]:  # (B,H,D,T,g); for g = 1 a reduction beats many tiny GEMMs
                dq = (dS * kT).sum(-1, keepdim=True) if g == 1 else torch.matmul(dS, kT.transpose(-1, -2))
            if ctx.needs_input_grad[1]:  # (B,H,D,g,Lk)
                dkT = (dS * q).sum(-2, keepdim=True) if g == 1 else torch.matmul(q.transpose(-1, -2), dS)
        return dq, dkT, dW, db, None, None, None


# ---------------------------------------------------------------------------------------------- summaries
def entropy_from_logits(z: torch.Tensor, dim: int) -> torch.Tensor:
    """Entropy (nats) of softmax(z) along ``dim``: ``logsumexp(z) - sum softmax(z) * z``."""
    return torch.logsumexp(z, dim) - (torch.softmax(z, dim) * z).sum(dim)


class _Summaries:
    """Per-tile sums for statistics (no grad) and records (grad to the router); added across tiles."""

    @staticmethod
    def stats(choice: torch.Tensor, ent: torch.Tensor, unit_mask: torch.Tensor, depth: int):
        """Counts (H, D), entropy sum (H,), units per head () over valid units. No gradient.

        choice (long), ent: per routing unit, (B, H, ...); unit_mask: (B, 1, ...) bool.
        """
        with torch.no_grad():
            H = choice.shape[1]
            m = unit_mask.to(ent.dtype)
            red = [i for i in range(ent.dim()) if i != 1]
            ent_sum = (ent * m).sum(red)
            hoff = torch.arange(H, device=choice.device).view(1, H, *([1] * (choice.dim() - 2))) * depth
            weights = m.expand_as(ent).flatten()
            counts = torch.bincount((choice + hoff).flatten(), weights=weights, minlength=H * depth)
            units = m.sum()  # unit_mask has a singleton head axis: units per head
            return counts.view(H, depth).to(torch.float64), ent_sum.to(torch.float64), units.to(torch.float64)

    @staticmethod
    def record(logits, ref_logits, choice, unit_mask, dim: int):
        """Sums per text: log pi(a) (B,), entropy (B,), KL to reference (B,) or None,
        log pi(d) (B, D), units (B,). ``logits`` carry gradient to the router."""
        dim = dim % logits.dim()
        logp = torch.log_softmax(logits, dim)
        m = unit_mask.expand_as(choice).to(logp.dtype)  # (B, H, ...)
        red = tuple(range(1, m.dim()))
        lp_a = logp.gather(dim, choice.unsqueeze(dim)).squeeze(dim)
        sum_lp_a = (lp_a * m).sum(red)
        p = logp.exp()
        sum_ent = (-(p * logp).sum(dim) * m).sum(red)
        md = m.unsqueeze(dim)
        red_d = tuple(i for i in range(1, logp.dim()) if i != dim)
        sum_lp_depth = (logp * md).sum(red_d)  # (B, D)
        sum_kl = None
        if ref_logits is not None:
            ref_lp = torch.log_softmax(ref_logits, dim)
            kl = (p * (logp - ref_lp)).sum(dim)
            sum_kl = (kl * m).sum(red)
        return sum_lp_a, sum_ent, sum_kl, sum_lp_depth, m.detach().sum(red)


def _add(a, b):
    if a is None:
        return b
    if b is None:
        return a
    return tuple(_add(x, y) for x, y in zip(a, b, strict=True)) if isinstance(a, tuple) else a + b
