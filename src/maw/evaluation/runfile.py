"""TREC run files: ``write_trec_run`` / ``read_trec_run``.

The format (trec_eval, ``ir_measures.read_trec_run``, ranx, Anserini, Pyserini) is one line per
retrieved document, six whitespace-separated columns:

    qid Q0 docid rank score tag

* ``rank`` is 1-based. Within a query lines are written in ranking order: score descending, ties
  broken by doc id *descending* -- trec_eval's own order, which ignores the rank column and re-sorts
  by score, and the order :mod:`maw.evaluation.metrics` evaluates in. So the rank column, the top-k
  cut and every metric computed from the file agree with the ones maw reports for the same run.
  (``ir_measures``' MS MARCO provider, used for ``RR@10``, and its ``Judged@k`` provider break score
  ties doc id *ascending*; on a run with tied scores their figures straight from the file can differ
  from maw's, which are computed in trec_eval's order -- the file's rank column.)
* ``score`` is written with ``repr(float(score))``: the shortest text that parses back to the same
  float64, so a file read back gives bit-identical scores (and rankings, and metrics). A float32
  score is converted to float64 exactly first.
* Queries are written in sorted id order; a query with an empty ranking has no line (trec_eval and
  ``maw.evaluation.metrics`` both score it 0 when it is judged).

Ids may not contain whitespace (the format has no quoting); non-finite scores are refused. The file
is written atomically (temporary file + rename, :func:`maw.utils.io.atomic_path`).
"""

from __future__ import annotations

import math
from pathlib import Path

from maw.data.types import Run
from maw.utils.io import atomic_path

DEFAULT_TAG = "maw"


def ranked(scores: dict[str, float], k: int | None = None) -> list[tuple[str, float]]:
    """``[(doc_id, score)]`` in trec_eval order (score desc, then doc id desc), the first ``k`` (None = all)."""
    order = sorted(((d, float(s)) for d, s in scores.items()), key=lambda x: (x[1], x[0]), reverse=True)
    return order if k is None else order[:k]


def _check_token(value: str, what: str, where: str) -> None:
    if not isinstance(value, str) or not value or any(c.isspace() for c in value):
        raise ValueError(f"{where}: {what} {value!r} must be a non-empty string without whitespace")


def write_trec_run(run: Run, path: str | Path, tag: str = DEFAULT_TAG, k: int | None = 1000) -> Path:
    """Write ``run`` (query id -> doc id -> score, higher = better) as a TREC run file; returns ``path``.

    ``k``: documents kept per query (the top ``k`` in trec_eval order; ``None`` = all). ``tag``: the
    run name of the sixth column. Raises ValueError (naming the query and document) for an id with
    whitespace or a non-finite score; then no file is written (nor an old one replaced).
    """
    path = Path(path)
    if k is not None and k < 1:
        raise ValueError(f"{path}: k must be >= 1 (or None for all documents), got {k}")
    _check_token(tag, "tag", str(path))
    with atomic_path(path) as tmp, open(tmp, "w", encoding="utf-8") as fh:  # an error leaves no file
        for qid in sorted(run):
            _check_token(qid, "query id", str(path))
            for rank, (doc, score) in enumerate(ranked(run[qid], k), start=1):
                if not math.isfinite(score):
                    raise ValueError(
                        f"{path}: query {qid!r}, document {doc!r}: score {score!r} is not finite"
                    )
                _check_token(doc, f"document id (query {qid!r})", str(path))
                fh.write(f"{qid} Q0 {doc} {rank} {score!r} {tag}\n")
    return path


def read_trec_run(path: str | Path) -> Run:
    """Read a TREC run file into ``{query_id: {doc_id: score}}``.

    The rank and tag columns are checked for form (an int, a token) but not used: like trec_eval,
    the ranking is the score order. Blank lines are skipped. Raises ValueError naming the file and
    the 1-based line for a line without six columns, a bad rank or score, or a document listed twice
    for one query; FileNotFoundError when the file is missing.
    """
    path = Path(path)
    run: Run = {}
    with open(path, encoding="utf-8") as fh:
        for number, line in enumerate(fh, start=1):
            parts = line.split()
            if not parts:
                continue
            where = f"{path}:{number}"
            if len(parts) != 6:
                raise ValueError(
                    f"{where}: expected 6 columns 'qid Q0 docid rank score tag', got {len(parts)}: {line.rstrip()!r}"
                )
            qid, _, doc, rank, score, _ = parts
            try:
                int(rank)
            except ValueError:
                raise ValueError(f"{where}: rank {rank!r} is not an integer") from None
            try:
                value = float(score)
            except ValueError:
                raise ValueError(f"{where}: score {score!r} is not a number") from None
            if math.isnan(value):
                raise ValueError(f"{where}: score is NaN")
            docs = run.setdefault(qid, {})
            if doc in docs:
                raise ValueError(f"{where}: document {doc!r} is listed twice for query {qid!r}")
            docs[doc] = value
    return run


__all__ = ["DEFAULT_TAG", "ranked", "read_trec_run", "write_trec_run"]
