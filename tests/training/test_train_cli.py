"""``maw train`` end to end on a tiny collection: result.json, resume, bad flags by name (exit 2, nothing
written), and ``maw evaluate --model RUN`` on what it trained."""

from __future__ import annotations

import json

import pytest
from typer.testing import CliRunner

from maw.cli import app

runner = CliRunner(env={"COLUMNS": "1000"})  # rich wraps nothing: messages are matched whole


def _args(data, model, run_dir, *extra, method="finetune", quiet=True):
    return [
        "train",
        "--dataset",
        str(data),
        "--model",
        str(model),
        "--run-dir",
        str(run_dir),
        "--method",
        method,
        "--num-epochs",
        "1",
        "--batch-size",
        "8",
        "--learning-rate",
        "1e-3",
        "--query-max-length",
        "16",
        "--doc-max-length",
        "48",
        "--hard-negative-depth",
        "5",
        "--depth-dim",
        "4",
        "--num-threads",
        "1",
        *(["--quiet"] if quiet else []),
        *extra,
    ]


def _output(res) -> str:
    """stdout + stderr of a CliRunner result, with rich's line wrapping undone."""
    return " ".join(res.output.split())


def test_train_command_writes_result_and_resumes(tiny_data_dir, tiny_model_dir, tmp_path):
    res = runner.invoke(app, _args(tiny_data_dir, tiny_model_dir, tmp_path / "run", "--seed", "7"))
    assert res.exit_code == 0, res.output
    out = json.loads((tmp_path / "run" / "result.json").read_text())
    assert [h["epoch"] for h in out["history"]] == [0, 1] and out["method"] == "finetune"
    assert out["plan"]["train"]["batch_size"] == 8 and out["plan"]["train"]["seed"] == 7
    assert out["plan"]["model"]["query_max_length"] == 16 and out["plan"]["layers"]["trainable"] == [2]
    assert out["plan"]["data"]["split_seed"] == 13  # --seed is the training seed only
    assert out["dataset"]["provenance"]["val"]["carved"]
    assert (tmp_path / "run" / "best" / "model.safetensors").is_file()
    # same command again (not quiet): the finished run is resumed, not redone, and it says so
    again = runner.invoke(
        app, _args(tiny_data_dir, tiny_model_dir, tmp_path / "run", "--seed", "7", quiet=False)
    )
    assert again.exit_code == 0, again.output
    assert f"resumed from {tmp_path / 'run' / 'latest'} at epoch 2" in _output(again)
    assert json.loads((tmp_path / "run" / "result.json").read_text())["resumed_from"]["epoch"] == 2
    # runtime-only options may change on resume
    runtime = runner.invoke(
        app, _args(tiny_data_dir, tiny_model_dir, tmp_path / "run", "--seed", "7", "--checkpoint-every", "3")
    )
    assert runtime.exit_code == 0, runtime.output
    # a setting that changes results on the same run folder is refused with what differs (a user error)
    clash = runner.invoke(
        app, _args(tiny_data_dir, tiny_model_dir, tmp_path / "run", "--seed", "7", "--temperature", "0.1")
    )
    assert clash.exit_code == 2 and "train.temperature: saved 0.05, now 0.1" in _output(clash)
    assert "Traceback" not in clash.output


