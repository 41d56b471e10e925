"""Validation during training: the VAL queries retrieved by exact search, from the full corpus or a pool.

The encoder's trainable suffix (layers ``[k, N)``) runs over the frozen-prefix states of the
provider (``maw.training.prefix_cache``), so a validation pass costs the top layers only. The test
split is never touched here. ``SELECTION_METRIC`` picks the best epoch (early stopping).

Which documents are searched (:func:`validation_documents`, decided once per run):

* corpora of up to ``POOL_ABOVE`` (200,000) documents: the full corpus (``"full corpus"``);
* larger corpora: the usual re-ranking pool, so that an epoch does not re-encode millions of
  documents: every document judged (any grade) for a validation query plus the BM25 top
  ``POOL_DEPTH`` (100) of each validation query, in sorted id order (``"pool of N documents:
  judged + BM25 top-100"``). The pool is mined once and cached like the hard negatives
  (``maw.training.negatives.cached_lists``). Scores on a pool are higher than full-corpus scores
  (fewer distractors) and serve model selection only; the test evaluation is always full-corpus.
"""

from __future__ import annotations

from collections.abc import Callable
from contextlib import AbstractContextManager
from pathlib import Path
from typing import Any

import numpy as np
import torch

from maw.data.types import Qrels, RetrievalDataset
from maw.evaluation.metrics import PRIMARY_METRICS, SELECTION_METRIC

__all__ = [  # SELECTION_METRIC: maw.evaluation.metrics's, the trainer's best-epoch metric
    "SELECTION_METRIC",
    "encode_ids",
    "merge_depth_statistics",
    "validate",
    "validation_documents",
    "validation_pool",
]
POOL_ABOVE = 200_000  # corpora with more documents validate on a pool (module docstring)
POOL_DEPTH = 100  # BM25 depth of the validation pool


def validation_pool(
    dataset: RetrievalDataset, qrels: Qrels, depth: int, retrieve: Callable | None = None
) -> list[str]:
    """Sorted ids: the documents judged for the queries of ``qrels`` (any grade, present in the
    corpus) plus the top ``depth`` documents of each of these queries by ``retrieve`` (default BM25)."""
    if retrieve is None:
        from maw.training.negatives import LazyBM25

        retrieve = LazyBM25(dataset.corpus)
    pool = {d for judged in qrels.values() for d in judged if d in dataset.corpus}
    queries = {q: dataset.queries[q] for q in sorted(qrels)}
    for ranked in retrieve(queries, min(depth, len(dataset.corpus))).values():
        pool.update(ranked)
    return sorted(pool)


def validation_documents(
    dataset: RetrievalDataset,
    qrels: Qrels,
    cache_dir: str | Path | None,
    ctx=None,
    retrieve: Callable | None = None,
    *,
    pool_above: int | None = None,
    pool_depth: int | None = None,
) -> tuple[list[str] | None, dict[str, Any]]:
    """The documents validation searches: ``(None, info)`` for the full corpus, else ``(pool ids, info)``.

    ``info["validation"]`` says which in words; the pool is mined once through ``cache_dir`` (shared
    by every run, cell and rank; rank 0 mines). Defaults: ``POOL_ABOVE`` and ``POOL_DEPTH``.
    """
    from maw.training.negatives import cached_lists, dataset_key, qrels_fingerprint, retriever_key

    above = POOL_ABOVE if pool_above is None else pool_above
    depth = POOL_DEPTH if pool_depth is None else pool_depth
    n = len(dataset.corpus)
    if n <= above:
        return None, {"validation": "full corpus", "validation_documents": n}
    rkey = retriever_key(retrieve)
    key = None if rkey is None else [*dataset_key(dataset), qrels_fingerprint(qrels), str(depth), rkey]
    lists, info = cached_lists(
        "validation-pool",
        key,
        lambda: {"pool": validation_pool(dataset, qrels, depth, retrieve)},
        cache_dir,
        ctx,
    )
    pool = lists["pool"]
    return pool, {
        "validation": f"pool of {len(pool)} documents: judged + BM25 top-{depth}",
        "validation_documents": len(pool),
        "validation_pool_path": info["path"],
        "validation_pool_reused": info["reused"],
    }


