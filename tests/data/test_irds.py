"""``--dataset irds:<id>``: collections read through ir_datasets' own registry, offline.

The demo collection is registered in ``ir_datasets.registry`` from local files (ir_datasets'
TsvDocs / TsvQueries / TrecQrels over files in a temporary folder) and must load, split and score
exactly like the same collection read from its BEIR folder. Nothing is downloaded: the download
errors are provoked with a closed local port or a patched ``requests.get``.
"""

from __future__ import annotations

import json
import os
import socket
from pathlib import Path
from typing import NamedTuple

import ir_datasets
import pytest
from ir_datasets.formats import TrecQrels, TsvDocs, TsvQueries
from ir_datasets.util import Download, LocalDownload, RequestsDownload
from typer.testing import CliRunner

from maw.benchmark.cells import dataset_key
from maw.cli import app
from maw.config import DataConfig
from maw.data import DataError, demo_path, load_dataset, make_splits
from maw.data.irds import load_irds, short_name, split_ids

# where ir_datasets' BEIR module keeps its files (fixed when ir_datasets is imported, as it does)
IRDS_HOME_AT_IMPORT = Path(os.environ.get("IR_DATASETS_HOME", Path.home() / ".ir_datasets"))
ROOT = "maw-test-demo"  # registered once per process (ir_datasets' registry refuses to overwrite)
GRADES = {0: "not relevant", 1: "relevant", 2: "highly relevant"}


class TitledDoc(NamedTuple):
    doc_id: str
    title: str
    text: str

    def default_text(self) -> str:
        return f"{self.title} {self.text}"


def closed_port_url(name: str) -> str:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    return f"http://127.0.0.1:{port}/{name}"  # nothing listens there any more


def _write_demo_files(folder: Path) -> None:
    """The demo collection as ir_datasets' TSV / TREC files."""
    demo = demo_path()
    folder.mkdir(parents=True, exist_ok=True)
    with open(folder / "docs.tsv", "w", encoding="utf-8") as fh:
        for line in open(demo / "corpus.jsonl", encoding="utf-8"):
            r = json.loads(line)
            assert "\t" not in r["title"] + r["text"] and "\n" not in r["title"] + r["text"]
            fh.write(f"{r['_id']}\t{r['title']}\t{r['text']}\n")
    with open(folder / "queries.tsv", "w", encoding="utf-8") as fh:
        for line in open(demo / "queries.jsonl", encoding="utf-8"):
            r = json.loads(line)
            fh.write(f"{r['_id']}\t{r['text']}\n")
    for split in ("train", "test"):
        rows = (demo / "qrels" / f"{split}.tsv").read_text(encoding="utf-8").splitlines()[1:]
        with open(folder / f"{split}.qrels", "w", encoding="utf-8") as fh:
            fh.writelines(f"{q} 0 {d} {g}\n" for q, d, g in (row.split("\t") for row in rows))


