"""maw: Multi-Attention-Weight (MAW) transformers for dense retrieval, and a benchmark harness.

The Python API (:mod:`maw.api`; imported on first use, so ``import maw`` stays cheap)::

    import maw

    encoder = maw.load_encoder("runs/demo-maw")  # a `maw train` run, RUN/best, an export, a Hub model
    vectors = encoder.encode(["what is dense retrieval?"], batch_size=32)  # unit-length float32 rows
    maw.inject_maw(hf_model, depth_dim=4, router="soft", maw_layers="last")  # MAW into an HF encoder
    metrics = maw.evaluate("runs/demo-maw", dataset="demo")  # {"nDCG@10": ..., ...}
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"
__all__ = ["TextEncoder", "__version__", "evaluate", "inject_maw", "load_encoder"]

_API = ("TextEncoder", "evaluate", "inject_maw", "load_encoder")

if TYPE_CHECKING:  # pragma: no cover
    from maw.api import TextEncoder, evaluate, inject_maw, load_encoder


def __getattr__(name: str) -> Any:
    if name in _API:
        from maw import api

        return getattr(api, name)
    raise AttributeError(f"module 'maw' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted({*globals(), *_API})
