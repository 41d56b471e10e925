"""Corpus subsampling (maw.data.subsample): judged documents kept, size, seeding, laziness."""

from __future__ import annotations

from collections.abc import Iterator, Mapping

import pytest

from maw.config import DataConfig
from maw.data import load_beir, make_splits
from maw.data.corpus import CorpusTable
from maw.data.subsample import SubCorpus, judged_ids, subsample_corpus, subsample_for_splits
from maw.data.types import Document, RetrievalDataset


class LazyCorpus(Mapping):
    """A corpus that exists only through the Mapping interface and counts the documents it reads."""

    def __init__(self, ids: list[str]):
        self._ids = ids
        self.reads = 0

    def __len__(self) -> int:
        return len(self._ids)

    def __iter__(self) -> Iterator[str]:
        return iter(self._ids)

    def __getitem__(self, doc_id: str) -> Document:
        self.reads += 1
        if not doc_id.startswith("d"):
            raise KeyError(doc_id)
        return Document(title=f"title {doc_id}", text=f"text {doc_id}")


def dataset(n: int = 1000, ids: list[str] | None = None) -> RetrievalDataset:
    corpus = LazyCorpus(ids if ids is not None else [f"d{i}" for i in range(n)])
    return RetrievalDataset("toy", corpus, {}, {}, fingerprint="fp-toy", report={"dropped": 0})


JUDGED = [f"d{i}" for i in range(0, 1000, 50)]  # 20 judged documents


def test_judged_documents_always_kept_and_size_respected():
    out = subsample_corpus(dataset(), JUDGED, 100, seed=13)
    assert len(out.corpus) == 100
    assert set(JUDGED) <= set(out.corpus)
    info = out.report["corpus_subsample"]
    assert info == {
        "documents": 100,
        "of": 1000,
        "seed": 13,
        "size": 100,
        "judged": 20,
        "judged_absent": 0,
        "random": 80,
        "original_fingerprint": "fp-toy",
    }
    assert out.report["dropped"] == 0  # the loader's notes are kept
    assert out.fingerprint != "fp-toy"


def test_more_judged_than_size_keeps_all_judged_and_draws_none():
    out = subsample_corpus(dataset(), JUDGED, 5, seed=13)
    assert list(out.corpus) == JUDGED
    assert out.report["corpus_subsample"]["random"] == 0


def test_judged_ids_absent_from_the_corpus_do_not_take_places():
    out = subsample_corpus(dataset(), [*JUDGED, "missing-1", "missing-2"], 100, seed=13)
    assert len(out.corpus) == 100 and set(JUDGED) <= set(out.corpus)
    info = out.report["corpus_subsample"]
    assert (info["judged"], info["judged_absent"], info["random"]) == (20, 2, 80)


def test_same_seed_same_sample_other_seed_other_sample():
    a = list(subsample_corpus(dataset(), JUDGED, 100, seed=13).corpus)
    b = list(subsample_corpus(dataset(), JUDGED, 100, seed=13).corpus)
    c = list(subsample_corpus(dataset(), JUDGED, 100, seed=14).corpus)
    assert a == b
    assert set(a) != set(c) and set(JUDGED) <= set(c)
    assert (
        subsample_corpus(dataset(), JUDGED, 100, seed=13).fingerprint
        != subsample_corpus(dataset(), JUDGED, 100, seed=14).fingerprint
    )


def test_sample_is_in_corpus_order_independent_of_it_and_nested_across_sizes():
    ids = [f"d{i}" for i in range(1000)]
    out = list(subsample_corpus(dataset(ids=ids), JUDGED, 100, seed=13).corpus)
    assert out == sorted(out, key=ids.index)  # corpus order
    reversed_out = subsample_corpus(dataset(ids=ids[::-1]), JUDGED, 100, seed=13).corpus
    assert set(reversed_out) == set(out)  # the sample does not depend on the order of the file
    small = subsample_corpus(dataset(ids=ids), JUDGED, 40, seed=13).corpus
    assert set(small) <= set(out)  # a smaller preset's documents are in a larger one's