def _register(folder: Path) -> None:
    """``maw-test-demo`` (docs + queries), ``/train`` and ``/test`` (+ qrels), ``/extra/judged``
    (test qrels, two levels down: its train split is found by walking up), ``/other/test`` (other
    documents: never a split of the others), ``maw-test-lotte`` (two query sets numbered alike) and
    ``maw-test-offline`` (documents behind a URL nobody serves)."""
    _write_demo_files(folder)
    docs = TsvDocs(LocalDownload(folder / "docs.tsv"), doc_cls=TitledDoc, namespace=ROOT)
    queries = TsvQueries(LocalDownload(folder / "queries.tsv"), namespace=ROOT)

    def qrels(split: str) -> TrecQrels:
        return TrecQrels(LocalDownload(folder / f"{split}.qrels"), GRADES)

    reg = ir_datasets.registry.register
    reg(ROOT, ir_datasets.Dataset(docs, queries))
    reg(f"{ROOT}/train", ir_datasets.Dataset(docs, queries, qrels("train")))
    reg(f"{ROOT}/test", ir_datasets.Dataset(docs, queries, qrels("test")))
    reg(f"{ROOT}/extra", ir_datasets.Dataset(docs, queries))
    reg(f"{ROOT}/extra/judged", ir_datasets.Dataset(docs, queries, qrels("test")))
    reg(f"{ROOT}/bare", ir_datasets.Dataset(docs, queries))  # no qrels anywhere below
    (folder / "other.tsv").write_text("x1\tt\tanother collection\n", encoding="utf-8")
    other = TsvDocs(LocalDownload(folder / "other.tsv"), doc_cls=TitledDoc, namespace="other")
    reg(f"{ROOT}/other", ir_datasets.Dataset(other, queries))
    reg(f"{ROOT}/other/test", ir_datasets.Dataset(other, queries, qrels("test")))
    (folder / "other-train.qrels").write_text("q0 0 x1 1\n", encoding="utf-8")
    reg(f"{ROOT}/other/train", ir_datasets.Dataset(other, queries, qrels("train")))

    # two question sets numbered from 0 (as LoTTE's): ids must be namespaced by split
    (folder / "l-docs.tsv").write_text(
        "0\t\tcats hunt mice\n1\t\tdogs run\n2\t\tbirds fly\n", encoding="utf-8"
    )
    for qset, rows in (("search", ["0\tcats", "1\tdogs"]), ("forum", ["0\tbirds", "1\tcats and dogs"])):
        (folder / f"l-{qset}.tsv").write_text("\n".join(rows) + "\n", encoding="utf-8")
    (folder / "l-search.qrels").write_text("0 0 0 1\n1 0 1 1\n", encoding="utf-8")
    (folder / "l-forum.qrels").write_text("0 0 2 1\n1 0 0 1\n1 0 1 1\n", encoding="utf-8")
    l_docs = TsvDocs(LocalDownload(folder / "l-docs.tsv"), doc_cls=TitledDoc, namespace="maw-test-lotte")
    reg("maw-test-lotte", ir_datasets.Dataset(l_docs))
    for qset in ("search", "forum"):
        reg(
            f"maw-test-lotte/{qset}",
            ir_datasets.Dataset(
                l_docs,
                TsvQueries(LocalDownload(folder / f"l-{qset}.tsv")),
                TrecQrels(LocalDownload(folder / f"l-{qset}.qrels"), GRADES),
            ),
        )

    remote = Download([RequestsDownload(closed_port_url("maw-test/docs.tsv"))], cache_path=folder / "dl.tsv")
    reg("maw-test-offline/test", ir_datasets.Dataset(TsvDocs(remote), queries, qrels("test")))


@pytest.fixture(scope="session")
def registered(tmp_path_factory) -> str:
    if ROOT not in set(ir_datasets.registry):
        _register(tmp_path_factory.mktemp("irds-files"))
    return ROOT


@pytest.fixture(autouse=True)
def isolated(tmp_path, monkeypatch):
    """ir_datasets and maw write nothing into the real home; no $MAW_DATA_DIR."""
    monkeypatch.setenv("IR_DATASETS_HOME", str(tmp_path / "ir_datasets"))
    monkeypatch.setenv("IR_DATASETS_DL_TRIES", "1")
    monkeypatch.delenv("MAW_DATA_DIR", raising=False)


def _splits(ds):
    s = make_splits(ds, DataConfig())
    return s.train, s.val, s.test


def test_loads_like_the_beir_folder(registered):
    folder = load_dataset(demo_path())
    for text in (f"irds:{registered}/test", f"irds:{registered}"):
        ds = load_dataset(text)
        assert ds.name == text and ds.source == text
        assert ds.splits == ["test", "train"]
        assert ds.qrels == folder.qrels and ds.queries == folder.queries
        assert ds.doc_ids() == folder.doc_ids() and ds.doc_texts() == folder.doc_texts()
        assert type(ds.corpus).__name__ == "CorpusTable"  # the same Arrow corpus table as folders
        assert _splits(ds) == _splits(folder)  # the same split rules: val carved from train, seeded
        assert "/" not in ds.fingerprint and str(Path.home()) not in json.dumps(ds.report)
    a, b = load_dataset(f"irds:{registered}/test"), load_dataset(f"irds:{registered}")
    assert a.fingerprint == b.fingerprint  # content, not the id it was reached by
    assert a.report["irds"]["splits"] == {"test": f"{registered}/test", "train": f"{registered}/train"}
    assert a.report["irds"]["docs"] == registered


