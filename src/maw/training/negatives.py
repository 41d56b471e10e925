"""Training examples, mined hard negatives (BM25 or a dense model) and the per-epoch batch order.

* One example per (train query, positive doc) pair (grade > 0), in sorted order.
* Hard negatives are mined once, for TRAIN queries only, never using a document judged relevant to
  that query (in any split's judgements). The miner ranks the corpus for each query; judged-relevant
  documents are removed from the ranking and ranks ``[hard_negative_skip, hard_negative_depth)``
  (0-indexed) of what remains are the query's candidates. Each epoch, every example draws
  ``hard_negatives`` distinct candidates uniformly from its query's list (seeded by ``(seed, epoch)``).
* Miners (``--negatives``):

  - ``bm25`` (the default): ``maw.retrieval.bm25.BM25Retriever`` (:func:`mine_hard_negatives`).
  - ``dense``: a dense model (:func:`mine_dense_negatives`), as sentence-transformers'
    ``mine_hard_negatives`` and Tevatron do. The model is the run's own backbone before training
    (its zero-shot encoder: ``--model``, ``--num-layers``, the run's max lengths), or
    ``--negatives-model`` (any Hugging Face BERT-family id or path, encoded as maw encodes:
    mean pooling, L2-normalised, its own ``max_seq_length``). It reuses the project's retrieval:
    the corpus is encoded into the sharded embedding store of ``maw.retrieval.dense.DenseRetriever``
    (the embedding cache of ``maw evaluate``, ``--embedding-cache-dir``), the train queries are
    searched exactly (FAISS flat, shard by shard). A margin then drops likely false negatives: a
    candidate whose score is above ``s_pos - hard_negative_margin`` is dropped, ``s_pos`` the
    lowest score of the query's train positives (an absolute margin on the cosine, like
    sentence-transformers' ``absolute_margin``; default 0.05). The margin filters inside the rank
    range, so a query can keep fewer than ``depth - skip`` candidates (ties are broken by doc id).
    Mining draws no random numbers: the lists depend on the data, the model and the settings only.

* The example order of an epoch is a permutation from ``numpy.random.default_rng([seed, epoch])``,
  so a run resumed in the middle of an epoch sees exactly the batches it would have seen; the last
  partial batch is kept.

Mining is done once per (dataset, split queries, miner, settings) and shared: :func:`cached_lists`
keeps the lists as one JSON file ``<cache_dir>/<kind>-<key>.json`` (written atomically, with the
mining's wall time and statistics). The key holds the dataset name, fingerprint (it covers every
split's qrels) and corpus size, a hash of the train qrels, the depth and skip, and the miner: for
BM25 (:func:`cached_hard_negatives`, ``bm25-negatives-*``) its settings (the defaults of
``BM25Retriever`` and the ``bm25s`` version); for a dense model (:func:`cached_dense_negatives`,
``dense-negatives-*``) the margin, the model's fingerprint (its name, structure and every weight),
the max lengths, the normalisation, the autocast dtype and the embedding storage dtype. In a
benchmark run ``cache_dir`` is the dataset's shared cache folder, so every cell and seed of a
dataset reads one file. Under ``torchrun`` rank 0 mines and writes, the other ranks wait
(:func:`maw.training.distributed.rank0_first`) and read; dense mining first encodes the corpus on
every rank (each its store shards, as ``DenseRetriever`` does), then rank 0 searches and writes.
:class:`LazyBM25` builds the BM25 index only when something is mined (negatives or the validation
pool of ``maw.training.validation``) and only once for both.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from maw.data.types import Qrels, RetrievalDataset
from maw.training.distributed import rank0_first
from maw.training.losses import false_negative_mask
from maw.utils.io import atomic_write_json, fingerprint, read_json

log = logging.getLogger(__name__)

MINED_FORMAT = 1
Retrieve = Callable[[dict[str, str], int], dict[str, dict[str, float]]]


@dataclass(frozen=True)
class Example:
    query_id: str
    doc_id: str


@dataclass
class Batch:
    """One micro-batch. Documents are grouped per example: its positive first, then its negatives.

    query_ids: (B,) ids; doc_ids: (N,) ids; positive_index: (B,) long index into doc_ids;
    doc_owner: (N,) long, the example (0..B-1) each document belongs to; mask: (B, N) bool false
    negatives (see ``maw.training.losses``).
    """

    query_ids: list[str]
    doc_ids: list[str]
    positive_index: torch.Tensor
    doc_owner: torch.Tensor
    mask: torch.Tensor

    def __len__(self) -> int:
        return len(self.query_ids)


def training_examples(train_qrels: Qrels) -> list[Example]:
    """(query, positive) pairs with grade > 0, sorted by query id then doc id."""
    return [
        Example(qid, did)
        for qid in sorted(train_qrels)
        for did, grade in sorted(train_qrels[qid].items())
        if grade > 0
    ]


def relevant_documents(dataset: RetrievalDataset, train_qrels: Qrels) -> dict[str, set[str]]:
    """For each train query, every doc judged relevant (grade > 0) to it in any split."""
    out: dict[str, set[str]] = {}
    for qid in train_qrels:
        rel = {d for d, g in train_qrels[qid].items() if g > 0}
        for split_qrels in dataset.qrels.values():
            rel.update(d for d, g in split_qrels.get(qid, {}).items() if g > 0)
        out[qid] = rel
    return out


def select_candidates(
    scores: dict[str, float], relevant: set[str], depth: int, skip: int = 0, max_score: float | None = None
) -> list[str]:
    """Ranks ``[skip, depth)`` of ``scores`` (best first, ties by doc id) once ``relevant`` docs are
    removed, then (``max_score``) without the candidates scoring above ``max_score``."""
    ranked = sorted(scores.items(), key=lambda kv: (-kv[1], kv[0]))
    kept = [(d, s) for d, s in ranked if d not in relevant][skip:depth]
    return [d for d, s in kept if max_score is None or s <= max_score]


def _search_depth(dataset: RetrievalDataset, relevant: dict[str, set[str]], depth: int) -> int:
    """How many documents to retrieve so that ``depth`` remain once the relevant ones are removed."""
    return min(len(dataset.corpus), depth + max(len(r) for r in relevant.values()))


def mine_hard_negatives(
    dataset: RetrievalDataset,
    train_qrels: Qrels,
    depth: int,
    retrieve: Retrieve | None = None,
    skip: int = 0,
) -> dict[str, list[str]]:
    """BM25 candidates per train query: ranks ``[skip, depth)`` once relevant docs are removed.

    ``retrieve(queries, k) -> run`` defaults to ``BM25Retriever(dataset.corpus).retrieve``.
    Lists are in rank order (ties broken by doc id); a query without text gets none.
    """
    if depth <= 0 or not train_qrels:
        return {qid: [] for qid in train_qrels}
    relevant = relevant_documents(dataset, train_qrels)
    if retrieve is None:
        from maw.retrieval.bm25 import BM25Retriever

        retrieve = BM25Retriever(dataset.corpus).retrieve
    queries = {qid: dataset.queries[qid] for qid in sorted(train_qrels) if qid in dataset.queries}
    run = retrieve(queries, _search_depth(dataset, relevant, depth)) if queries else {}
    return {
        qid: select_candidates(run.get(qid, {}), relevant[qid], depth, skip) if qid in queries else []
        for qid in sorted(train_qrels)
    }


# ---------------------------------------------------------------------------------------------- mined once
class LazyBM25:
    """``retrieve(queries, k)`` over ``corpus`` with the default ``BM25Retriever``, indexed on first use."""

    def __init__(self, corpus):
        self.corpus = corpus
        self._retriever = None

    @property
    def cache_key(self) -> str:
        return bm25_cache_key()

    def __call__(self, queries: dict[str, str], k: int) -> dict[str, dict[str, float]]:
        if self._retriever is None:
            from maw.retrieval.bm25 import BM25Retriever

            self._retriever = BM25Retriever(self.corpus)
        return self._retriever.retrieve(queries, k)


def bm25_cache_key() -> str:
    """The default BM25's settings (``BM25Retriever``'s keyword defaults) and the ``bm25s`` version."""
    import importlib.metadata as md
    import inspect

    from maw.retrieval.bm25 import BM25Retriever

    params = inspect.signature(BM25Retriever.__init__).parameters.values()
    settings = {p.name: p.default for p in params if p.default is not inspect.Parameter.empty}
    return "bm25:" + json.dumps({**settings, "bm25s": md.version("bm25s")}, sort_keys=True)


def retriever_key(retrieve: Retrieve | None) -> str | None:
    """Cache identity of a retriever: the default BM25's settings, a custom one's ``cache_key``
    attribute, or None (a custom retriever without one is never cached)."""
    if retrieve is None:
        return bm25_cache_key()
    return getattr(retrieve, "cache_key", None)


def qrels_fingerprint(qrels: Qrels) -> str:
    return fingerprint(f"{q}\t{d}\t{g}" for q in sorted(qrels) for d, g in sorted(qrels[q].items()))


def dataset_key(dataset: RetrievalDataset) -> list[str]:
    """What identifies the corpus and judgements: fingerprint, corpus size (subsampled corpora)."""
    return [dataset.name, dataset.fingerprint, str(len(dataset.corpus))]


def cached_lists(
    kind: str,
    key_parts: Sequence[str] | None,
    compute: Callable[[], dict[str, list[str]]],
    cache_dir: str | Path | None,
    ctx=None,
    *,
    prepare: Callable[[], Any] | None = None,
    stats: Callable[[], dict[str, Any]] | None = None,
) -> tuple[dict[str, list[str]], dict[str, Any]]:
    """``compute()``'s ``{query_id: [doc_id, ...]}``, mined once: ``<cache_dir>/<kind>-<key>.json``.

    Rank 0 reads the file or computes and writes it; the others then read it. ``prepare`` (optional)
    is the collective part of a mining: run on EVERY rank before rank 0's ``compute``, and only when
    the file is missing (dense mining: each rank encodes its corpus shards). ``stats()`` (optional,
    called on rank 0 after ``compute``) is stored in the file with the mining's wall time
    (``prepare`` + ``compute`` seconds). ``key_parts`` None (an uncacheable retriever) or
    ``cache_dir`` None: computed on every call, nothing written. Returns ``(lists, info)``, info
    ``{"path", "reused", "mined"}``, ``mined`` the stored ``{"seconds", ...}`` of the mining that
    made the lists (also when reused).
    """

    def mine() -> tuple[dict[str, list[str]], dict[str, Any]]:  # prepare ran already (all ranks)
        t0 = time.perf_counter()
        lists = compute()
        return lists, {"seconds": time.perf_counter() - t0, **(stats() if stats else {})}

    if key_parts is None or cache_dir is None:
        t0 = time.perf_counter()
        if prepare is None:
            lists, mined = mine()
        else:  # collective: every rank prepares, rank 0 computes and hands the lists out
            prepare()
            lists, mined = rank0_first(ctx, mine)
        mined["seconds"] = time.perf_counter() - t0
        return lists, {"path": None, "reused": False, "mined": mined}
    key = fingerprint([kind, str(MINED_FORMAT), *key_parts])
    path = Path(cache_dir) / f"{kind}-{key}.json"
    prepare_seconds = 0.0
    if prepare is not None and rank0_first(ctx, lambda: _read_lists(path, key) is None):
        t0 = time.perf_counter()
        prepare()
        prepare_seconds = time.perf_counter() - t0

    def on_main() -> bool:
        if _read_lists(path, key) is not None:
            return True
        lists, mined = mine()
        mined["seconds"] += prepare_seconds
        path.parent.mkdir(parents=True, exist_ok=True)
        atomic_write_json(
            path,
            {"format": MINED_FORMAT, "kind": kind, "key": key, "mined": mined, "lists": lists},
            indent=None,
        )
        return False

    reused = rank0_first(ctx, on_main)
    data = _read(path, key)
    if data is None:
        raise RuntimeError(f"{path}: missing or unreadable after it was written")
    log.info("%s: %s %s", kind, "read" if reused else "mined and wrote", path)
    return data["lists"], {"path": str(path), "reused": reused, "mined": data.get("mined", {})}


def _read(path: Path, key: str) -> dict[str, Any] | None:
    """A cache file's content, or None when it is absent or not this key's (then rebuilt)."""
    if not path.is_file():
        return None
    try:
        data = read_json(path)
    except (OSError, ValueError):
        return None
    if not isinstance(data, dict) or data.get("format") != MINED_FORMAT or data.get("key") != key:
        return None
    return data


def _read_lists(path: Path, key: str) -> dict[str, list[str]] | None:
    """The lists of a cache file, or None when it is absent or not this key's (then rebuilt)."""
    data = _read(path, key)
    return None if data is None else data["lists"]


