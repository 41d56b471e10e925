"""Training examples, BM25-mined hard negatives and the per-epoch batch order.

* One example per (train query, positive doc) pair (grade > 0), in sorted order.
* Hard negatives are mined once with BM25 (``maw.retrieval.bm25.BM25Retriever``) for TRAIN queries
  only, from the top ``hard_negative_depth`` documents, never using a document judged relevant to
  that query (in any split's judgements). Each epoch, every example draws ``hard_negatives``
  distinct candidates uniformly from its query's list (seeded by ``(seed, epoch)``).
* The example order of an epoch is a permutation from ``numpy.random.default_rng([seed, epoch])``,
  so a run resumed in the middle of an epoch sees exactly the batches it would have seen; the last
  partial batch is kept.

Mining is done once per (dataset, split queries, depth, BM25 settings) and shared:
:func:`cached_hard_negatives` keys the lists by the dataset name, fingerprint (it covers every
split's qrels) and corpus size, a hash of the train qrels, ``hard_negative_depth`` and the BM25
settings (the defaults of ``BM25Retriever`` and the ``bm25s`` version), and keeps them as one JSON file
``<cache_dir>/bm25-negatives-<key>.json`` (written atomically). In a benchmark run ``cache_dir`` is
the dataset's shared cache folder, so every cell and seed of a dataset reads one file. Under
``torchrun`` rank 0 mines and writes, the other ranks wait (:func:`rank0_first`) and read.
:class:`LazyBM25` builds the BM25 index only when something is mined (negatives or the validation
pool of ``maw.training.validation``) and only once for both.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from maw.data.types import Qrels, RetrievalDataset
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


def mine_hard_negatives(
    dataset: RetrievalDataset,
    train_qrels: Qrels,
    depth: int,
    retrieve: Retrieve | None = None,
) -> dict[str, list[str]]:
    """BM25 candidates per train query: up to ``depth`` ids from the top ranks, relevant docs removed.

    ``retrieve(queries, k) -> run`` defaults to ``BM25Retriever(dataset.corpus).retrieve``.
    Lists are in rank order (ties broken by doc id).
    """
    if depth <= 0 or not train_qrels:
        return {qid: [] for qid in train_qrels}
    relevant = relevant_documents(dataset, train_qrels)
    if retrieve is None:
        from maw.retrieval.bm25 import BM25Retriever

        retrieve = BM25Retriever(dataset.corpus).retrieve
    queries = {qid: dataset.queries[qid] for qid in sorted(train_qrels)}
    k = min(len(dataset.corpus), depth + max(len(r) for r in relevant.values()))
    run = retrieve(queries, k)
    out: dict[str, list[str]] = {}
    for qid in queries:
        ranked = sorted(run.get(qid, {}).items(), key=lambda kv: (-kv[1], kv[0]))
        out[qid] = [d for d, _ in ranked if d not in relevant[qid]][:depth]
    return out


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


def rank0_first(ctx, compute: Callable[[], Any]) -> Any:
    """``compute()`` on rank 0 (which writes any shared file), then its result on every rank.

    ``compute`` returns something small (a path, a reason); an exception on rank 0 is re-raised there
    and reported on the other ranks (they would otherwise wait at a barrier until the timeout).
    """
    from maw.training import distributed as dist_utils

    if ctx is None or not ctx.enabled:
        return compute()
    outcome = None
    if ctx.is_main:
        try:
            outcome = ("ok", compute())
        except Exception as exc:
            dist_utils.broadcast_object(("error", f"{type(exc).__name__}: {exc}"), ctx)
            raise
    status, value = dist_utils.broadcast_object(outcome, ctx)
    if status == "error":
        raise RuntimeError(f"rank 0 failed: {value}")
    return value


def cached_lists(
    kind: str,
    key_parts: Sequence[str] | None,
    compute: Callable[[], dict[str, list[str]]],
    cache_dir: str | Path | None,
    ctx=None,
) -> tuple[dict[str, list[str]], dict[str, Any]]:
    """``compute()``'s ``{query_id: [doc_id, ...]}``, mined once: ``<cache_dir>/<kind>-<key>.json``.

    Rank 0 reads the file or computes and writes it; the others then read it. ``key_parts`` None
    (an uncacheable retriever) or ``cache_dir`` None: computed on every call, nothing written.
    Returns ``(lists, {"path", "reused"})``.
    """
    if key_parts is None or cache_dir is None:
        return compute(), {"path": None, "reused": False}
    key = fingerprint([kind, str(MINED_FORMAT), *key_parts])
    path = Path(cache_dir) / f"{kind}-{key}.json"

    def on_main() -> bool:
        if _read_lists(path, key) is not None:
            return True
        lists = compute()
        path.parent.mkdir(parents=True, exist_ok=True)
        atomic_write_json(
            path, {"format": MINED_FORMAT, "kind": kind, "key": key, "lists": lists}, indent=None
        )
        return False

    reused = rank0_first(ctx, on_main)
    lists = _read_lists(path, key)
    if lists is None:
        raise RuntimeError(f"{path}: missing or unreadable after it was written")
    log.info("%s: %s %s", kind, "read" if reused else "mined and wrote", path)
    return lists, {"path": str(path), "reused": reused}


def _read_lists(path: Path, key: str) -> dict[str, list[str]] | None:
    """The lists of a cache file, or None when it is absent or not this key's (then rebuilt)."""
    if not path.is_file():
        return None
    try:
        data = read_json(path)
    except (OSError, ValueError):
        return None
    if not isinstance(data, dict) or data.get("format") != MINED_FORMAT or data.get("key") != key:
        return None
    return data["lists"]


def cached_hard_negatives(
    dataset: RetrievalDataset,
    train_qrels: Qrels,
    depth: int,
    cache_dir: str | Path | None,
    ctx=None,
    retrieve: Retrieve | None = None,
) -> tuple[dict[str, list[str]], dict[str, Any]]:
    """:func:`mine_hard_negatives`, mined once per (dataset, train qrels, depth, retriever) and shared
    through ``cache_dir`` by every run, cell and rank (see the module docstring)."""
    if depth <= 0 or not train_qrels:
        return mine_hard_negatives(dataset, train_qrels, depth, retrieve), {"path": None, "reused": False}
    rkey = retriever_key(retrieve)
    key = None if rkey is None else [*dataset_key(dataset), qrels_fingerprint(train_qrels), str(depth), rkey]
    return cached_lists(
        "bm25-negatives",
        key,
        lambda: mine_hard_negatives(dataset, train_qrels, depth, retrieve),
        cache_dir,
        ctx,
    )


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
