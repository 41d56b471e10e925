"""The packaged demo collection: reproducible from scripts/make_demo.py, sized and shaped as documented."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import pytest

from maw.data import demo_path, load_dataset

REPO = Path(__file__).resolve().parents[2]


def load_generator(monkeypatch):
    spec = importlib.util.spec_from_file_location("make_demo", REPO / "scripts" / "make_demo.py")
    module = importlib.util.module_from_spec(spec)
    monkeypatch.setitem(sys.modules, "make_demo", module)  # dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


def test_packaged_files_are_reproduced_by_the_generator(tmp_path, monkeypatch):
    load_generator(monkeypatch).write(tmp_path / "demo")
    packaged = demo_path()
    names = ["corpus.jsonl", "queries.jsonl", "qrels/train.tsv", "qrels/test.tsv"]
    for name in names:
        assert (tmp_path / "demo" / name).read_bytes() == (packaged / name).read_bytes(), name
    assert sorted(p.relative_to(packaged).as_posix() for p in packaged.rglob("*") if p.is_file()) == sorted(
        names
    )


def test_demo_shape():
    ds = load_dataset("demo")
    size = sum(p.stat().st_size for p in demo_path().rglob("*") if p.is_file())
    assert size < 300 * 1024
    assert 300 <= len(ds.corpus) <= 400
    assert 180 <= len(ds.qrels["train"]) <= 230 and 45 <= len(ds.qrels["test"]) <= 75
    assert set(ds.qrels["train"]).isdisjoint(ds.qrels["test"])
    for split in ("train", "test"):
        for qid, docs in ds.qrels[split].items():
            assert max(docs.values()) == 2, qid  # every query has a fully relevant document
    kinds = {d.title.split(" ", 1)[1] for d in ds.corpus.values() if d.title}
    assert 25 <= len(kinds) <= 30
    assert all(1 <= d.text.count(". ") + 1 <= 3 for d in ds.corpus.values())


def test_queries_paraphrase_rather_than_copy():
    ds = load_dataset("demo")
    copied = 0
    for qid, docs in ds.qrels["test"].items():
        words = set(ds.queries[qid].lower().rstrip("?").split())
        best = max(docs, key=docs.get)
        doc_words = set(ds.corpus[best].full_text().lower().replace(".", "").split())
        copied += words <= doc_words
    assert copied == 0


def test_bm25_is_useful_but_imperfect():
    bm25s = pytest.importorskip("bm25s")
    ir_measures = pytest.importorskip("ir_measures")
    ds = load_dataset("demo")
    doc_ids, qids = ds.doc_ids(), sorted(ds.qrels["test"])
    retriever = bm25s.BM25()
    retriever.index(bm25s.tokenize(ds.doc_texts(), stopwords="en", show_progress=False), show_progress=False)
    res, scores = retriever.retrieve(
        bm25s.tokenize([ds.queries[q] for q in qids], stopwords="en", show_progress=False),
        k=10,
        show_progress=False,
    )
    run = {
        q: {doc_ids[d]: float(s) for d, s in zip(res[i], scores[i], strict=True)} for i, q in enumerate(qids)
    }
    ndcg = ir_measures.calc_aggregate([ir_measures.nDCG @ 10], ds.qrels["test"], run)[ir_measures.nDCG @ 10]
    assert 0.35 < ndcg < 0.85
