"""``--router-init RUN``: the warm start of a hard router's policy from a trained run.

It happens once, when a fresh training run starts (``maw.training.methods.warm_start``, called by the
trainer before its epoch-0 validation); building a model from a plan never does it, so a trained
checkpoint loads, resumes, evaluates and exports from its own files after the source run is gone.
"""

from __future__ import annotations

import json
import shutil

import pytest
import torch
from typer.testing import CliRunner

from maw.cli import app
from maw.config import ConfigError
from maw.models.maw_encoder import maw_modules
from maw.training.checkpoint import TrainingState, checkpoint_config, save_checkpoint
from maw.training.methods import build_model, load_trained_encoder, warm_start

runner = CliRunner(env={"COLUMNS": "1000"})


def _soft_source(tiny, folder, tau: float = 1.0):
    """A ``maw train`` soft run folder whose router is random (so a warm start is visible), written
    as the trainer writes its best checkpoint."""
    plan = tiny.plan("maw", router="soft", tau=tau)
    encoder = build_model(plan)
    torch.manual_seed(3)
    with torch.no_grad():
        for block in maw_modules(encoder):
            for p in block.router.parameters():
                p.normal_()
    save_checkpoint(
        folder / "best", encoder, checkpoint_config(plan, tiny.dataset, tiny.splits), TrainingState()
    )
    return maw_modules(encoder)[0].router


def test_warm_start_copies_the_soft_policy_and_keeps_the_gate_closed(tiny, tmp_path):
    src = _soft_source(tiny, tmp_path / "s", tau=2.0)
    plan = tiny.plan("maw", router="grpo", router_init=str(tmp_path / "s"))
    encoder = build_model(plan)
    block = maw_modules(encoder)[0]
    assert float(block.router.weight.detach().abs().sum()) == 0.0, "building never warm-starts"
    assert warm_start(encoder, plan) == [block.layer_number]
    torch.testing.assert_close(block.router.weight, src.weight / 2.0)  # soft z / tau -> hard z
    torch.testing.assert_close(block.router.bias, src.bias / 2.0)
    assert float(block.router.gate.detach().abs().sum()) == 0.0 and block.router.gate.requires_grad
    torch.testing.assert_close(block.reference.weight, block.router.weight)  # reference = the warm policy
    assert warm_start(encoder, tiny.plan("maw", router="grpo")) == []  # no --router-init: nothing
    other = tiny.plan("maw", router="grpo", depth_dim=2, router_init=str(tmp_path / "s"))
    with pytest.raises(ConfigError, match="--router-init.*--depth-dim"):
        warm_start(build_model(other), other)
    nowhere = tiny.plan("maw", router="grpo", router_init=str(tmp_path / "nowhere"))
    with pytest.raises(ConfigError, match="--router-init"):
        warm_start(encoder, nowhere)


def test_a_router_init_run_evaluates_exports_and_resumes_after_its_source_is_deleted(
    tiny, tiny_data_dir, tiny_model_dir, tmp_path
):
    source, run = tmp_path / "soft-run", tmp_path / "grpo-run"
    src = _soft_source(tiny, source)
    train = [
        "train", "--dataset", str(tiny_data_dir), "--model", str(tiny_model_dir), "--run-dir", str(run),
        "--method", "maw", "--router", "grpo", "--router-init", str(source), "--group-size", "2",
        "--granularity", "query", "--depth-dim", "4", "--num-epochs", "1", "--batch-size", "8",
        "--query-max-length", "16", "--doc-max-length", "48", "--hard-negative-depth", "5",
        "--num-threads", "1", "--quiet",
    ]  # fmt: skip
    res = runner.invoke(app, train)
    assert res.exit_code == 0, res.output
    # the fresh run started from the source's policy: its trained router is still close to it (a few
    # steps at --policy-lr 1e-3 from weights of size ~1), where a cold start is 0
    trained = maw_modules(load_trained_encoder(run)[0])[0].router
    torch.testing.assert_close(trained.weight, src.weight, atol=0.1, rtol=0)
    assert float(src.weight.detach().abs().mean()) > 0.5

    shutil.rmtree(source)  # the source run moved away: nothing below may open it
    encoder, plan, _ = load_trained_encoder(run)
    assert plan.maw.router_init == str(source)  # the record of how it started, never reopened
    torch.testing.assert_close(maw_modules(encoder)[0].router.weight, trained.weight)

    again = runner.invoke(app, train)  # the finished run, rerun: resumes from latest/, no warm start
    assert again.exit_code == 0, again.output
    out = tmp_path / "eval.json"
    ev = runner.invoke(
        app,
        ["evaluate", "--dataset", str(tiny_data_dir), "--model", str(run), "--out", str(out)]
        + ["--top-k", "20", "--num-threads", "1", "--quiet"],
    )
    assert ev.exit_code == 0, ev.output
    assert json.loads(out.read_text())["config"]["maw"]["router_init"] == str(source)
    ex = runner.invoke(app, ["export", str(run), "--to", str(tmp_path / "export"), "--evaluation", str(out)])
    assert ex.exit_code == 0, ex.output
    assert (tmp_path / "export" / "maw_config.json").is_file()