def test_split_mapping_rules(registered):
    # the id given is the test split; train is found by walking up; other documents never count
    assert split_ids(f"{registered}/extra/judged") == {
        "test": f"{registered}/extra/judged",
        "train": f"{registered}/train",
    }
    assert split_ids(f"{registered}/train") == {"test": f"{registered}/train"}  # never itself twice
    assert split_ids(f"{registered}/other/test") == {
        "test": f"{registered}/other/test",
        "train": f"{registered}/other/train",
    }
    assert split_ids(registered) == {"train": f"{registered}/train", "test": f"{registered}/test"}
    # the real catalogue (registry metadata only: nothing is read or downloaded)
    assert split_ids("beir/scifact/test") == {"test": "beir/scifact/test", "train": "beir/scifact/train"}
    assert split_ids("msmarco-passage/trec-dl-2019/judged") == {
        "test": "msmarco-passage/trec-dl-2019/judged",
        "train": "msmarco-passage/train",
        "dev": "msmarco-passage/dev",
    }
    assert split_ids("msmarco-passage/dev/small") == {  # not its own ancestor msmarco-passage/dev
        "test": "msmarco-passage/dev/small",
        "train": "msmarco-passage/train",
    }
    assert split_ids("lotte/science/test/search") == {"test": "lotte/science/test/search"}
    assert split_ids("lotte/science/test") == {
        "forum": "lotte/science/test/forum",
        "search": "lotte/science/test/search",
    }


def test_query_ids_are_namespaced_when_splits_reuse_them(registered):
    ds = load_irds("irds:maw-test-lotte")
    assert ds.splits == ["forum", "search"] and ds.report["irds"]["query_ids_namespaced"]
    assert ds.queries == {
        "search-0": "cats",
        "search-1": "dogs",
        "forum-0": "birds",
        "forum-1": "cats and dogs",
    }
    assert ds.qrels == {
        "search": {"search-0": {"0": 1}, "search-1": {"1": 1}},
        "forum": {"forum-0": {"2": 1}, "forum-1": {"0": 1, "1": 1}},
    }
    splits = make_splits(ds, DataConfig(test_split="search"))
    assert sorted(splits.test) == ["search-0", "search-1"] and not splits.train


def test_short_names_and_dataset_keys():
    assert short_name("trec-dl-2019") == "msmarco-passage/trec-dl-2019/judged"
    assert short_name("trec-dl-2020") == "msmarco-passage/trec-dl-2020/judged"
    assert short_name("lotte-science") == "lotte/science/test/search"
    assert short_name("lotte-science-dev") == "lotte/science/dev/search"
    assert short_name("lotte-pooled-test-forum") == "lotte/pooled/test/forum"
    assert short_name("scifact") is None and short_name("demo") is None
    registered_ids = set(ir_datasets.registry)
    for name in ("trec-dl-2019", "trec-dl-2020", "lotte-science", "lotte-lifestyle-dev-forum"):
        assert short_name(name) in registered_ids
    with pytest.raises(DataError, match="unknown LoTTE domain 'physics'.*science"):
        load_dataset("lotte-physics")
    assert dataset_key("irds:beir/scifact/test") == "beir_scifact_test"
    assert dataset_key("irds:msmarco-passage/trec-dl-2019/judged") == "msmarco-passage_trec-dl-2019_judged"
    assert dataset_key("trec-dl-2019") == "trec-dl-2019" and dataset_key("lotte-science") == "lotte-science"


def test_a_local_folder_wins_over_a_short_name(tmp_path, monkeypatch, make_beir):
    make_beir(tmp_path / "data" / "trec-dl-2019")
    monkeypatch.setenv("MAW_DATA_DIR", str(tmp_path / "data"))
    ds = load_dataset("trec-dl-2019")
    assert ds.report["format"] == "beir" and len(ds.corpus) == 6


