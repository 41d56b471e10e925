"""BEIR loader: real collections (counts from the shared README) and every bad-input case."""

from __future__ import annotations

import json
import logging

import pytest

from maw.data import DataError, load_beir


@pytest.mark.shared_data
def test_scifact_counts_match_readme(shared_datasets):
    ds = load_beir(shared_datasets / "scifact")
    assert ds.name == "scifact"
    assert len(ds.corpus) == 5183 and len(ds.queries) == 1109
    assert ds.splits == ["test", "train"]
    assert ds.report["qrels/train.tsv"]["rows"] == 919 and len(ds.qrels["train"]) == 809
    assert ds.report["qrels/test.tsv"]["rows"] == 339 and len(ds.qrels["test"]) == 300
    assert sum(map(len, ds.qrels["test"].values())) == 339
    assert ds.report["sha256"]["corpus.jsonl"].startswith("dec31c81")  # the official release (README)
    assert ds.report["qrels/test.tsv"]["dropped_unknown_doc"] == 0


@pytest.mark.shared_data
def test_cranfield_counts_match_readme(shared_datasets):
    ds = load_beir(shared_datasets / "cranfield")
    assert len(ds.corpus) == 1400 and len(ds.queries) == 225
    assert ds.splits == ["test"]
    assert ds.report["qrels/test.tsv"]["rows"] == 1612 and len(ds.qrels["test"]) == 225
    grades = {g for docs in ds.qrels["test"].values() for g in docs.values()}
    assert grades <= {1, 2, 3, 4}


def test_valid_folder(beir_dir):
    ds = load_beir(beir_dir)
    assert ds.name == "toy" and ds.source == str(beir_dir)
    assert ds.corpus["d1"].title == "title 1" and ds.corpus["d1"].full_text() == "title 1 text of document 1"
    assert ds.queries["q3"] == "query 3"
    assert ds.qrels["train"] == {"q0": {"d0": 1}, "q1": {"d1": 1}, "q2": {"d2": 2}, "q3": {"d3": 1}}
    assert ds.qrels["test"]["q5"] == {"d5": 2, "d0": 0}
    assert load_beir(beir_dir, name="other").name == "other"


def test_fingerprint_is_stable_and_content_based(beir_dir):
    fp = load_beir(beir_dir).fingerprint
    assert fp == load_beir(beir_dir).fingerprint
    with open(beir_dir / "qrels" / "test.tsv", "a") as fh:
        fh.write("q4\td1\t1\n")
    assert load_beir(beir_dir).fingerprint != fp


def test_header_is_optional_and_every_split_file_is_a_split(beir_dir):
    (beir_dir / "qrels" / "dev.tsv").write_text("q0\td1\t1\n")
    ds = load_beir(beir_dir)
    assert ds.splits == ["dev", "test", "train"] and ds.qrels["dev"] == {"q0": {"d1": 1}}


def test_malformed_json_names_file_and_line(beir_dir):
    lines = (beir_dir / "corpus.jsonl").read_text().splitlines()
    lines[2] = '{"_id": "d2", "text": "unterminated'
    (beir_dir / "corpus.jsonl").write_text("\n".join(lines) + "\n")
    with pytest.raises(DataError, match=r"corpus\.jsonl:3: malformed JSON"):
        load_beir(beir_dir)


def test_malformed_query_line(beir_dir):
    with open(beir_dir / "queries.jsonl", "a") as fh:
        fh.write("[1, 2]\n")
    with pytest.raises(DataError, match=r"queries\.jsonl:7: expected a JSON object"):
        load_beir(beir_dir)


def test_missing_id(beir_dir, make_beir, tmp_path):
    corpus = [{"_id": "d0", "text": "a"}, {"title": "no id", "text": "b"}]
    folder = make_beir(tmp_path / "noid", corpus=corpus, qrels={"test": [("q0", "d0", 1)]})
    with pytest.raises(DataError, match=r"corpus\.jsonl:2: record has no '_id'"):
        load_beir(folder)
    queries = [{"_id": "q0", "text": "x"}, {"_id": "", "text": "y"}]
    folder = make_beir(tmp_path / "noqid", queries=queries, qrels={"test": [("q0", "d0", 1)]})
    with pytest.raises(DataError, match=r"queries\.jsonl:2: record has no '_id'"):
        load_beir(folder)


