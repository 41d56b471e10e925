"""Collections from the ``ir_datasets`` catalogue: ``--dataset irds:<id>`` and a few short names.

Everything is read through the ``ir_datasets`` API (``docs_iter``, ``queries_iter``,
``qrels_iter``; downloads, checksums and parsing are the library's) and then goes the same way as
a folder: the documents into the memory-mapped Arrow :class:`~maw.data.corpus.CorpusTable`, the
judgements through :class:`~maw.data.beir.QrelsBuilder` (unknown queries / documents dropped and
counted), the splits through :func:`maw.data.splits.make_splits`.

Which ids become which splits
-----------------------------
``irds:ID`` where ``ID`` has qrels (``beir/scifact/test``, ``msmarco-passage/trec-dl-2019/judged``)
  ``ID``'s qrels are the **test** split. Training and validation splits are its relatives in the
  ``ir_datasets`` registry: walking up from ``ID``'s parent to the top, the nearest ``A/train``
  becomes ``train`` and the nearest ``A/dev`` becomes ``dev``, when that id exists, has qrels, is
  neither ``ID`` nor one of its ancestors (``irds:msmarco-passage/dev/small`` does not take
  ``msmarco-passage/dev``, which holds its queries) and shares ``ID``'s document collection (the same docs handler, as
  ``ir_datasets.docs_parent_id`` decides). So ``irds:beir/scifact/test`` gets ``train`` from
  ``beir/scifact/train`` (validation carved from it, as for the BEIR folder), and
  ``irds:msmarco-passage/trec-dl-2019/judged`` gets ``msmarco-passage/train`` and
  ``msmarco-passage/dev``; LoTTE's dev and test collections differ, so ``lotte/*/test/*`` has no
  train or dev split (LoTTE is an evaluation-only benchmark).
``irds:ID`` where ``ID`` has documents but no qrels (``beir/scifact``, ``lotte/science/test``)
  Every child ``ID/<name>`` (one level down) with qrels over the same documents becomes split
  ``<name>``: ``irds:beir/scifact`` gives ``train`` and ``test`` like the BEIR folder,
  ``irds:lotte/science/test`` gives ``search`` and ``forum`` like the LoTTE folder (pass
  ``--test-split search``).

Queries are those of each split's id. When two splits use the same query id for different texts
(LoTTE numbers every question set from 0), every query id becomes ``<split>-<id>``
(``search-0``, ``forum-0``, as the LoTTE folder loader names them).

Short names
-----------
``trec-dl-2019``, ``trec-dl-2020``
    ``msmarco-passage/trec-dl-<year>/judged`` (the judged queries of the TREC Deep Learning passage
    task; graded 0-3, and the suite's binary measures count grade >= 1 as relevant, whereas the
    official TREC DL passage figures use grade >= 2 for them; nDCG is graded either way).
``lotte-DOMAIN[-dev|-test][-search|-forum]``
    ``lotte/DOMAIN/<dev|test>/<search|forum>``, defaults ``test`` and ``search``: ``lotte-science``
    is ``lotte/science/test/search``, ``lotte-science-dev`` is ``lotte/science/dev/search``,
    ``lotte-science-forum`` is ``lotte/science/test/forum``. Domains: writing, recreation, science,
    technology, lifestyle, pooled.

A local folder of the same name (``$MAW_DATA_DIR/NAME``, the cache) wins over a short name
(``maw.data.resolve``).

Identity and downloads
----------------------
``dataset.name`` is the argument as given (``irds:beir/scifact/test``, ``trec-dl-2019``),
``dataset.source`` is ``irds:<id>``; neither holds a machine path. The fingerprint hashes the
content: every document (id, title, text) in ``docs_iter`` order, and every split's queries and
judgements, so it changes with the data and not with where ``ir_datasets`` keeps its files. Each
load therefore makes one pass over the documents (like the folder loaders' sha256 pass over the
corpus file); the corpus table is built on the first load only (a second pass).

``ir_datasets`` downloads into ``$IR_DATASETS_HOME`` (default ``~/.ir_datasets``) on first use;
``--data-dir`` does not apply. Offline, or when a download fails, one :class:`DataError` names the
id, what was being read and the URL(s) or file(s) ``ir_datasets`` tried, never a traceback.
"""

from __future__ import annotations

import difflib
import hashlib
import logging
import re
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from maw.data.beir import QrelsBuilder
from maw.data.corpus import CorpusTable, load_corpus_table
from maw.data.types import DataError, Qrels, RetrievalDataset
from maw.utils.io import fingerprint

logger = logging.getLogger(__name__)

