"""Dense retrieval: encode with ``maw.models.encoder.Encoder`` into an on-disk store, search with FAISS.

* Queries and documents have separate maximum lengths (defaults 64 / 256 tokens; 256 is
  all-MiniLM-L6-v2's ``max_seq_length``). Documents are ``Document.full_text()``.
* Embeddings are L2-normalised by the encoder (when its ``normalize`` is on), so inner product is
  cosine similarity.
* Memory is bounded for corpora of any size: document embeddings are written shard by shard into
  an :class:`~maw.retrieval.store.EmbeddingStore` (float16 or float32 on disk, read
  memory-mapped), the texts of one shard at a time are read from the corpus (a memory-mapped
  :class:`~maw.data.corpus.CorpusTable` for loaded datasets), and exact search
  (:class:`~maw.retrieval.index.IndexSpec` ``flat``, the default) runs shard by shard with a
  running top-k merge. Approximate FAISS indexes (``hnsw``, ``ivf-flat``, ``ivf-pq``) are built
  from the shards, and their recall@k against exact search is measured on a query sample.
* The encoder runs on CUDA when available (``device=None``), else CPU; on CUDA under autocast
  (``amp``, float16 by default), on CPU in float32 or, with ``amp="bfloat16"``, under CPU bfloat16
  autocast (``--precision bf16``; ``maw.utils.precision``). FAISS runs on GPU when it has one.
* The store is also the cache (``cache_dir``): ``<cache_dir>/<key>-<dtype>/``. The key hashes the
  model fingerprint (model name, module structure and every state-dict tensor's bytes), the data
  fingerprint (ids and texts; a corpus table's content hash), the max length, the normalisation
  and the autocast dtype, so any change to the weights (fine-tuning, MAW injection) or to the
  documents is a miss. A killed encoding resumes: finished shards are kept, the others encoded.
  ``cache_dir=None``: the store lives in a temporary folder removed after the call.
* Under ``torch.distributed`` (e.g. ``torchrun``), rank r encodes the shards i with
  ``i % world_size == r`` into the shared store; rank 0 searches, the other ranks get ``{}``.

Shapes: query embeddings ``(Q, d)`` float32, document embeddings ``(N, d)`` (store dtype).

Reference figure: all-MiniLM-L6-v2 zero-shot on SciFact test (300 queries, 5,183 docs), query /
doc max length 64 / 256: nDCG@10 = 0.6451 (MTEB reports 0.645); a sentence-transformers + numpy +
pytrec_eval pipeline gives the same value to 4 decimals (``speed/st_reference.py``).
"""

from __future__ import annotations

import hashlib
import statistics
import tempfile
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from maw.data.corpus import CorpusTable
from maw.data.types import Document, Run
from maw.models.encoder import Encoder
from maw.retrieval.index import (
    IndexSpec,
    build_approximate,
    exact_search,
    index_bytes,
    recall_vs_exact,
    use_gpu,
)
from maw.retrieval.store import DEFAULT_SHARD_SIZE, EmbeddingStore, iter_chunks
from maw.utils.io import fingerprint
from maw.utils.precision import amp_key, inference_precision

AMP_DTYPES = {"float16": torch.float16, "bfloat16": torch.bfloat16, "float32": None}


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


def embedding_key(
    model_fp: str, data_fp: str, max_length: int, normalize: bool, amp: str = "float32", device="cpu"
) -> str:
    """Cache key of a corpus's embeddings (the store dtype is added to the folder name)."""
    parts = [model_fp, data_fp, str(max_length), str(bool(normalize)), "doc"]
    return fingerprint(parts + amp_key(amp, device))


def to_run(q_ids: Sequence[str], scores: np.ndarray, rows: np.ndarray, d_ids: Sequence[str]) -> Run:
    """(Q, k) scores and document rows -> ``{query_id: {doc_id: score}}`` (rows < 0 skipped)."""
    return {
        q: {d_ids[j]: float(v) for j, v in zip(r.tolist(), s.tolist(), strict=True) if j >= 0}
        for q, r, s in zip(q_ids, rows, scores, strict=True)
    }


