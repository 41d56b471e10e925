"""Embedding store (shards, resume after an interrupt) and the FAISS indexes (exact in chunks, approximate)."""

from __future__ import annotations

import numpy as np
import pytest
from test_dense import CORPUS, QUERIES, tiny_encoder, tokenizer  # noqa: F401 (fixture)

from maw.retrieval.dense import DenseRetriever, search_embeddings
from maw.retrieval.index import (
    IndexSpec,
    build_approximate,
    exact_search,
    index_bytes,
    merge_topk,
    recall_vs_exact,
)
from maw.retrieval.store import EmbeddingStore, iter_chunks


def test_store_shards_roundtrip_and_ranks(tmp_path):
    x = np.random.default_rng(0).standard_normal((10, 4)).astype(np.float32)
    store = EmbeddingStore(tmp_path / "s", 10, 4, "float32", shard_size=4)
    assert store.num_shards == 3 and store.bounds(2) == (8, 10) and store.nbytes == 160
    assert store.missing(0, 2) == [0, 2] and store.missing(1, 2) == [1]  # shard i -> rank i % world
    for i in range(3):
        store.write(i, x[slice(*store.bounds(i))], {"seconds": 0.1})
    assert store.complete and np.array_equal(store.to_array(), x)
    again = EmbeddingStore(tmp_path / "s", 10, 4, "float32", shard_size=99)  # reopened as made
    assert again.shard_size == 4 and again.complete
    other = EmbeddingStore(tmp_path / "s", 11, 4, "float32", shard_size=4)  # another plan: reset
    assert other.missing() == [0, 1, 2]
    with pytest.raises(ValueError, match="shape"):
        other.write(0, x[:3])
    with pytest.raises(ValueError, match="dtype"):
        EmbeddingStore(tmp_path / "t", 1, 4, "int8")


def test_interrupted_encoding_resumes_without_reencoding_finished_shards(tokenizer, tmp_path):  # noqa: F811
    enc = tiny_encoder(tokenizer)
    encoded: list[list[str]] = []
    real = enc.encode

    def spy(texts, max_length, *a, **kw):
        if max_length == 32:  # document shards (queries have max length 16)
            if len(encoded) == 2 and not resumed:
                raise KeyboardInterrupt  # killed while encoding the third shard
            encoded.append(list(texts))
        return real(texts, max_length, *a, **kw)

    enc.encode = spy
    kw = dict(cache_dir=tmp_path, device="cpu", latency_queries=0, shard_size=3)
    resumed = False
    with pytest.raises(KeyboardInterrupt):
        DenseRetriever(enc, 16, 32, 4, **kw).retrieve(QUERIES, CORPUS, k=5)
    assert len(encoded) == 2
    (folder,) = [p for p in tmp_path.iterdir() if p.is_dir()]
    assert sorted(p.name for p in folder.glob("shard-*")) == [
        f"shard-0000{i}.{ext}" for i in range(2) for ext in ("json", "npy")
    ]  # the finished shards are on disk, the interrupted one is not
    resumed = True
    r = DenseRetriever(enc, 16, 32, 4, **kw)
    run = r.retrieve(QUERIES, CORPUS, k=5)
    texts = [CORPUS[d].full_text() for d in CORPUS]
    assert [sorted(t) for t in encoded[2:]] == [sorted(texts[6:9]), sorted(texts[9:12])]  # only the rest
    assert r.timings["doc_shards_encoded"] == 2 and r.timings["doc_shards"] == 4
    enc.encode = real
    fresh = DenseRetriever(enc, 16, 32, 4, device="cpu", latency_queries=0, shard_size=3)
    assert run == fresh.retrieve(QUERIES, CORPUS, k=5)


def test_exact_search_in_chunks_equals_one_index():
    rng = np.random.default_rng(1)
    d = rng.standard_normal((500, 8)).astype(np.float32)
    d[10] = d[400]  # a tie across chunks: the earlier row first
    q = np.stack([d[400], rng.standard_normal(8).astype(np.float32)])
    full = np.argsort(-(q @ d.T), axis=1, kind="stable")[:, :20]
    for rows in (7, 64, 500, 1000):
        s, i, alone = exact_search(q, iter_chunks(d, rows), 20, timed_queries=1)
        assert np.allclose(s, np.take_along_axis(q @ d.T, full, 1), atol=1e-5)
        if rows < 400:  # rows 10 and 400 in different chunks: the earlier first (one chunk: FAISS's order)
            assert np.array_equal(i, full)
        assert len(alone) == 1 and alone[0] > 0
    s, i = merge_topk(
        np.array([[3.0, 1.0]]), np.array([[0, 1]]), np.array([[3.0, 2.0]]), np.array([[5, 6]]), 3
    )
    assert i.tolist() == [[0, 5, 6]]
    run = search_embeddings(q, ["a", "b"], d, [f"d{j}" for j in range(500)], k=3)
    assert set(run["a"]) == {f"d{j}" for j in full[0, :3]}