PREFIX = "irds:"
DOCS_PARSER = "irds-docs/1"  # part of the corpus-table key: bump when _doc_fields changes
SIBLING_SPLITS = ("train", "dev")  # relatives looked up for an id with qrels (it is the test split)
TREC_DL = {
    "trec-dl-2019": "msmarco-passage/trec-dl-2019/judged",
    "trec-dl-2020": "msmarco-passage/trec-dl-2020/judged",
}
LOTTE_DOMAINS = ("writing", "recreation", "science", "technology", "lifestyle", "pooled")
_LOTTE = re.compile(r"lotte-([a-z]+)(?:-(dev|test))?(?:-(search|forum))?")


# ---------------------------------------------------------------------------------------------- names
def is_irds(text: str) -> bool:
    """True for ``irds:<id>`` arguments."""
    return str(text).startswith(PREFIX)


def short_name(text: str) -> str | None:
    """The ``ir_datasets`` id of a short name (``trec-dl-2019``, ``lotte-science``), else None.

    Raises:
        DataError: a ``lotte-*`` name with an unknown domain (the message lists the domains).
    """
    text = str(text)
    if text in TREC_DL:
        return TREC_DL[text]
    match = _LOTTE.fullmatch(text)
    if not match:
        return None
    domain, split, qset = match.groups()
    if domain not in LOTTE_DOMAINS:
        raise DataError(
            f"--dataset {text!r}: unknown LoTTE domain {domain!r}; choose one of {', '.join(LOTTE_DOMAINS)} "
            "(lotte-DOMAIN[-dev|-test][-search|-forum])"
        )
    return f"lotte/{domain}/{split or 'test'}/{qset or 'search'}"


def irds_id(text: str) -> str:
    """The ``ir_datasets`` id of an ``irds:<id>`` argument or a short name."""
    text = str(text)
    if is_irds(text):
        ident = text[len(PREFIX) :].strip().strip("/")
        if not ident:
            raise DataError(
                f"--dataset {text!r}: give an ir_datasets id after 'irds:', e.g. irds:beir/scifact/test"
            )
        return ident
    ident = short_name(text)
    if ident is None:
        raise DataError(
            f"--dataset {text!r} is neither irds:<id> nor a short name ({', '.join(TREC_DL)}, lotte-DOMAIN)"
        )
    return ident


def _ir_datasets():
    try:
        import ir_datasets
    except ImportError:
        raise DataError(
            "--dataset irds:...: the ir_datasets package is not installed; pip install ir_datasets"
        ) from None
    return ir_datasets


def load_irds_dataset(ident: str) -> Any:
    """``ir_datasets.load(ident)``; an unknown id is a DataError listing close matches."""
    irds = _ir_datasets()
    try:
        return irds.load(ident)
    except KeyError:
        close = difflib.get_close_matches(ident, list(irds.registry), n=5, cutoff=0.6)
        hint = f"; did you mean {', '.join(close)}?" if close else ""
        raise DataError(
            f"--dataset irds:{ident}: {ident!r} is not an ir_datasets id{hint} "
            "(the catalogue: https://ir-datasets.com)"
        ) from None


# ---------------------------------------------------------------------------------------------- splits
def _same_docs(a: Any, b: Any) -> bool:
    return a.has_docs() and b.has_docs() and a.docs_handler() == b.docs_handler()


def split_ids(ident: str) -> dict[str, str]:
    """Split name -> ``ir_datasets`` id of ``ident`` (see the module doc for the rules).

    Raises:
        DataError: unknown id, no documents, or neither qrels nor children with qrels.
    """
    irds = _ir_datasets()
    ds = load_irds_dataset(ident)
    if not ds.has_docs():
        raise DataError(f"--dataset irds:{ident}: this ir_datasets id has no documents")
    registered = set(irds.registry)
    if ds.has_qrels():
        if not ds.has_queries():
            raise DataError(f"--dataset irds:{ident}: this ir_datasets id has qrels but no queries")
        splits = {"test": ident}
        parts = ident.split("/")
        for depth in range(len(parts) - 1, 0, -1):
            ancestor = "/".join(parts[:depth])
            for name in SIBLING_SPLITS:
                candidate = f"{ancestor}/{name}"
                if name in splits or candidate not in registered or f"{ident}/".startswith(f"{candidate}/"):
                    continue  # taken, absent, or the id itself / an ancestor holding its queries
                other = irds.load(candidate)
                if other.has_qrels() and other.has_queries() and _same_docs(ds, other):
                    splits[name] = candidate
        return splits
    children = sorted(i for i in registered if i.startswith(ident + "/") and "/" not in i[len(ident) + 1 :])
    splits = {}
    for child in children:
        other = irds.load(child)
        if other.has_qrels() and other.has_queries() and _same_docs(ds, other):
            splits[child.rsplit("/", 1)[1]] = child
    if not splits:
        below = ", ".join(children[:8]) or "none"
        raise DataError(
            f"--dataset irds:{ident}: this ir_datasets id has no qrels and no child id with qrels over its "
            f"documents (children: {below}); give an id with qrels, e.g. irds:{ident}/test"
        )
    return splits


