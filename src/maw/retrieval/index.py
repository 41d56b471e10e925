"""Inner-product search over document embeddings: exact in chunks, or an approximate FAISS index.

Kinds (:class:`IndexSpec`):

* ``flat`` (default, exact): each chunk of the documents (a store shard) goes into a
  ``faiss.IndexFlatIP``, is searched for the top k, and the running top k per query is merged
  with it. Memory: one chunk in float32 plus (Q, k) results; never the whole matrix nor a copy.
  Ties keep the earlier document first across chunks (within a chunk, FAISS's order).
* ``hnsw``: ``faiss.IndexHNSWFlat`` (graph of ``hnsw_m`` links per node, ``ef_construction``
  when adding, ``ef_search`` when searching); holds all vectors in float32 plus the graph.
* ``ivf-flat`` / ``ivf-pq``: an inverted file of ``nlist`` k-means cells (trained on up to
  ``train_size`` documents, sampled with a fixed seed), ``nprobe`` cells searched per query;
  ``ivf-pq`` stores each vector as ``pq_m`` codes of ``pq_bits`` bits (``d % pq_m == 0``).

Approximate indexes are built in memory from the chunks (added one chunk at a time); their
recall@k against exact search is measured on a sample of queries (:func:`recall_vs_exact`).
FAISS runs on GPU when it is a CUDA build with a visible GPU (``faiss.get_num_gpus() > 0``) and
``gpu`` is not False, for ``flat`` and the IVF kinds (HNSW is CPU-only in FAISS).

Index sizes are computed from the layout (:func:`index_bytes`), never by serialising the index.
Shapes: queries ``(Q, d)`` float32; scores and rows ``(Q, k)``; rows index the document matrix.
"""

from __future__ import annotations

import math
import time
from collections.abc import Iterable
from dataclasses import asdict, dataclass

import faiss
import numpy as np

from maw.config import INDEX_KINDS, EvalConfig


@dataclass(frozen=True)
class IndexSpec:
    """Which index to search with, and its parameters (recorded with every result)."""

    kind: str = "flat"
    hnsw_m: int = 32
    ef_construction: int = 200
    ef_search: int = 128
    nlist: int | None = None  # None: 4 * sqrt(N), within [1, N // 39]
    nprobe: int = 16
    pq_m: int = 48  # sub-quantizers of ivf-pq (must divide d): 384 / 48 = 8 dims per code
    pq_bits: int = 8
    train_size: int = 262_144  # documents sampled to train the IVF k-means
    recall_queries: int = 100  # queries on which an approximate index is compared with exact search
    gpu: bool | None = None  # None: on GPU when FAISS has one

    def validate(self) -> None:
        if self.kind not in INDEX_KINDS:
            raise ValueError(f"--index: unknown index {self.kind!r}; choose one of {', '.join(INDEX_KINDS)}")
        for name in ("hnsw_m", "ef_construction", "ef_search", "nprobe", "pq_m", "pq_bits", "train_size"):
            if getattr(self, name) < 1:
                raise ValueError(f"index parameter {name} must be >= 1, got {getattr(self, name)}")
        if self.nlist is not None and self.nlist < 1:
            raise ValueError(f"index parameter nlist must be >= 1, got {self.nlist}")
        if self.recall_queries < 0:
            raise ValueError(f"index parameter recall_queries must be >= 0, got {self.recall_queries}")

    @classmethod
    def of(cls, cfg: EvalConfig) -> IndexSpec:
        """The index an :class:`~maw.config.EvalConfig` asks for (``--index`` and its parameters)."""
        return cls(
            kind=cfg.index,
            hnsw_m=cfg.hnsw_m,
            ef_search=cfg.ef_search,
            nlist=cfg.nlist,
            nprobe=cfg.nprobe,
            pq_m=cfg.pq_m,
        )

    @property
    def exact(self) -> bool:
        return self.kind == "flat"

    def params(self, n: int | None = None) -> dict:
        """The parameters that apply to this kind (``nlist`` resolved when ``n`` is given)."""
        keep = {
            "flat": (),
            "hnsw": ("hnsw_m", "ef_construction", "ef_search"),
            "ivf-flat": ("nlist", "nprobe", "train_size"),
            "ivf-pq": ("nlist", "nprobe", "pq_m", "pq_bits", "train_size"),
        }[self.kind]
        out = {k: v for k, v in asdict(self).items() if k in keep}
        if "nlist" in out and n is not None:
            out["nlist"] = resolve_nlist(self, n)
        return {"kind": self.kind, **out, "gpu": use_gpu(self)}