def test_random_part_is_roughly_uniform():
    # 500 of 10,000 ids: each tenth of the corpus should get about 50 (binomial sd ~ 6.7)
    out = subsample_corpus(dataset(10_000), [], 500, seed=13).corpus
    per_tenth = [0] * 10
    for d in out:
        per_tenth[int(d[1:]) // 1000] += 1
    assert all(20 <= n <= 80 for n in per_tenth), per_tenth


def test_lazy_corpus_reads_no_document_and_view_reads_through():
    ds = dataset()
    out = subsample_corpus(ds, JUDGED, 100, seed=13)
    assert ds.corpus.reads == 0  # ids only: no document is read while sampling
    assert isinstance(out.corpus, SubCorpus)
    assert out.corpus["d50"] == Document("title d50", "text d50")
    kept = next(iter(out.corpus))
    assert all(d in out.corpus for d in out.corpus) and len(set(out.corpus)) == len(out.corpus)
    dropped = next(d for d in ds.corpus if d not in out.corpus)
    with pytest.raises(KeyError):
        out.corpus[dropped]  # in the parent, not in the subsample
    assert out.doc_texts()[:1] == [out.corpus[kept].full_text()]


def test_small_corpus_returned_unchanged_and_bad_size_rejected():
    ds = dataset(50)
    assert subsample_corpus(ds, JUDGED, 50, seed=13) is ds
    for bad in (0, -3, 2.5, True):
        with pytest.raises(ValueError, match="size"):
            subsample_corpus(ds, JUDGED, bad, seed=13)


def test_on_a_corpus_table_with_real_splits(make_beir, tmp_path):
    corpus = [{"_id": f"d{i}", "title": f"title {i}", "text": f"text of document {i}"} for i in range(40)]
    qrels = {
        "train": [("q0", "d0", 1), ("q1", "d11", 1), ("q2", "d22", 2), ("q3", "d33", 1)],
        "test": [("q4", "d4", 1), ("q5", "d39", 2), ("q5", "d17", 0)],  # a grade-0 judgement too
    }
    folder = make_beir(tmp_path / "toy40", corpus=corpus, qrels=qrels)
    ds = load_beir(folder, cache_dir=tmp_path / "tables")
    assert isinstance(ds.corpus, CorpusTable)
    splits = make_splits(ds, DataConfig(dataset=str(folder), val_fraction=0.25))
    keep = judged_ids(splits)
    assert keep == {"d0", "d11", "d22", "d33", "d4", "d39", "d17"}
    out = subsample_corpus(ds, keep, 12, seed=13)
    assert len(out.corpus) == 12 and keep <= set(out.corpus)
    for d in out.corpus:
        assert out.corpus[d] == ds.corpus[d]
    assert out.queries == ds.queries and out.qrels == ds.qrels


def test_subsample_for_splits_follows_the_data_config(make_beir, tmp_path):
    folder = make_beir(tmp_path / "toy")  # 6 documents, 4 judged for train and 3 for test
    ds = load_beir(folder, cache_dir=tmp_path / "tables")
    every = make_splits(ds, DataConfig(dataset=str(folder), val_fraction=0.0))
    assert subsample_for_splits(ds, every, DataConfig(dataset=str(folder))) is ds  # corpus_size None
    assert subsample_for_splits(ds, every, DataConfig(dataset=str(folder), corpus_size=5)) is ds  # all judged
    cfg = DataConfig(dataset=str(folder), val_fraction=0.0, train_samples=1, corpus_size=5, split_seed=7)
    splits = make_splits(ds, cfg)
    assert len(judged_ids(splits)) == 4  # 1 train document + d4, d5, d0 of the test split
    out = subsample_for_splits(ds, splits, cfg)
    assert len(out.corpus) == 5 and judged_ids(splits) <= set(out.corpus)
    assert out.report["corpus_subsample"]["seed"] == 7
