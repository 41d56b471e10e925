"""Corpus subsampling: every judged document plus a seeded random sample of the rest.

A size preset (``maw benchmark --preset smoke|medium``, see :mod:`maw.benchmark.presets`) runs an
experiment on ``size`` documents of a large corpus, the way the original harness did: the
documents judged for any query of the experiment (train, val and test qrels, so every relevant
document can still be retrieved and scored) are always kept, and the remaining
``size - |judged|`` places go to a uniform random sample of the other documents. When the judged
documents alone exceed ``size`` they are all kept and nothing is drawn.

The random sample is a bottom-k sample: every unjudged document gets the priority
``h(seed, id)`` (the first 8 bytes of BLAKE2b over ``"<seed>/<id>"``) and the ``k`` smallest win.
So the sample depends only on the seed, the ids and ``k``, not on the corpus order, Python's hash
seed or the machine, and with the same judged documents a smaller size gives a subset of a larger
one. One pass over the ids, holding at most ``size`` candidates and the judged ids: memory grows
with ``size``, not with the corpus, so it works on a lazily read corpus
(:class:`maw.data.corpus.CorpusTable`) through the ``Mapping`` interface only.

Scores on a subsampled corpus are not comparable with full-corpus numbers: they are usually
higher (for a fixed dense encoder, removing unjudged documents can only move the judged ones up;
BM25's corpus statistics change too). The benchmark report says so in its first lines.
"""

from __future__ import annotations

import dataclasses
import hashlib
import heapq
from collections.abc import Iterable, Iterator, Mapping
from typing import Any

from maw.config import DataConfig
from maw.data.types import Document, RetrievalDataset, Splits
from maw.utils.io import fingerprint


class SubCorpus(Mapping):
    """A read-only view of the documents ``ids`` of ``parent`` (a ``Mapping[str, Document]``).

    Holds the ids only; documents are read from ``parent`` on access. Iterates in ``ids`` order.
    """

    def __init__(self, parent: Mapping[str, Document], ids: Iterable[str]):
        self.parent = parent
        self._ids = tuple(ids)
        self._set = frozenset(self._ids)

    def __getitem__(self, doc_id: str) -> Document:
        if doc_id not in self._set:
            raise KeyError(doc_id)
        return self.parent[doc_id]

    def __contains__(self, doc_id: object) -> bool:
        return doc_id in self._set

    def __len__(self) -> int:
        return len(self._ids)

    def __iter__(self) -> Iterator[str]:
        return iter(self._ids)

    def __repr__(self) -> str:
        return f"SubCorpus({len(self)} of {len(self.parent)} documents)"


def priority(seed: int, doc_id: str) -> int:
    """The bottom-k priority of ``doc_id``: a stable 64-bit hash of (seed, id)."""
    digest = hashlib.blake2b(f"{seed}/{doc_id}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "little")


def judged_ids(splits: Splits) -> set[str]:
    """Every document judged (any grade, 0 included) for a train, val or test query of ``splits``."""
    return {d for qrels in (splits.train, splits.val, splits.test) for docs in qrels.values() for d in docs}


def subsample_corpus(
    dataset: RetrievalDataset, keep_ids: Iterable[str], size: int, seed: int
) -> RetrievalDataset:
    """``dataset`` with its corpus cut to ``size`` documents: ``keep_ids`` (those present) plus a
    seeded random sample of the rest (see the module doc), in corpus order.

    Queries and qrels are unchanged. The result has its own ``fingerprint`` (original fingerprint,
    size, seed and the kept ids) and ``report["corpus_subsample"]``: ``documents`` (kept),
    ``of`` (corpus size), ``seed``, ``size`` (requested), ``judged`` (kept because judged),
    ``judged_absent`` (judged ids not in the corpus), ``random`` (drawn), ``original_fingerprint``.
    When nothing would be left out (at most ``size`` documents, or all judged) ``dataset`` itself is
    returned.
    """
    if isinstance(size, bool) or not isinstance(size, int) or size < 1:
        raise ValueError(f"corpus subsample size must be an integer >= 1, got {size!r}")
    corpus = dataset.corpus
    total = len(corpus)
    if total <= size:
        return dataset
    keep = set(keep_ids)
    # one pass: the judged documents present, and the `size` smallest priorities among the others
    # (the random part needs at most `size`; how many exactly is known once the judged are counted)
    judged: list[tuple[int, str]] = []  # (position, id)
    heap: list[tuple[int, int, str]] = []  # (-priority, position, id): a max-heap of the best so far
    for pos, doc_id in enumerate(corpus):
        if doc_id in keep:
            judged.append((pos, doc_id))
            continue
        neg = -priority(seed, doc_id)
        if len(heap) < size:
            heapq.heappush(heap, (neg, pos, doc_id))
        elif neg > heap[0][0]:
            heapq.heapreplace(heap, (neg, pos, doc_id))
    drawn = heapq.nlargest(max(0, size - len(judged)), heap)  # the smallest priorities
    chosen = sorted([*judged, *((pos, doc_id) for _, pos, doc_id in drawn)])
    ids = [doc_id for _, doc_id in chosen]
    if len(ids) == total:  # every document is judged: nothing was left out
        return dataset
    info: dict[str, Any] = {
        "documents": len(ids),
        "of": total,
        "seed": seed,
        "size": size,
        "judged": len(judged),
        "judged_absent": len(keep) - len(judged),
        "random": len(drawn),
        "original_fingerprint": dataset.fingerprint,
    }
    fp = fingerprint([dataset.fingerprint, f"corpus-subsample size={size} seed={seed}", fingerprint(ids)])
    return dataclasses.replace(
        dataset,
        corpus=SubCorpus(corpus, ids),
        fingerprint=fp,
        report={**dataset.report, "corpus_subsample": info},
    )


def subsample_for_splits(dataset: RetrievalDataset, splits: Splits, cfg: DataConfig) -> RetrievalDataset:
    """``dataset`` cut to ``cfg.corpus_size`` documents, keeping every document judged in ``splits``
    (seed ``cfg.split_seed``); unchanged when ``cfg.corpus_size`` is None. Call it after ``make_splits``."""
    if cfg.corpus_size is None:
        return dataset
    return subsample_corpus(dataset, judged_ids(splits), cfg.corpus_size, cfg.split_seed)