@pytest.mark.parametrize(
    "spec, floor",
    [
        (IndexSpec("hnsw", hnsw_m=16, ef_search=64), 0.9),
        (IndexSpec("ivf-flat", nlist=16, nprobe=4), 0.7),
        (IndexSpec("ivf-pq", nlist=16, nprobe=4, pq_m=8, pq_bits=6), 0.3),
    ],
)
def test_approximate_indexes_recall_against_exact(spec, floor):
    rng = np.random.default_rng(2)
    centers = rng.standard_normal((20, 32)).astype(np.float32)
    d = centers[rng.integers(0, 20, 3000)] + 0.3 * rng.standard_normal((3000, 32)).astype(np.float32)
    d /= np.linalg.norm(d, axis=1, keepdims=True)
    q = d[:50] + 0.05 * rng.standard_normal((50, 32)).astype(np.float32)
    index = build_approximate(spec, lambda: iter_chunks(d, 700), len(d), 32)
    assert index.ntotal == 3000
    _, approx = index.search(q, 10)
    _, exact, _ = exact_search(q, iter_chunks(d, 700), 10)
    recall = recall_vs_exact(approx, exact, [1, 10])
    assert floor <= recall["@10"] <= 1.0 and set(recall) == {"@1", "@10"}
    assert recall_vs_exact(exact, exact, [10]) == {"@10": 1.0}
    assert index_bytes(spec, 3000, 32) > 0 and spec.params(3000)["kind"] == spec.kind


def test_retriever_records_index_and_recall(tokenizer):  # noqa: F811
    enc = tiny_encoder(tokenizer)
    spec = IndexSpec("hnsw", hnsw_m=8, ef_search=32, recall_queries=3)
    r = DenseRetriever(enc, 16, 32, 4, device="cpu", latency_queries=2, index=spec)
    run = r.retrieve(QUERIES, CORPUS, k=5)
    t = r.timings
    assert t["index"] == "hnsw" and t["index_hnsw_m"] == 8 and t["index_ef_search"] == 32
    assert t["index_recall_queries"] == 3 and 0 <= t["index_recall@5"] <= 1 and t["index_build_seconds"] > 0
    assert t["index_bytes"] == index_bytes(spec, len(CORPUS), 32) and len(t["query_latency_samples_ms"]) == 2
    assert all(len(v) == 5 for v in run.values())
    assert IndexSpec("flat").params(10) == {"kind": "flat", "gpu": False}
    with pytest.raises(ValueError, match="--index"):
        IndexSpec("lsh").validate()
    with pytest.raises(ValueError, match="pq_m"):
        build_approximate(
            IndexSpec("ivf-pq", pq_m=5), lambda: iter_chunks(np.ones((100, 32), np.float32)), 100, 32
        )


@pytest.mark.slow
def test_two_ranks_fill_one_store_and_rank0_searches(tokenizer, tmp_path):  # noqa: F811
    import json
    import shutil
    import subprocess
    import sys
    from pathlib import Path

    torchrun = shutil.which("torchrun", path=str(Path(sys.executable).parent))
    if torchrun is None:
        pytest.skip("torchrun is not installed next to this Python")
    script = Path(__file__).resolve().parent / "encode_script.py"
    cmd = [torchrun, "--standalone", "--nproc_per_node", "2", str(script)]
    cmd += ["--cache", str(tmp_path / "cache"), "--out", str(tmp_path / "run.json")]
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-4000:]
    two = json.loads((tmp_path / "run.json").read_text())
    assert two["world_size"] == 2 and two["timings"]["doc_shards"] == 4
    (folder,) = (tmp_path / "cache").iterdir()
    store = EmbeddingStore(folder, len(CORPUS), 32, "float16", shard_size=3)
    assert [store.shard_info(i)["rank"] for i in range(4)] == [0, 1, 0, 1]  # shard i by rank i % 2
    one = DenseRetriever(tiny_encoder(tokenizer), 16, 32, 4, device="cpu", latency_queries=0, shard_size=3)
    assert two["run"] == one.retrieve(QUERIES, CORPUS, k=5)
