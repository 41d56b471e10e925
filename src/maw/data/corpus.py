"""A corpus as a memory-mapped, read-only Arrow table: ``CorpusTable`` is a ``Mapping[str, Document]``.

A corpus of N documents is an Apache Arrow IPC file (``corpus.arrow``, written with ``pyarrow``)
of three string columns (``id``, ``title``, ``text``) in record batches of ``CHUNK`` rows, plus a
hash index for id look-up: ``(N,)`` uint64 hashes of the ids (8-byte BLAKE2b) sorted, with the
row of each (``hash.sorted.npy``, ``hash.rows.npy``), so ``corpus[doc_id]`` is one binary search
(collisions resolved by comparing the ids themselves). Nothing is held in Python objects per
document: random access reads the memory-mapped file (``pyarrow.memory_map``, zero-copy), and
sequential reads (:meth:`CorpusTable.full_texts`, :meth:`CorpusTable.ids`) read one record batch
at a time through a plain file handle, so scanning 8.8M passages holds one batch, not the file.

Tables are built once per source file by :func:`load_corpus_table`: the file is streamed into
record batches written straight to disk (only the hashes and line numbers, 16 bytes a document,
are held until the end), into a staging folder renamed into place, under ``<cache>/<key>`` with
``key`` = hash of the source file's sha256 and the parser. The default cache is
``~/.cache/maw/corpora``. A duplicate id is a :class:`DataError` naming the file and both lines.

Callers use the ``Mapping`` interface (``corpus[doc_id].full_text()``, ``len``, iteration over
ids in file order, ``in``) or the row interface used by dense retrieval: ``id_at(row)``,
``ids(start, stop)``, ``full_texts(start, stop)`` and ``fingerprint``.
"""

from __future__ import annotations

import hashlib
import os
import shutil
from array import array
from collections.abc import Iterable, Iterator, Mapping
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa

from maw.data.types import DataError, Document, join_title
from maw.utils.io import atomic_write_json, default_cache_dir, fingerprint, read_json, staging_dir

FORMAT = "maw.corpus/2"  # /1 was a hand-written column layout; /2 is an Arrow IPC file
COLUMNS = ("id", "title", "text")
SCHEMA = pa.schema([(name, pa.string()) for name in COLUMNS])
CHUNK = 1 << 16  # rows per record batch (the unit of sequential reads)
ARROW_FILE = "corpus.arrow"


def id_hash(doc_id: str) -> int:
    """Stable 64-bit hash of an id (the same in every process, unlike ``hash``)."""
    return int.from_bytes(hashlib.blake2b(doc_id.encode("utf-8"), digest_size=8).digest(), "little")