def search_embeddings(
    q_emb: np.ndarray, q_ids: Sequence[str], d_emb: np.ndarray, d_ids: Sequence[str], k: int = 1000
) -> Run:
    """Exact maximum-inner-product search: q_emb (Q, d), d_emb (N, d) -> top-k run per query."""
    if k < 1:
        raise ValueError(f"k must be >= 1, got {k}")
    if d_emb.shape[0] != len(d_ids):
        raise ValueError(f"document embeddings have {d_emb.shape[0]} rows for {len(d_ids)} document ids")
    if q_emb.ndim != 2 or q_emb.shape[0] != len(q_ids):
        raise ValueError(f"query embeddings have shape {q_emb.shape} for {len(q_ids)} query ids")
    if len(d_ids) == 0:
        return {q: {} for q in q_ids}
    if d_emb.ndim != 2 or q_emb.shape[1] != d_emb.shape[1]:
        raise ValueError(f"query dim {q_emb.shape[1]} != document dim {d_emb.shape[-1]}")
    scores, rows, _ = exact_search(q_emb, iter_chunks(d_emb), k)
    return to_run(q_ids, scores, rows, d_ids)


class TableIds(Sequence):
    """The ids of a :class:`CorpusTable` as a read-only sequence (row -> id), without a list of N strings."""

    def __init__(self, table: CorpusTable):
        self.table = table

    def __len__(self) -> int:
        return len(self.table)

    def __getitem__(self, row):
        if isinstance(row, slice):
            return [self.table.id_at(r) for r in range(*row.indices(len(self)))]
        if not -len(self) <= row < len(self):
            raise IndexError(row)
        return self.table.id_at(row % len(self))

    def __iter__(self):
        return iter(self.table)

    def __eq__(self, other) -> bool:
        return (
            isinstance(other, Sequence)
            and len(other) == len(self)
            and all(a == b for a, b in zip(self, other, strict=True))
        )


class CorpusRows:
    """Row access to any ``Mapping[str, Document]``: ``ids`` (a sequence), ``texts(start, stop)``,
    ``fingerprint()``; a :class:`CorpusTable` is read in place, a dict through a list of its ids."""

    def __init__(self, corpus: Mapping[str, Document]):
        self.corpus = corpus
        self.table = corpus if isinstance(corpus, CorpusTable) else None
        self.ids: Sequence[str] = TableIds(corpus) if self.table is not None else list(corpus)

    def __len__(self) -> int:
        return len(self.ids)

    def texts(self, start: int, stop: int) -> list[str]:
        if self.table is not None:
            return self.table.full_texts(start, stop)
        return [self.corpus[d].full_text() for d in self.ids[start:stop]]

    def fingerprint(self) -> str:
        if self.table is not None:
            return self.table.fingerprint
        return fingerprint(part for d in self.ids for part in (d, self.corpus[d].full_text()))


def rank_and_world() -> tuple[int, int]:
    """(rank, world_size) of the default torch.distributed group, (0, 1) without one."""
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


