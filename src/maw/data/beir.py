"""Loader for collections in BEIR format.

A BEIR folder holds::

    corpus.jsonl        {"_id", "title", "text", "metadata"} per line
    queries.jsonl       {"_id", "text", "metadata"} per line
    qrels/<split>.tsv   header ``query-id<TAB>corpus-id<TAB>score``, then one integer grade a line

Every ``qrels/*.tsv`` present becomes a split. Files are streamed line by line (hashed in the same
pass). The corpus becomes a memory-mapped :class:`~maw.data.corpus.CorpusTable`: the file is
hashed first, and parsed only when no table of that content is cached yet. Bad input raises :class:`DataError` naming the file
and line; judgements that point at unknown queries or documents are dropped, counted in
``dataset.report`` and logged as a warning (official BEIR releases contain a few such rows).
"""

from __future__ import annotations

import hashlib
import json
import logging
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

from maw.data.corpus import CorpusTable, load_corpus_table
from maw.data.types import DataError, Document, Qrels, RetrievalDataset
from maw.utils.io import fingerprint, sha256_file

logger = logging.getLogger(__name__)

QRELS_HEADER = ("query-id", "corpus-id", "score")
CORPUS_PARSER = "beir-jsonl/1"  # part of the corpus-table key: bump when corpus_records changes


def is_beir_folder(folder: str | Path) -> bool:
    """True when ``folder`` has the three parts of a BEIR collection."""
    folder = Path(folder)
    return (
        (folder / "corpus.jsonl").is_file()
        and (folder / "queries.jsonl").is_file()
        and (folder / "qrels").is_dir()
    )


def iter_lines(path: Path, hasher: Any | None = None) -> Iterator[tuple[int, str]]:
    """Yield ``(line_number, text)`` for the non-blank lines of a UTF-8 file (1-indexed numbers).

    Each raw line is fed to ``hasher`` (a hashlib object) before decoding, so the caller gets the
    file's sha256 from the same pass. A line that is not UTF-8 raises DataError naming file:line.
    """
    with open(path, "rb") as fh:
        for lineno, raw in enumerate(fh, start=1):
            if hasher is not None:
                hasher.update(raw)
            try:
                line = raw.decode("utf-8")
            except UnicodeDecodeError as exc:
                raise DataError(f"{path}:{lineno}: not valid UTF-8 ({exc.reason})") from None
            if lineno == 1 and line.startswith("\ufeff"):  # byte-order mark
                line = line[1:]
            line = line.rstrip("\r\n")
            if line.strip():
                yield lineno, line


def _json_records(path: Path, hasher: Any) -> Iterator[tuple[int, dict[str, Any], str]]:
    """Yield ``(line_number, record, id)`` of a JSON-lines file whose objects carry an ``_id``."""
    for lineno, line in iter_lines(path, hasher):
        try:
            record = json.loads(line)
        except json.JSONDecodeError as exc:
            raise DataError(f"{path}:{lineno}: malformed JSON ({exc.msg} at column {exc.colno})") from None
        if not isinstance(record, dict):
            raise DataError(f"{path}:{lineno}: expected a JSON object, got {type(record).__name__}")
        if "_id" not in record or record["_id"] is None or str(record["_id"]) == "":
            raise DataError(f"{path}:{lineno}: record has no '_id'")
        yield lineno, record, str(record["_id"])


def _text_field(record: dict[str, Any], key: str, path: Path, lineno: int) -> str:
    value = record.get(key)
    if value is None:
        return ""
    if not isinstance(value, str):
        raise DataError(f"{path}:{lineno}: field {key!r} must be a string, got {type(value).__name__}")
    return value


def corpus_records(path: Path) -> Iterator[tuple[int, str, str, str]]:
    """Yield ``(line_number, doc_id, title, text)`` of a BEIR ``corpus.jsonl`` (see ``maw.data.corpus``)."""
    for lineno, record, doc_id in _json_records(path, None):
        yield (
            lineno,
            doc_id,
            _text_field(record, "title", path, lineno),
            _text_field(record, "text", path, lineno),
        )


def read_corpus(path: Path, cache_dir: str | Path | None = None) -> tuple[CorpusTable, str]:
    """The memory-mapped table of ``corpus.jsonl`` (built once, cached) and the file's sha256.

    Duplicate ids are an error naming both lines.
    """
    sha = sha256_file(path)
    return load_corpus_table(path, corpus_records(path), CORPUS_PARSER, sha, cache_dir), sha


def read_queries(path: Path, hasher: Any | None = None) -> dict[str, str]:
    """Read ``queries.jsonl`` into ``{query_id: text}``; duplicate ids are an error."""
    queries: dict[str, str] = {}
    first_seen: dict[str, int] = {}
    for lineno, record, qid in _json_records(path, hasher):
        if qid in queries:
            raise DataError(f"{path}:{lineno}: duplicate query id {qid!r} (first at line {first_seen[qid]})")
        first_seen[qid] = lineno
        queries[qid] = _text_field(record, "text", path, lineno)
    return queries