def test_unknown_id_names_it_and_close_matches(registered):
    with pytest.raises(DataError, match=r"irds:beir/scifakt/test.*not an ir_datasets id.*beir/scifact/test"):
        load_dataset("irds:beir/scifakt/test")
    with pytest.raises(DataError, match=f"irds:{registered}/bare: .*no qrels and no child id with qrels"):
        load_dataset(f"irds:{registered}/bare")
    with pytest.raises(DataError, match="give an ir_datasets id after 'irds:'"):
        load_dataset("irds:")


def test_offline_download_error_names_id_and_url(registered):
    with pytest.raises(DataError) as err:
        load_dataset("irds:maw-test-offline/test")
    msg = str(err.value)
    assert "irds:maw-test-offline/test" in msg and "download the documents of 'maw-test-offline/test'" in msg
    assert "http://127.0.0.1:" in msg and "maw-test/docs.tsv" in msg and "Traceback" not in msg


def test_offline_error_for_a_catalogue_id_without_network(monkeypatch):
    """beir/scifact/test with ``requests.get`` failing as it does offline: the message names the
    official URL. Skipped when ir_datasets already holds the file (it would not download)."""
    import requests

    held = IRDS_HOME_AT_IMPORT / "beir" / "scifact"
    if held.is_dir() and any(p.name != "irds_version.txt" for p in held.iterdir()):  # ir_datasets' marker
        pytest.skip(f"ir_datasets already holds beir/scifact in {IRDS_HOME_AT_IMPORT}; it would not download")

    def offline(url, **kwargs):
        raise requests.exceptions.ConnectionError(
            "Name or service not known (test: offline)", request=requests.Request("GET", url).prepare()
        )

    monkeypatch.setattr(requests, "get", offline)
    with pytest.raises(DataError) as err:
        load_dataset("irds:beir/scifact/test")
    msg = str(err.value)
    assert "irds:beir/scifact/test" in msg and "scifact.zip" in msg and "ir_datasets export" in msg


runner = CliRunner()


def _evaluate(dataset: str, method: str, out: Path, *extra: str) -> dict:
    result = runner.invoke(
        app, ["evaluate", "--dataset", dataset, "--method", method, "--out", str(out), "--quiet", *extra]
    )
    assert result.exit_code == 0, result.output
    return json.loads(out.read_text())


def test_cli_evaluate_bm25_equals_the_beir_folder(registered, tmp_path):
    ours = _evaluate(f"irds:{registered}/test", "bm25", tmp_path / "irds.json")
    folder = _evaluate(str(demo_path()), "bm25", tmp_path / "folder.json")
    assert ours["metrics"]["nDCG@10"] == folder["metrics"]["nDCG@10"] > 0
    assert ours["metrics"] == folder["metrics"] and ours["per_query"] == folder["per_query"]
    assert ours["dataset"]["name"] == f"irds:{registered}/test"
    assert ours["dataset"]["source"] == f"irds:{registered}/test"


def test_cli_errors_are_one_line(registered, tmp_path):
    for dataset, message in (
        ("irds:no/such/id", "not an ir_datasets id"),
        ("irds:maw-test-offline/test", "127.0.0.1"),
    ):
        result = runner.invoke(
            app, ["evaluate", "--dataset", dataset, "--method", "bm25", "--out", str(tmp_path / "x.json")]
        )
        assert result.exit_code == 2, result.output
        assert message in result.output and "Traceback" not in result.output


@pytest.mark.slow
def test_cli_evaluate_zeroshot_equals_the_beir_folder(registered, tmp_path):
    cache = ["--embedding-cache-dir", str(tmp_path / "emb")]
    ours = _evaluate(f"irds:{registered}/test", "zeroshot", tmp_path / "irds.json", *cache)
    folder = _evaluate(str(demo_path()), "zeroshot", tmp_path / "folder.json", *cache)
    assert ours["metrics"]["nDCG@10"] > 0.3
    for name, value in folder["metrics"].items():  # same texts in the same order: the same figures
        assert ours["metrics"][name] == (value if value is None else pytest.approx(value, abs=1e-9)), name
