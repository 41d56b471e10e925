"""Dense retrieval: encode with ``maw.models.encoder.Encoder``, exact inner-product search with FAISS.

* Queries and documents have separate maximum lengths (defaults 64 / 256 tokens; 256 is
  all-MiniLM-L6-v2's ``max_seq_length``). Documents are ``Document.full_text()``.
* Embeddings are L2-normalised by the encoder (when its ``normalize`` is on), so inner product is
  cosine similarity. Search is exhaustive (``faiss.IndexFlatIP``): no approximation error.
* The encoder runs on CUDA when available (``device=None``), else CPU; FAISS runs on CPU.
* Document embeddings can be cached on disk (``cache_dir``): one ``<key>.npy`` (float32, loaded
  with ``allow_pickle=False``) and one ``<key>.json`` (doc ids and how they were made), both written
  atomically. The key hashes the model fingerprint (model name, module structure and every
  state-dict tensor's bytes), the data fingerprint (ids and texts), the max length and the
  normalisation, so any change to the weights (fine-tuning, MAW injection) or to the documents is
  a cache miss. ``cache_dir=None`` disables the cache.

Shapes: query embeddings ``(Q, d)``, document embeddings ``(N, d)``, both float32.

Reference figure: all-MiniLM-L6-v2 zero-shot on SciFact test (300 queries, 5,183 docs), query /
doc max length 64 / 256: nDCG@10 = 0.6451 (MTEB reports 0.645); a sentence-transformers + numpy +
pytrec_eval pipeline gives the same value to 4 decimals (``benchmarks/st_reference.py``).
"""

from __future__ import annotations

import hashlib
import json
import statistics
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import faiss
import numpy as np
import torch

from maw.data.types import Document, Run
from maw.models.encoder import Encoder
from maw.utils.io import atomic_path, atomic_write_json, fingerprint


def model_fingerprint(encoder: torch.nn.Module, extra: str = "") -> str:
    """Hash of the model name, module structure and all state-dict tensors (names, dtypes, bytes).

    ``extra`` lets callers fold in settings that change outputs without changing any tensor.
    """
    h = hashlib.sha256()
    h.update(str(getattr(encoder, "model_name", type(encoder).__name__)).encode())
    h.update(b"\x00" + extra.encode() + b"\x00")
    h.update(",".join(type(m).__name__ for m in encoder.modules()).encode())
    for name, tensor in sorted(encoder.state_dict().items()):
        t = tensor.detach().to("cpu").contiguous().reshape(-1)
        h.update(f"\x00{name}\x00{t.dtype}\x00{tuple(tensor.shape)}\x00".encode())
        h.update(memoryview(t.view(torch.uint8).numpy()))
    return h.hexdigest()[:16]


def texts_fingerprint(ids: Sequence[str], texts: Sequence[str]) -> str:
    """Hash of (id, text) pairs in order."""
    return fingerprint(part for pair in zip(ids, texts, strict=True) for part in pair)


class EmbeddingCache:
    """``<folder>/<key>.npy`` + ``<key>.json``; a missing, unreadable or inconsistent entry is a miss."""

    def __init__(self, folder: str | Path):
        self.folder = Path(folder)

    @staticmethod
    def key(model_fp: str, data_fp: str, max_length: int, normalize: bool, kind: str = "doc") -> str:
        return fingerprint([model_fp, data_fp, str(max_length), str(bool(normalize)), kind])

    def paths(self, key: str) -> tuple[Path, Path]:
        return self.folder / f"{key}.npy", self.folder / f"{key}.json"

    def load(self, key: str, ids: Sequence[str]) -> tuple[np.ndarray, dict[str, Any]] | None:
        npy, meta_path = self.paths(key)
        if not (npy.is_file() and meta_path.is_file()):
            return None
        try:
            meta = json.loads(meta_path.read_text(encoding="utf-8"))
            emb = np.load(npy, allow_pickle=False)
        except (OSError, ValueError):
            return None
        if (
            meta.get("ids") != list(ids)
            or emb.dtype != np.float32
            or emb.ndim != 2
            or emb.shape[0] != len(ids)
        ):
            return None
        return emb, meta

    def save(self, key: str, ids: Sequence[str], emb: np.ndarray, meta: dict[str, Any]) -> None:
        npy, meta_path = self.paths(key)
        with atomic_path(npy) as tmp, open(tmp, "wb") as fh:
            np.save(fh, np.ascontiguousarray(emb, dtype=np.float32), allow_pickle=False)
        atomic_write_json(
            meta_path, {**meta, "ids": list(ids)}, indent=None
        )  # written last: marks the entry complete