def cached_hard_negatives(
    dataset: RetrievalDataset,
    train_qrels: Qrels,
    depth: int,
    cache_dir: str | Path | None,
    ctx=None,
    retrieve: Retrieve | None = None,
    skip: int = 0,
) -> tuple[dict[str, list[str]], dict[str, Any]]:
    """:func:`mine_hard_negatives`, mined once per (dataset, train qrels, depth, skip, retriever) and
    shared through ``cache_dir`` by every run, cell and rank (see the module docstring)."""
    if depth <= 0 or not train_qrels:
        none = mine_hard_negatives(dataset, train_qrels, depth, retrieve, skip)
        return none, {"path": None, "reused": False, "mined": {}}
    rkey = retriever_key(retrieve)
    key = None
    if rkey is not None:  # skip 0 adds nothing: the files of runs before the option stay valid
        key = [*dataset_key(dataset), qrels_fingerprint(train_qrels), str(depth), rkey]
        key += [f"skip={skip}"] if skip else []
    return cached_lists(
        "bm25-negatives",
        key,
        lambda: mine_hard_negatives(dataset, train_qrels, depth, retrieve, skip),
        cache_dir,
        ctx,
    )


# ---------------------------------------------------------------------------------------------- dense
@dataclass(frozen=True)
class DenseMining:
    """A dense miner: the model and how it encodes (these define the lists and enter the cache key),
    and where / how fast it runs (``batch_size``, ``device``, ``embedding_cache_dir``,
    ``shard_size``, ``show_progress``: runtime only). :meth:`from_plan` reads a run's plan."""

    model: str
    num_layers: int | None = None
    query_max_length: int = 256
    doc_max_length: int = 256
    normalize: bool = True
    precision: str = "auto"
    embedding_dtype: str = "float16"
    batch_size: int = 128
    device: str | None = None
    embedding_cache_dir: str | None = None
    shard_size: int = 1 << 16
    show_progress: bool = False

    @classmethod
    def from_plan(cls, plan, device: str | None = None) -> DenseMining:
        """``plan.train.negatives_model`` (its own max length, normalised), or by default the run's
        backbone as the plan loads it before training (layers, max lengths, normalisation)."""
        from maw.utils.io import default_cache_dir

        model, train, ev = plan.model, plan.train, plan.eval
        runtime = dict(
            precision=model.precision,
            embedding_dtype=ev.embedding_dtype,
            batch_size=ev.eval_batch_size,
            device=device or plan.runtime.device,
            embedding_cache_dir=str(ev.embedding_cache_dir or default_cache_dir("embeddings")),
            shard_size=ev.shard_size,
            show_progress=plan.runtime.progress,
        )
        if train.negatives_model is None:
            return cls(
                model=model.model,
                num_layers=model.num_layers,
                query_max_length=model.query_max_length,
                doc_max_length=model.doc_max_length,
                normalize=model.normalize,
                **runtime,
            )
        from maw.config import ConfigError
        from maw.plan import model_max_length

        try:
            max_length = model_max_length(train.negatives_model)
        except ConfigError as exc:
            raise ConfigError(str(exc).replace("--model:", "--negatives-model:", 1)) from None
        return cls(
            model=train.negatives_model,
            query_max_length=max_length,
            doc_max_length=max_length,
            normalize=True,
            **runtime,
        )

    def retriever(self):
        """A ``DenseRetriever`` over the miner's encoder (loaded now), exact search."""
        from maw.config import ConfigError
        from maw.models.encoder import Encoder
        from maw.retrieval.dense import DenseRetriever
        from maw.utils.precision import retriever_amp

        try:
            encoder = Encoder.from_pretrained(
                self.model, num_layers=self.num_layers, normalize=self.normalize
            )
        except (OSError, ValueError) as exc:
            raise ConfigError(f"--negatives-model: cannot load {self.model!r}: {exc}") from None
        encoder.eval()
        return DenseRetriever(
            encoder,
            query_max_length=self.query_max_length,
            doc_max_length=self.doc_max_length,
            batch_size=self.batch_size,
            cache_dir=self.embedding_cache_dir,
            device=self.device,
            latency_queries=0,
            show_progress=self.show_progress,
            embedding_dtype=self.embedding_dtype,
            amp=retriever_amp(self.precision),
            shard_size=self.shard_size,
        )