class QrelsBuilder:
    """Collects judgements for the qrels loaders of every format.

    A row naming an unknown query or document is dropped and counted; a repeated (query, doc)
    pair keeps its last grade and is counted. ``finish`` logs what was dropped and returns the
    qrels with the report (``rows``, ``dropped_unknown_query``, ``dropped_unknown_doc``,
    ``duplicate_pairs``, ``queries``, ``kept``).
    """

    def __init__(self, queries: dict[str, str], corpus: Mapping[str, Document]):
        self.queries, self.corpus = queries, corpus
        self.qrels: Qrels = {}
        self.stats = {"rows": 0, "dropped_unknown_query": 0, "dropped_unknown_doc": 0, "duplicate_pairs": 0}

    def known_query(self, qid: str) -> bool:
        """Count one row of ``qid``; False (and counted as dropped) when the query is unknown."""
        self.stats["rows"] += 1
        if qid not in self.queries:
            self.stats["dropped_unknown_query"] += 1
            return False
        return True

    def judge(self, qid: str, doc_id: str, grade: int) -> None:
        """Add one judgement of a known query (unknown documents are dropped and counted)."""
        if doc_id not in self.corpus:
            self.stats["dropped_unknown_doc"] += 1
            return
        judged = self.qrels.setdefault(qid, {})
        if doc_id in judged:
            self.stats["duplicate_pairs"] += 1
        judged[doc_id] = grade

    def add(self, qid: str, doc_id: str, grade: int) -> None:
        """One (query, doc, grade) row."""
        if self.known_query(qid):
            self.judge(qid, doc_id, grade)

    def finish(self, label: str | Path) -> tuple[Qrels, dict[str, int]]:
        s = self.stats
        if s["dropped_unknown_query"] or s["dropped_unknown_doc"] or s["duplicate_pairs"]:
            logger.warning(
                "%s: dropped %d judgement(s) for unknown queries and %d for unknown documents; "
                "%d duplicate pair(s)",
                label,
                s["dropped_unknown_query"],
                s["dropped_unknown_doc"],
                s["duplicate_pairs"],
            )
        s["queries"] = len(self.qrels)
        s["kept"] = sum(len(v) for v in self.qrels.values())
        return self.qrels, s


def read_qrels_tsv(
    path: Path,
    queries: dict[str, str],
    corpus: Mapping[str, Document],
    hasher: Any | None = None,
    label: str | None = None,
) -> tuple[Qrels, dict[str, int]]:
    """Read one BEIR ``qrels/<split>.tsv``; returns the qrels and a report of what was dropped.

    The header line ``query-id corpus-id score`` is optional (recognised on line 1). Rows must have
    three tab-separated columns with an integer score. Rows naming an unknown query or document
    are dropped and counted; a repeated (query, doc) pair keeps its last grade and is counted.
    """
    builder = QrelsBuilder(queries, corpus)
    for lineno, line in iter_lines(path, hasher):
        cols = line.split("\t")
        if len(cols) != 3:
            cols = line.split()
        if lineno == 1 and tuple(c.strip().lower() for c in cols) == QRELS_HEADER:
            continue
        if len(cols) != 3:
            raise DataError(
                f"{path}:{lineno}: expected 3 tab-separated columns (query-id, corpus-id, score), got {len(cols)}"
            )
        qid, doc_id, score = (c.strip() for c in cols)
        try:
            grade = int(score)
        except ValueError:
            raise DataError(f"{path}:{lineno}: score {score!r} is not an integer") from None
        builder.add(qid, doc_id, grade)
    return builder.finish(label or path)


def load_beir(
    folder: str | Path, name: str | None = None, cache_dir: str | Path | None = None
) -> RetrievalDataset:
    """Load a BEIR-format folder into a :class:`RetrievalDataset`.

    Args:
        folder: the folder holding ``corpus.jsonl``, ``queries.jsonl`` and ``qrels/``.
        name: dataset name (default: the folder's name).
        cache_dir: where the corpus table is built (default ``~/.cache/maw/corpora``).

    Returns:
        The dataset; ``qrels`` has one entry per ``qrels/*.tsv`` (split name = file stem, e.g.
        "train", "dev", "test"); ``fingerprint`` hashes the sha256 of every source file;
        ``report[file]`` holds per-file counts (rows, dropped judgements, ...).

    Raises:
        DataError: missing parts (all listed), malformed lines (file:line), duplicate ids.
    """
    folder = Path(folder)
    if not folder.is_dir():
        raise DataError(f"BEIR dataset folder not found: {folder}")
    corpus_path, queries_path, qrels_dir = folder / "corpus.jsonl", folder / "queries.jsonl", folder / "qrels"
    qrels_files = sorted(qrels_dir.glob("*.tsv")) if qrels_dir.is_dir() else []
    missing = [str(p.relative_to(folder)) for p in (corpus_path, queries_path) if not p.is_file()]
    if not qrels_dir.is_dir():
        missing.append("qrels/")
    elif not qrels_files:
        missing.append("qrels/<split>.tsv")
    if missing:
        raise DataError(f"{folder} is not a complete BEIR dataset; missing: {', '.join(missing)}")

    hashes: dict[str, str] = {}
    report: dict[str, Any] = {}

    corpus, hashes["corpus.jsonl"] = read_corpus(corpus_path, cache_dir)
    report["corpus.jsonl"] = {"documents": len(corpus)}
    if not corpus:
        raise DataError(f"{corpus_path}: the corpus is empty")

    h = hashlib.sha256()
    queries = read_queries(queries_path, h)
    hashes["queries.jsonl"] = h.hexdigest()
    report["queries.jsonl"] = {"queries": len(queries)}
    if not queries:
        raise DataError(f"{queries_path}: no queries (the file is empty)")

    qrels: dict[str, Qrels] = {}
    for path in qrels_files:
        rel = f"qrels/{path.name}"
        h = hashlib.sha256()
        qrels[path.stem], report[rel] = read_qrels_tsv(path, queries, corpus, h, label=str(path))
        hashes[rel] = h.hexdigest()

    fp = fingerprint(f"{k}={v}" for k, v in sorted(hashes.items()))
    return RetrievalDataset(
        name=name or folder.resolve().name,
        corpus=corpus,
        queries=queries,
        qrels=qrels,
        fingerprint=fp,
        source=str(folder),
        report={"format": "beir", "sha256": hashes, **report},
    )