class DenseRetriever:
    """Bi-encoder retrieval with an ``Encoder``; ``retrieve(queries, corpus, k) -> Run``.

    After ``retrieve``, ``timings`` holds: ``doc_encode_seconds``, ``docs_per_second`` (summed over
    the shards, from the runs that computed them, also on a cache hit), ``doc_cache_hit`` (no
    shard encoded by this call), ``doc_shards`` / ``doc_shards_encoded``, ``query_encode_seconds``,
    ``search_seconds``, ``qps`` (batched encode + search), ``query_latency_samples_ms`` (one query
    at a time: its encode + its search alone; for ``flat``, summed over the store shards, reading
    the shards from disk not included), ``query_latency_ms`` (mean) / ``query_latency_ms_p50``
    over ``latency_queries`` queries, ``index_bytes`` (computed: N x d x itemsize for ``flat``),
    ``index`` and ``index_<param>`` (the index kind and parameters), ``embedding_dtype``,
    ``encode_amp``, ``device``; approximate indexes add ``index_build_seconds`` and
    ``index_recall@k`` (against exact search, on ``index.recall_queries`` queries).
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
        index: IndexSpec | None = None,
        embedding_dtype: str = "float16",
        amp: str = "auto",
        shard_size: int = DEFAULT_SHARD_SIZE,
    ):
        for name, value in (
            ("query_max_length", query_max_length),
            ("doc_max_length", doc_max_length),
            ("batch_size", batch_size),
            ("shard_size", shard_size),
        ):
            if value < 1:
                raise ValueError(f"{name} must be >= 1, got {value}")
        if amp != "auto" and amp not in AMP_DTYPES:
            raise ValueError(f"amp must be 'auto' or one of {', '.join(AMP_DTYPES)}, got {amp!r}")
        self.device = device or ("cuda" if torch.cuda.is_available() else "cpu")
        self.encoder = encoder.to(self.device)
        self.query_max_length = query_max_length
        self.doc_max_length = doc_max_length
        self.batch_size = batch_size
        self.cache_dir = Path(cache_dir) if cache_dir is not None else None
        self.latency_queries = latency_queries
        self.show_progress = show_progress
        self.fingerprint_extra = fingerprint_extra
        self.index = index or IndexSpec()
        self.index.validate()
        EmbeddingStore.check_dtype(embedding_dtype)
        self.embedding_dtype = embedding_dtype
        on_cuda = torch.device(self.device).type == "cuda"
        if amp == "auto":
            self.amp = "float16" if on_cuda else "float32"
        else:  # bfloat16 also on CPU (maw.utils.precision); float16 on CUDA only
            self.amp = amp if on_cuda or amp == "bfloat16" else "float32"
        self.shard_size = shard_size
        self.timings: dict[str, Any] = {}
        self._scratch: tempfile.TemporaryDirectory | None = None

    def _precision(self):
        """The precision of encoding passes run outside ``Encoder.encode`` (``amp``;
        ``maw.utils.precision.inference_precision``): enter it once around a pass."""
        return inference_precision(self.encoder, AMP_DTYPES.get(self.amp), self.device)

    def _encode(self, texts: list[str], max_length: int, batch_size: int, **kw) -> np.ndarray:
        if self.amp != "float32":
            kw["amp"] = AMP_DTYPES[self.amp]
        return self.encoder.encode(texts, max_length, batch_size, **kw)

    def encode_queries(self, queries: Mapping[str, str]) -> tuple[list[str], np.ndarray]:
        ids = list(queries)
        return ids, self._encode([queries[q] for q in ids], self.query_max_length, self.batch_size)

    # ------------------------------------------------------------------ documents
    def _store_folder(self, key: str) -> Path:
        """``<cache_dir>/<key>-<dtype>``, or a fresh temporary folder (shared by all ranks)."""
        name = f"{key}-{self.embedding_dtype}"
        if self.cache_dir is not None:
            return self.cache_dir / name
        rank, world = rank_and_world()
        if self._scratch is not None:
            self._scratch.cleanup()
        path = [None]
        if rank == 0:
            self._scratch = tempfile.TemporaryDirectory(prefix="maw-embeddings-")
            path = [self._scratch.name]
        if world > 1:
            import torch.distributed as dist

            dist.broadcast_object_list(path, src=0)  # one temporary folder for all ranks (one machine)
        return Path(path[0]) / name

    def embed_corpus(self, corpus: Mapping[str, Document]) -> tuple[Sequence[str], EmbeddingStore]:
        """The corpus's ids and its embedding store, encoding the shards not yet in it.

        Under torch.distributed, each rank encodes its shards (i % world_size == rank); all ranks
        return once every shard is written.
        """
        rows = CorpusRows(corpus)
        rank, world = rank_and_world()
        model_fp = model_fingerprint(self.encoder, self.fingerprint_extra)
        key = embedding_key(
            model_fp, rows.fingerprint(), self.doc_max_length, self.encoder.normalize, self.amp, self.device
        )
        folder = self._store_folder(key)
        meta = {
            "model": str(getattr(self.encoder, "model_name", "")),
            "max_length": self.doc_max_length,
            "normalize": bool(self.encoder.normalize),
            "amp": self.amp,
        }

        def open_store() -> EmbeddingStore:
            return EmbeddingStore(
                folder, len(rows), self.encoder.hidden_size, self.embedding_dtype, self.shard_size, meta
            )

        if world > 1:  # rank 0 creates (or resets) the folder before the others open it
            import torch.distributed as dist

            store = open_store() if rank == 0 else None
            dist.barrier()
            store = store or open_store()
        else:
            store = open_store()
        todo = store.missing(rank, world)
        for n_done, i in enumerate(todo):
            start, stop = store.bounds(i)
            t0 = time.perf_counter()
            emb = self.encode_shard(rows, start, stop, f"encode corpus {n_done + 1}/{len(todo)}")
            store.write(i, emb, {"seconds": time.perf_counter() - t0, "device": self.device, "rank": rank})
            del emb
        if world > 1:
            import torch.distributed as dist

            dist.barrier()
        if not store.complete:
            raise RuntimeError(f"embedding store {folder} is incomplete after encoding: {store.missing()}")
        infos = [store.shard_info(i) for i in range(store.num_shards)]
        seconds = sum(float(x.get("seconds") or 0.0) for x in infos)
        self.timings.update(
            doc_cache_hit=not todo,
            doc_shards=store.num_shards,
            doc_shards_encoded=len(todo),
            doc_encode_seconds=seconds,
            docs_per_second=len(rows) / seconds if seconds > 0 else None,
            doc_encode_device=infos[0].get("device") if infos else self.device,
            embedding_dtype=self.embedding_dtype,
            encode_amp=self.amp,
            embedding_store=str(folder) if self.cache_dir is not None else None,
        )
        return rows.ids, store

    def encode_shard(self, rows: CorpusRows, start: int, stop: int, description: str) -> np.ndarray:
        """Embeddings (stop - start, d) of corpus rows [start, stop): the whole encoder on their texts."""
        return self._encode(
            rows.texts(start, stop),
            self.doc_max_length,
            self.batch_size,
            show_progress=self.show_progress,
            description=description,
        )

    def encode_corpus(self, corpus: Mapping[str, Document]) -> tuple[list[str], np.ndarray]:
        """Document ids and embeddings (N, d) float32 in memory (small corpora; ``retrieve`` does
        not use this, it searches the store)."""
        ids, store = self.embed_corpus(corpus)
        return list(ids), store.to_array()

    # ------------------------------------------------------------------ search
    def retrieve(self, queries: Mapping[str, str], corpus: Mapping[str, Document], k: int = 1000) -> Run:
        """Top-``k`` documents of ``corpus`` for every query: ``{query_id: {doc_id: cosine}}``."""
        if not corpus:
            raise ValueError("DenseRetriever.retrieve: the corpus is empty")
        if k < 1:
            raise ValueError(f"k must be >= 1, got {k}")
        self.timings = {"device": self.device}
        d_ids, d_emb = self.embed_corpus(corpus)
        rank, _ = rank_and_world()
        if rank != 0:
            return {}
        try:
            return self._search(queries, d_ids, d_emb, k)
        finally:
            if self._scratch is not None:
                self._scratch.cleanup()
                self._scratch = None

    def _search(
        self, queries: Mapping[str, str], d_ids: Sequence[str], d_emb: np.ndarray | EmbeddingStore, k: int
    ) -> Run:
        n, d = d_emb.shape
        spec = self.index
        itemsize = np.dtype(d_emb.dtype).itemsize
        self.timings.update(
            index=spec.kind,
            **{f"index_{p}": v for p, v in spec.params(n).items() if p != "kind"},
            index_bytes=float(index_bytes(spec, n, d, itemsize)),
        )
        sample = list(queries)[: self.latency_queries]
        index = None
        if not spec.exact:
            t0 = time.perf_counter()
            index = build_approximate(spec, lambda: iter_chunks(d_emb), n, d)
            self.timings["index_build_seconds"] = time.perf_counter() - t0
        t0 = time.perf_counter()
        q_ids, q_emb = self.encode_queries(queries)
        t1 = time.perf_counter()
        if index is None:  # exact, shard by shard
            scores, rows, alone_ms = exact_search(
                q_emb, iter_chunks(d_emb), k, use_gpu(spec), timed_queries=len(sample)
            )
            t2 = time.perf_counter()
        else:
            scores, rows = index.search(q_emb, min(k, n))
            t2 = time.perf_counter()
            alone_ms = []
            for j in range(len(sample)):
                ts = time.perf_counter()
                index.search(q_emb[j : j + 1], min(k, n))
                alone_ms.append(1000.0 * (time.perf_counter() - ts))
            del index
            m = min(spec.recall_queries, len(q_ids))
            if m:
                _, exact_rows, _ = exact_search(q_emb[:m], iter_chunks(d_emb), k, use_gpu(spec))
                for name, value in recall_vs_exact(rows[:m], exact_rows, sorted({min(10, k), k})).items():
                    self.timings[f"index_recall{name}"] = value
                self.timings["index_recall_queries"] = m
        self.timings.update(
            query_encode_seconds=t1 - t0,
            search_seconds=t2 - t1,
            qps=len(q_ids) / (t2 - t0) if t2 > t0 and q_ids else None,
        )
        self.timings.update(self._latency(queries, sample, alone_ms))
        return to_run(q_ids, scores, rows, d_ids)

    def _latency(
        self, queries: Mapping[str, str], sample: list[str], search_ms: list[float]
    ) -> dict[str, Any]:
        """Per-query wall time: encoding the query alone + searching it alone (``search_ms``)."""
        if not sample:
            return {
                "query_latency_ms": None,
                "query_latency_ms_p50": None,
                "query_latency_samples_ms": [],
                "latency_queries": 0,
            }
        times = []
        for q, s_ms in zip(sample, search_ms, strict=True):
            t0 = time.perf_counter()
            self._encode([queries[q]], self.query_max_length, 1)
            times.append(1000.0 * (time.perf_counter() - t0) + s_ms)
        return {
            "query_latency_ms": statistics.fmean(times),
            "query_latency_ms_p50": statistics.median(times),
            "query_latency_samples_ms": times,
            "latency_queries": len(sample),
        }