# ---------------------------------------------------------------------------------------------- errors
def _walk(exc: BaseException) -> Iterator[Any]:
    """``exc``, its causes / contexts and the exceptions and download sources in its args."""
    seen: set[int] = set()
    stack: list[Any] = [exc]
    while stack:
        item = stack.pop()
        if id(item) in seen:
            continue
        seen.add(id(item))
        yield item
        if isinstance(item, BaseException):
            stack += [x for x in (item.__cause__, item.__context__) if x is not None]
            stack += [a for a in item.args if not isinstance(a, str | int | float | bytes)]
        elif isinstance(item, list | tuple):
            stack += list(item)


def _sources(exc: BaseException) -> list[str]:
    """URLs and files an ``ir_datasets`` download error names (request URLs, mirrors, local paths)."""
    found: list[str] = []
    for item in _walk(exc):
        request = getattr(item, "request", None)
        urls = [getattr(request, "url", None), getattr(item, "url", None)]
        files = [
            getattr(item, "_path", None),  # an ir_datasets LocalDownload (a file to be put in place)
            getattr(item, "filename", None) if isinstance(item, FileNotFoundError) else None,
        ]
        for value in [u for u in urls if u and "://" in str(u)] + [f for f in files if f]:
            if str(value) not in found:
                found.append(str(value))
    return found


def _is_download_error(exc: BaseException) -> bool:
    for item in _walk(exc):
        module = type(item).__module__ or ""
        if module.startswith(("requests", "urllib3", "socket", "ssl")) or isinstance(
            item, ConnectionError | TimeoutError | FileNotFoundError
        ):
            return True
        if isinstance(item, RuntimeError) and item.args and "download" in str(item.args[0]).lower():
            return True
    return False


@contextmanager
def library_errors(ident: str, what: str) -> Iterator[None]:
    """Turn an ``ir_datasets`` failure while reading ``what`` of ``ident`` into one DataError.

    A failed download (offline, unreachable host, missing manual file) names the id, the URL(s) or
    file(s) ``ir_datasets`` tried and where it keeps its downloads.
    """
    try:
        yield
    except DataError:
        raise
    except Exception as exc:
        message = str(exc).splitlines()[0] if str(exc) else ""
        message = message if len(message) <= 300 else message[:300] + "..."
        reason = f"{type(exc).__name__}: {message}" if message else type(exc).__name__
        if not _is_download_error(exc):
            raise DataError(
                f"--dataset irds:{ident}: ir_datasets failed reading the {what} ({reason})"
            ) from None
        home = _ir_datasets().util.home_path()
        sources = _sources(exc)
        needs = f" ({', '.join(sources)})" if sources else ""
        raise DataError(
            f"--dataset irds:{ident}: ir_datasets needs to download the {what}{needs} and the download "
            f"failed: {reason}. Without internet access, run `ir_datasets export {ident} docs > /dev/null` "
            f"(and `... queries`, `... qrels`) on a machine with access and copy its folder {home} here "
            "(or point $IR_DATASETS_HOME at the copy)."
        ) from None


# ---------------------------------------------------------------------------------------------- reading
def _doc_fields(doc: Any) -> tuple[str, str]:
    """(title, text) of an ``ir_datasets`` document: its ``title`` and ``text`` (or ``body``) fields,
    else its ``default_text()`` (the library's own choice of text) with no title."""
    fields = getattr(doc, "_fields", ())
    title = getattr(doc, "title", "") if "title" in fields else ""
    if "text" in fields:
        text = doc.text
    elif "body" in fields:
        text = doc.body
    else:
        title, text = "", doc.default_text()
    return (title if isinstance(title, str) else ""), (text if isinstance(text, str) else "")


def _query_text(query: Any) -> str:
    text = query.text if "text" in getattr(query, "_fields", ()) else query.default_text()
    return text if isinstance(text, str) else ""


def _doc_records(ds: Any) -> Iterator[tuple[int, str, str, str]]:
    for n, doc in enumerate(ds.docs_iter(), start=1):
        title, text = _doc_fields(doc)
        yield n, str(doc.doc_id), title, text


def _docs_sha256(ds: Any) -> tuple[str, int]:
    """Content hash of every (id, title, text) in ``docs_iter`` order, and the count."""
    h = hashlib.sha256()
    count = 0
    for _, doc_id, title, text in _doc_records(ds):
        h.update(f"{doc_id}\x1f{title}\x1f{text}\x1e".encode())
        count += 1
    return h.hexdigest(), count


