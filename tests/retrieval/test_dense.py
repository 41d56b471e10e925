"""Dense retrieval: exact search vs numpy, the embedding cache (hit / miss / invalidation), timings."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from transformers import AutoTokenizer, BertConfig, BertModel

from maw.config import default_model
from maw.data.types import Document
from maw.models.encoder import Encoder
from maw.retrieval.dense import (
    DenseRetriever,
    model_fingerprint,
    search_embeddings,
    texts_fingerprint,
)


@pytest.fixture(scope="module")
def tokenizer():
    return AutoTokenizer.from_pretrained(default_model())


def tiny_encoder(tokenizer, seed: int = 0) -> Encoder:
    torch.manual_seed(seed)
    cfg = BertConfig(
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=4,
        intermediate_size=64,
        vocab_size=tokenizer.vocab_size,
    )
    return Encoder(
        BertModel(cfg, add_pooling_layer=False), tokenizer, "tiny-random-bert", normalize=True
    ).eval()


CORPUS = {
    f"d{i}": Document(f"title {i}", f"document number {i} about topic {i % 3} " * (1 + i % 4))
    for i in range(12)
}
QUERIES = {"q1": "topic 1", "q2": "document number 7", "q3": "title 0"}


def numpy_topk(q: np.ndarray, d: np.ndarray, k: int) -> list[list[int]]:
    scores = q @ d.T
    return [list(np.argsort(-row, kind="stable")[:k]) for row in scores]


def test_search_embeddings_matches_numpy():
    rng = np.random.default_rng(0)
    d = rng.standard_normal((200, 16)).astype(np.float32)
    q = rng.standard_normal((7, 16)).astype(np.float32)
    d_ids, q_ids = [f"d{i}" for i in range(200)], [f"q{i}" for i in range(7)]
    run = search_embeddings(q, q_ids, d, d_ids, k=10)
    for qi, expected in zip(q_ids, numpy_topk(q, d, 10), strict=True):
        ranked = sorted(run[qi], key=run[qi].get, reverse=True)
        assert ranked == [d_ids[j] for j in expected]
        for doc, score in run[qi].items():
            assert score == pytest.approx(float(q[q_ids.index(qi)] @ d[d_ids.index(doc)]), rel=1e-5)


def test_search_embeddings_clips_k_and_checks_shapes():
    d = np.eye(3, dtype=np.float32)
    run = search_embeddings(np.ones((1, 3), np.float32), ["q"], d, ["a", "b", "c"], k=1000)
    assert set(run["q"]) == {"a", "b", "c"}
    with pytest.raises(ValueError, match="rows"):
        search_embeddings(np.ones((1, 3), np.float32), ["q"], d, ["a", "b"], k=2)
    with pytest.raises(ValueError, match="dim"):
        search_embeddings(np.ones((1, 4), np.float32), ["q"], d, ["a", "b", "c"], k=2)
    with pytest.raises(ValueError, match="k must be"):
        search_embeddings(np.ones((1, 3), np.float32), ["q"], d, ["a", "b", "c"], k=0)
    assert search_embeddings(np.ones((1, 3), np.float32), ["q"], np.zeros((0, 3), np.float32), [], k=5) == {
        "q": {}
    }


def test_dense_retriever_equals_encode_then_search(tokenizer):
    enc = tiny_encoder(tokenizer)
    retriever = DenseRetriever(
        enc,
        query_max_length=16,
        doc_max_length=32,
        batch_size=4,
        device="cpu",
        latency_queries=2,
        embedding_dtype="float32",
        shard_size=5,  # 3 shards: exercises the running top-k merge
    )
    run = retriever.retrieve(QUERIES, CORPUS, k=5)
    d_ids = list(CORPUS)
    d_emb = enc.encode([CORPUS[d].full_text() for d in d_ids], 32, 4)
    q_emb = enc.encode(list(QUERIES.values()), 16, 4)
    assert np.allclose(np.linalg.norm(d_emb, axis=1), 1.0, atol=1e-5)
    expected = search_embeddings(q_emb, list(QUERIES), d_emb, d_ids, k=5)
    for q in QUERIES:
        assert list(run[q]) == list(expected[q])
        assert np.allclose(list(run[q].values()), list(expected[q].values()), atol=1e-5)
    t = retriever.timings
    assert t["doc_cache_hit"] is False and t["device"] == "cpu" and t["doc_shards"] == 3
    assert t["index"] == "flat" and t["index_bytes"] == len(CORPUS) * 32 * 4 and t["encode_amp"] == "float32"
    assert len(t["query_latency_samples_ms"]) == 2 and all(x > 0 for x in t["query_latency_samples_ms"])
    for key in (
        "doc_encode_seconds",
        "docs_per_second",
        "query_encode_seconds",
        "search_seconds",
        "qps",
        "query_latency_ms",
    ):
        assert t[key] > 0
    assert t["latency_queries"] == 2
    # the float16 store: the same documents up to float16 rounding of the scores
    half = DenseRetriever(enc, 16, 32, 4, device="cpu", latency_queries=0).retrieve(QUERIES, CORPUS, k=5)
    for q in QUERIES:
        assert np.allclose([half[q].get(d, -1) for d in run[q]], list(run[q].values()), atol=2e-3)


def stores(folder):
    return sorted(p for p in folder.iterdir() if (p / "meta.json").is_file())


def test_embedding_cache_hit_miss_and_invalidation(tokenizer, tmp_path):
    enc = tiny_encoder(tokenizer)

    def make(e, **kw):
        return DenseRetriever(
            e,
            query_max_length=16,
            doc_max_length=kw.get("L", 32),
            batch_size=4,
            cache_dir=tmp_path,
            device="cpu",
            latency_queries=0,
            embedding_dtype=kw.get("dtype", "float16"),
        )

    r1 = make(enc)
    run1 = r1.retrieve(QUERIES, CORPUS, k=5)
    assert r1.timings["doc_cache_hit"] is False and r1.timings["doc_shards_encoded"] == 1
    assert len(stores(tmp_path)) == 1

    r2 = make(enc)
    run2 = r2.retrieve(QUERIES, CORPUS, k=5)
    assert r2.timings["doc_cache_hit"] is True and r2.timings["doc_shards_encoded"] == 0
    assert r2.timings["docs_per_second"] == r1.timings["docs_per_second"]  # recorded when computed
    assert run2 == run1

    # a different max length, different documents, changed weights or another dtype: a new entry
    r3 = make(enc, L=24)
    r3.retrieve(QUERIES, CORPUS, k=5)
    assert r3.timings["doc_cache_hit"] is False
    changed = dict(CORPUS) | {"d3": Document("title 3", "completely different text")}
    r4 = make(enc)
    r4.retrieve(QUERIES, changed, k=5)
    assert r4.timings["doc_cache_hit"] is False
    make(enc, dtype="float32").retrieve(QUERIES, CORPUS, k=5)
    with torch.no_grad():
        enc.backbone.encoder.layer[1].output.dense.bias.add_(0.01)
    r5 = make(enc)
    r5.retrieve(QUERIES, CORPUS, k=5)
    assert r5.timings["doc_cache_hit"] is False
    assert len(stores(tmp_path)) == 5

    # no cache folder: nothing written there
    r6 = DenseRetriever(enc, 16, 32, 4, cache_dir=None, device="cpu", latency_queries=0)
    r6.retrieve(QUERIES, CORPUS, k=5)
    assert r6.timings["doc_cache_hit"] is False and r6.timings["embedding_store"] is None
    assert len(stores(tmp_path)) == 5


def test_corrupt_shard_is_recomputed(tokenizer, tmp_path):
    enc = tiny_encoder(tokenizer)
    r = DenseRetriever(enc, 16, 32, 4, cache_dir=tmp_path, device="cpu", latency_queries=0, shard_size=5)
    first = r.retrieve(QUERIES, CORPUS, k=3)
    (folder,) = stores(tmp_path)
    (folder / "shard-00001.npy").write_bytes(b"not a numpy file")
    assert r.retrieve(QUERIES, CORPUS, k=3) == first
    assert r.timings["doc_shards_encoded"] == 1 and r.timings["doc_shards"] == 3
    # an object array (needs pickle) is refused, never unpickled
    with open(folder / "shard-00002.npy", "wb") as fh:
        np.save(fh, np.array([{"x": 1}], dtype=object), allow_pickle=True)
    assert r.retrieve(QUERIES, CORPUS, k=3) == first
    assert r.timings["doc_shards_encoded"] == 1


def test_fingerprints_are_stable_and_sensitive(tokenizer):
    a, b = tiny_encoder(tokenizer, seed=0), tiny_encoder(tokenizer, seed=0)
    assert model_fingerprint(a) == model_fingerprint(b)
    assert model_fingerprint(a) != model_fingerprint(tiny_encoder(tokenizer, seed=1))
    assert model_fingerprint(a) != model_fingerprint(a, extra="maw:tau=0.5")
    assert texts_fingerprint(["a", "b"], ["x", "y"]) != texts_fingerprint(["a", "b"], ["y", "x"])
    assert texts_fingerprint(["a"], ["bc"]) != texts_fingerprint(["ab"], ["c"])


def test_bad_arguments(tokenizer):
    enc = tiny_encoder(tokenizer)
    with pytest.raises(ValueError, match="doc_max_length"):
        DenseRetriever(enc, 16, 0, 4, device="cpu")
    with pytest.raises(ValueError, match="empty"):
        DenseRetriever(enc, 16, 32, 4, device="cpu").retrieve(QUERIES, {}, k=3)


def test_encode_sorts_by_token_count_and_keeps_input_order(tokenizer):
    enc = tiny_encoder(tokenizer)
    # characters and tokens disagree: one long word is many characters but few tokens
    texts = ["a b c d e f g h i j k l", "supercalifragilisticexpialidocious", "x", "hello world " * 40]
    lengths = enc.token_lengths(texts, max_length=16, chunk=3)  # chunks of 3: tests the chunking too
    expected = [len(tokenizer(t, truncation=True, max_length=16)["input_ids"]) for t in texts]
    assert lengths.tolist() == expected and lengths.max() == 16
    together = enc.encode(texts, max_length=16, batch_size=2)
    alone = np.stack([enc.encode([t], max_length=16)[0] for t in texts])
    np.testing.assert_allclose(together, alone, atol=1e-5)


def test_cpu_autocast_is_bfloat16_only(tokenizer):
    enc = tiny_encoder(tokenizer)
    texts = [CORPUS[d].full_text() for d in CORPUS]
    plain = enc.encode(texts, 32, 4)
    assert np.array_equal(enc.encode(texts, 32, 4, amp=torch.float16), plain)  # CPU float16: not used
    bf16 = enc.encode(texts, 32, 4, amp=torch.bfloat16)  # CPU bfloat16 autocast (--precision bf16)
    assert bf16.dtype == np.float32 and not np.array_equal(bf16, plain)
    assert np.abs(bf16 - plain).max() < 0.05 and np.allclose(np.linalg.norm(bf16, axis=1), 1, atol=1e-3)
    assert DenseRetriever(enc, 16, 32, 4, device="cpu", amp="bfloat16").amp == "bfloat16"
    assert DenseRetriever(enc, 16, 32, 4, device="cpu", amp="float16").amp == "float32"
    assert DenseRetriever(enc, 16, 32, 4, device="cpu").amp == "float32"
    with pytest.raises(ValueError, match="amp"):
        DenseRetriever(enc, 16, 32, 4, device="cpu", amp="int8")
