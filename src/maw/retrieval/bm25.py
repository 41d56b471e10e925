"""BM25 over the full corpus with ``bm25s`` (sparse, exact scores, no approximation).

Parameters (the BEIR / Anserini "flat" baseline):

* text: ``Document.full_text()`` - title and body joined with a space, as the dense models see it;
* analysis: lower-casing, ``bm25s`` token pattern ``\\b\\w\\w+\\b`` (tokens of 2+ word characters),
  ``bm25s``' English stopword list, Snowball English stemming (PyStemmer);
* scoring: ``method="lucene"`` (Lucene's BM25: idf = ln(1 + (N - df + 0.5) / (df + 0.5)), no
  (k1 + 1) factor), ``k1 = 0.9``, ``b = 0.4`` (Anserini defaults, used by BEIR's BM25 numbers).
  SciFact test nDCG@10 with these settings: 0.6762 (BEIR reports 0.665 for Anserini; bm25s
  k1=1.2, b=0.75 gives 0.6791 and k1=1.5, b=0.75 0.6863 - we keep the Anserini defaults).

Ranking: the top ``k`` documents by score (``k`` clipped to the corpus size). Only documents
sharing at least one term with the query are returned (every matching document has a positive
Lucene score); a query whose terms are all stopwords or unknown gets an empty ranking rather than
arbitrary zero-score documents. Nothing else is excluded (the query's own id is not special).
"""

from __future__ import annotations

import time
from collections.abc import Mapping

import bm25s
import numpy as np
import Stemmer
from bm25s.tokenization import Tokenizer

from maw.data.types import Document, Run

_EMPTY_TOKEN = ""  # bm25s gives documents without any token this vocabulary entry


class BM25Retriever:
    """Index ``corpus`` on construction; ``retrieve(queries, k) -> Run``.

    After construction ``timings`` holds ``index_seconds``, ``index_docs_per_second`` and
    ``index_bytes`` (size of the sparse score matrix); each ``retrieve`` adds ``query_seconds``,
    ``qps`` and ``query_latency_ms`` (mean wall time per query of the batched call).
    """

    def __init__(
        self,
        corpus: Mapping[str, Document],
        k1: float = 0.9,
        b: float = 0.4,
        method: str = "lucene",
        stopwords: str = "en",
        stemmer_language: str | None = "english",
    ):
        if not corpus:
            raise ValueError("BM25Retriever: the corpus is empty")
        self.k1, self.b, self.method = k1, b, method
        self.doc_ids = list(corpus)
        stemmer = Stemmer.Stemmer(stemmer_language).stemWord if stemmer_language else None
        self.tokenizer = Tokenizer(lower=True, stopwords=stopwords, stemmer=stemmer)
        t0 = time.perf_counter()
        tokens = self.tokenizer.tokenize(
            [corpus[d].full_text() for d in self.doc_ids],
            update_vocab=True,
            return_as="ids",
            show_progress=False,
        )
        self.model = bm25s.BM25(k1=k1, b=b, method=method)
        self.model.index(tokens, show_progress=False)
        seconds = time.perf_counter() - t0
        self._empty_id = self.tokenizer.get_vocab_dict().get(_EMPTY_TOKEN)
        self.timings: dict[str, float] = {
            "index_seconds": seconds,
            "index_docs_per_second": len(self.doc_ids) / seconds if seconds > 0 else float("inf"),
            "index_bytes": float(
                sum(v.nbytes for v in self.model.scores.values() if isinstance(v, np.ndarray))
            ),
        }

    @property
    def params(self) -> dict[str, object]:
        return {"k1": self.k1, "b": self.b, "method": self.method, "text": "title + ' ' + text"}

    def retrieve(self, queries: Mapping[str, str], k: int = 1000) -> Run:
        """Top-``k`` documents per query: ``{query_id: {doc_id: score}}``."""
        if k < 1:
            raise ValueError(f"k must be >= 1, got {k}")
        k = min(k, len(self.doc_ids))
        qids = list(queries)
        t0 = time.perf_counter()
        tokens = self.tokenizer.tokenize(
            [queries[q] for q in qids], update_vocab=False, return_as="ids", show_progress=False
        )
        tokens = [[t for t in toks if t != self._empty_id] for toks in tokens]
        run: Run = {q: {} for q in qids}
        searchable = [i for i, toks in enumerate(tokens) if toks]
        if searchable:
            docs, scores = self.model.retrieve(
                [tokens[i] for i in searchable], k=k, show_progress=False, return_as="tuple"
            )
            for row, i in enumerate(searchable):
                run[qids[i]] = {
                    self.doc_ids[d]: float(s)
                    for d, s in zip(docs[row].tolist(), scores[row].tolist(), strict=True)
                    if s > 0
                }
        seconds = time.perf_counter() - t0
        n = max(len(qids), 1)
        self.timings.update(
            {
                "query_seconds": seconds,
                "qps": len(qids) / seconds if seconds > 0 else float("inf"),
                "query_latency_ms": 1000.0 * seconds / n,
                "queries_without_known_terms": float(len(qids) - len(searchable)),
            }
        )
        return run
