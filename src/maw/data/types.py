"""The in-memory representation every loader produces and every consumer reads.

A collection is a ``RetrievalDataset``: the full corpus (a read-only ``Mapping[str, Document]``;
the loaders give a memory-mapped :class:`maw.data.corpus.CorpusTable`), all queries, and the
judgements of each split as nested dicts ``qrels[split][query_id][doc_id] = grade`` (int, higher = more relevant;
the format pytrec_eval / ir_measures take directly). ``Splits`` is the train / val / test view
used for one experiment, with the provenance of every carved or subsampled split recorded.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

Qrels = dict[str, dict[str, int]]  # query_id -> doc_id -> grade
Run = dict[str, dict[str, float]]  # query_id -> doc_id -> score (higher = better)


class DataError(ValueError):
    """Bad input data; the message names the file (and line) at fault."""


def join_title(title: str, text: str) -> str:
    """Title and text joined the way BEIR / sentence-transformers encode documents."""
    return f"{title} {text}".strip() if title else text


@dataclass
class Document:
    title: str
    text: str

    def full_text(self) -> str:
        """Title and text joined the way BEIR / sentence-transformers encode documents."""
        return join_title(self.title, self.text)


@dataclass
class RetrievalDataset:
    name: str
    corpus: Mapping[str, Document]  # loaders give a memory-mapped maw.data.corpus.CorpusTable
    queries: dict[str, str]
    qrels: dict[str, Qrels]  # split name -> qrels
    fingerprint: str  # content hash of the source files (see loaders)
    source: str = ""  # folder or file the data came from
    report: dict[str, Any] = field(default_factory=dict)  # loader notes: dropped rows, etc.

    @property
    def splits(self) -> list[str]:
        return sorted(self.qrels)

    def doc_ids(self) -> list[str]:
        return list(self.corpus)

    def doc_texts(self, doc_ids: list[str] | None = None) -> list[str]:
        if doc_ids is None and hasattr(self.corpus, "full_texts"):  # a CorpusTable: one sequential read
            return self.corpus.full_texts()
        ids = self.doc_ids() if doc_ids is None else doc_ids
        return [self.corpus[d].full_text() for d in ids]


@dataclass
class Splits:
    """The query sets of one experiment. Test queries never appear in train or val (asserted)."""

    train: Qrels
    val: Qrels
    test: Qrels
    provenance: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        leak_train = set(self.test) & set(self.train)
        leak_val = set(self.test) & set(self.val)
        if leak_train or leak_val:
            raise DataError(
                f"test queries leak into training ({len(leak_train)}) or validation ({len(leak_val)}); "
                f"e.g. {sorted(leak_train | leak_val)[:5]}"
            )
        overlap = set(self.train) & set(self.val)
        if overlap:
            raise DataError(f"{len(overlap)} queries are in both train and val, e.g. {sorted(overlap)[:5]}")
