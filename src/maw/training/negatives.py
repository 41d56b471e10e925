"""Training examples, BM25-mined hard negatives and the per-epoch batch order.

* One example per (train query, positive doc) pair (grade > 0), in sorted order.
* Hard negatives are mined once with BM25 (``maw.retrieval.bm25.BM25Retriever``) for TRAIN queries
  only, from the top ``hard_negative_depth`` documents, never using a document judged relevant to
  that query (in any split's judgements). Each epoch, every example draws ``hard_negatives``
  distinct candidates uniformly from its query's list (seeded by ``(seed, epoch)``).
* The example order of an epoch is a permutation from ``numpy.random.default_rng([seed, epoch])``,
  so a run resumed in the middle of an epoch sees exactly the batches it would have seen; the last
  partial batch is kept.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
import torch

from maw.data.types import Qrels, RetrievalDataset
from maw.training.losses import false_negative_mask


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
    retrieve: Callable[[dict[str, str], int], dict[str, dict[str, float]]] | None = None,
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