def test_duplicate_ids(make_beir, tmp_path):
    corpus = [{"_id": "d0", "text": "a"}, {"_id": "d1", "text": "b"}, {"_id": "d0", "text": "c"}]
    folder = make_beir(tmp_path / "dupdoc", corpus=corpus, qrels={"test": [("q0", "d0", 1)]})
    with pytest.raises(DataError, match=r"corpus\.jsonl:3: duplicate document id 'd0' \(first at line 1\)"):
        load_beir(folder)
    queries = [{"_id": "q0", "text": "x"}, {"_id": "q0", "text": "y"}]
    folder = make_beir(tmp_path / "dupq", queries=queries, qrels={"test": [("q0", "d0", 1)]})
    with pytest.raises(DataError, match=r"queries\.jsonl:2: duplicate query id 'q0'"):
        load_beir(folder)


def test_integer_ids_are_strings(make_beir, tmp_path):
    folder = make_beir(
        tmp_path / "ints",
        corpus=[{"_id": 7, "text": "a"}],
        queries=[{"_id": 1, "text": "b"}],
        qrels={"test": [("1", "7", 1)]},
    )
    assert load_beir(folder).qrels["test"] == {"1": {"7": 1}}


def test_non_integer_score(beir_dir):
    (beir_dir / "qrels" / "test.tsv").write_text("query-id\tcorpus-id\tscore\nq4\td4\t1\nq5\td5\thigh\n")
    with pytest.raises(DataError, match=r"test\.tsv:3: score 'high' is not an integer"):
        load_beir(beir_dir)
    (beir_dir / "qrels" / "test.tsv").write_text("query-id\tcorpus-id\tscore\nq4\td4\t0.5\n")
    with pytest.raises(DataError, match=r"test\.tsv:2: score '0.5' is not an integer"):
        load_beir(beir_dir)


def test_wrong_column_count(beir_dir):
    (beir_dir / "qrels" / "test.tsv").write_text("query-id\tcorpus-id\tscore\nq4\td4\n")
    with pytest.raises(DataError, match=r"test\.tsv:2: expected 3 tab-separated columns"):
        load_beir(beir_dir)


def test_invalid_utf8(beir_dir):
    with open(beir_dir / "queries.jsonl", "ab") as fh:
        fh.write(b'{"_id": "q9", "text": "\xff\xfe"}\n')
    with pytest.raises(DataError, match=r"queries\.jsonl:7: not valid UTF-8"):
        load_beir(beir_dir)


def test_unknown_ids_are_dropped_reported_and_logged(beir_dir, caplog):
    rows = "query-id\tcorpus-id\tscore\nq4\td4\t1\nqX\td4\t1\nq5\tdX\t1\nq5\tdY\t1\nq5\td5\t2\n"
    (beir_dir / "qrels" / "test.tsv").write_text(rows)
    with caplog.at_level(logging.WARNING, logger="maw.data.beir"):
        ds = load_beir(beir_dir)
    assert ds.qrels["test"] == {"q4": {"d4": 1}, "q5": {"d5": 2}}
    report = ds.report["qrels/test.tsv"]
    assert report["dropped_unknown_query"] == 1 and report["dropped_unknown_doc"] == 2
    assert report["rows"] == 5 and report["kept"] == 2
    assert any("test.tsv" in r.getMessage() and "dropped 1" in r.getMessage() for r in caplog.records)


def test_missing_parts_are_all_listed(tmp_path):
    folder = tmp_path / "empty"
    folder.mkdir()
    with pytest.raises(DataError) as err:
        load_beir(folder)
    msg = str(err.value)
    assert "corpus.jsonl" in msg and "queries.jsonl" in msg and "qrels/" in msg and str(folder) in msg
    (folder / "qrels").mkdir()
    (folder / "corpus.jsonl").write_text(json.dumps({"_id": "d", "text": "t"}) + "\n")
    with pytest.raises(DataError, match=r"missing: queries\.jsonl, qrels/<split>\.tsv"):
        load_beir(folder)
    with pytest.raises(DataError, match="not found"):
        load_beir(tmp_path / "nope")


def test_empty_split_loads_but_is_empty(beir_dir):
    (beir_dir / "qrels" / "dev.tsv").write_text("query-id\tcorpus-id\tscore\n")
    assert load_beir(beir_dir).qrels["dev"] == {}


def test_empty_queries_file_names_the_file(beir_dir):
    (beir_dir / "queries.jsonl").write_text("")
    with pytest.raises(DataError, match=r"queries\.jsonl: no queries \(the file is empty\)"):
        load_beir(beir_dir)
