"""The Python API (``import maw``): the README's example on the demo collection with a tiny model,
and what each call promises (cheap import, exports, MAW injection at the pretrained model)."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

import maw
from tiny_bert import write_tiny_model

README = Path(__file__).resolve().parents[1] / "README.md"
HUB_MODEL = "sentence-transformers/all-MiniLM-L6-v2"


def readme_api_block() -> str:
    text = README.read_text(encoding="utf-8")
    blocks = re.findall(r"```python\n(.*?)```", text, flags=re.S)
    return next(b for b in blocks if b.startswith("import maw\n"))


@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory) -> Path:
    return write_tiny_model(tmp_path_factory.mktemp("api_bert") / "tiny-bert", dropout=0.0)


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory, tiny_model) -> Path:
    """`maw train --dataset demo --method maw` in miniature (1 epoch, 32 queries, a few seconds)."""
    from maw.config import DataConfig, EvalConfig, MAWConfig, ModelConfig, RuntimeConfig, TrainConfig
    from maw.plan import resolve
    from maw.training.trainer import train_from_plan

    plan = resolve(
        "maw",
        data=DataConfig(dataset="demo", train_samples=32, val_samples=8),
        model=ModelConfig(model=str(tiny_model), query_max_length=16, doc_max_length=32),
        maw=MAWConfig(depth_dim=4),
        train=TrainConfig(
            num_epochs=1, batch_size=8, learning_rate=1e-3, hard_negative_depth=5, checkpoint_every=0
        ),
        eval=EvalConfig(eval_batch_size=64, latency_queries=2),
        runtime=RuntimeConfig(device="cpu", progress=False),
    )
    folder = tmp_path_factory.mktemp("api_run") / "demo-maw"
    train_from_plan(plan, folder)
    return folder


def test_import_maw_is_cheap():
    code = "import sys, maw; print(sorted(m for m in ('torch', 'transformers', 'numpy') if m in sys.modules))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"
    assert {"load_encoder", "inject_maw", "evaluate"} <= set(dir(maw)) and callable(maw.load_encoder)
    with pytest.raises(AttributeError):
        maw.no_such_thing  # noqa: B018


def test_readme_example_runs(run_dir, tiny_model, capsys):
    code = readme_api_block()
    assert code.count('"runs/demo-maw"') == 2 and code.count(f'"{HUB_MODEL}"') == 1
    code = code.replace('"runs/demo-maw"', repr(str(run_dir))).replace(
        f'"{HUB_MODEL}"', repr(str(tiny_model))
    )
    namespace: dict = {}
    exec(compile(code, "README.md", "exec"), namespace)  # noqa: S102 - the README's own example
    printed = capsys.readouterr().out.splitlines()
    assert printed[0] == "(2, 32)"  # the tiny model is 32 wide (all-MiniLM-L6-v2: 384)
    vectors, metrics = namespace["vectors"], namespace["metrics"]
    assert np.allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-5)
    assert printed[1] == f"nDCG@10 {metrics['nDCG@10']:.4f}" and 0.0 <= metrics["nDCG@10"] <= 1.0
    from maw.models.maw_encoder import maw_modules

    hf = namespace["hf"]
    assert [m.layer_number for m in maw_modules(hf)] == [2] and maw_modules(hf)[0].depth == 4


def test_load_encoder_matches_the_checkpoint(run_dir):
    from maw.training.methods import load_trained_encoder

    texts = ["what is dense retrieval?", "a", "Dense retrieval encodes texts into vectors. " * 20]
    reference, plan, _ = load_trained_encoder(run_dir)
    expected = reference.encode(texts, plan.model.doc_max_length)
    for path in (run_dir, run_dir / "best"):
        enc = maw.load_encoder(path)
        assert (enc.query_max_length, enc.doc_max_length) == (16, 32) and enc.plan.method == "maw"
        assert np.abs(enc.encode(texts, batch_size=2) - expected).max() < 1e-5
    one = enc.encode_queries("what is dense retrieval?")
    assert one.shape == (32,) and np.isclose(np.linalg.norm(one), 1.0)
    assert np.allclose(one, reference.encode(["what is dense retrieval?"], 16)[0], atol=1e-5)


def test_load_encoder_reads_an_export_without_sentence_transformers(run_dir, tmp_path):
    pytest.importorskip("sentence_transformers")
    from maw.export import export_sentence_transformers

    out = export_sentence_transformers(run_dir, tmp_path / "export")
    texts = ["what is dense retrieval?", "Bananas are yellow."]
    ours = maw.load_encoder(run_dir).encode(texts)
    exported = maw.load_encoder(out)
    assert (exported.query_max_length, exported.doc_max_length) == (16, 32)
    assert np.abs(exported.encode(texts) - ours).max() < 1e-5
    # evaluating the export is evaluating the run: same weights, same max lengths
    a = maw.evaluate(run_dir, dataset="demo", test_samples=12)
    b = maw.evaluate(out, dataset="demo", test_samples=12)
    assert a["nDCG@10"] == pytest.approx(b["nDCG@10"], abs=1e-6)


def test_evaluate_takes_runs_loaded_encoders_bm25_and_cli_options(run_dir, tmp_path):
    import json

    from typer.testing import CliRunner

    from maw.cli import app

    from_path = maw.evaluate(run_dir, dataset="demo", top_k=100, out=tmp_path / "api.json")
    loaded = maw.evaluate(maw.load_encoder(run_dir), dataset="demo", top_k=100)
    assert from_path == loaded and {"nDCG@10", "R@100", "RR@10", "AP"} <= set(from_path)
    result = CliRunner().invoke(
        app,
        [
            "evaluate",
            "--dataset",
            "demo",
            "--model",
            str(run_dir),
            "--top-k",
            "100",
            "--out",
            str(tmp_path / "cli.json"),
            "--quiet",
        ],
    )
    assert result.exit_code == 0, result.output
    cli = json.loads((tmp_path / "cli.json").read_text())["metrics"]
    assert cli["nDCG@10"] == pytest.approx(from_path["nDCG@10"], abs=1e-12)
    assert json.loads((tmp_path / "api.json").read_text())["config"]["method"] == "maw"
    bm25 = maw.evaluate(method="bm25", dataset="demo")
    assert bm25["nDCG@10"] > 0.3
    from maw.config import ConfigError

    with pytest.raises(ConfigError, match="unknown option"):
        maw.evaluate(method="bm25", dataset="demo", no_such_option=1)


def test_inject_maw_starts_at_the_pretrained_model(tiny_model):
    from transformers import AutoModel

    from maw.config import ConfigError
    from maw.models.maw_encoder import maw_modules

    hf = AutoModel.from_pretrained(tiny_model).eval()
    ids = torch.tensor(
        [[101, 2054, 2003, 1037, 3899, 102, 0, 0], [101, 7592, 2088, 2003, 2204, 2000, 1037, 102]]
    )
    mask = (ids != 0).long()
    with torch.no_grad():
        before = hf(input_ids=ids, attention_mask=mask).last_hidden_state
        assert maw.inject_maw(hf, depth_dim=4, router="soft", granularity="pair", maw_layers="all") is hf
        after = hf(input_ids=ids, attention_mask=mask).last_hidden_state
    assert [m.layer_number for m in maw_modules(hf)] == [1, 2]
    assert torch.allclose(before[mask.bool()], after[mask.bool()], atol=1e-5)
    with pytest.raises(ConfigError, match="unknown option"):
        maw.inject_maw(AutoModel.from_pretrained(tiny_model), depth=4)
    with pytest.raises(ConfigError, match="--depth-dim"):
        maw.inject_maw(AutoModel.from_pretrained(tiny_model), depth_dim=3)