def dense_cache_key(retriever) -> str:
    """What makes a dense miner's scores: model fingerprint (name, structure, weights), max lengths,
    normalisation, autocast and embedding storage dtypes; search is exact."""
    from maw.retrieval.dense import model_fingerprint

    settings = {
        "model": model_fingerprint(retriever.encoder),
        "query_max_length": retriever.query_max_length,
        "doc_max_length": retriever.doc_max_length,
        "normalize": bool(retriever.encoder.normalize),
        "amp": retriever.amp,
        "embedding_dtype": retriever.embedding_dtype,
        "search": "exact",
    }
    return "dense:" + json.dumps(settings, sort_keys=True)


def _store_rows(store, rows: Sequence[int]) -> np.ndarray:
    """(len(rows), d) float32: the given rows of an embedding store (or an in-memory array)."""
    from maw.retrieval.store import iter_chunks

    rows = np.asarray(rows, dtype=np.int64)
    out = np.zeros((len(rows), store.shape[1]), dtype=np.float32)
    for start, block in iter_chunks(store):
        hit = np.nonzero((rows >= start) & (rows < start + len(block)))[0]
        if len(hit):
            out[hit] = np.asarray(block[rows[hit] - start], dtype=np.float32)
    return out


def mine_dense_negatives(
    dataset: RetrievalDataset,
    train_qrels: Qrels,
    depth: int,
    retriever,
    *,
    skip: int = 0,
    margin: float | None = None,
    embedded: tuple[Sequence[str], Any] | None = None,
    stats: dict[str, Any] | None = None,
) -> dict[str, list[str]]:
    """Dense candidates per train query: ranks ``[skip, depth)`` of an exact search with
    ``retriever`` (a ``maw.retrieval.dense.DenseRetriever``) once relevant docs are removed, without
    those scoring above the query's lowest train-positive score minus ``margin`` (None: no margin).

    ``embedded``: the corpus's ``(ids, store)`` from ``retriever.embed_corpus`` (encoded now when
    None). ``stats`` (a dict) receives counts and the encoding / search seconds. Lists are in rank
    order (ties broken by doc id); a query without text gets none.
    """
    from maw.retrieval.dense import to_run
    from maw.retrieval.index import exact_search
    from maw.retrieval.store import iter_chunks

    if depth <= 0 or not train_qrels:
        return {qid: [] for qid in train_qrels}
    relevant = relevant_documents(dataset, train_qrels)
    d_ids, store = embedded if embedded is not None else retriever.embed_corpus(dataset.corpus)
    queries = {qid: dataset.queries[qid] for qid in sorted(train_qrels) if qid in dataset.queries}
    t0 = time.perf_counter()
    q_ids, q_emb = retriever.encode_queries(queries)
    t1 = time.perf_counter()
    scores, rows, _ = exact_search(q_emb, iter_chunks(store), _search_depth(dataset, relevant, depth))
    run = to_run(q_ids, scores, rows, d_ids)
    t2 = time.perf_counter()
    floor: dict[str, float] = {}  # the lowest positive score of each query
    if margin is not None and q_ids:
        positives = {q: [d for d, g in sorted(train_qrels[q].items()) if g > 0] for q in q_ids}
        wanted = {d for docs in positives.values() for d in docs}
        row_of = {d: i for i, d in enumerate(d_ids) if d in wanted}
        q_row = {q: i for i, q in enumerate(q_ids)}
        pairs = [(q, row_of[d]) for q in q_ids for d in positives[q] if d in row_of]
        if pairs:
            pos_emb = _store_rows(store, [r for _, r in pairs])
            q_vecs = np.asarray(q_emb, dtype=np.float32)[[q_row[q] for q, _ in pairs]]
            for (q, _), s in zip(pairs, np.einsum("nd,nd->n", q_vecs, pos_emb).tolist(), strict=True):
                floor[q] = min(s, floor.get(q, s))
    out: dict[str, list[str]] = {}
    dropped = 0
    for qid in sorted(train_qrels):
        if qid not in queries:
            out[qid] = []
            continue
        max_score = floor[qid] - margin if margin is not None and qid in floor else None
        out[qid] = select_candidates(run.get(qid, {}), relevant[qid], depth, skip, max_score)
        dropped += len(select_candidates(run.get(qid, {}), relevant[qid], depth, skip)) - len(out[qid])
    if stats is not None:
        sizes = [len(v) for v in out.values()]
        t = retriever.timings
        stats.update(
            queries=len(out),
            candidates_mean=float(np.mean(sizes)) if sizes else 0.0,
            queries_without_candidates=sum(1 for n in sizes if n == 0),
            dropped_by_margin=dropped,
            doc_encode_seconds=t.get("doc_encode_seconds"),
            doc_cache_hit=t.get("doc_cache_hit"),
            query_encode_seconds=t1 - t0,
            search_seconds=t2 - t1,
            device=retriever.device,
        )
    return out


