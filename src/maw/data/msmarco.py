"""Loader for the MS MARCO passage-ranking release (``collectionandqueries.tar.gz`` layout).

A folder holds::

    collection.tsv            pid<TAB>passage
    queries.<set>.tsv         qid<TAB>query        (sets: train, dev, eval, dev.small, ...)
    qrels.<set>.tsv           TREC format: qid<SPACE|TAB>0<SPACE|TAB>pid<SPACE|TAB>grade

Every ``qrels.<set>.tsv`` becomes split ``<set>`` (so the official release gives "train", "dev"
and "dev.small"). Queries of all ``queries.*.tsv`` files are merged; a query id repeated inside
one file, or with different texts across files, is an error. Judgements naming unknown queries
or passages are dropped, counted in ``dataset.report`` and logged.
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

from maw.data.beir import QrelsBuilder, iter_lines
from maw.data.corpus import CorpusTable, load_corpus_table
from maw.data.types import DataError, Document, Qrels, RetrievalDataset
from maw.utils.io import fingerprint, sha256_file

logger = logging.getLogger(__name__)

COLLECTION_PARSER = "id-text-tsv/1"  # part of the corpus-table key: bump when the parsing changes


def is_msmarco_folder(folder: str | Path) -> bool:
    folder = Path(folder)
    return (folder / "collection.tsv").is_file() and any(folder.glob("qrels.*.tsv"))


def iter_id_text_tsv(
    path: Path, kind: str, hasher: Any | None = None, check_duplicates: bool = True
) -> Iterator[tuple[int, str, str]]:
    """Yield ``(line, id, text)`` of ``id<TAB>text`` lines; a missing tab or a repeated id is a
    DataError naming file:line (``check_duplicates=False``: left to the caller, e.g. the corpus
    table, which checks without a dict of every id)."""
    first: dict[str, int] = {}
    for lineno, line in iter_lines(path, hasher):
        ident, sep, text = line.partition("\t")
        ident = ident.strip()
        if not sep or not ident:
            raise DataError(f"{path}:{lineno}: expected '<{kind} id><TAB><text>'")
        if check_duplicates:
            if ident in first:
                raise DataError(
                    f"{path}:{lineno}: duplicate {kind} id {ident!r} (first at line {first[ident]})"
                )
            first[ident] = lineno
        yield lineno, ident, text


def read_id_text_tsv(path: Path, kind: str, hasher: Any | None = None) -> dict[str, str]:
    """``{id: text}`` of an ``id<TAB>text`` file (see :func:`iter_id_text_tsv`)."""
    return {ident: text for _, ident, text in iter_id_text_tsv(path, kind, hasher)}


def read_collection(path: Path, cache_dir: str | Path | None = None) -> tuple[CorpusTable, str]:
    """The memory-mapped table of a ``pid<TAB>passage`` collection (built once, cached) and its sha256."""
    records = (
        (n, pid, "", text) for n, pid, text in iter_id_text_tsv(path, "passage", check_duplicates=False)
    )
    sha = sha256_file(path)
    return load_corpus_table(path, records, COLLECTION_PARSER, sha, cache_dir, kind="passage"), sha


def read_trec_qrels(
    path: Path, queries: dict[str, str], corpus: Mapping[str, Document], hasher: Any | None = None
) -> tuple[Qrels, dict[str, int]]:
    """Read TREC qrels (``qid iter docid grade``); unknown ids are dropped and counted."""
    builder = QrelsBuilder(queries, corpus)
    for lineno, line in iter_lines(path, hasher):
        cols = line.split()
        if len(cols) != 4:
            raise DataError(
                f"{path}:{lineno}: expected 4 columns 'qid iteration docid grade' (TREC qrels), got {len(cols)}"
            )
        qid, _, doc_id, grade_s = cols
        try:
            grade = int(grade_s)
        except ValueError:
            raise DataError(f"{path}:{lineno}: grade {grade_s!r} is not an integer") from None
        builder.add(qid, doc_id, grade)
    return builder.finish(path)


def load_msmarco(
    folder: str | Path, name: str | None = None, cache_dir: str | Path | None = None
) -> RetrievalDataset:
    """Load an MS MARCO passage folder (see module doc) into a :class:`RetrievalDataset`.

    The collection becomes a memory-mapped :class:`~maw.data.corpus.CorpusTable` in ``cache_dir``
    (default ``~/.cache/maw/corpora``), built on first use."""
    folder = Path(folder)
    collection = folder / "collection.tsv"
    query_files = sorted(folder.glob("queries.*.tsv"))
    qrels_files = sorted(folder.glob("qrels.*.tsv"))
    missing = [
        label
        for ok, label in (
            (collection.is_file(), "collection.tsv"),
            (query_files, "queries.<set>.tsv"),
            (qrels_files, "qrels.<set>.tsv"),
        )
        if not ok
    ]
    if missing:
        raise DataError(f"{folder} is not a complete MS MARCO passage folder; missing: {', '.join(missing)}")

    hashes: dict[str, str] = {}
    report: dict[str, Any] = {"format": "msmarco"}
    corpus, hashes[collection.name] = read_collection(collection, cache_dir)
    report[collection.name] = {"documents": len(corpus)}

    queries: dict[str, str] = {}
    origin: dict[str, str] = {}
    for path in query_files:
        h = hashlib.sha256()
        count = 0
        for lineno, qid, text in iter_id_text_tsv(path, "query", h):
            if qid in queries and queries[qid] != text:
                raise DataError(
                    f"{path}:{lineno}: query id {qid!r} also in {origin[qid]} with a different text"
                )
            queries[qid] = text
            origin.setdefault(qid, path.name)
            count += 1
        hashes[path.name] = h.hexdigest()
        report[path.name] = {"queries": count}

    qrels: dict[str, Qrels] = {}
    for path in qrels_files:
        split = path.name[len("qrels.") : -len(".tsv")]
        h = hashlib.sha256()
        qrels[split], report[path.name] = read_trec_qrels(path, queries, corpus, h)
        hashes[path.name] = h.hexdigest()

    return RetrievalDataset(
        name=name or folder.resolve().name,
        corpus=corpus,
        queries=queries,
        qrels=qrels,
        fingerprint=fingerprint(f"{k}={v}" for k, v in sorted(hashes.items())),
        source=str(folder),
        report={"sha256": hashes, **report},
    )
