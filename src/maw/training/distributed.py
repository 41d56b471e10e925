"""Data-parallel training with ``torch.distributed`` (launch with ``torchrun``; gloo on CPU, NCCL on GPU).

Design: every rank holds the full model; each global micro-batch of ``B`` examples is split into
contiguous shards (``numpy.array_split`` of the batch's example list: rank ``r`` gets shard ``r``).
Each rank embeds its shard, then the query and document embeddings of all ranks are gathered
*with gradient* (``torch.distributed.nn.functional.all_gather``), so every query is scored against
every document of the global batch exactly as in a single process; shards are padded to a common
size for the gather and the padding rows are dropped afterwards.

Each rank computes the loss of its own queries, normalised by the *global* number of queries and
multiplied by the world size. The trainer wraps one micro-batch's forward (the local shard through
the trainable layers, then the objective: InfoNCE, or GRPO's ``G`` samples, or the supervised
router's oracle passes) in a module and that module in ``torch.nn.parallel.DistributedDataParallel``,
which averages the gradients over ranks in backward (bucketed all-reduce; ``no_sync`` for all but
the last micro-batch of a step). The all-gather backward sums every rank's contribution into the
shard's owner, so the averaged gradient equals the single-process gradient of the mean loss over
the global batch.

Validation is sharded: every rank encodes a contiguous share of the validation documents, rank 0
gathers them, encodes the queries, searches, and broadcasts the score, so every rank takes the
same early-stopping decision. Only rank 0 writes files (checkpoints, caches, history, mined
negatives); the others wait at barriers, or in :func:`rank0_first` for its result.
"""

from __future__ import annotations

import datetime
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
import torch.distributed as dist


@dataclass
class DistributedContext:
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    device: torch.device = torch.device("cpu")
    initialized_here: bool = False

    @property
    def enabled(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def launched_with_torchrun() -> bool:
    """True inside a ``torchrun`` launch (it sets WORLD_SIZE / RANK for ``init_method="env://"``)."""
    return int(os.environ.get("WORLD_SIZE", "1")) > 1


def init_distributed(device: str | None = None, timeout_minutes: float = 120.0) -> DistributedContext:
    """Join the process group started by ``torchrun`` (if any) and choose this rank's device.

    Without torchrun this returns a single-process context. ``device`` None = CUDA if available.
    The long timeout covers rank 0 building the prefix cache / validating while others wait.
    """
    want_cuda = torch.cuda.is_available() if device is None else str(device).startswith("cuda")
    if dist.is_available() and dist.is_initialized():
        rank, world = dist.get_rank(), dist.get_world_size()
        local = int(os.environ.get("LOCAL_RANK", rank))
        dev = torch.device(f"cuda:{local}") if want_cuda else torch.device("cpu")
        return DistributedContext(rank, world, local, dev, initialized_here=False)
    if not launched_with_torchrun():
        dev = torch.device(device) if device is not None else torch.device("cuda" if want_cuda else "cpu")
        return DistributedContext(device=dev)
    local = int(os.environ.get("LOCAL_RANK", "0"))
    backend = "nccl" if want_cuda else "gloo"
    if want_cuda:
        torch.cuda.set_device(local)
    dist.init_process_group(
        backend=backend, init_method="env://", timeout=datetime.timedelta(minutes=timeout_minutes)
    )
    dev = torch.device(f"cuda:{local}") if want_cuda else torch.device("cpu")
    return DistributedContext(dist.get_rank(), dist.get_world_size(), local, dev, initialized_here=True)


def shutdown(ctx: DistributedContext) -> None:
    if ctx.initialized_here and dist.is_initialized():
        dist.destroy_process_group()


def shard(items: Sequence, ctx: DistributedContext) -> list:
    """This rank's contiguous shard of a global batch (``numpy.array_split`` sizes)."""
    if not ctx.enabled:
        return list(items)
    bounds = np.cumsum([0] + [len(a) for a in np.array_split(np.arange(len(items)), ctx.world_size)])
    return list(items[bounds[ctx.rank] : bounds[ctx.rank + 1]])


def gather_with_grad(x: torch.Tensor, ctx: DistributedContext) -> torch.Tensor:
    """Concatenate every rank's ``x`` (N_r, ...) along dim 0, differentiably; sizes may differ."""
    if not ctx.enabled:
        return x
    from torch.distributed.nn.functional import all_gather

    sizes = [torch.zeros(1, dtype=torch.long, device=x.device) for _ in range(ctx.world_size)]
    dist.all_gather(sizes, torch.tensor([x.shape[0]], dtype=torch.long, device=x.device))
    sizes_i = [int(s.item()) for s in sizes]
    width = max(sizes_i)
    if x.shape[0] < width:
        pad = x.new_zeros((width - x.shape[0], *x.shape[1:]))
        x = torch.cat([x, pad], 0)
    parts = all_gather(x)
    return torch.cat([p[:n] for p, n in zip(parts, sizes_i, strict=True)], 0)


def gather_objects(obj, ctx: DistributedContext) -> list:
    """Every rank's picklable ``obj`` (ids, counts) in rank order (in-process pickling only)."""
    if not ctx.enabled:
        return [obj]
    out: list = [None] * ctx.world_size
    dist.all_gather_object(out, obj)
    return out


def gather_to_main(obj, ctx: DistributedContext) -> list | None:
    """Every rank's picklable ``obj`` (in-process only) on rank 0, in rank order; None elsewhere."""
    if not ctx.enabled:
        return [obj]
    out: list | None = [None] * ctx.world_size if ctx.is_main else None
    dist.gather_object(obj, out, dst=0)
    return out


def all_reduce_sum(values: Sequence[float], ctx: DistributedContext) -> list[float]:
    """Sum a few float scalars over ranks (float64)."""
    if not ctx.enabled:
        return list(values)
    t = torch.tensor(list(values), dtype=torch.float64, device=ctx.device)
    dist.all_reduce(t, op=dist.ReduceOp.SUM)
    return t.tolist()


def broadcast_float(value: float | None, ctx: DistributedContext) -> float | None:
    """Rank 0's value on every rank (None is sent as NaN)."""
    if not ctx.enabled:
        return value
    t = torch.tensor([float("nan") if value is None else value], dtype=torch.float64, device=ctx.device)
    dist.broadcast(t, src=0)
    v = float(t.item())
    return None if v != v else v


def broadcast_object(obj, ctx: DistributedContext):
    """Rank 0's picklable object on every rank (in-process objects only, never read from files)."""
    if not ctx.enabled:
        return obj
    box = [obj]
    dist.broadcast_object_list(box, src=0)
    return box[0]


def barrier(ctx: DistributedContext) -> None:
    if ctx.enabled:
        dist.barrier()


def rank0_first(ctx: DistributedContext | None, compute: Callable[[], Any]) -> Any:
    """``compute()`` on rank 0 (which writes any shared file), then its result on every rank.

    ``compute`` returns something small (a path, a reason); an exception on rank 0 is re-raised there
    and reported on the other ranks (they would otherwise wait at a barrier until the timeout).
    """
    if ctx is None or not ctx.enabled:
        return compute()
    outcome = None
    if ctx.is_main:
        try:
            outcome = ("ok", compute())
        except Exception as exc:
            broadcast_object(("error", f"{type(exc).__name__}: {exc}"), ctx)
            raise
    status, value = broadcast_object(outcome, ctx)
    if status == "error":
        raise RuntimeError(f"rank 0 failed: {value}")
    return value
