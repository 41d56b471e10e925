"""Numeric precision: which autocast dtype a ``--precision`` runs in on a device, and what the CPU has.

``--precision`` (``ModelConfig.precision``) applies to everything a command computes with the
encoder: encoding for retrieval (``maw evaluate``, benchmark cells), validation, the frozen-prefix
cache build, and the training steps.

=========  ==========================================  ==========================================
value      CUDA                                        CPU
=========  ==========================================  ==========================================
``auto``   encode under float16 autocast, train fp32   float32 everywhere (the default)
``fp32``   float32 everywhere                          float32 everywhere
``bf16``   bfloat16 autocast (encode and train)        bfloat16 weights (encode), autocast (train)
``fp16``   float16 autocast, GradScaler in training    float32 (CPU float16 is slow: a warning)
=========  ==========================================  ==========================================

Training steps run under autocast: the matrix products in the low precision, LayerNorm, softmax
and the pooled embeddings in float32, float32 master weights. Encoding (no gradient: retrieval,
validation, the prefix-cache build) on CUDA runs under autocast too; on a CPU in bfloat16 it runs
on bfloat16 *weights* (:func:`inference_precision`), as sentence-transformers'
``model.to(torch.bfloat16)`` does (no per-operator casts; LayerNorm and GELU in bfloat16 too); the
pooled embedding is still averaged in float32. On a CPU, ``bf16`` pays off where the processor
multiplies bfloat16 natively (AVX512-BF16 or AMX, :func:`cpu_bf16_support`); elsewhere it is
emulated and slower, so a warning says so. Every result records :func:`precision_info`: what was asked for and what ran.
"""

from __future__ import annotations

import contextlib
import functools
import itertools
import logging
import platform
from pathlib import Path
from typing import Any

import torch

log = logging.getLogger(__name__)

_DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16}


@functools.lru_cache(maxsize=1)
def cpu_bf16_support() -> str | None:
    """The CPU's native bfloat16 instructions ("amx_bf16", "avx512_bf16") or None (Linux flags;
    other systems report None)."""
    try:
        text = Path("/proc/cpuinfo").read_text(encoding="utf-8", errors="replace")
    except OSError:
        return None
    flags = set()
    for line in text.splitlines():
        if line.startswith("flags"):
            flags.update(line.split(":", 1)[1].split())
            break
    for name in ("amx_bf16", "avx512_bf16"):
        if name in flags:
            return name
    return None


def autocast_dtype(
    precision: str, device: torch.device | str, *, training: bool = False
) -> torch.dtype | None:
    """The autocast dtype of ``precision`` on ``device`` (None: float32, no autocast)."""
    kind = torch.device(device).type
    if precision == "auto":
        return torch.float16 if kind == "cuda" and not training else None
    if precision == "fp32":
        return None
    if precision == "fp16" and kind != "cuda":
        _warn_once(f"--precision fp16 is not used on {kind} (slow there); running in float32")
        return None
    if precision == "bf16" and kind == "cpu" and cpu_bf16_support() is None:
        _warn_once(
            "--precision bf16: this CPU has no native bfloat16 instructions (AVX512-BF16 / AMX); "
            "bfloat16 is emulated and likely slower than float32"
        )
    return _DTYPES[precision]


def casts_weights(dtype: torch.dtype | None, device: torch.device | str) -> bool:
    """Whether a no-grad pass in ``dtype`` on ``device`` runs on cast weights (CPU bfloat16), not
    under autocast."""
    return dtype == torch.bfloat16 and torch.device(device).type == "cpu"


@contextlib.contextmanager
def inference_precision(module: torch.nn.Module, dtype: torch.dtype | None, device: torch.device | str):
    """The numeric precision of a no-grad pass of ``module`` in ``dtype`` (None: float32).

    CPU bfloat16: the module's floating parameters and buffers are cast to bfloat16 for the duration
    and restored after (the float32 weights are kept, not re-derived: training goes on unchanged);
    the module casts its inputs (``Encoder.run_layers``). Elsewhere: autocast. Enter it once around
    a whole pass (the cast costs one copy of the weights), never while gradients are needed.
    """
    if dtype is None:
        yield
        return
    if not casts_weights(dtype, device):
        with torch.autocast(device_type=torch.device(device).type, dtype=dtype):
            yield
        return
    with cast_weights(module, dtype):
        yield


@contextlib.contextmanager
def cast_weights(module: torch.nn.Module, dtype: torch.dtype):
    """``module``'s floating parameters and buffers in ``dtype`` for the duration (the same tensor
    objects, their data swapped), restored exactly after, also on error. A no-op for those already
    in ``dtype``."""
    saved: list[tuple[torch.Tensor, torch.Tensor]] = []
    try:
        with torch.no_grad():
            for t in itertools.chain(module.parameters(), module.buffers()):
                if t.is_floating_point() and t.dtype != dtype:
                    saved.append((t, t.data))
                    t.data = t.data.to(dtype)
        yield
    finally:
        for t, data in saved:
            t.data = data


def amp_key(amp: str, device: torch.device | str) -> list[str]:
    """The part of a cache key (embeddings, prefix states) that says how a pass ran: nothing for
    float32 (the keys of older caches), else the dtype, and whether on cast weights."""
    if amp == "float32":
        return []
    weights = casts_weights(getattr(torch, amp), device)
    return [f"amp={amp}" + ("/weights" if weights else "")]


def dtype_name(dtype: torch.dtype | None) -> str:
    return "float32" if dtype is None else str(dtype).removeprefix("torch.")


def precision_info(precision: str, device: torch.device | str) -> dict[str, Any]:
    """What a result records: the requested precision, what encoding and training ran in, the CPU's
    bfloat16 support."""
    kind = torch.device(device).type
    return {
        "precision": precision,
        "encode_dtype": dtype_name(autocast_dtype(precision, device)),
        "encode_on_cast_weights": casts_weights(autocast_dtype(precision, device), device),
        "train_dtype": dtype_name(autocast_dtype(precision, device, training=True)),
        "device": kind,
        "cpu": platform.processor() or platform.machine(),
        "cpu_bf16": cpu_bf16_support(),
    }


@functools.lru_cache(maxsize=16)
def _warn_once(message: str) -> None:
    log.warning(message)


def retriever_amp(precision: str) -> str:
    """``DenseRetriever``'s ``amp`` argument for a ``--precision`` (it resolves the device itself)."""
    return {"auto": "auto", "fp32": "float32", "bf16": "bfloat16", "fp16": "float16"}[precision]