def build_index(d_emb: np.ndarray) -> faiss.Index:
    """Exact inner-product index over document embeddings (N, d)."""
    d_emb = np.ascontiguousarray(d_emb, dtype=np.float32)
    if d_emb.ndim != 2:
        raise ValueError(f"document embeddings must be 2-D (N, d), got shape {d_emb.shape}")
    index = faiss.IndexFlatIP(d_emb.shape[1])
    index.add(d_emb)
    return index


def search_index(
    index: faiss.Index, q_emb: np.ndarray, q_ids: Sequence[str], d_ids: Sequence[str], k: int
) -> Run:
    """Top-``k`` (clipped to the index size) documents per query from a built index."""
    if k < 1:
        raise ValueError(f"k must be >= 1, got {k}")
    q_emb = np.ascontiguousarray(q_emb, dtype=np.float32)
    if q_emb.ndim != 2 or q_emb.shape[0] != len(q_ids):
        raise ValueError(f"query embeddings have shape {q_emb.shape} for {len(q_ids)} query ids")
    if index.ntotal != len(d_ids):
        raise ValueError(f"index holds {index.ntotal} vectors for {len(d_ids)} document ids")
    k = min(k, index.ntotal)
    if len(q_ids) == 0 or k == 0:
        return {q: {} for q in q_ids}
    scores, idx = index.search(q_emb, k)
    return {
        q: {d_ids[j]: float(s) for j, s in zip(row_i.tolist(), row_s.tolist(), strict=True) if j >= 0}
        for q, row_i, row_s in zip(q_ids, idx, scores, strict=True)
    }


def search_embeddings(
    q_emb: np.ndarray, q_ids: Sequence[str], d_emb: np.ndarray, d_ids: Sequence[str], k: int = 1000
) -> Run:
    """Exact maximum-inner-product search: q_emb (Q, d), d_emb (N, d) -> top-k run per query."""
    if d_emb.shape[0] != len(d_ids):
        raise ValueError(f"document embeddings have {d_emb.shape[0]} rows for {len(d_ids)} document ids")
    if len(d_ids) == 0:
        return {q: {} for q in q_ids}
    if q_emb.ndim == 2 and d_emb.ndim == 2 and q_emb.shape[1] != d_emb.shape[1]:
        raise ValueError(f"query dim {q_emb.shape[1]} != document dim {d_emb.shape[1]}")
    return search_index(build_index(d_emb), q_emb, q_ids, d_ids, k)