def cached_dense_negatives(
    dataset: RetrievalDataset,
    train_qrels: Qrels,
    depth: int,
    mining: DenseMining,
    cache_dir: str | Path | None,
    ctx=None,
    *,
    skip: int = 0,
    margin: float | None = None,
) -> tuple[dict[str, list[str]], dict[str, Any]]:
    """:func:`mine_dense_negatives`, mined once per (dataset, train qrels, depth, skip, margin,
    miner) and shared through ``cache_dir`` by every run, cell and rank. The miner's model is loaded
    for its fingerprint (the cache key) and encodes only when the file is missing: every rank
    encodes its corpus shards, rank 0 searches and writes."""
    if depth <= 0 or not train_qrels:
        return {qid: [] for qid in train_qrels}, {"path": None, "reused": False, "mined": {}}
    retriever = mining.retriever()
    key = [
        *dataset_key(dataset),
        qrels_fingerprint(train_qrels),
        str(depth),
        f"skip={skip}",
        f"margin={margin!r}",
        dense_cache_key(retriever),
    ]
    embedded: list[Any] = []
    stats: dict[str, Any] = {"model": mining.model}

    def compute() -> dict[str, list[str]]:
        return mine_dense_negatives(
            dataset,
            train_qrels,
            depth,
            retriever,
            skip=skip,
            margin=margin,
            embedded=embedded[0] if embedded else None,
            stats=stats,
        )

    try:
        return cached_lists(
            "dense-negatives",
            key,
            compute,
            cache_dir,
            ctx,
            prepare=lambda: embedded.append(retriever.embed_corpus(dataset.corpus)),
            stats=lambda: stats,
        )
    finally:
        embedded.clear()
        retriever.encoder.to("cpu")  # frees the device for training


