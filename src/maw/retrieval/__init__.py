"""First-stage retrieval over a full corpus.

* ``maw.retrieval.bm25.BM25Retriever(corpus).retrieve(queries, k) -> Run`` (bm25s, Lucene BM25)
* ``maw.retrieval.dense.DenseRetriever(encoder, ...).retrieve(queries, corpus, k) -> Run``
  and ``search_embeddings(q_emb, q_ids, d_emb, d_ids, k) -> Run`` (FAISS exact inner product)

Submodules are imported on demand (FAISS and torch are heavy).
"""
