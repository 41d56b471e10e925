"""First-stage retrieval over a full corpus.

* ``maw.retrieval.bm25.BM25Retriever(corpus).retrieve(queries, k) -> Run`` (bm25s, Lucene BM25)
* ``maw.retrieval.dense.DenseRetriever(encoder, ..., index=IndexSpec(...)).retrieve(queries, corpus, k)``
  and ``search_embeddings(q_emb, q_ids, d_emb, d_ids, k) -> Run`` (FAISS exact inner product)
* ``maw.retrieval.store.EmbeddingStore``: sharded on-disk embeddings (float16 / float32, resumable)
* ``maw.retrieval.index``: exact search in chunks, HNSW / IVF-Flat / IVF-PQ, recall against exact

Submodules are imported on demand (FAISS and torch are heavy).
"""
