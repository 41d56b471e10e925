"""Numeric precision: which autocast dtype a ``--precision`` runs in on a device, and what the CPU has.

``--precision`` (``ModelConfig.precision``) applies to everything a command computes with the
encoder: encoding for retrieval (``maw evaluate``, benchmark cells), validation, the frozen-prefix
cache build, and the training steps.

=========  ==========================================  ==========================================
value      CUDA                                        CPU
=========  ==========================================  ==========================================
``auto``   encode under float16 autocast, train fp32   float32 everywhere (the default)
``fp32``   float32 everywhere                          float32 everywhere
``bf16``   bfloat16 autocast (encode and train)        bfloat16 autocast (encode and train)
``fp16``   float16 autocast, GradScaler in training    float32 (CPU float16 is slow: a warning)
=========  ==========================================  ==========================================

Autocast runs the matrix products in the low precision and keeps LayerNorm, softmax and the
pooled embeddings in float32. On a CPU, ``bf16`` pays off where the processor multiplies bfloat16
natively (AVX512-BF16 or AMX, :func:`cpu_bf16_support`); elsewhere it is emulated and slower, so
a warning says so. Every result records :func:`precision_info`: what was asked for and what ran.
"""

from __future__ import annotations

import contextlib
import functools
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


def autocast(precision: str, device: torch.device | str, *, training: bool = False):
    """A context manager: autocast for ``precision`` on ``device``, or nothing for float32."""
    dtype = autocast_dtype(precision, device, training=training)
    if dtype is None:
        return contextlib.nullcontext()
    return torch.autocast(device_type=torch.device(device).type, dtype=dtype)


def dtype_name(dtype: torch.dtype | None) -> str:
    return "float32" if dtype is None else str(dtype).removeprefix("torch.")


def precision_info(precision: str, device: torch.device | str) -> dict[str, Any]:
    """What a result records: the requested precision, what encoding and training ran in, the CPU's
    bfloat16 support."""
    kind = torch.device(device).type
    return {
        "precision": precision,
        "encode_dtype": dtype_name(autocast_dtype(precision, device)),
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