def training_negatives(
    plan,
    dataset: RetrievalDataset,
    train_qrels: Qrels,
    cache_dir: str | Path | None,
    ctx=None,
    bm25: Retrieve | None = None,
) -> tuple[dict[str, list[str]], dict[str, Any]]:
    """The hard-negative candidates of a run (``plan.train``: ``negatives``, ``hard_negatives``,
    ``hard_negative_depth`` / ``_skip`` / ``_margin``, ``negatives_model``), mined or read from
    ``cache_dir``; ``bm25`` is the BM25 retriever (shared with the validation pool). Returns
    ``(lists, info)``, info ``{"miner", "path", "reused", "mined"}``."""
    cfg = plan.train
    depth = cfg.hard_negative_depth if cfg.hard_negatives > 0 else 0
    if cfg.negatives == "dense":
        device = str(ctx.device) if ctx is not None and getattr(ctx, "device", None) is not None else None
        lists, info = cached_dense_negatives(
            dataset,
            train_qrels,
            depth,
            DenseMining.from_plan(plan, device),
            cache_dir,
            ctx,
            skip=cfg.hard_negative_skip,
            margin=cfg.hard_negative_margin,
        )
    else:
        lists, info = cached_hard_negatives(
            dataset, train_qrels, depth, cache_dir, ctx, bm25, skip=cfg.hard_negative_skip
        )
    return lists, {"miner": cfg.negatives, **info}


