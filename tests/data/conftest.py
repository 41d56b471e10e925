"""Fixtures of the data-layer tests: small collections written into tmp_path."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

SHARED_DATASETS = Path(__file__).resolve().parents[2] / ".." / "shared" / "datasets"


def write_beir(
    folder: Path,
    corpus: list[dict] | None = None,
    queries: list[dict] | None = None,
    qrels: dict[str, list[tuple[str, str, int]]] | None = None,
) -> Path:
    """Write a BEIR folder; defaults give 6 docs, 6 queries, train (4 q) and test (2 q)."""
    corpus = (
        corpus
        if corpus is not None
        else [{"_id": f"d{i}", "title": f"title {i}", "text": f"text of document {i}"} for i in range(6)]
    )
    queries = queries if queries is not None else [{"_id": f"q{i}", "text": f"query {i}"} for i in range(6)]
    qrels = (
        qrels
        if qrels is not None
        else {
            "train": [("q0", "d0", 1), ("q1", "d1", 1), ("q2", "d2", 2), ("q3", "d3", 1)],
            "test": [("q4", "d4", 1), ("q5", "d5", 2), ("q5", "d0", 0)],
        }
    )
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "corpus.jsonl").write_text("".join(json.dumps(r) + "\n" for r in corpus), encoding="utf-8")
    (folder / "queries.jsonl").write_text("".join(json.dumps(r) + "\n" for r in queries), encoding="utf-8")
    (folder / "qrels").mkdir(exist_ok=True)
    for split, rows in qrels.items():
        lines = ["query-id\tcorpus-id\tscore"] + [f"{q}\t{d}\t{s}" for q, d, s in rows]
        (folder / "qrels" / f"{split}.tsv").write_text("\n".join(lines) + "\n", encoding="utf-8")
    return folder


@pytest.fixture
def beir_dir(tmp_path: Path) -> Path:
    return write_beir(tmp_path / "toy")


@pytest.fixture
def shared_datasets() -> Path:
    if not SHARED_DATASETS.is_dir():
        pytest.skip(
            f"shared datasets folder not found at {SHARED_DATASETS.resolve()} (needed for real-data tests)"
        )
    return SHARED_DATASETS


@pytest.fixture
def make_beir():
    """The :func:`write_beir` function (fixtures cannot be imported by name across conftests)."""
    return write_beir


@pytest.fixture(autouse=True)
def corpus_cache(tmp_path_factory, monkeypatch) -> Path:
    """Corpus tables of these tests go to a temporary folder, not ~/.cache/maw/corpora."""
    import maw.data.corpus

    folder = tmp_path_factory.mktemp("corpora")
    monkeypatch.setattr(maw.data.corpus, "default_cache_dir", lambda sub: folder / sub)
    return folder / "corpora"