class _Batches:
    """The record batches of one Arrow IPC file: memory-mapped for random access, read one at a
    time from a plain file for sequential scans. Batches hold ``CHUNK`` rows (the last fewer)."""

    def __init__(self, path: Path):
        self.path = path
        mapped = pa.ipc.open_file(pa.memory_map(str(path), "r"))
        self._mapped = [mapped.get_batch(i) for i in range(mapped.num_record_batches)]  # zero-copy views
        self.rows = sum(b.num_rows for b in self._mapped)
        self._col = {name: SCHEMA.get_field_index(name) for name in COLUMNS}

    def get(self, name: str, row: int) -> str:
        batch = self._mapped[row // CHUNK]
        return batch.column(self._col[name])[row % CHUNK].as_py()

    def range(self, names: tuple[str, ...], start: int, stop: int) -> Iterator[list[list[str]]]:
        """Rows ``[start, stop)`` of the columns ``names``, one record batch at a time (read into
        memory from a file handle, not the mapping: the batch is freed after use)."""
        if stop <= start:
            return
        with pa.OSFile(str(self.path), "r") as fh:
            reader = pa.ipc.open_file(fh)
            for b in range(start // CHUNK, (stop - 1) // CHUNK + 1):
                batch = reader.get_batch(b)
                lo, hi = max(start - b * CHUNK, 0), min(stop - b * CHUNK, batch.num_rows)
                part = batch.slice(lo, hi - lo)
                yield [part.column(self._col[name]).to_pylist() for name in names]


class CorpusTable(Mapping):
    """A built corpus table folder, opened read-only (see the module doc)."""

    def __init__(self, folder: str | Path):
        self.folder = Path(folder)
        self.meta = read_json(self.folder / "meta.json")
        if self.meta.get("format") != FORMAT:
            raise DataError(f"{self.folder}: not a {FORMAT} corpus table")
        self.rows = int(self.meta["rows"])
        self._batches = _Batches(self.folder / ARROW_FILE)
        if self._batches.rows != self.rows:
            raise DataError(
                f"{self.folder}: {ARROW_FILE} has {self._batches.rows} rows, meta.json {self.rows}"
            )
        self._hashes = np.load(self.folder / "hash.sorted.npy", mmap_mode="r", allow_pickle=False)
        self._hash_rows = np.load(self.folder / "hash.rows.npy", mmap_mode="r", allow_pickle=False)

    def __reduce__(self):  # picklable (e.g. for DataLoader workers): reopen the folder
        return CorpusTable, (str(self.folder),)

    @property
    def fingerprint(self) -> str:
        """Content hash of the table (source sha256 + parser): stands for every (id, text) pair."""
        return fingerprint([FORMAT, self.meta["source_sha256"], self.meta["parser"]])

    # ------------------------------------------------------------------ rows
    def row_of(self, doc_id: str) -> int | None:
        """Row of ``doc_id``, or None when absent."""
        if not isinstance(doc_id, str):
            return None
        h = np.uint64(id_hash(doc_id))
        i = int(np.searchsorted(self._hashes, h))
        while i < self.rows and self._hashes[i] == h:
            row = int(self._hash_rows[i])
            if self._batches.get("id", row) == doc_id:
                return row
            i += 1
        return None

    def id_at(self, row: int) -> str:
        return self._batches.get("id", row)

    def document(self, row: int) -> Document:
        return Document(title=self._batches.get("title", row), text=self._batches.get("text", row))

    def ids(self, start: int = 0, stop: int | None = None) -> list[str]:
        stop = self.rows if stop is None else stop
        return [d for (ids,) in self._batches.range(("id",), start, stop) for d in ids]

    def full_texts(self, start: int = 0, stop: int | None = None) -> list[str]:
        """``Document.full_text()`` of rows ``[start, stop)``, read sequentially."""
        stop = self.rows if stop is None else stop
        return [
            join_title(t, x)
            for titles, texts in self._batches.range(("title", "text"), start, stop)
            for t, x in zip(titles, texts, strict=True)
        ]

    # ------------------------------------------------------------------ Mapping
    def __getitem__(self, doc_id: str) -> Document:
        row = self.row_of(doc_id)
        if row is None:
            raise KeyError(doc_id)
        return self.document(row)

    def __contains__(self, doc_id: object) -> bool:
        return isinstance(doc_id, str) and self.row_of(doc_id) is not None

    def __len__(self) -> int:
        return self.rows

    def __iter__(self) -> Iterator[str]:
        for (ids,) in self._batches.range(("id",), 0, self.rows):
            yield from ids

    def __repr__(self) -> str:
        return f"CorpusTable({str(self.folder)!r}, rows={self.rows})"


# ---------------------------------------------------------------------- building
Record = tuple[int, str, str, str]  # (line number, id, title, text)


def build_table(
    records: Iterable[Record], folder: Path, source: Path, meta: dict[str, Any], kind: str = "document"
) -> int:
    """Write the columns of ``records`` into ``folder`` (which must exist); returns the row count.

    Raises DataError on the first duplicate id (by line), naming both lines and ``kind``.
    """
    hashes, lines = array("Q"), array("q")
    batch: dict[str, list[str]] = {name: [] for name in COLUMNS}
    with pa.OSFile(str(folder / ARROW_FILE), "w") as sink, pa.ipc.new_file(sink, SCHEMA) as writer:

        def flush() -> None:
            writer.write_batch(
                pa.record_batch([pa.array(batch[n], pa.string()) for n in COLUMNS], schema=SCHEMA)
            )
            for values in batch.values():
                values.clear()

        for lineno, doc_id, title, text in records:
            for name, value in zip(COLUMNS, (doc_id, title, text), strict=True):
                batch[name].append(value)
            hashes.append(id_hash(doc_id))
            lines.append(lineno)
            if len(batch["id"]) == CHUNK:
                flush()
        if batch["id"] or not hashes:
            flush()  # the last (short) batch; an empty corpus still gets one empty batch
    n = len(hashes)
    h = np.frombuffer(hashes, dtype=np.uint64)
    order = np.argsort(h, kind="stable")
    h_sorted = h[order]
    np.save(folder / "hash.sorted.npy", h_sorted)
    np.save(folder / "hash.rows.npy", order.astype(np.int64))
    _check_duplicates(folder, h_sorted, order, np.frombuffer(lines, dtype=np.int64), source, kind)
    atomic_write_json(folder / "meta.json", {**meta, "format": FORMAT, "rows": n})  # last: complete
    return n


def _check_duplicates(
    folder: Path, h_sorted: np.ndarray, order: np.ndarray, lines: np.ndarray, source: Path, kind: str
) -> None:
    same = np.flatnonzero(h_sorted[1:] == h_sorted[:-1])  # candidate pairs (i, i + 1) of equal hash
    if not len(same):
        return
    batches = _Batches(folder / ARROW_FILE)
    dups = []
    for i in same.tolist():
        for j in range(i + 1, len(h_sorted)):  # a run of equal hashes: compare each pair of its ids
            if h_sorted[j] != h_sorted[i]:
                break
            a, b = sorted((int(order[i]), int(order[j])))
            if batches.get("id", a) == batches.get("id", b):
                dups.append((int(lines[b]), int(lines[a]), batches.get("id", a)))
    if dups:
        second, first, doc_id = min(dups)
        raise DataError(f"{source}:{second}: duplicate {kind} id {doc_id!r} (first at line {first})")


def load_corpus_table(
    path: Path,
    records: Iterable[Record],
    parser: str,
    sha256: str,
    cache_dir: str | Path | None = None,
    kind: str = "document",
) -> CorpusTable:
    """The table of corpus file ``path`` (whose content hash is ``sha256``), built on first use.

    ``records`` parses ``path`` (consumed only on a cache miss); ``parser`` names the format and
    is part of the key, so a change of parsing rules is a new table; ``kind`` names the rows in
    error messages ("document", "passage").
    """
    root = Path(cache_dir) if cache_dir is not None else default_cache_dir("corpora")
    key = fingerprint([FORMAT, sha256, parser])
    final = root / key
    if (final / "meta.json").is_file():
        try:
            return CorpusTable(final)
        except (OSError, ValueError, KeyError):
            shutil.rmtree(final, ignore_errors=True)  # unreadable: rebuild
    tmp = staging_dir(root, prefix=f".{key}.")
    try:
        meta = {"source": str(path), "source_sha256": sha256, "parser": parser}
        build_table(records, tmp, path, meta, kind)
        try:
            os.replace(tmp, final)
        except OSError:  # another process finished the same table first: use theirs
            if not (final / "meta.json").is_file():
                raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return CorpusTable(final)
