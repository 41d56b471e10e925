"""Training at scale (issue 16, item 4): bounded prefix-cache builds, a free-space check and a size cap,
BM25 negatives mined once and shared, and a validation pool on large corpora."""

from __future__ import annotations

import logging
import shutil

import numpy as np
import pytest

import maw.retrieval.bm25 as bm25_module
import maw.training.prefix_cache as pc
from maw.retrieval.bm25 import BM25Retriever
from maw.training import trainer as trainer_module
from maw.training.distributed import DistributedContext
from maw.training.methods import build_model
from maw.training.negatives import cached_hard_negatives, mine_hard_negatives
from maw.training.prefix_cache import CorpusTexts, LivePrefix, PrefixCache, PrefixCacheSpaceError


def _files(folder):
    return {p.name: p.read_bytes() for p in sorted(folder.iterdir())}


def _setup(tiny, run_dir, **overrides):
    """A Trainer after ``setup()`` (model, negatives, validation documents, prefix states)."""
    plan = tiny.plan("finetune", **overrides)
    t = trainer_module.Trainer(plan, tiny.dataset, tiny.splits, run_dir, DistributedContext())
    t.setup()
    return t


class CountingBM25(bm25_module.BM25Retriever):
    built = 0
    calls = 0

    def __init__(self, *args, **kwargs):
        type(self).built += 1
        super().__init__(*args, **kwargs)

    def retrieve(self, queries, k=1000):
        type(self).calls += 1
        return super().retrieve(queries, k)


@pytest.fixture()
def counting_bm25(monkeypatch):
    CountingBM25.built = CountingBM25.calls = 0
    monkeypatch.setattr(bm25_module, "BM25Retriever", CountingBM25)
    return CountingBM25


# ---------------------------------------------------------------------------------------------- prefix cache
@pytest.mark.parametrize("dtype", ["float32", "float16"])
def test_chunked_build_equals_one_shot_build(tiny, tmp_path, monkeypatch, dtype):
    plan = tiny.plan("finetune")
    enc, k = build_model(plan), plan.layers.first_trainable
    texts = CorpusTexts(tiny.dataset.corpus)
    assert list(texts) == tiny.dataset.doc_texts() and texts[7:9] == tiny.dataset.doc_texts()[7:9]
    monkeypatch.setattr(pc, "TOKENIZE_CHUNK", 10**9)  # one tokenizer call over all texts
    one = PrefixCache.open_or_build(enc, tiny.dataset.doc_texts(), 48, k, tmp_path / "one", dtype, 7, "docs")
    monkeypatch.setattr(pc, "TOKENIZE_CHUNK", 4)  # 15 chunks, read from the corpus on demand
    chunked = PrefixCache.open_or_build(enc, texts, 48, k, tmp_path / "chunked", dtype, 7, "docs")
    assert one.folder.name == chunked.folder.name  # same key
    assert _files(one.folder) == _files(chunked.folder)  # hidden.bin, offsets.npy, meta.json: byte for byte
    assert (one.folder / "hidden.bin").stat().st_size == one.nbytes
    assert chunked.meta["total_tokens"] == int(pc.token_counts(enc, texts, 48).sum())