def resolve_nlist(spec: IndexSpec, n: int) -> int:
    """nlist for N documents: the spec's, else 4 sqrt(N); at most N // 39 (FAISS wants >= 39 per cell)."""
    nlist = spec.nlist if spec.nlist is not None else int(4 * math.sqrt(n))
    return max(1, min(nlist, n // 39 if n >= 39 else 1))


def use_gpu(spec: IndexSpec) -> bool:
    gpus = faiss.get_num_gpus() if hasattr(faiss, "get_num_gpus") else 0
    return bool(spec.gpu is not False and gpus > 0 and spec.kind != "hnsw")


def _to_gpu(index: faiss.Index) -> faiss.Index:
    if not hasattr(_to_gpu, "res"):
        _to_gpu.res = faiss.StandardGpuResources()
    return faiss.index_cpu_to_gpu(_to_gpu.res, 0, index)


def index_bytes(spec: IndexSpec, n: int, d: int, itemsize: int = 4) -> int:
    """Bytes the index holds for N vectors of dimension d (``itemsize`` of a flat store's dtype).

    flat: N d itemsize; hnsw: N d 4 + N 2M 4 (level-0 links, int32; upper levels ~1/M of that);
    ivf-flat: N (d 4 + 8) + nlist d 4; ivf-pq: N (pq_m pq_bits / 8 + 8) + nlist d 4 + codebooks.
    """
    if spec.kind == "flat":
        return n * d * itemsize
    if spec.kind == "hnsw":
        return n * d * 4 + n * 2 * spec.hnsw_m * 4
    nlist = resolve_nlist(spec, n)
    if spec.kind == "ivf-flat":
        return n * (d * 4 + 8) + nlist * d * 4
    return n * (spec.pq_m * spec.pq_bits // 8 + 8) + nlist * d * 4 + (2**spec.pq_bits) * d * 4


# ---------------------------------------------------------------------- exact search in chunks
def merge_topk(
    s_a: np.ndarray, i_a: np.ndarray, s_b: np.ndarray, i_b: np.ndarray, k: int
) -> tuple[np.ndarray, np.ndarray]:
    """Top k of two (Q, k_a) / (Q, k_b) result lists by score; on ties ``a`` comes first."""
    s = np.concatenate([s_a, s_b], axis=1)  # (Q, k_a + k_b)
    i = np.concatenate([i_a, i_b], axis=1)
    order = np.argsort(-s, axis=1, kind="stable")[:, :k]
    return np.take_along_axis(s, order, 1), np.take_along_axis(i, order, 1)


def _flat(x: np.ndarray, gpu: bool) -> faiss.Index:
    index = faiss.IndexFlatIP(x.shape[1])
    index = _to_gpu(index) if gpu else index
    index.add(x)
    return index


def exact_search(
    q: np.ndarray,
    chunks: Iterable[tuple[int, np.ndarray]],
    k: int,
    gpu: bool = False,
    timed_queries: int = 0,
) -> tuple[np.ndarray, np.ndarray, list[float]]:
    """Exact top-k by inner product over ``(start_row, block)`` chunks of the documents.

    Returns scores (Q, k'), rows (Q, k') with k' = min(k, N), and, for the first
    ``timed_queries`` queries, each one's search time in ms when searched alone (summed over the
    chunks; reading the chunks from disk is shared, not timed).
    """
    q = np.ascontiguousarray(q, dtype=np.float32)
    best_s = np.empty((len(q), 0), np.float32)
    best_i = np.empty((len(q), 0), np.int64)
    alone_ms = [0.0] * min(timed_queries, len(q))
    for start, block in chunks:
        x = np.ascontiguousarray(block, dtype=np.float32)  # (n_c, d): the only float32 copy
        if not len(x):
            continue
        index = _flat(x, gpu)
        kc = min(k, len(x))
        s, i = index.search(q, kc) if len(q) else (best_s, best_i)
        best_s, best_i = merge_topk(best_s, best_i, s, i + start, k) if best_s.shape[1] else (s, i + start)
        for j in range(len(alone_ms)):
            t0 = time.perf_counter()
            index.search(q[j : j + 1], kc)
            alone_ms[j] += 1000.0 * (time.perf_counter() - t0)
        del index, x
    return best_s, best_i, alone_ms


# ---------------------------------------------------------------------- approximate indexes
def build_approximate(
    spec: IndexSpec, chunks_fn, n: int, d: int, sample: np.ndarray | None = None
) -> faiss.Index:
    """An hnsw / ivf-* index over the N documents given by ``chunks_fn()`` (called once or twice).

    IVF kinds train on ``sample`` (float32 (m, d)) when given, else on the first ``train_size``
    rows of a seeded permutation gathered from the chunks.
    """
    if spec.kind == "hnsw":
        index = faiss.IndexHNSWFlat(d, spec.hnsw_m, faiss.METRIC_INNER_PRODUCT)
        index.hnsw.efConstruction = spec.ef_construction
        index.hnsw.efSearch = spec.ef_search
    else:
        nlist = resolve_nlist(spec, n)
        quantizer = faiss.IndexFlatIP(d)
        if spec.kind == "ivf-flat":
            index = faiss.IndexIVFFlat(quantizer, d, nlist, faiss.METRIC_INNER_PRODUCT)
        else:
            if d % spec.pq_m:
                raise ValueError(f"ivf-pq: pq_m={spec.pq_m} must divide the embedding dimension {d}")
            index = faiss.IndexIVFPQ(quantizer, d, nlist, spec.pq_m, spec.pq_bits, faiss.METRIC_INNER_PRODUCT)
        if sample is None:
            sample = _training_sample(chunks_fn(), n, min(spec.train_size, n))
        if use_gpu(spec):
            index = _to_gpu(index)
        index.train(np.ascontiguousarray(sample, dtype=np.float32))
        index.nprobe = min(spec.nprobe, nlist)
    for _, block in chunks_fn():
        index.add(np.ascontiguousarray(block, dtype=np.float32))
    return index


def _training_sample(chunks: Iterable[tuple[int, np.ndarray]], n: int, m: int) -> np.ndarray:
    """``m`` rows chosen by a seeded permutation, gathered chunk by chunk: (m, d) float32."""
    rows = np.sort(np.random.default_rng(0).permutation(n)[:m])
    parts = []
    for start, block in chunks:
        sel = rows[(rows >= start) & (rows < start + len(block))] - start
        if len(sel):
            parts.append(np.asarray(block[sel], dtype=np.float32))
    return np.concatenate(parts) if parts else np.empty((0, 0), np.float32)


def recall_vs_exact(approx_rows: np.ndarray, exact_rows: np.ndarray, ks: Iterable[int]) -> dict[str, float]:
    """Mean over queries of |approx top-k ∩ exact top-k| / |exact top-k|, for each k: {"@k": r}."""
    out = {}
    for k in ks:
        hits = [
            len(set(a[:k][a[:k] >= 0].tolist()) & set(e[:k].tolist())) / max(1, min(k, len(e)))
            for a, e in zip(approx_rows, exact_rows, strict=True)
        ]
        out[f"@{k}"] = float(np.mean(hits)) if hits else float("nan")
    return out
