"""A corpus as a memory-mapped, read-only table: ``CorpusTable`` is a ``Mapping[str, Document]``.

A corpus of N documents is three string columns (``id``, ``title``, ``text``) laid out the way
Apache Arrow lays out a string column: one file of UTF-8 bytes and one ``(N + 1,)`` int64 offsets
array, row ``i`` being ``bytes[offsets[i]:offsets[i + 1]]``. Id look-up goes through a hash index:
``(N,)`` uint64 hashes of the ids (8-byte BLAKE2b) sorted, with the row of each, so
``corpus[doc_id]`` is one binary search (collisions resolved by comparing the ids themselves).
Nothing is held in Python objects per document, so opening a table costs no memory per document:
the arrays are memory-mapped and the text bytes are read on demand (sequential reads, e.g.
:meth:`CorpusTable.full_texts`, drop the pages they touched so that scanning 8.8M passages does
not leave the whole file resident).

Tables are built once per source file by :func:`load_corpus_table`: the file is streamed (bytes
go straight to disk; only the offsets, hashes and line numbers, 40 bytes a document, are held
until the end), into a staging folder renamed into place, under
``<cache>/<key>`` with ``key`` = hash of the source file's sha256 and the parser. The default cache
is ``~/.cache/maw/corpora``. A duplicate id is a :class:`DataError` naming the file and both lines.

Callers use the ``Mapping`` interface (``corpus[doc_id].full_text()``, ``len``, iteration over
ids in file order, ``in``) or the row interface used by dense retrieval: ``id_at(row)``,
``ids(start, stop)``, ``full_texts(start, stop)`` and ``fingerprint``.
"""

from __future__ import annotations

import hashlib
import mmap
import os
import shutil
from array import array
from collections.abc import Iterable, Iterator, Mapping
from pathlib import Path
from typing import Any

import numpy as np

from maw.data.types import DataError, Document, join_title
from maw.utils.io import atomic_write_json, default_cache_dir, fingerprint, read_json, staging_dir

FORMAT = "maw.corpus/1"
COLUMNS = ("id", "title", "text")
CHUNK = 1 << 16  # rows per sequential read


def id_hash(doc_id: str) -> int:
    """Stable 64-bit hash of an id (the same in every process, unlike ``hash``)."""
    return int.from_bytes(hashlib.blake2b(doc_id.encode("utf-8"), digest_size=8).digest(), "little")


class _Column:
    """One string column: ``<name>.bytes`` (UTF-8) + ``<name>.offsets.npy`` ((N + 1,) int64)."""

    def __init__(self, folder: Path, name: str):
        self.offsets = np.load(folder / f"{name}.offsets.npy", mmap_mode="r", allow_pickle=False)
        self._fh = open(folder / f"{name}.bytes", "rb")
        size = os.fstat(self._fh.fileno()).st_size
        self._mm = mmap.mmap(self._fh.fileno(), 0, access=mmap.ACCESS_READ) if size else None

    def get(self, row: int) -> str:
        a, b = int(self.offsets[row]), int(self.offsets[row + 1])
        return self._mm[a:b].decode("utf-8") if b > a else ""

    def range(self, start: int, stop: int) -> list[str]:
        """Rows ``[start, stop)``; the pages read are dropped from this process afterwards."""
        off = np.asarray(self.offsets[start : stop + 1], dtype=np.int64)
        lo, hi = int(off[0]), int(off[-1])
        if hi == lo:
            return [""] * (stop - start)
        blob = self._mm[lo:hi]
        rel = (off - lo).tolist()
        out = [blob[a:b].decode("utf-8") for a, b in zip(rel[:-1], rel[1:], strict=True)]
        page = lo - lo % mmap.PAGESIZE
        self._mm.madvise(mmap.MADV_DONTNEED, page, hi - page)  # clean file pages: re-read on demand
        return out


class CorpusTable(Mapping):
    """A built corpus table folder, opened read-only (see the module doc)."""

    def __init__(self, folder: str | Path):
        self.folder = Path(folder)
        self.meta = read_json(self.folder / "meta.json")
        if self.meta.get("format") != FORMAT:
            raise DataError(f"{self.folder}: not a {FORMAT} corpus table")
        self.rows = int(self.meta["rows"])
        self._cols = {name: _Column(self.folder, name) for name in COLUMNS}
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
            if self._cols["id"].get(row) == doc_id:
                return row
            i += 1
        return None

    def id_at(self, row: int) -> str:
        return self._cols["id"].get(row)

    def document(self, row: int) -> Document:
        return Document(title=self._cols["title"].get(row), text=self._cols["text"].get(row))

    def ids(self, start: int = 0, stop: int | None = None) -> list[str]:
        stop = self.rows if stop is None else stop
        return [d for a in range(start, stop, CHUNK) for d in self._cols["id"].range(a, min(a + CHUNK, stop))]

    def full_texts(self, start: int = 0, stop: int | None = None) -> list[str]:
        """``Document.full_text()`` of rows ``[start, stop)``, read sequentially."""
        stop = self.rows if stop is None else stop
        out: list[str] = []
        for a in range(start, stop, CHUNK):
            b = min(a + CHUNK, stop)
            titles, texts = self._cols["title"].range(a, b), self._cols["text"].range(a, b)
            out.extend(join_title(t, x) for t, x in zip(titles, texts, strict=True))
        return out

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
        for a in range(0, self.rows, CHUNK):
            yield from self._cols["id"].range(a, min(a + CHUNK, self.rows))

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
    offsets = {name: array("q", [0]) for name in COLUMNS}
    hashes, lines = array("Q"), array("q")
    files = {name: open(folder / f"{name}.bytes", "wb") for name in COLUMNS}
    try:
        for lineno, doc_id, title, text in records:
            for name, value in zip(COLUMNS, (doc_id, title, text), strict=True):
                data = value.encode("utf-8")
                files[name].write(data)
                offsets[name].append(offsets[name][-1] + len(data))
            hashes.append(id_hash(doc_id))
            lines.append(lineno)
    finally:
        for fh in files.values():
            fh.close()
    n = len(hashes)
    for name in COLUMNS:
        np.save(folder / f"{name}.offsets.npy", np.frombuffer(offsets[name], dtype=np.int64))
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
    ids = _Column(folder, "id")
    dups = []
    for i in same.tolist():
        for j in range(i + 1, len(h_sorted)):  # a run of equal hashes: compare each pair of its ids
            if h_sorted[j] != h_sorted[i]:
                break
            a, b = sorted((int(order[i]), int(order[j])))
            if ids.get(a) == ids.get(b):
                dups.append((int(lines[b]), int(lines[a]), ids.get(a)))
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
