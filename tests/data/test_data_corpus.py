"""The memory-mapped corpus table: same content as a dict, built once per file content, atomic."""

from __future__ import annotations

import pickle

import pytest

from maw.data import DataError, load_beir, load_msmarco
from maw.data.corpus import CorpusTable


def test_table_is_a_mapping_with_the_file_content(make_beir, tmp_path, corpus_cache):
    docs = [{"_id": f"d{i}", "title": f"t{i}" if i % 2 else "", "text": f"text {i} é"} for i in range(50)]
    docs.append({"_id": "naïve-id", "title": "", "text": ""})
    ds = load_beir(make_beir(tmp_path / "c", corpus=docs, qrels={"test": [("q0", "d1", 1)]}))
    corpus = ds.corpus
    assert isinstance(corpus, CorpusTable) and len(corpus) == 51
    assert list(corpus) == [d["_id"] for d in docs]  # file order
    assert corpus["d3"].title == "t3" and corpus["d3"].full_text() == "t3 text 3 é"
    assert corpus["d2"].full_text() == "text 2 é" and corpus["naïve-id"].full_text() == ""
    assert "d49" in corpus and "d50" not in corpus and 3 not in corpus
    with pytest.raises(KeyError):
        corpus["missing"]
    assert ds.doc_texts() == [corpus[d].full_text() for d in corpus] == corpus.full_texts()
    assert corpus.full_texts(10, 12) == ["text 10 é", "t11 text 11 é"]
    assert dict(pickle.loads(pickle.dumps(corpus)).items()) == dict(corpus.items())


def test_table_is_built_once_per_content(beir_dir, corpus_cache):
    fp = load_beir(beir_dir).corpus.folder
    assert load_beir(beir_dir).corpus.folder == fp  # reused
    assert [p for p in corpus_cache.iterdir() if not p.name.startswith(".")] == [fp]
    assert not [p for p in corpus_cache.iterdir() if p.name.startswith(".")]  # no staging left
    with open(beir_dir / "corpus.jsonl", "a") as fh:
        fh.write('{"_id": "new", "text": "a new document"}\n')
    ds = load_beir(beir_dir)
    assert ds.corpus.folder != fp and ds.corpus["new"].text == "a new document"


def test_duplicate_and_bad_lines_leave_no_table(make_beir, tmp_path, corpus_cache):
    docs = [{"_id": "a", "text": "x"}, {"_id": "b", "text": "y"}, {"_id": "a", "text": "z"}]
    folder = make_beir(tmp_path / "dup", corpus=docs, qrels={"test": [("q0", "a", 1)]})
    with pytest.raises(DataError, match=r"corpus\.jsonl:3: duplicate document id 'a' \(first at line 1\)"):
        load_beir(folder)
    assert not corpus_cache.exists() or not list(corpus_cache.iterdir())


def _msmarco(folder, n: int, text: str, qrels: str):
    """An MS MARCO passage folder of ``n`` passages ``f"{text} {i}"`` and one dev query."""
    folder.mkdir()
    with open(folder / "collection.tsv", "w") as fh:
        fh.writelines(f"{i}\t{text} {i}\n" for i in range(n))
    (folder / "queries.dev.tsv").write_text("q1\twhat\n")
    (folder / "qrels.dev.tsv").write_text(qrels)
    return load_msmarco(folder)


def test_many_ids_with_hash_lookups(tmp_path, corpus_cache):
    ds = _msmarco(tmp_path / "mm", 3000, "passage number", "q1 0 2999 1\nq1 0 3000 1\n")
    assert len(ds.corpus) == 3000 and ds.qrels["dev"] == {"q1": {"2999": 1}}
    assert all(ds.corpus[str(i)].text == f"passage number {i}" for i in range(0, 3000, 7))
    assert ds.corpus.id_at(1234) == "1234" and ds.corpus.row_of("1234") == 1234


def test_record_batch_boundaries(tmp_path, corpus_cache, monkeypatch):
    import pyarrow as pa

    from maw.data import corpus as corpus_mod

    monkeypatch.setattr(corpus_mod, "CHUNK", 7)  # 7 rows per record batch: 50 rows = 8 batches
    table = _msmarco(tmp_path / "mm", 50, "passage", "q1 0 49 1\n").corpus
    reader = pa.ipc.open_file(pa.memory_map(str(table.folder / corpus_mod.ARROW_FILE), "r"))
    assert reader.num_record_batches == 8 and reader.schema.names == ["id", "title", "text"]
    assert [table.id_at(r) for r in range(50)] == [str(i) for i in range(50)] == table.ids() == list(table)
    assert table.full_texts(5, 16) == [f"passage {i}" for i in range(5, 16)]  # across three batches
    assert table.ids(14, 14) == [] and table.ids(48) == ["48", "49"]
    assert all(table[str(i)].text == f"passage {i}" for i in range(50))
