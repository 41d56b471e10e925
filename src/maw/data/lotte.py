"""Loader for one LoTTE collection folder (e.g. ``lotte/science/test``).

A folder holds::

    collection.tsv            pid<TAB>passage
    questions.<set>.tsv       qid<TAB>question      (sets: search, forum)
    qas.<set>.jsonl           {"qid": ..., "query": ..., "answer_pids": [...]}

Each question set becomes a split named after it ("search", "forum"); pass e.g.
``--test-split search``. LoTTE numbers the questions of every set from 0, so query ids are
namespaced as ``"<set>-<qid>"`` (``"search-0"``, ``"forum-0"``). Every answer passage gets grade 1.
Answers naming unknown questions or passages are dropped, counted in ``dataset.report`` and logged.
"""

from __future__ import annotations

import hashlib
import json
import logging
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from maw.data.beir import QrelsBuilder, iter_lines
from maw.data.msmarco import read_collection, read_id_text_tsv
from maw.data.types import DataError, Document, Qrels, RetrievalDataset
from maw.utils.io import fingerprint

logger = logging.getLogger(__name__)


def is_lotte_folder(folder: str | Path) -> bool:
    folder = Path(folder)
    return (folder / "collection.tsv").is_file() and (
        any(folder.glob("questions.*.tsv")) or any(folder.glob("qas.*.jsonl"))
    )


def _set_name(path: Path, prefix: str, suffix: str) -> str:
    return path.name[len(prefix) : -len(suffix)]


def read_qas(
    path: Path, qset: str, queries: dict[str, str], corpus: Mapping[str, Document], hasher: Any
) -> tuple[Qrels, dict[str, int]]:
    """Read ``qas.<set>.jsonl`` into qrels over the namespaced query ids."""
    builder = QrelsBuilder(queries, corpus)
    no_answers = 0
    first: dict[str, int] = {}
    for lineno, line in iter_lines(path, hasher):
        try:
            record = json.loads(line)
        except json.JSONDecodeError as exc:
            raise DataError(f"{path}:{lineno}: malformed JSON ({exc.msg} at column {exc.colno})") from None
        if not isinstance(record, dict) or "qid" not in record:
            raise DataError(f"{path}:{lineno}: record has no 'qid'")
        pids = record.get("answer_pids")
        if not isinstance(pids, list):
            raise DataError(f"{path}:{lineno}: 'answer_pids' must be a list")
        qid = f"{qset}-{record['qid']}"
        if qid in first:
            raise DataError(f"{path}:{lineno}: duplicate qid {record['qid']!r} (first at line {first[qid]})")
        first[qid] = lineno
        if not builder.known_query(qid):
            continue
        for pid in map(str, pids):
            builder.judge(qid, pid, 1)
        if qid not in builder.qrels:
            no_answers += 1
    qrels, stats = builder.finish(path)
    stats["no_answers"] = no_answers
    return qrels, stats


def load_lotte(
    folder: str | Path, name: str | None = None, cache_dir: str | Path | None = None
) -> RetrievalDataset:
    """Load a LoTTE folder (see module doc) into a :class:`RetrievalDataset`; the collection is a
    memory-mapped :class:`~maw.data.corpus.CorpusTable` in ``cache_dir`` (as for MS MARCO)."""
    folder = Path(folder)
    collection = folder / "collection.tsv"
    q_sets = {_set_name(p, "questions.", ".tsv"): p for p in sorted(folder.glob("questions.*.tsv"))}
    a_sets = {_set_name(p, "qas.", ".jsonl"): p for p in sorted(folder.glob("qas.*.jsonl"))}
    missing = [] if collection.is_file() else ["collection.tsv"]
    missing += [f"qas.{s}.jsonl" for s in sorted(set(q_sets) - set(a_sets))]
    missing += [f"questions.{s}.tsv" for s in sorted(set(a_sets) - set(q_sets))]
    if not q_sets and not a_sets:
        missing.append("questions.<set>.tsv and qas.<set>.jsonl")
    if missing:
        raise DataError(f"{folder} is not a complete LoTTE folder; missing: {', '.join(missing)}")

    hashes: dict[str, str] = {}
    report: dict[str, Any] = {"format": "lotte"}
    corpus, hashes[collection.name] = read_collection(collection, cache_dir)
    report[collection.name] = {"documents": len(corpus)}

    queries: dict[str, str] = {}
    qrels: dict[str, Qrels] = {}
    for qset in sorted(q_sets):
        h = hashlib.sha256()
        part = read_id_text_tsv(q_sets[qset], "question", h)
        hashes[q_sets[qset].name] = h.hexdigest()
        report[q_sets[qset].name] = {"queries": len(part)}
        queries.update({f"{qset}-{qid}": text for qid, text in part.items()})
        h = hashlib.sha256()
        qrels[qset], report[a_sets[qset].name] = read_qas(a_sets[qset], qset, queries, corpus, h)
        hashes[a_sets[qset].name] = h.hexdigest()

    resolved = folder.resolve()
    default_name = (
        f"lotte-{resolved.parent.name}-{resolved.name}" if resolved.name in ("dev", "test") else resolved.name
    )
    return RetrievalDataset(
        name=name or default_name,
        corpus=corpus,
        queries=queries,
        qrels=qrels,
        fingerprint=fingerprint(f"{k}={v}" for k, v in sorted(hashes.items())),
        source=str(folder),
        report={"sha256": hashes, **report},
    )