def test_an_interrupted_run_resumes_and_prints_where(tiny_data_dir, tiny_model_dir, tmp_path, monkeypatch):
    import maw.training.trainer as trainer_mod

    real, calls = trainer_mod.Trainer._validate_all_ranks, []

    def ctrl_c_in_epoch_2(self):  # validations: epoch 0, epoch 1, then Ctrl-C at the end of epoch 2
        calls.append(1)
        if len(calls) == 3:
            raise KeyboardInterrupt
        return real(self)

    run = tmp_path / "run"
    args = _args(
        tiny_data_dir, tiny_model_dir, run, "--num-epochs", "2", "--checkpoint-every", "2", quiet=False
    )
    monkeypatch.setattr(trainer_mod.Trainer, "_validate_all_ranks", ctrl_c_in_epoch_2)
    first = runner.invoke(app, args)
    assert first.exit_code != 0 and not (run / "result.json").exists()
    state = json.loads((run / "latest" / "training_state.json").read_text())["state"]
    assert state["epoch"] == 2 and state["step_in_epoch"] > 0 and not state["finished"]
    monkeypatch.setattr(trainer_mod.Trainer, "_validate_all_ranks", real)
    res = runner.invoke(app, args)
    assert res.exit_code == 0, res.output
    assert (
        f"resumed from {run / 'latest'} at epoch 2, step {state['step_in_epoch']} of the epoch "
        f"({state['global_step']} optimiser steps done before)"
    ) in _output(res)
    out = json.loads((run / "result.json").read_text())
    assert [h["epoch"] for h in out["history"]] == [0, 1, 2] and out["resumed_from"]["epoch"] == 2


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--method", "bm25"], "--method"),
        (["--method", "maw", "--router", "nope"], "--router"),
        (["--warmup-ratio", "2"], "--warmup-ratio"),
        (["--method", "maw", "--depth-dim", "3"], "--depth-dim: D=3 must divide the head size d_h=8"),
        (["--method", "maw", "--maw-layers", "9"], "--maw-layers: layer(s) [9] out of range"),
        (["--finetune-layers", "0"], "--finetune-layers"),
        (["--method", "lora", "--lora-layers", "3"], "--lora-layers"),
        (["--num-layers", "5"], "--num-layers"),
        (["--device", "tpu"], "--device"),
    ],
)
def test_bad_flags_are_named_and_nothing_is_written(tiny_data_dir, tiny_model_dir, tmp_path, extra, message):
    run = tmp_path / "x"
    res = runner.invoke(app, _args(tiny_data_dir, tiny_model_dir, run, *extra))
    assert res.exit_code == 2, res.output
    assert message in _output(res) and "Traceback" not in res.output
    assert not run.exists()  # the plan is resolved before anything is written
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("method", ["maw", "lora", "finetune"])
def test_evaluate_a_trained_run(tiny_data_dir, tiny_model_dir, tmp_path, method):
    import numpy as np

    from maw.data import load_beir, make_splits
    from maw.evaluation.metrics import evaluate_run
    from maw.retrieval.dense import DenseRetriever
    from maw.training.methods import load_trained_encoder

    run = tmp_path / method
    res = runner.invoke(app, _args(tiny_data_dir, tiny_model_dir, run, method=method))
    assert res.exit_code == 0, res.output
    trained = json.loads((run / "result.json").read_text())["plan"]
    out, trec = tmp_path / "eval.json", tmp_path / "run.trec"
    ev = runner.invoke(
        app,
        ["evaluate", "--dataset", str(tiny_data_dir), "--model", str(run), "--out", str(out)]
        + ["--save-run", str(trec), "--top-k", "20", "--quiet"],
    )
    assert ev.exit_code == 0, ev.output
    record = json.loads(out.read_text())
    config = record["config"]
    # the result records the training plan of the checkpoint it evaluated
    assert config["method"] == method and config["checkpoint"] == str(run / "best")
    assert config["train"] == trained["train"] and config["layers"] == trained["layers"]
    assert config["maw"] == trained["maw"] and (config["maw"] is not None) == (method == "maw")
    assert config["model"]["query_max_length"] == 16 and config["model"]["doc_max_length"] == 48
    assert record["dataset"]["split"] == "test" and record["retriever"]["model"] == str(run / "best")
    lines = trec.read_text().splitlines()
    assert lines and len({line.split()[0] for line in lines}) == record["dataset"]["num_evaluated_queries"]
    # the numbers are those of the trained weights (not of the base model)
    encoder, plan, _ = load_trained_encoder(run)
    ds = load_beir(tiny_data_dir)
    test = make_splits(ds, plan.data).test
    retriever = DenseRetriever(encoder, 16, 48, cache_dir=None, device="cpu", latency_queries=0)
    ours = evaluate_run(test, retriever.retrieve({q: ds.queries[q] for q in test}, ds.corpus, k=20))
    assert record["metrics"]["nDCG@10"] == pytest.approx(ours.aggregate["nDCG@10"], abs=1e-6)
    assert np.isfinite(record["metrics"]["nDCG@10"])
    # a trained checkpoint sets the method: another --method is refused
    bad = runner.invoke(
        app, ["evaluate", "--dataset", str(tiny_data_dir), "--model", str(run / "best"), "--method", "bm25"]
    )
    assert bad.exit_code == 2 and "--method bm25" in _output(bad)


def test_evaluate_method_defaults(tiny_data_dir, tiny_model_dir, tmp_path):
    """--method: bm25 without --model, zeroshot with a plain Hugging Face model folder."""
    for extra, method in (([], "bm25"), (["--model", str(tiny_model_dir), "--no-cache"], "zeroshot")):
        out = tmp_path / f"{method}.json"
        res = runner.invoke(
            app, ["evaluate", "--dataset", str(tiny_data_dir), "--out", str(out), "--quiet", *extra]
        )
        assert res.exit_code == 0, res.output
        config = json.loads(out.read_text())["config"]
        assert config["method"] == method and config["train"] is None and "checkpoint" not in config
    # the tiny BERT has no sentence-transformers configuration: its position limit (128) is the max
    assert config["model"]["query_max_length"] == config["model"]["doc_max_length"] == 128
