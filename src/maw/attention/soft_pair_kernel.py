"""The fused CPU kernel of the soft router at pair granularity (``kernels/soft_pair_cpu.cpp``).

The PyTorch implementation of the soft pair combine (:class:`maw.attention.maw._SoftPairScore`)
writes and re-reads several 5D tile tensors per tile (scores, logits, exponentials), so on a CPU it
is bound by memory traffic, not by the router's FLOPs. The C++ kernel keeps every per-pair value in
registers and one query row's scores in a buffer: it reads ``q``/``k``/``v`` and writes the
attention output (and, in backward, the gradients), no 5D tensor and no score matrix. Dropout's
keep-mask is drawn here with ``torch.rand`` and passed in (:class:`SoftPairAttention`).

It is compiled on first use with ``torch.utils.cpp_extension.load`` (needs a C++ compiler with
OpenMP and ``ninja``; built once per source and CPU, cached under ``TORCH_EXTENSIONS_DIR``, by
default ``~/.cache/torch_extensions``). If the build fails, a warning says why and the PyTorch
implementation is used: results are the same to float32 rounding, only slower.

When it applies (:func:`applicable`): float32 CPU tensors, soft router with a linear network,
``D`` in {1, 2, 4, 8, 16, 32, 64}. Everything else (CUDA, other dtypes, other routers) uses the
PyTorch implementation.
"""

from __future__ import annotations

import functools
import hashlib
import logging
import platform
import warnings
from pathlib import Path

import torch

logger = logging.getLogger(__name__)

SOURCE = Path(__file__).with_name("kernels") / "soft_pair_cpu.cpp"
DEPTHS = (1, 2, 4, 8, 16, 32, 64)


def _cpu_flags() -> str:
    """The CPU's feature flags (Linux), so a build tuned with ``-march=native`` is never reused on
    another CPU that shares the extensions folder."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("flags"):
                return line
    except OSError:
        pass
    return platform.processor()


def _compile_flags() -> list[str]:
    flags = ["-O3", "-fopenmp"]
    if platform.machine().lower() in ("x86_64", "amd64"):
        flags += ["-march=native", "-mprefer-vector-width=512"]
    return flags


@functools.cache
def load() -> bool:
    """Build (first call) and load the kernel; True when ``torch.ops.maw_soft_pair`` is usable."""
    from torch.utils import cpp_extension

    flags = _compile_flags()
    digest = hashlib.sha256(
        SOURCE.read_bytes() + " ".join(flags).encode() + _cpu_flags().encode() + torch.__version__.encode()
    ).hexdigest()[:12]
    logger.info("loading the fused CPU soft-pair kernel (compiled on first use, then cached)")
    try:
        cpp_extension.load(
            name=f"maw_soft_pair_{digest}",
            sources=[str(SOURCE)],
            extra_cflags=flags,
            extra_ldflags=["-fopenmp"],
            is_python_module=False,
            verbose=False,
        )
    except Exception as exc:  # no compiler, no ninja, a failed build: fall back, loudly
        warnings.warn(
            f"MAW: could not build the fused CPU soft-pair kernel ({type(exc).__name__}: {exc}); "
            "using the PyTorch implementation, which is slower",
            RuntimeWarning,
            stacklevel=2,
        )
        return False
    return True


def applicable(q: torch.Tensor, router_hidden: int) -> bool:
    """Whether the fused kernel can compute this soft pair combine (see the module docstring)."""
    return (
        q.device.type == "cpu"
        and q.dtype == torch.float32
        and router_hidden == 0
        and q.shape[2] in DEPTHS
        and load()
    )


class SoftPairAttention(torch.autograd.Function):
    """A whole attention tile with the kernel: ``out = dropout(softmax_j(A + key_bias)) @ v`` with
    ``A = D * sum_d softmax(W S + b)_d S_d`` (the router state ``S`` detached).

    Shapes: q (n,H,D,T,g), kT (n,H,D,g,Lk), v (n,H,Lk,d_h), key_bias (n,Lk) additive (0 or a large
    negative number), W (H,D,D), b (H,D) (both already divided by tau), row_valid (n,T),
    key_valid (n,Lk) bool -> out (n,H,T,d_h), and without gradient the chosen-depth counts (H,D)
    (first argmax of w) and entropy sum (H,) over valid units (zeros when ``stats`` is False).

    Saves the inputs and, with dropout, the keep-mask (bool, ``n*H*T*Lk`` bytes); no 5D and no
    float 4D tensor is ever made. Backward runs one kernel pass per query row that recomputes the
    row's per-pair softmax once and derives the key softmax, dropout and value products from it, so a
    training step costs one kernel forward plus that backward (with ``torch.utils.checkpoint``
    the forward would run twice).
    """

    @staticmethod
    def forward(ctx, q, kT, v, key_bias, W, b, row_valid, key_valid, stats: bool, dropout_p: float):
        q, kT, v, key_bias, W, b = (t.contiguous() for t in (q, kT, v, key_bias, W, b))
        n, H, _, T, _ = q.shape
        mask = torch.empty(0, dtype=torch.bool)
        if dropout_p > 0:
            mask = torch.rand(n, H, T, kT.shape[-1], dtype=q.dtype) >= dropout_p  # (n, H, T, Lk) keep
        scale = 1.0 / (1.0 - dropout_p)
        out, counts, ent = torch.ops.maw_soft_pair.forward(
            q, kT, v, key_bias, W, b, row_valid.contiguous(), key_valid.contiguous(), mask, scale, stats
        )
        ctx.save_for_backward(q, kT, v, key_bias, W, b, mask)
        ctx.scale = scale
        counts, ent = counts.sum(0).to(torch.float64), ent.sum(0)
        ctx.mark_non_differentiable(counts, ent)
        return out, counts, ent

    @staticmethod
    def backward(ctx, dout, _dcounts, _dent):
        q, kT, v, key_bias, W, b, mask = ctx.saved_tensors
        dq, dkT, dv, dW, db = torch.ops.maw_soft_pair.attention_backward(
            q, kT, v, key_bias, W, b, mask, ctx.scale, dout.contiguous()
        )
        return dq, dkT, dv, None, dW.sum(0).to(W.dtype), db.sum(0).to(b.dtype), None, None, None, None