def test_token_count_stops_early_above_the_cap(tiny, tmp_path, monkeypatch):
    plan = tiny.plan("finetune")
    enc, k = build_model(plan), plan.layers.first_trainable
    texts = CorpusTexts(tiny.dataset.corpus)
    monkeypatch.setattr(pc, "TOKENIZE_CHUNK", 5)
    full = PrefixCache.plan(enc, texts, 48, k, tmp_path, "float16", "docs")
    assert full.complete and len(full.lengths) == len(texts) and not full.exists
    assert full.nbytes == full.total_tokens * enc.hidden_size * 2
    capped = PrefixCache.plan(enc, texts, 48, k, tmp_path, "float16", "docs", max_bytes=full.nbytes // 10)
    assert not capped.complete and len(capped.lengths) < len(texts) and capped.nbytes > full.nbytes // 10
    assert "above the" in pc.over_cap_reason([capped], full.nbytes // 10)
    assert pc.over_cap_reason([full], full.nbytes) is None


def test_free_space_check_raises_a_clear_error(tiny, tmp_path, monkeypatch):
    plan = tiny.plan("finetune")
    enc, k = build_model(plan), plan.layers.first_trainable
    texts = tiny.dataset.doc_texts()
    need = PrefixCache.plan(enc, texts, 48, k, tmp_path / "c", "float32", "docs").write_bytes
    real = shutil.disk_usage
    monkeypatch.setattr(shutil, "disk_usage", lambda p: real(p)._replace(free=need - 1))
    with pytest.raises(PrefixCacheSpaceError) as err:
        PrefixCache.open_or_build(enc, texts, 48, k, tmp_path / "c", "float32", name="docs")
    msg = str(err.value)
    for part in (
        str(tmp_path / "c"),
        f"{need} bytes",
        f"{need - 1} bytes",
        "--no-prefix-cache",
        "--prefix-cache-dir",
    ):
        assert part in msg
    assert not list((tmp_path / "c").iterdir())  # nothing written
    monkeypatch.setattr(shutil, "disk_usage", lambda p: real(p)._replace(free=need))
    assert PrefixCache.open_or_build(enc, texts, 48, k, tmp_path / "c", "float32", name="docs").nbytes > 0


def test_trainer_stops_with_the_space_error(tiny, tmp_path, monkeypatch):
    real = shutil.disk_usage
    monkeypatch.setattr(shutil, "disk_usage", lambda p: real(p)._replace(free=1000))
    with pytest.raises(PrefixCacheSpaceError, match="--no-prefix-cache"):
        _setup(tiny, tmp_path / "run")


def test_size_cap_switches_the_cache_off_with_a_logged_reason(tiny, tmp_path, monkeypatch, caplog):
    with caplog.at_level(logging.WARNING, logger="maw.training.prefix_cache"):
        t = _setup(tiny, tmp_path / "run", prefix_cache_max_gb=1e-5)  # a 10 kB cap
    assert isinstance(t.provider, LivePrefix)
    assert t.cache_info["prefix_cache"] is False
    reason = t.cache_info["prefix_cache_skipped"]
    assert "above the 0.00 GB cap" in reason and "running the frozen layers live" in reason
    assert reason in caplog.text
    assert not [p for p in t.cache_dir.iterdir() if p.is_dir()]  # no prefix cache built
    metrics, _ = t.validate()  # the live prefix serves validation
    assert 0.0 <= metrics["nDCG@10"] <= 1.0


# ---------------------------------------------------------------------------------------------- negatives
def test_negatives_are_mined_once_and_shared_by_runs(tiny, tmp_path, counting_bm25):
    shared = str(tmp_path / "shared")
    first = _setup(tiny, tmp_path / "cell1", prefix_cache_dir=shared)
    assert (counting_bm25.built, counting_bm25.calls) == (1, 1)
    path = first.cache_info["hard_negatives_path"]
    assert path.startswith(shared) and "bm25-negatives-" in path
    second = _setup(tiny, tmp_path / "cell2", prefix_cache_dir=shared, learning_rate=5e-4, seed=7)
    assert (counting_bm25.built, counting_bm25.calls) == (1, 1)  # read, not mined again
    assert second.candidates == first.candidates
    # another depth is another mining
    third = _setup(tiny, tmp_path / "cell3", prefix_cache_dir=shared, hard_negative_depth=3)
    assert (counting_bm25.built, counting_bm25.calls) == (2, 2)
    assert third.cache_info["hard_negatives_path"] != path
    assert all(len(c) <= 3 for c in third.candidates.values())
    assert first.candidates == mine_hard_negatives(tiny.dataset, tiny.splits.train, 5)  # what was cached


def test_cached_negatives_key_and_uncacheable_retrievers(tiny, tmp_path):
    calls = []

    def fake(queries, k):
        calls.append(len(queries))
        return {q: {"d0": 2.0, "d1": 1.0} for q in queries}

    a, info = cached_hard_negatives(tiny.dataset, tiny.splits.train, 2, tmp_path, retrieve=fake)
    b, _ = cached_hard_negatives(tiny.dataset, tiny.splits.train, 2, tmp_path, retrieve=fake)
    assert a == b and len(calls) == 2 and info["path"] is None  # no cache_key: never cached
    fake.cache_key = "fake-v1"
    c, info = cached_hard_negatives(tiny.dataset, tiny.splits.train, 2, tmp_path, retrieve=fake)
    d, again = cached_hard_negatives(tiny.dataset, tiny.splits.train, 2, tmp_path, retrieve=fake)
    assert c == d == a and len(calls) == 3 and not info["reused"] and again["reused"]
    fewer = dict(list(tiny.splits.train.items())[:5])  # other split queries: another file
    e, other = cached_hard_negatives(tiny.dataset, fewer, 2, tmp_path, retrieve=fake)
    assert len(calls) == 4 and other["path"] != info["path"] and sorted(e) == sorted(fewer)


# ---------------------------------------------------------------------------------------------- validation
def test_small_corpora_validate_on_the_full_corpus(tiny, tmp_path):
    t = _setup(tiny, tmp_path / "run")
    assert t.val_doc_ids is None
    assert t.cache_info["validation"] == "full corpus"
    assert t.cache_info["validation_documents"] == len(tiny.dataset.corpus)


def test_validation_pool_is_used_above_the_threshold(tiny, tmp_path, monkeypatch, counting_bm25):
    seen = []
    real_validate = trainer_module.validate

    def spy(encoder, provider, qrels, doc_ids, *args, **kwargs):
        seen.append(list(doc_ids))
        return real_validate(encoder, provider, qrels, doc_ids, *args, **kwargs)

    monkeypatch.setattr(trainer_module, "validate", spy)
    shared = str(tmp_path / "shared")
    res = trainer_module.train(
        tiny.plan("finetune", num_epochs=1, prefix_cache_dir=shared, val_pool_above=10, val_pool_depth=3),
        tiny.dataset,
        tiny.splits,
        tmp_path / "run",
    )
    # the pool: judged documents of the validation queries + BM25 top-3 of each
    val = {q: d for q, d in tiny.splits.val.items() if any(g > 0 for g in d.values())}
    top = BM25Retriever(tiny.dataset.corpus).retrieve({q: tiny.dataset.queries[q] for q in val}, 3)
    pool = sorted({d for j in val.values() for d in j} | {d for r in top.values() for d in r})
    assert 10 < len(pool) < len(tiny.dataset.corpus)
    assert seen == [pool, pool]  # epoch 0 and epoch 1, never the full corpus
    assert res.setup["validation"] == f"pool of {len(pool)} documents: judged + BM25 top-3"
    assert res.setup["validation_documents"] == len(pool)
    assert (counting_bm25.built, counting_bm25.calls) == (1, 2)  # one index for negatives and pool
    # a second run reads the pool (and the negatives) from the shared cache
    again = _setup(tiny, tmp_path / "run2", prefix_cache_dir=shared, val_pool_above=10, val_pool_depth=3)
    assert again.val_doc_ids == pool and again.cache_info["validation_pool_reused"]
    assert (counting_bm25.built, counting_bm25.calls) == (1, 2)
    assert np.isfinite(res.best_score)
