"""Dataset resolution order, the packaged demo, downloads by name, and format dispatch."""

from __future__ import annotations

import json
import socket
import zipfile
from pathlib import Path

import pytest

from maw.data import DataError, demo_path, load_dataset, resolve_dataset
from maw.data.download import BEIR_DATASETS, DatasetSource


@pytest.fixture(autouse=True)
def isolated_home(tmp_path, monkeypatch):
    """No test may see the real ~/.cache or $MAW_DATA_DIR."""
    home = tmp_path / "home"
    home.mkdir()
    monkeypatch.setenv("HOME", str(home))
    monkeypatch.delenv("MAW_DATA_DIR", raising=False)
    return home


def closed_port_url() -> str:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    return f"http://127.0.0.1:{port}/toy.zip"  # nothing listens there any more


def test_demo_is_packaged_and_loads():
    from importlib import resources

    path = demo_path()
    assert path == Path(str(resources.files("maw.data") / "demo"))
    ds = load_dataset("demo")
    assert ds.name == "demo" and ds.splits == ["test", "train"]
    assert 300 <= len(ds.corpus) <= 400 and ds.report["qrels/test.tsv"]["dropped_unknown_doc"] == 0


def test_existing_path(beir_dir):
    assert resolve_dataset(str(beir_dir)) == beir_dir
    assert load_dataset(beir_dir).name == "toy"


def test_missing_path_is_an_error(tmp_path):
    with pytest.raises(DataError, match="dataset folder not found"):
        resolve_dataset(str(tmp_path / "nope"))


def test_env_var_wins_over_cache(tmp_path, monkeypatch, make_beir, isolated_home):
    env_root = tmp_path / "env"
    make_beir(env_root / "toyset")
    make_beir(isolated_home / ".cache" / "maw" / "datasets" / "toyset")
    monkeypatch.setenv("MAW_DATA_DIR", str(env_root))
    assert resolve_dataset("toyset") == env_root / "toyset"
    ds = load_dataset("toyset")
    assert ds.name == "toyset" and ds.source == str(env_root / "toyset")


def test_cache_dir_and_data_dir(tmp_path, make_beir, isolated_home):
    cached = make_beir(isolated_home / ".cache" / "maw" / "datasets" / "toyset")
    assert resolve_dataset("toyset") == cached
    other = make_beir(tmp_path / "mydata" / "toyset")
    assert resolve_dataset("toyset", data_dir=tmp_path / "mydata") == other


def test_nested_top_folder_is_unwrapped(tmp_path, make_beir):
    make_beir(tmp_path / "data" / "toyset" / "toyset")  # unzipped by hand into data/toyset
    ds = load_dataset("toyset", data_dir=tmp_path / "data")
    assert ds.name == "toyset" and len(ds.corpus) == 6


def test_folder_of_several_collections(tmp_path, make_beir):
    make_beir(tmp_path / "multi" / "android")
    make_beir(tmp_path / "multi" / "gaming")
    with pytest.raises(DataError, match=r"holds 2 collections \(android, gaming\)"):
        load_dataset(tmp_path / "multi")


def test_unrecognised_folder(tmp_path):
    (tmp_path / "junk").mkdir()
    (tmp_path / "junk" / "readme.txt").write_text("hi")
    with pytest.raises(DataError, match="not a recognised dataset folder"):
        load_dataset(tmp_path / "junk")


def test_download_by_name(tmp_path, make_beir, monkeypatch):
    src = make_beir(tmp_path / "src" / "toyset")
    archive = tmp_path / "toyset.zip"
    with zipfile.ZipFile(archive, "w") as zf:
        for p in sorted(src.rglob("*")):
            zf.write(p, "toyset/" + p.relative_to(src).as_posix())
    monkeypatch.setitem(BEIR_DATASETS, "toyset", DatasetSource(archive.as_uri()))
    ds = load_dataset("toyset", data_dir=tmp_path / "dl")
    assert (tmp_path / "dl" / "toyset" / "corpus.jsonl").is_file() and len(ds.queries) == 6
    archive.unlink()  # second call: found in data_dir, no download
    assert resolve_dataset("toyset", data_dir=tmp_path / "dl") == tmp_path / "dl" / "toyset"


def test_sub_collection_by_name(tmp_path, make_beir, monkeypatch):
    make_beir(tmp_path / "dl" / "toyset" / "android")
    monkeypatch.setitem(BEIR_DATASETS, "toyset", DatasetSource("file:///nonexistent.zip"))
    ds = load_dataset("toyset/android", data_dir=tmp_path / "dl")
    assert ds.name == "toyset-android"
    with pytest.raises(DataError, match="toyset has: android"):
        resolve_dataset("toyset/gaming", data_dir=tmp_path / "dl")


@pytest.mark.parametrize("url_kind", ["closed_port", "missing_file"])
def test_offline_error_lists_every_location(tmp_path, monkeypatch, url_kind, isolated_home):
    url = closed_port_url() if url_kind == "closed_port" else (tmp_path / "missing.zip").as_uri()
    monkeypatch.setitem(BEIR_DATASETS, "toyset", DatasetSource(url))
    monkeypatch.setenv("MAW_DATA_DIR", str(tmp_path / "env"))
    with pytest.raises(DataError) as err:
        resolve_dataset("toyset")
    msg = str(err.value)
    assert msg.count("\n  - ") == 3  # path, $MAW_DATA_DIR, cache
    assert str(tmp_path / "env" / "toyset") in msg
    assert str(isolated_home / ".cache" / "maw" / "datasets" / "toyset") in msg
    assert url in msg and "could not be downloaded" in msg
    assert not (isolated_home / ".cache" / "maw" / "datasets" / "toyset").exists()


def test_download_disabled_and_unknown_name(tmp_path):
    with pytest.raises(DataError, match=r"downloading is disabled[\s\S]*scifact\.zip"):
        resolve_dataset("scifact", data_dir=tmp_path, download=False)
    with pytest.raises(DataError, match=r"not a known dataset name; known: demo, arguana"):
        resolve_dataset("no-such-set", data_dir=tmp_path)
    with pytest.raises(DataError, match="not publicly downloadable"):
        resolve_dataset("robust04", data_dir=tmp_path)


def test_dispatch_msmarco_and_lotte(tmp_path):
    ms = tmp_path / "msmarco"
    ms.mkdir()
    (ms / "collection.tsv").write_text("0\tpassage zero\n1\tpassage one\n")
    (ms / "queries.dev.tsv").write_text("5\twhat is one\n")
    (ms / "qrels.dev.tsv").write_text("5\t0\t1\t1\n")
    assert load_dataset(ms).report["format"] == "msmarco"
    lt = tmp_path / "lotte" / "science" / "test"
    lt.mkdir(parents=True)
    (lt / "collection.tsv").write_text("0\tpassage zero\n")
    (lt / "questions.search.tsv").write_text("0\tzero?\n")
    (lt / "qas.search.jsonl").write_text(json.dumps({"qid": 0, "query": "zero?", "answer_pids": [0]}) + "\n")
    ds = load_dataset(lt)
    assert ds.report["format"] == "lotte" and ds.name == "lotte-science-test"
