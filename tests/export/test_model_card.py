"""The model card: Hugging Face front matter, and only numbers that are in the files it was given."""

from __future__ import annotations

import json

import numpy as np
import pytest
import yaml

from maw.benchmark.significance import mean_ci
from maw.data import load_dataset
from maw.evaluation.metrics import evaluate_run
from maw.export import export_sentence_transformers
from maw.export.model_card import model_card
from maw.retrieval.bm25 import BM25Retriever


def front_matter(card: str) -> dict:
    assert card.startswith("---\n")
    return yaml.safe_load(card.split("---\n")[1])


@pytest.fixture(scope="module")
def evaluation_record(tmp_path_factory):
    """A ``maw evaluate``-shaped record (metrics + per-query scores) of BM25 on the demo test split."""
    ds = load_dataset("demo")
    qrels = ds.qrels["test"]
    res = evaluate_run(qrels, BM25Retriever(ds.corpus).retrieve({q: ds.queries[q] for q in qrels}))
    record = {
        "kind": "maw.evaluate",
        "dataset": {
            "name": "demo",
            "split": "test",
            "num_evaluated_queries": res.num_queries,
            "num_docs": 390,
        },
        "metrics": res.aggregate,
        "per_query": res.per_query,
        "versions": {"maw": "0.1.0", "ir-measures": "0.4.3"},
    }
    path = tmp_path_factory.mktemp("eval") / "eval.json"
    path.write_text(json.dumps(record))
    return path, record


def test_card_of_an_export_with_its_run_history(checkpoints, tmp_path):
    run_dir = checkpoints("maw-query")
    out = export_sentence_transformers(run_dir / "best", tmp_path / "m", model_id="someone/tiny-maw")
    card = (out / "README.md").read_text()
    meta = front_matter(card)
    assert meta["library_name"] == "sentence-transformers"
    assert meta["pipeline_tag"] == "sentence-similarity"
    assert meta["tags"] == ["sentence-transformers", "feature-extraction", "maw", "dense-retrieval"]
    assert meta["datasets"] == ["demo"]
    assert "base_model" not in meta  # the tiny backbone is a local folder, not a Hub id
    assert 'SentenceTransformer("someone/tiny-maw", trust_remote_code=True)' in card

    result = json.loads((run_dir / "result.json").read_text())
    prov = result["dataset"]["provenance"]
    assert f"- train: {prov['train']['queries']} queries" in card
    assert f"- val: {prov['val']['queries']} queries" in card
    assert result["dataset"]["fingerprint"] in card
    for h in result["history"]:  # the validation history, and no interval invented for it
        assert f"| {h['epoch']} | {h['val']['nDCG@10']:.4f} |" in card
    assert "no confidence interval" in card and "95% CI" not in card
    assert "granularity = `query`" in card and "depth_dim = `4`" in card
    assert "lora_rank" not in card  # LoRA settings only for a LoRA model


def test_card_reports_evaluation_metrics_with_their_intervals(checkpoints, evaluation_record, tmp_path):
    path, record = evaluation_record
    out = export_sentence_transformers(checkpoints("lora") / "best", tmp_path / "m", evaluation=path)
    card = (out / "README.md").read_text()
    assert front_matter(card)["metrics"] == ["nDCG@10", "R@100", "RR@10", "AP"]
    for name in ("nDCG@10", "R@100", "RR@10", "AP"):
        _, lo, hi = mean_ci(np.array(list(record["per_query"][name].values())))
        assert f"| {name} | {record['metrics'][name]:.4f} | [{lo:.4f}, {hi:.4f}] | 54 |" in card
    assert "trust_remote_code" not in card.split("## Usage")[1].split("```")[1]  # plain BERT: no remote code
    assert "`lora_rank`" in card and "merged" in card


def test_default_backbone_is_named_by_its_hub_id():
    saved = {
        "plan": {
            "method": "finetune",
            "model": {"model": "/some/site-packages/path", "model_is_default": True},
        }
    }
    card = model_card(saved, {"kind": "plain"}, (64, 256))
    meta = front_matter(card)
    assert meta["base_model"] == "sentence-transformers/all-MiniLM-L6-v2"
    assert "metrics" not in meta and "no metric is reported" in card
    assert "queries 64 tokens, documents 256 tokens" in card
