"""Depth routers of the MAW block: the network that scores depths, and the policies that turn scores
into depth weights ``w``.

The *network* (:class:`DepthRouter`) is a per-head linear map (or a small per-head MLP) from a
routing state of ``F`` features to ``D`` depth logits, shared across positions. Its last layer is
zero-initialised, so every router starts with all-zero logits (a uniform distribution over depths).

The *policy* (:func:`route`) is what each ``--router`` does with the logits ``z`` (last axis = D):

=============  ===============================================  ============================
router         training                                          eval
=============  ===============================================  ============================
``soft``       ``w = softmax(z / tau)``                          same
``gumbel``     straight-through Gumbel-softmax (tau annealed)    one-hot argmax
``grpo``       one-hot sample ``a ~ pi = softmax(z)``            one-hot argmax
``supervised`` one-hot argmax of the classifier                  one-hot argmax
=============  ===============================================  ============================

With the ``signed`` parametrisation (soft router only) the soft weights are
``w = (1 + tanh(z / tau)) / D`` instead of the softmax: not on the simplex, ``1/D`` each at
``z = 0`` (:func:`route` with ``signed=True``). The ``gated`` parametrisation mixes any of these
with the uniform weights in the MAW block (:mod:`maw.attention.maw`), not here.

Randomness (Gumbel noise for ``gumbel``; Gumbel-max sampling, i.e. an exact categorical sample,
for ``grpo``) comes from :class:`RowNoise`: one seed per forward is drawn from torch's global CPU
generator (so ``torch.manual_seed`` makes runs reproducible), and the noise of query row ``i`` is
drawn from a generator seeded by ``(seed, i)``. The noise is therefore a pure function of the seed
and the position, independent of how rows are grouped into tiles: the tiled implementation (and
its checkpoint recompute in backward) sees exactly the noise of the naive one.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from maw.config import ROUTERS

HARD_ROUTERS = ("gumbel", "grpo", "supervised")
POLICY_ROUTERS = ("grpo", "supervised")  # routers whose state is detached and that keep RoutingRecords


class DepthRouter(nn.Module):
    """Per-head network ``F -> D`` (linear, or MLP ``F -> hidden -> D`` with GELU).

    Weights are stored per head like ``nn.Linear`` (``(H, out, in)``), so the same parameters serve
    both layouts used by the MAW block:

    * :meth:`forward`: features last, ``(B, H, ..., F) -> (B, H, ..., D)``;
    * :meth:`forward_dmajor`: features on axis 2, ``(B, H, F, N) -> (B, H, D, N)`` (the pair
      granularity keeps the 5D score depth-major so the router is one batched matmul).

    The last layer (weight and bias) is zero-initialised: all-zero logits at init.

    ``gated=True`` adds the per-head mixing gate of the ``gated`` parametrisation: a raw parameter
    ``gate`` (H,) from 0, read as ``a_h = tanh(gate_h)`` (:meth:`gate_value`). It is a router
    parameter (the router's learning rate, no weight decay) but not part of the policy, so the
    frozen reference copy (:func:`freeze_copy`) leaves it out.
    """

    def __init__(self, num_heads: int, in_features: int, depth: int, hidden: int = 0, gated: bool = False):
        super().__init__()
        self.num_heads, self.in_features, self.depth, self.hidden = num_heads, in_features, depth, hidden
        if hidden > 0:
            self.w1 = nn.Parameter(torch.empty(num_heads, hidden, in_features))
            self.b1 = nn.Parameter(torch.zeros(num_heads, hidden))
            bound = 1.0 / math.sqrt(in_features)
            nn.init.uniform_(self.w1, -bound, bound)
            last_in = hidden
        else:
            last_in = in_features
        self.weight = nn.Parameter(torch.zeros(num_heads, depth, last_in))  # zero-init: uniform start
        self.bias = nn.Parameter(torch.zeros(num_heads, depth))
        self.gate = nn.Parameter(torch.zeros(num_heads)) if gated else None  # a = tanh(gate) = 0 at init

    def gate_value(self) -> torch.Tensor | None:
        """The mixing gate ``a`` (H,) in (-1, 1), exactly 0 at init; None when not gated."""
        return None if self.gate is None else torch.tanh(self.gate)

    def forward(self, state: torch.Tensor) -> torch.Tensor:
        """``(B, H, *, F) -> (B, H, *, D)``."""
        shape = state.shape
        x = state.reshape(shape[0], shape[1], -1, shape[-1])  # (B, H, N, F)
        if self.hidden > 0:
            x = F.gelu(torch.matmul(x, self.w1.transpose(1, 2)) + self.b1[:, None, :])  # (B, H, N, hidden)
        z = torch.matmul(x, self.weight.transpose(1, 2)) + self.bias[:, None, :]  # (B, H, N, D)
        return z.reshape(*shape[:-1], self.depth)

    def forward_dmajor(self, state: torch.Tensor) -> torch.Tensor:
        """``(B, H, F, N) -> (B, H, D, N)``."""
        x = state
        if self.hidden > 0:
            x = F.gelu(torch.matmul(self.w1, x) + self.b1[:, :, None])  # (B, H, hidden, N)
        return torch.matmul(self.weight, x) + self.bias[:, :, None]  # (B, H, D, N)


def freeze_copy(router: DepthRouter) -> DepthRouter:
    """A frozen deep copy whose tensors are non-persistent buffers (``requires_grad=False``).

    Buffers follow ``.to(device)`` but are left out of ``state_dict`` and ``parameters()``, so the
    reference policy never reaches an optimiser or a checkpoint of the model weights.
    """
    import copy

    ref = copy.deepcopy(router)
    if ref.gate is not None:  # the gate mixes the policy into the score; it is not the policy
        del ref._parameters["gate"]
        ref.gate = None
    for mod in ref.modules():
        for name, p in list(mod.named_parameters(recurse=False)):
            del mod._parameters[name]
            mod.register_buffer(name, p.detach().clone(), persistent=False)
    return ref


# ---------------------------------------------------------------------------------------------- noise
class RowNoise:
    """Uniform noise that is a pure function of (seed, query row): tiling-independent.

    ``rows(i0, i1, shape, axis)``: for each row ``i`` a tensor of ``shape`` from a generator
    seeded with a hash of ``(seed, i)``, stacked on ``axis``.
    ``row=-1`` is used for per-sequence (head granularity) draws.
    """

    def __init__(self, seed: int, device: torch.device):
        self.seed = int(seed)
        self.device = torch.device(device)

    @classmethod
    def draw(cls, device: torch.device) -> RowNoise:
        """A fresh seed from torch's global CPU generator (reproducible under ``torch.manual_seed``)."""
        return cls(int(torch.randint(0, 2**62, (1,)).item()), device)

    def _generator(self, row: int) -> torch.Generator:
        # splitmix64-style mixing of (seed, row); mt19937 uses the low 32 bits of the seed.
        x = (self.seed + (row + 2) * 0x9E3779B97F4A7C15) & 0xFFFFFFFFFFFFFFFF
        x = ((x ^ (x >> 30)) * 0xBF58476D1CE4E5B9) & 0xFFFFFFFFFFFFFFFF
        x = ((x ^ (x >> 27)) * 0x94D049BB133111EB) & 0xFFFFFFFFFFFFFFFF
        x ^= x >> 31
        g = torch.Generator(device=self.device)
        g.manual_seed(x & 0x7FFFFFFFFFFFFFFF)
        return g

    def uniform(self, row: int, shape: tuple[int, ...]) -> torch.Tensor:
        return torch.rand(shape, generator=self._generator(row), device=self.device)

    def rows(self, i0: int, i1: int, shape: tuple[int, ...], axis: int = 2) -> torch.Tensor:
        return torch.stack([self.uniform(i, shape) for i in range(i0, i1)], dim=axis)


def gumbel_from_uniform(u: torch.Tensor) -> torch.Tensor:
    """Standard Gumbel noise ``-log(-log u)`` (u clamped away from 0)."""
    return -torch.log(-torch.log(u.clamp_min(1e-20)))


def first_argmax(z: torch.Tensor, dim: int, centered: bool = False) -> torch.Tensor:
    """Index of the first maximum along ``dim`` (exactly ``argmax``), as ``long``.

    With ``zc = z - max(z)`` (maxima exactly 0, others < 0), ``sign(zc) + 1`` is 1 at the maxima
    and 0 elsewhere; times ``D - d`` its max over ``dim`` is ``D - first index``. These are plain
    float ops: on CPU several times faster than ``argmax`` / ``max(dim)`` over a strided
    (depth-major) axis. ``centered=True``: ``z`` is already ``zc``. NaN rows give index D-1.
    """
    dim = dim % z.dim()
    D = z.shape[dim]
    zc = z if centered else z - z.amax(dim, keepdim=True)
    shape = [1] * z.dim()
    shape[dim] = D
    rev = torch.arange(D, 0, -1, device=z.device, dtype=z.dtype).view(shape)  # D, D-1, ..., 1
    key = torch.sign(zc).add_(1).mul_(rev).amax(dim)  # D - first index of a maximum
    return (D - key).nan_to_num_(D - 1).clamp_(0, D - 1).long()


# ---------------------------------------------------------------------------------------------- policy
@dataclass
class Routed:
    """Result of :func:`route` for a block of routing units (depth on axis ``dim``).

    weights: depth weights ``w`` (sum to 1 over depth, except ``signed``; one-hot for hard routers),
        gradient as the router defines (soft: softmax; gumbel: straight-through; grpo/supervised: none).
    choice: the chosen depth per unit (argmax of ``w`` for soft), ``long``, depth axis removed.
    hard: whether ``weights`` is exactly one-hot (then ``A = D * S[choice]``).
    """

    weights: torch.Tensor | None
    choice: torch.Tensor
    hard: bool


def route(
    logits: torch.Tensor,
    kind: str,
    training: bool,
    dim: int,
    tau: float = 1.0,
    gumbel_tau: float = 1.0,
    uniform_noise: torch.Tensor | None = None,
    forced_depth: int | None = None,
    signed: bool = False,
) -> Routed:
    """Turn router logits into depth weights (see the module table). ``uniform_noise`` has the
    shape of ``logits`` and is needed for ``gumbel`` and ``grpo`` in training mode.
    ``signed`` (soft only): ``w = (1 + tanh(z / tau)) / D``, the choice is still ``argmax z``.

    For hard routers ``weights`` is ``None`` (callers gather ``S`` at ``choice``) except for the
    straight-through Gumbel estimator, whose one-hot weights carry the soft gradient.
    """
    dim = dim % logits.dim()
    depth = logits.shape[dim]
    if forced_depth is not None:
        choice = torch.full(
            logits.shape[:dim] + logits.shape[dim + 1 :], forced_depth, dtype=torch.long, device=logits.device
        )
        return Routed(None, choice, True)
    if kind == "soft" and signed:
        w = (1.0 + torch.tanh(logits / tau)) / depth
        return Routed(w, first_argmax(logits.detach(), dim), False)
    if kind == "soft":
        w = torch.softmax(logits / tau, dim=dim)
        return Routed(w, first_argmax(logits.detach(), dim), False)
    if kind in ("gumbel", "grpo") and training:
        if uniform_noise is None:
            raise ValueError(f"router {kind!r} needs noise in training mode")
        gumbel = gumbel_from_uniform(uniform_noise)
        if kind == "grpo":  # Gumbel-max: an exact sample from softmax(logits)
            return Routed(None, first_argmax(logits.detach() + gumbel, dim), True)
        y = torch.softmax((logits + gumbel) / gumbel_tau, dim=dim)
        choice = first_argmax(y.detach(), dim)
        hard = F.one_hot(choice, depth).to(y.dtype).movedim(-1, dim)
        return Routed(hard - y.detach() + y, choice, True)
    if kind in ROUTERS:
        return Routed(None, first_argmax(logits.detach(), dim), True)
    raise ValueError(f"unknown router {kind!r}")