class DenseRetriever:
    """Bi-encoder retrieval with an ``Encoder``; ``retrieve(queries, corpus, k) -> Run``.

    After ``retrieve``, ``timings`` holds: ``doc_encode_seconds``, ``docs_per_second`` (from the
    run that computed the embeddings, also on a cache hit), ``doc_cache_hit``,
    ``query_encode_seconds``, ``search_seconds``, ``qps`` (batched encode + search),
    ``query_latency_ms`` / ``query_latency_ms_p50`` (one query at a time, encode + search, over
    ``latency_queries`` queries), ``index_bytes`` and ``device``.
    """

    def __init__(
        self,
        encoder: Encoder,
        query_max_length: int = 64,
        doc_max_length: int = 256,
        batch_size: int = 128,
        cache_dir: str | Path | None = None,
        device: str | None = None,
        latency_queries: int = 50,
        show_progress: bool = False,
        fingerprint_extra: str = "",
    ):
        for name, value in (
            ("query_max_length", query_max_length),
            ("doc_max_length", doc_max_length),
            ("batch_size", batch_size),
        ):
            if value < 1:
                raise ValueError(f"{name} must be >= 1, got {value}")
        self.device = device or ("cuda" if torch.cuda.is_available() else "cpu")
        self.encoder = encoder.to(self.device)
        self.query_max_length = query_max_length
        self.doc_max_length = doc_max_length
        self.batch_size = batch_size
        self.cache = EmbeddingCache(cache_dir) if cache_dir is not None else None
        self.latency_queries = latency_queries
        self.show_progress = show_progress
        self.fingerprint_extra = fingerprint_extra
        self.timings: dict[str, Any] = {}

    def encode_queries(self, queries: Mapping[str, str]) -> tuple[list[str], np.ndarray]:
        ids = list(queries)
        emb = self.encoder.encode([queries[q] for q in ids], self.query_max_length, self.batch_size)
        return ids, emb

    def encode_corpus(self, corpus: Mapping[str, Document]) -> tuple[list[str], np.ndarray]:
        """Document embeddings (N, d), from the cache when the same model has encoded the same texts."""
        ids = list(corpus)
        texts = [corpus[d].full_text() for d in ids]
        key = None
        if self.cache is not None:
            model_fp = model_fingerprint(self.encoder, self.fingerprint_extra)
            key = EmbeddingCache.key(
                model_fp, texts_fingerprint(ids, texts), self.doc_max_length, self.encoder.normalize
            )
            t0 = time.perf_counter()
            hit = self.cache.load(key, ids)
            if hit is not None:
                emb, meta = hit
                self.timings.update(
                    doc_cache_hit=True,
                    cache_load_seconds=time.perf_counter() - t0,
                    doc_encode_seconds=meta.get("encode_seconds"),
                    docs_per_second=meta.get("docs_per_second"),
                    doc_encode_device=meta.get("device"),
                )
                return ids, emb
        t0 = time.perf_counter()
        emb = self.encoder.encode(
            texts,
            self.doc_max_length,
            self.batch_size,
            show_progress=self.show_progress,
            description="encode corpus",
        )
        seconds = time.perf_counter() - t0
        meta = {
            "model": str(getattr(self.encoder, "model_name", "")),
            "max_length": self.doc_max_length,
            "normalize": bool(self.encoder.normalize),
            "encode_seconds": seconds,
            "docs_per_second": len(ids) / seconds if seconds > 0 else None,
            "device": self.device,
        }
        if self.cache is not None and key is not None:
            self.cache.save(key, ids, emb, meta)
        self.timings.update(
            doc_cache_hit=False,
            doc_encode_seconds=seconds,
            docs_per_second=meta["docs_per_second"],
            doc_encode_device=self.device,
        )
        return ids, emb

    def retrieve(self, queries: Mapping[str, str], corpus: Mapping[str, Document], k: int = 1000) -> Run:
        """Top-``k`` documents of ``corpus`` for every query: ``{query_id: {doc_id: cosine}}``."""
        if not corpus:
            raise ValueError("DenseRetriever.retrieve: the corpus is empty")
        self.timings = {"device": self.device}
        d_ids, d_emb = self.encode_corpus(corpus)
        index = build_index(d_emb)
        self.timings["index_bytes"] = float(faiss.serialize_index(index).size)

        t0 = time.perf_counter()
        q_ids, q_emb = self.encode_queries(queries)
        t1 = time.perf_counter()
        run = search_index(index, q_emb, q_ids, d_ids, k)
        t2 = time.perf_counter()
        total = t2 - t0
        self.timings.update(
            query_encode_seconds=t1 - t0,
            search_seconds=t2 - t1,
            qps=len(q_ids) / total if total > 0 and q_ids else None,
        )
        self.timings.update(self._latency(queries, index, d_ids, k))
        return run

    def _latency(
        self, queries: Mapping[str, str], index: faiss.Index, d_ids: Sequence[str], k: int
    ) -> dict[str, Any]:
        """Per-query wall time (encode one query + search), over the first ``latency_queries`` queries."""
        sample = list(queries)[: self.latency_queries]
        if not sample:
            return {"query_latency_ms": None, "query_latency_ms_p50": None, "latency_queries": 0}
        times = []
        for q in sample:
            t0 = time.perf_counter()
            emb = self.encoder.encode([queries[q]], self.query_max_length, 1)
            search_index(index, emb, [q], d_ids, k)
            times.append(1000.0 * (time.perf_counter() - t0))
        return {
            "query_latency_ms": statistics.fmean(times),
            "query_latency_ms_p50": statistics.median(times),
            "latency_queries": len(sample),
        }