def epoch_permutation(num_examples: int, seed: int, epoch: int) -> np.ndarray:
    """The example order of 1-indexed ``epoch``: a fixed function of (seed, epoch)."""
    return np.random.default_rng([seed, epoch]).permutation(num_examples)


def sample_negatives(
    examples: Sequence[Example], candidates: dict[str, list[str]], num: int, seed: int, epoch: int
) -> list[list[str]]:
    """``num`` distinct negatives per example (fewer if its query has fewer candidates)."""
    if num <= 0:
        return [[] for _ in examples]
    rng = np.random.default_rng([seed, epoch, 1])
    out = []
    for ex in examples:
        cands = candidates.get(ex.query_id, [])
        take = min(num, len(cands))
        idx = rng.choice(len(cands), size=take, replace=False) if take else []
        out.append([cands[i] for i in idx])
    return out


def num_batches(num_examples: int, batch_size: int) -> int:
    """Micro-batches per epoch; the last partial batch is kept."""
    return -(-num_examples // batch_size)


def make_batch(
    examples: Sequence[Example], negatives: Sequence[list[str]], relevant: dict[str, set[str]]
) -> Batch:
    """Lay out a micro-batch: per example its positive then its negatives; build the false-negative mask."""
    query_ids = [ex.query_id for ex in examples]
    doc_ids: list[str] = []
    positive_index: list[int] = []
    owner: list[int] = []
    for b, (ex, negs) in enumerate(zip(examples, negatives, strict=True)):
        positive_index.append(len(doc_ids))
        doc_ids.append(ex.doc_id)
        doc_ids.extend(negs)
        owner.extend([b] * (1 + len(negs)))
    mask = false_negative_mask(doc_ids, positive_index, [relevant[q] for q in query_ids])
    return Batch(
        query_ids=query_ids,
        doc_ids=doc_ids,
        positive_index=torch.tensor(positive_index, dtype=torch.long),
        doc_owner=torch.tensor(owner, dtype=torch.long),
        mask=mask,
    )


def epoch_batches(num_examples: int, batch_size: int, seed: int, epoch: int) -> list[list[int]]:
    """Example indices of each micro-batch of 1-indexed ``epoch`` (last partial batch kept)."""
    order = epoch_permutation(num_examples, seed, epoch)
    return [order[i : i + batch_size].tolist() for i in range(0, num_examples, batch_size)]


def epoch_negatives(
    examples: Sequence[Example], candidates: dict[str, list[str]], num: int, seed: int, epoch: int
) -> list[list[str]]:
    """Negatives of every example (indexed like ``examples``) for 1-indexed ``epoch``."""
    return sample_negatives(examples, candidates, num, seed, epoch)
