"""``maw evaluate`` end to end on a tiny BEIR folder, and clear errors for bad flags."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from maw.cli import app

DOCS = [
    ("d1", "Cats", "The domestic cat sleeps most of the day and hunts mice at night."),
    ("d2", "Dogs", "Dogs are loyal animals that enjoy running in the park."),
    ("d3", "Quantum chromodynamics", "Quarks interact through gluons carrying colour charge."),
    ("d4", "Markets", "Stock markets fell sharply as interest rates rose."),
    ("d5", "Volcanoes", "Lava erupts from volcanoes when magma pressure builds up."),
    ("d6", "Bread", "Sourdough bread rises thanks to wild yeast and lactic bacteria."),
]
QUERIES = [
    ("q1", "what do cats hunt"),
    ("q2", "gluons and quarks"),
    ("q3", "why do interest rates move stock markets"),
    ("q4", "yeast in bread"),
]
QRELS = [("q1", "d1", 1), ("q2", "d3", 2), ("q2", "d4", 0), ("q3", "d4", 1), ("q4", "d6", 1)]


@pytest.fixture()
def beir(tmp_path: Path) -> Path:
    folder = tmp_path / "tiny"
    (folder / "qrels").mkdir(parents=True)
    with open(folder / "corpus.jsonl", "w") as fh:
        for i, title, text in DOCS:
            fh.write(json.dumps({"_id": i, "title": title, "text": text}) + "\n")
    with open(folder / "queries.jsonl", "w") as fh:
        for i, text in QUERIES:
            fh.write(json.dumps({"_id": i, "text": text}) + "\n")
    with open(folder / "qrels" / "test.tsv", "w") as fh:
        fh.write("query-id\tcorpus-id\tscore\n")
        for q, d, s in QRELS:
            fh.write(f"{q}\t{d}\t{s}\n")
    return folder


runner = CliRunner()


def invoke(*args: str):
    return runner.invoke(app, ["evaluate", *args])


def check_record(path: Path, method: str) -> dict:
    record = json.loads(path.read_text())
    numeric = {k: v for k, v in record["metrics"].items() if isinstance(v, int | float)}
    assert len(numeric) >= 36
    assert record["metrics"]["alpha-nDCG@10"] is None and "alpha-nDCG@10" in record["not_applicable"]
    assert record["config"]["method"] == method
    assert record["dataset"]["num_docs"] == len(DOCS) and record["dataset"]["num_evaluated_queries"] == 4
    assert record["dataset"]["fingerprint"]
    assert set(record["per_query"]["nDCG@10"]) == {"q1", "q2", "q3", "q4"}
    assert record["versions"]["torch"] and record["runtimes"]["retrieve_seconds"] > 0
    assert not list(path.parent.glob(".*.tmp"))  # atomic write left nothing behind
    return record


def test_evaluate_bm25_writes_json(beir, tmp_path):
    out = tmp_path / "res" / "bm25.json"
    result = invoke("--dataset", str(beir), "--method", "bm25", "--out", str(out))
    assert result.exit_code == 0, result.output
    assert "nDCG@10" in result.output  # the rich table
    record = check_record(out, "bm25")
    assert record["metrics"]["nDCG@10"] > 0.9  # every query has an obvious lexical match
    assert record["efficiency"]["index_bytes"] > 0 and record["efficiency"]["qps"] > 0
    assert "model" not in record["config"]


@pytest.mark.slow
def test_evaluate_zeroshot_with_minilm(beir, tmp_path):
    out = tmp_path / "zs.json"
    cache = tmp_path / "cache"
    args = [
        "--dataset",
        str(beir),
        "--method",
        "zeroshot",
        "--out",
        str(out),
        "--embedding-cache-dir",
        str(cache),
        "--quiet",
    ]
    result = invoke(*args, "--latency-queries", "2")
    assert result.exit_code == 0, result.output
    record = check_record(out, "zeroshot")
    assert record["metrics"]["nDCG@10"] > 0.9
    eff = record["efficiency"]
    assert eff["doc_cache_hit"] is False and eff["docs_per_second"] > 0 and eff["query_latency_ms"] > 0
    # max lengths from the model's sentence-transformers configuration (max_seq_length 256), as ST uses
    assert record["config"]["model"]["doc_max_length"] == 256 == record["config"]["model"]["query_max_length"]
    assert record["config"]["model"]["model_is_default"] and record["retriever"]["cache_dir"] == str(cache)
    # second run: document embeddings come from the cache, same numbers
    result = invoke(*args)
    assert result.exit_code == 0, result.output
    again = json.loads(out.read_text())
    assert again["efficiency"]["doc_cache_hit"] is True
    assert again["metrics"] == record["metrics"]
    result = invoke(*args, "--no-cache")
    assert json.loads(out.read_text())["efficiency"]["doc_cache_hit"] is False


def test_default_output_path_and_test_samples(beir, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    result = invoke("--dataset", str(beir), "--test-samples", "2", "--quiet")
    assert result.exit_code == 0, result.output
    record = json.loads((tmp_path / "runs" / "evaluate" / "tiny-bm25-test.json").read_text())
    assert record["dataset"]["num_evaluated_queries"] == 2
    assert record["dataset"]["provenance"]["test"]["subsampled"]["kept"] == 2


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--method", "colbert"], "--method"),
        (["--eval-batch-size", "0"], "--eval-batch-size"),
        (["--query-max-length", "-1"], "--query-max-length"),
        (["--top-k", "0"], "--top-k"),
        (["--test-samples", "0"], "--test-samples"),
        (["--split", "dev"], "dev"),
        (["--method", "bm25", "--model", "x"], "--model"),
        (["--method", "zeroshot", "--model", "/nonexistent/model/dir"], "--model"),
        (["--method", "zeroshot", "--num-layers", "9"], "--num-layers"),
        (["--device", "tpu"], "--device"),
    ],
)
def test_bad_flags_give_clear_errors(beir, tmp_path, args, message):
    result = invoke("--dataset", str(beir), "--out", str(tmp_path / "x.json"), "--quiet", *args)
    assert result.exit_code == 2
    assert "error" in result.output and message in result.output
    assert "Traceback" not in result.output
    assert not (tmp_path / "x.json").exists()


def test_missing_dataset_and_unknown_option(tmp_path):
    result = invoke("--dataset", str(tmp_path / "nope"), "--quiet")
    assert result.exit_code == 2 and "not found" in result.output
    result = invoke("--no-such-flag")
    assert result.exit_code == 2 and "No such option" in result.output


def test_bad_data_file_names_the_file(beir, tmp_path):
    with open(beir / "qrels" / "test.tsv", "a") as fh:
        fh.write("q1\td1\tnot-a-number\n")
    result = invoke("--dataset", str(beir), "--out", str(tmp_path / "x.json"), "--quiet")
    assert result.exit_code == 2
    assert "test.tsv" in result.output


def test_help_lists_the_commands_and_version():
    result = runner.invoke(app, ["--help"])
    assert result.exit_code == 0 and all(c in result.output for c in ("evaluate", "train", "benchmark"))
    from importlib.metadata import version

    result = runner.invoke(app, ["--version"])
    assert result.exit_code == 0 and result.output.strip() == f"maw {version('maw')}"


@pytest.mark.parametrize("command", ["train", "evaluate", "benchmark"])
def test_flags_come_from_the_config_fields(command):
    """One spelling per option in every command: the config field's name, type and help."""
    out = " ".join(CliRunner(env={"COLUMNS": "1000"}).invoke(app, [command, "--help"]).output.split())
    for flag in ("--device", "--split-seed", "--dataset", "--embedding-cache-dir"):
        assert flag in out, flag
    assert ("--prefix-cache-dir" in out) == (command != "evaluate")
    assert ("--seed " in out) == (command == "train")  # the training seed; benchmark has --seeds
    assert "--cache-dir " not in out and "--latency-queries" in out
    assert "Seed of carving / subsampling the splits" in out
