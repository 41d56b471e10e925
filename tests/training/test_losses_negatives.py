"""InfoNCE with false-negative masking; examples, BM25 mining and the per-epoch order."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from maw.data.types import Document, RetrievalDataset
from maw.training.losses import false_negative_mask, info_nce, info_nce_per_query
from maw.training.negatives import (
    epoch_batches,
    epoch_negatives,
    make_batch,
    mine_hard_negatives,
    num_batches,
    relevant_documents,
    training_examples,
)


def test_info_nce_matches_manual_cross_entropy():
    torch.manual_seed(0)
    q = F.normalize(torch.randn(3, 8), dim=-1)
    d = F.normalize(torch.randn(5, 8), dim=-1)
    pos = torch.tensor([0, 2, 4])
    per_q = info_nce_per_query(q, d, pos, temperature=0.05)
    logits = q @ d.T / 0.05
    manual = -(logits[torch.arange(3), pos] - torch.logsumexp(logits, dim=1))
    torch.testing.assert_close(per_q, manual)
    torch.testing.assert_close(info_nce(q, d, pos, 0.05), manual.mean())


def test_false_negative_mask_removes_duplicates_and_other_relevant_docs_but_not_the_target():
    # docs: q0's positive d1, q1's positive d1 again (same doc), q2's positive d7 with negative d3
    doc_ids = ["d1", "d1", "d7", "d3"]
    pos = [0, 1, 2]
    relevant = [{"d1", "d3"}, {"d1"}, {"d7"}]
    mask = false_negative_mask(doc_ids, pos, relevant)
    assert mask.tolist() == [
        [False, True, False, True],  # d1 duplicate and d3 (relevant to q0) are not negatives of q0
        [True, False, False, False],  # the first d1 is q1's positive too
        [False, False, False, False],
    ]
    q = F.normalize(torch.randn(3, 4), dim=-1)
    d = F.normalize(torch.randn(4, 4), dim=-1)
    masked = info_nce_per_query(q, d, torch.tensor(pos), 1.0, mask)
    # q1 with d1 masked at index 0 equals a softmax over the remaining docs only
    logits = q[1] @ d[[1, 2, 3]].T
    torch.testing.assert_close(masked[1], -(logits[0] - torch.logsumexp(logits, 0)))


def _toy_dataset() -> RetrievalDataset:
    corpus = {f"d{i}": Document("", f"text {i}") for i in range(10)}
    queries = {"a": "qa", "b": "qb", "c": "qc"}
    qrels = {"train": {"a": {"d0": 1, "d1": 1, "d9": 0}, "b": {"d2": 2}}, "test": {"c": {"d3": 1}}}
    return RetrievalDataset("toy", corpus, queries, qrels, fingerprint="x")


def test_examples_one_per_positive_pair_sorted():
    ds = _toy_dataset()
    ex = training_examples(ds.qrels["train"])
    assert [(e.query_id, e.doc_id) for e in ex] == [("a", "d0"), ("a", "d1"), ("b", "d2")]


def test_mining_uses_train_queries_only_and_never_a_relevant_doc():
    ds = _toy_dataset()
    seen = {}

    def fake_retrieve(queries, k):
        seen.update(queries)
        # every query ranks its relevant docs first (the worst case for mining)
        return {q: {f"d{i}": 10.0 - i for i in range(10)} for q in queries}

    cands = mine_hard_negatives(ds, ds.qrels["train"], depth=3, retrieve=fake_retrieve)
    assert set(seen) == {"a", "b"}  # the test query is never looked at
    assert cands["a"] == ["d2", "d3", "d4"]  # d0, d1 relevant; d9 (grade 0) is a legal negative
    assert cands["b"] == ["d0", "d1", "d3"]
    rel = relevant_documents(ds, ds.qrels["train"])
    assert rel == {"a": {"d0", "d1"}, "b": {"d2"}}


def test_mining_with_real_bm25_on_a_tiny_corpus(tiny):
    ds, splits = tiny.dataset, tiny.splits
    cands = mine_hard_negatives(ds, splits.train, depth=5)
    assert set(cands) == set(splits.train)
    for q, docs in cands.items():
        assert len(docs) <= 5
        assert not set(docs) & {d for d, g in splits.train[q].items() if g > 0}


def test_epoch_order_is_seeded_reshuffled_and_keeps_the_last_partial_batch():
    b1 = epoch_batches(10, 4, seed=3, epoch=1)
    assert [len(b) for b in b1] == [4, 4, 2] and num_batches(10, 4) == 3
    assert sorted(i for b in b1 for i in b) == list(range(10))
    assert epoch_batches(10, 4, seed=3, epoch=1) == b1  # reproducible (resume)
    assert epoch_batches(10, 4, seed=3, epoch=2) != b1  # reshuffled every epoch
    assert epoch_batches(10, 4, seed=4, epoch=1) != b1


def test_negatives_per_epoch_are_seeded_and_distinct():
    ds = _toy_dataset()
    ex = training_examples(ds.qrels["train"])
    cands = {"a": ["d5", "d6", "d7", "d8"], "b": ["d0"]}
    n1 = epoch_negatives(ex, cands, 2, seed=1, epoch=1)
    assert n1 == epoch_negatives(ex, cands, 2, seed=1, epoch=1)
    assert all(len(set(n)) == len(n) for n in n1)
    assert n1[2] == ["d0"]  # fewer candidates than asked: all of them
    batch = make_batch(ex, n1, relevant_documents(ds, ds.qrels["train"]))
    assert batch.doc_ids[batch.positive_index[0]] == "d0" and batch.doc_ids[batch.positive_index[1]] == "d1"
    # a's other positive (d1) is masked for query a, in both directions
    assert batch.mask[0, batch.positive_index[1]] and batch.mask[1, batch.positive_index[0]]
    assert batch.doc_owner.tolist() == [0, 0, 0, 1, 1, 1, 2, 2]