def read_docs(ident: str, docs_id: str, cache_dir: str | Path | None = None) -> tuple[CorpusTable, str]:
    """The corpus table of ``docs_id``'s documents (built once, cached by content) and their hash."""
    ds = load_irds_dataset(docs_id)
    with library_errors(ident, f"documents of {docs_id!r}"):
        sha, count = _docs_sha256(ds)
        if not count:
            raise DataError(f"--dataset irds:{ident}: ir_datasets gave no documents for {docs_id!r}")
        table = load_corpus_table(Path(f"{PREFIX}{docs_id}"), _doc_records(ds), DOCS_PARSER, sha, cache_dir)
    return table, sha


def _read_queries(ident: str, split_id: str) -> tuple[dict[str, str], str]:
    ds = load_irds_dataset(split_id)
    h = hashlib.sha256()
    queries: dict[str, str] = {}
    with library_errors(ident, f"queries of {split_id!r}"):
        for query in ds.queries_iter():
            qid, text = str(query.query_id), _query_text(query)
            if qid in queries and queries[qid] != text:
                raise DataError(
                    f"--dataset irds:{ident}: {split_id!r} has query id {qid!r} twice with different texts"
                )
            queries[qid] = text
            h.update(f"{qid}\x1f{text}\x1e".encode())
    return queries, h.hexdigest()


def _qrels_rows(ident: str, split_id: str) -> tuple[list[tuple[str, str, int]], str]:
    ds = load_irds_dataset(split_id)
    h = hashlib.sha256()
    rows: list[tuple[str, str, int]] = []
    with library_errors(ident, f"qrels of {split_id!r}"):
        for qrel in ds.qrels_iter():
            row = (str(qrel.query_id), str(qrel.doc_id), int(qrel.relevance))
            rows.append(row)
            h.update(f"{row[0]}\x1f{row[1]}\x1f{row[2]}\x1e".encode())
    return rows, h.hexdigest()


def load_irds(text: str, name: str | None = None, cache_dir: str | Path | None = None) -> RetrievalDataset:
    """Load ``irds:<id>`` or a short name (see the module doc) into a :class:`RetrievalDataset`.

    Args:
        text: ``irds:beir/scifact/test``, ``trec-dl-2019``, ``lotte-science``, ...
        name: dataset name (default: ``text`` as given).
        cache_dir: where the corpus table is built (default ``~/.cache/maw/corpora``).

    Returns:
        The dataset: one qrels entry per split of :func:`split_ids`; ``report["irds"]`` records the
        id, the id of every split, the documents' id and the ``ir_datasets`` version.

    Raises:
        DataError: unknown id, no documents / qrels, or a failed download (names id and URLs).
    """
    irds = _ir_datasets()
    ident = irds_id(text)
    splits = split_ids(ident)
    with library_errors(ident, f"document collection of {ident!r}"):
        docs_id = irds.docs_parent_id(ident)
    corpus, docs_sha = read_docs(ident, docs_id, cache_dir)

    hashes: dict[str, str] = {"docs": docs_sha}
    per_split: dict[str, dict[str, str]] = {}
    for split, split_id in splits.items():
        per_split[split], hashes[f"queries/{split}"] = _read_queries(ident, split_id)

    merged: dict[str, str] = {}
    clash = False
    for part in per_split.values():
        for qid, q_text in part.items():
            clash = clash or merged.setdefault(qid, q_text) != q_text
    namespaced = clash and len(per_split) > 1
    queries: dict[str, str] = {}
    for split, part in per_split.items():
        queries.update({(f"{split}-{q}" if namespaced else q): t for q, t in part.items()})

    report: dict[str, Any] = {
        "format": "irds",
        "irds": {
            "id": ident,
            "splits": dict(splits),
            "docs": docs_id,
            "query_ids_namespaced": namespaced,
            "ir_datasets_version": irds.__version__,
        },
        "docs": {"documents": len(corpus)},
        "queries": {"queries": len(queries)},
    }
    qrels: dict[str, Qrels] = {}
    for split, split_id in splits.items():
        rows, hashes[f"qrels/{split}"] = _qrels_rows(ident, split_id)
        builder = QrelsBuilder(per_split[split], corpus)
        for qid, doc_id, grade in rows:
            if builder.known_query(qid):
                builder.judge(f"{split}-{qid}" if namespaced else qid, doc_id, grade)
        qrels[split], report[f"qrels/{split}"] = builder.finish(f"{PREFIX}{split_id}")

    return RetrievalDataset(
        name=name or str(text),
        corpus=corpus,
        queries=queries,
        qrels=qrels,
        fingerprint=fingerprint(f"{k}={v}" for k, v in sorted(hashes.items())),
        source=f"{PREFIX}{ident}",
        report={"sha256": hashes, **report},
    )