@torch.inference_mode()
def encode_ids(
    encoder, provider, kind: str, ids: list[str], start: int, batch_size: int, device, precision
) -> np.ndarray:
    """Embeddings (len(ids), hidden) float32 of ``kind`` ("query" | "doc") texts, longest first."""
    out = np.empty((len(ids), encoder.hidden_size), dtype=np.float32)
    order = np.argsort(-np.array(provider.lengths(kind, ids)), kind="stable")
    with precision():  # once around the pass (CPU bfloat16 casts the weights: maw.utils.precision)
        for i in range(0, len(ids), batch_size):
            idx = order[i : i + batch_size]
            hidden, mask = provider.hidden(kind, [ids[j] for j in idx], device)
            emb = encoder.suffix(hidden, mask, start)
            out[idx] = emb.float().cpu().numpy()
    return out


def merge_depth_statistics(parts: list[dict]) -> dict:
    """The depth statistics of several ranks as one: counts and units summed, the per-unit mean
    entropy weighted by units (``{layer: {"counts", "entropy", "units"}}``, see ``depth_statistics``)."""
    out: dict = {}
    for part in parts:
        for layer, s in part.items():
            if layer not in out:
                out[layer] = {
                    "counts": [list(h) for h in s["counts"]],
                    "entropy": list(s["entropy"]),
                    "units": s["units"],
                }
                continue
            o = out[layer]
            n_o, n_s = o["units"], s["units"]
            o["counts"] = [
                [a + b for a, b in zip(ha, hb, strict=True)]
                for ha, hb in zip(o["counts"], s["counts"], strict=True)
            ]
            o["entropy"] = [
                (eo * n_o + es * n_s) / (n_o + n_s) if n_o + n_s else 0.0
                for eo, es in zip(o["entropy"], s["entropy"], strict=True)
            ]
            o["units"] = n_o + n_s
    return out


def validate(
    encoder,
    provider,
    qrels: Qrels,
    doc_ids: list[str],
    start: int,
    *,
    top_k: int,
    batch_size: int,
    device,
    precision: Callable[[], AbstractContextManager],
    depth: bool,
    ctx=None,
) -> tuple[dict[str, float], dict] | None:
    """``(PRIMARY_METRICS of exact retrieval of doc_ids for the queries of qrels, inference depth histogram or {})``.

    ``doc_ids``: the full corpus or the pool of :func:`validation_documents`. Under torch.distributed
    (``ctx`` with several ranks) every rank encodes a contiguous share of ``doc_ids``; rank 0 gathers
    the embeddings (and depth statistics), encodes the queries, searches and returns the result; the
    other ranks return None.
    """
    import ir_measures

    from maw.evaluation.metrics import evaluate_run
    from maw.retrieval.dense import search_embeddings
    from maw.training import distributed as dist_utils
    from maw.training.router_logs import depth_statistics_of

    was_training = encoder.training
    encoder.eval()
    if depth:
        from maw.models.maw_encoder import reset_depth_statistics

        reset_depth_statistics(encoder)
    rank, world = (ctx.rank, ctx.world_size) if ctx is not None else (0, 1)
    bounds = np.cumsum([0] + [len(a) for a in np.array_split(np.arange(len(doc_ids)), world)])
    mine = doc_ids[bounds[rank] : bounds[rank + 1]]
    d_emb = encode_ids(encoder, provider, "doc", mine, start, batch_size, device, precision)
    if world > 1:
        parts = dist_utils.gather_to_main((d_emb, depth_statistics_of(encoder) if depth else {}), ctx)
        if rank != 0:
            encoder.train(was_training)
            return None
        d_emb = np.concatenate([p[0] for p in parts])
        if depth:
            reset_depth_statistics(encoder)
            others = merge_depth_statistics([p[1] for p in parts])
    q_ids = sorted(qrels)
    q_emb = encode_ids(encoder, provider, "query", q_ids, start, batch_size, device, precision)
    run = search_embeddings(q_emb, q_ids, d_emb, doc_ids, k=top_k)
    res = evaluate_run(qrels, run, metrics=[ir_measures.parse_measure(m) for m in PRIMARY_METRICS])
    metrics = {m: res.aggregate[m] for m in PRIMARY_METRICS}
    stats = depth_statistics_of(encoder) if depth else {}
    if depth and world > 1:
        stats = merge_depth_statistics([others, stats])  # every rank's documents + the queries
    encoder.train(was_training)
    return metrics, stats
