"""Contrastive loss: InfoNCE over in-batch documents (positives of the other queries + mined negatives).

A training micro-batch holds ``B`` (query, positive) examples. Its documents are laid out example by
example — ``[pos_0, neg_0_1, .., pos_1, neg_1_1, ..]`` — so that the concatenation of the per-rank
shards of a distributed batch is exactly the single-process layout. Every query is scored against
every document of the batch; its own positive is the target.

False negatives: a document that is judged relevant to query ``b`` (its own positive appearing again,
the same document being another query's positive, or a mined negative of another query that ``b``
has judged relevant) is masked out of ``b``'s softmax (score -inf), except at ``b``'s target
position. The mask is built from the training judgements, not just identical ids.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F


def false_negative_mask(
    doc_ids: Sequence[str], positive_index: Sequence[int], relevant: Sequence[set[str]]
) -> torch.Tensor:
    """(B, N) bool mask, True where document ``j`` must not count as a negative for query ``b``.

    ``doc_ids``: the batch's N document ids; ``positive_index[b]``: position of query b's target;
    ``relevant[b]``: the ids judged relevant (grade > 0) to query b. The target itself is never masked.
    """
    b_size, n = len(positive_index), len(doc_ids)
    mask = torch.zeros(b_size, n, dtype=torch.bool)
    for b in range(b_size):
        rel = relevant[b]
        for j, doc in enumerate(doc_ids):
            if doc in rel and j != positive_index[b]:
                mask[b, j] = True
    return mask


def info_nce_per_query(
    q_emb: torch.Tensor,
    d_emb: torch.Tensor,
    positive_index: torch.Tensor,
    temperature: float,
    mask: torch.Tensor | None = None,
) -> torch.Tensor:
    """Per-query InfoNCE loss.

    Args:
        q_emb: (B, d) query embeddings (L2-normalised by the encoder, so dot = cosine).
        d_emb: (N, d) document embeddings of the whole batch.
        positive_index: (B,) long, index in ``d_emb`` of each query's positive.
        temperature: softmax temperature (scores are divided by it).
        mask: optional (B, N) bool, True = excluded from the softmax (false negatives).
    Returns:
        (B,) ``-log softmax(q·d / t)[positive]`` for each query (float32).
    """
    logits = (q_emb.float() @ d_emb.float().T) / temperature  # (B, N)
    if mask is not None:
        logits = logits.masked_fill(mask.to(logits.device), float("-inf"))
    return F.cross_entropy(logits, positive_index.to(logits.device), reduction="none")


def info_nce(
    q_emb: torch.Tensor,
    d_emb: torch.Tensor,
    positive_index: torch.Tensor,
    temperature: float,
    mask: torch.Tensor | None = None,
) -> torch.Tensor:
    """Mean of :func:`info_nce_per_query` over the batch (a scalar)."""
    return info_nce_per_query(q_emb, d_emb, positive_index, temperature, mask).mean()
