"""MS MARCO passage and LoTTE loaders on small fixtures written by the tests."""

from __future__ import annotations

import json
import logging

import pytest

from maw.config import DataConfig
from maw.data import DataError, load_lotte, load_msmarco, make_splits


@pytest.fixture
def msmarco_dir(tmp_path):
    d = tmp_path / "msmarco-passage"
    d.mkdir()
    (d / "collection.tsv").write_text("".join(f"{i}\tpassage number {i}\n" for i in range(8)))
    (d / "queries.train.tsv").write_text("100\tfirst train query\n101\tsecond train query\n102\tthird\n")
    (d / "queries.dev.tsv").write_text("200\tdev query\n201\tanother dev query\n")
    (d / "queries.eval.tsv").write_text("300\teval query without judgements\n")
    (d / "qrels.train.tsv").write_text("100\t0\t1\t1\n101\t0\t2\t1\n102\t0\t3\t1\n")
    (d / "qrels.dev.tsv").write_text("200 0 4 1\n201 0 5 1\n")
    return d


def test_msmarco(msmarco_dir):
    ds = load_msmarco(msmarco_dir)
    assert ds.name == "msmarco-passage" and ds.report["format"] == "msmarco"
    assert len(ds.corpus) == 8 and ds.corpus["3"].text == "passage number 3" and ds.corpus["3"].title == ""
    assert len(ds.queries) == 6 and ds.queries["300"] == "eval query without judgements"
    assert ds.splits == ["dev", "train"]
    assert ds.qrels["train"] == {"100": {"1": 1}, "101": {"2": 1}, "102": {"3": 1}}
    assert ds.qrels["dev"] == {"200": {"4": 1}, "201": {"5": 1}}
    s = make_splits(ds, DataConfig(test_split="dev", val_split="none"))
    assert len(s.test) == 2 and len(s.train) + len(s.val) == 3


def test_msmarco_errors(msmarco_dir, caplog):
    (msmarco_dir / "qrels.dev.tsv").write_text("200 0 4 1\n201 0 5\n")
    with pytest.raises(DataError, match=r"qrels\.dev\.tsv:2: expected 4 columns"):
        load_msmarco(msmarco_dir)
    (msmarco_dir / "qrels.dev.tsv").write_text("200 0 4 yes\n")
    with pytest.raises(DataError, match=r"qrels\.dev\.tsv:1: grade 'yes' is not an integer"):
        load_msmarco(msmarco_dir)
    (msmarco_dir / "qrels.dev.tsv").write_text("200 0 4 1\n999 0 4 1\n200 0 77 1\n")
    with caplog.at_level(logging.WARNING):
        ds = load_msmarco(msmarco_dir)
    assert ds.report["qrels.dev.tsv"]["dropped_unknown_query"] == 1
    assert ds.report["qrels.dev.tsv"]["dropped_unknown_doc"] == 1
    assert "qrels.dev.tsv" in caplog.text
    (msmarco_dir / "collection.tsv").write_text("0\tzero\n1 no tab here\n")
    with pytest.raises(DataError, match=r"collection\.tsv:2: expected '<passage id><TAB><text>'"):
        load_msmarco(msmarco_dir)
    (msmarco_dir / "collection.tsv").write_text("0\tzero\n0\tagain\n")
    with pytest.raises(DataError, match=r"collection\.tsv:2: duplicate passage id '0'"):
        load_msmarco(msmarco_dir)


def test_msmarco_conflicting_query_texts(msmarco_dir):
    (msmarco_dir / "queries.dev.small.tsv").write_text("200\tdev query\n")  # same text: fine
    assert load_msmarco(msmarco_dir).queries["200"] == "dev query"
    (msmarco_dir / "queries.dev.small.tsv").write_text("200\ta different text\n")
    with pytest.raises(
        DataError,
        match=r"queries\.dev\.tsv:1: query id '200' also in queries\.dev\.small\.tsv with a different text",
    ):
        load_msmarco(msmarco_dir)


def test_msmarco_missing_parts(tmp_path):
    (tmp_path / "m").mkdir()
    (tmp_path / "m" / "collection.tsv").write_text("0\tx\n")
    with pytest.raises(DataError, match=r"missing: queries\.<set>\.tsv, qrels\.<set>\.tsv"):
        load_msmarco(tmp_path / "m")


@pytest.fixture
def lotte_dir(tmp_path):
    d = tmp_path / "lotte" / "writing" / "dev"
    d.mkdir(parents=True)
    (d / "collection.tsv").write_text("".join(f"{i}\tanswer passage {i}\n" for i in range(6)))
    (d / "questions.search.tsv").write_text("0\thow to write a poem\n1\twhat is a sonnet\n")
    (d / "qas.search.jsonl").write_text(
        json.dumps({"qid": 0, "query": "how to write a poem", "answer_pids": [0, 1]})
        + "\n"
        + json.dumps({"qid": 1, "query": "what is a sonnet", "answer_pids": [2]})
        + "\n"
    )
    (d / "questions.forum.tsv").write_text("0\tforum question zero\n")
    (d / "qas.forum.jsonl").write_text(
        json.dumps({"qid": 0, "query": "forum question zero", "answer_pids": [3, 99]}) + "\n"
    )
    return d


def test_lotte(lotte_dir):
    ds = load_lotte(lotte_dir)
    assert ds.name == "lotte-writing-dev" and ds.splits == ["forum", "search"]
    assert ds.queries == {
        "search-0": "how to write a poem",
        "search-1": "what is a sonnet",
        "forum-0": "forum question zero",
    }
    assert ds.qrels["search"] == {"search-0": {"0": 1, "1": 1}, "search-1": {"2": 1}}
    assert ds.qrels["forum"] == {"forum-0": {"3": 1}}
    assert ds.report["qas.forum.jsonl"]["dropped_unknown_doc"] == 1
    s = make_splits(ds, DataConfig(test_split="search"))
    assert set(s.test) == {"search-0", "search-1"} and s.train == {}


def test_lotte_errors(lotte_dir):
    (lotte_dir / "qas.search.jsonl").write_text(
        '{"qid": 0, "answer_pids": [0]}\n{"qid": 1, "answer_pids": [2]\n'
    )
    with pytest.raises(DataError, match=r"qas\.search\.jsonl:2: malformed JSON"):
        load_lotte(lotte_dir)
    (lotte_dir / "qas.search.jsonl").write_text('{"qid": 0, "answer_pids": 5}\n')
    with pytest.raises(DataError, match=r"qas\.search\.jsonl:1: 'answer_pids' must be a list"):
        load_lotte(lotte_dir)
    (lotte_dir / "qas.search.jsonl").write_text('{"answer_pids": [1]}\n')
    with pytest.raises(DataError, match=r"qas\.search\.jsonl:1: record has no 'qid'"):
        load_lotte(lotte_dir)
    (lotte_dir / "qas.search.jsonl").unlink()
    with pytest.raises(DataError, match=r"missing: qas\.search\.jsonl"):
        load_lotte(lotte_dir)
