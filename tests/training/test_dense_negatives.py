"""Hard negatives mined by a dense model (issue 23, item 2): on the built-in demo collection with a
tiny model, the lists never hold a positive, keep to the rank range and the margin, are mined once
per settings and read back without encoding, and ``maw train --negatives dense`` runs."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import numpy as np
import pytest
from _tiny import run_two_ranks, tiny_plan
from typer.testing import CliRunner

from maw.cli import app
from maw.config import DENSE_NEGATIVE_MARGIN, ConfigError, TrainConfig
from maw.data import load_dataset, make_splits
from maw.models.encoder import Encoder
from maw.sweep.grid import non_default
from maw.training.negatives import (
    DenseMining,
    cached_dense_negatives,
    mine_dense_negatives,
    relevant_documents,
    training_negatives,
)

DEPTH, SKIP = 12, 3


@pytest.fixture(scope="module")
def demo():
    """The built-in demo collection (390 documents)."""
    return load_dataset("demo")


def _plan(model_dir, tmp_path, **overrides):
    return tiny_plan(
        "finetune",
        model_dir,
        dataset="demo",
        negatives="dense",
        hard_negative_depth=DEPTH,
        hard_negative_skip=SKIP,
        embedding_cache_dir=str(tmp_path / "embeddings"),
        **overrides,
    )


def _splits(dataset, plan):
    return make_splits(dataset, plan.data)


def _reference(dataset, train_qrels, retriever):
    """Every train query's full ranking (FAISS exact search over the whole corpus, as the miner
    searches) and the lowest score of its train positives."""
    queries = {q: dataset.queries[q] for q in sorted(train_qrels)}
    run = retriever.retrieve(queries, dataset.corpus, k=len(dataset.corpus))
    floor = {q: min(run[q][d] for d, g in train_qrels[q].items() if g > 0 and d in run[q]) for q in queries}
    return run, floor


def test_dense_negatives_skip_positives_keep_the_rank_range_and_the_margin(demo, tiny_model_dir, tmp_path):
    plan = _plan(tiny_model_dir, tmp_path)
    splits = _splits(demo, plan)
    train = splits.train
    retriever = DenseMining.from_plan(plan, "cpu").retriever()
    run, floor = _reference(demo, train, retriever)
    relevant = relevant_documents(demo, train)
    window = {}
    for q, scores in run.items():
        ranked = [
            d for d, _ in sorted(scores.items(), key=lambda kv: (-kv[1], kv[0])) if d not in relevant[q]
        ]
        window[q] = ranked[SKIP:DEPTH]

    # no margin: exactly ranks [SKIP, DEPTH) of the ranking without the judged-relevant documents
    plain = mine_dense_negatives(demo, train, DEPTH, retriever, skip=SKIP)
    assert sorted(plain) == sorted(train)
    assert plain == window
    for q, cands in plain.items():
        assert not set(cands) & relevant[q]  # never a positive (of any split)
        assert not set(cands) & {d for d, g in train[q].items() if g > 0}

    # a margin that keeps some candidates and drops others (the tiny model's scores are close)
    gaps = sorted(floor[q] - run[q][d] for q in window for d in window[q])
    margin = float(np.quantile(gaps, 0.5))
    stats: dict = {}
    kept = mine_dense_negatives(demo, train, DEPTH, retriever, skip=SKIP, margin=margin, stats=stats)
    n_kept = sum(len(v) for v in kept.values())
    assert 0 < n_kept < sum(len(v) for v in window.values())
    assert stats["dropped_by_margin"] == sum(len(v) for v in window.values()) - n_kept
    for q, cands in kept.items():
        assert not set(cands) & relevant[q]
        assert cands == [d for d in window[q] if d in set(cands)]  # a subsequence of the range, in rank order
        threshold = floor[q] - margin
        for d in window[q]:
            if d in cands:
                assert run[q][d] <= threshold + 1e-5
            else:
                assert run[q][d] > threshold - 1e-5


def test_dense_negatives_are_mined_once_and_read_back_without_encoding(
    demo, tiny_model_dir, tmp_path, monkeypatch
):
    encoded = []
    real_encode = Encoder.encode

    def counting_encode(self, texts, *args, **kwargs):
        encoded.append(len(texts))
        return real_encode(self, texts, *args, **kwargs)

    monkeypatch.setattr(Encoder, "encode", counting_encode)
    plan = _plan(tiny_model_dir, tmp_path, hard_negative_margin=-1.0)
    splits = _splits(demo, plan)
    cache = tmp_path / "shared"
    first, info = training_negatives(plan, demo, splits.train, cache)
    assert info["miner"] == "dense" and not info["reused"] and "dense-negatives-" in info["path"]
    assert encoded and info["mined"]["seconds"] > 0 and info["mined"]["queries"] == len(splits.train)
    assert list(cache.glob("dense-negatives-*.json")) == [cache / info["path"].rsplit("/", 1)[1]]
    n_encoded = len(encoded)

    # another cell / seed / learning rate: the same file, read, nothing encoded
    other = dataclasses.replace(plan, train=dataclasses.replace(plan.train, seed=7, learning_rate=5e-4))
    second, again = training_negatives(other, demo, splits.train, cache)
    assert second == first and again["reused"] and again["path"] == info["path"]
    assert len(encoded) == n_encoded
    assert again["mined"] == info["mined"]  # the mining's cost is kept with the lists

    # the settings that change the lists are in the key: each is another file
    paths = {info["path"]}
    for change in ({"hard_negative_margin": -0.5}, {"hard_negative_skip": 1}, {"hard_negative_depth": 8}):
        changed = dataclasses.replace(plan, train=dataclasses.replace(plan.train, **change))
        lists, other_info = training_negatives(changed, demo, splits.train, cache)
        assert not other_info["reused"] and other_info["path"] not in paths
        paths.add(other_info["path"])
    longer = dataclasses.replace(plan, model=dataclasses.replace(plan.model, query_max_length=12))
    _, longer_info = training_negatives(longer, demo, splits.train, cache)
    assert longer_info["path"] not in paths
    # BM25 lists live in their own files
    bm25 = dataclasses.replace(plan.train, negatives="bm25", hard_negative_margin=None)
    _, bm25_info = training_negatives(dataclasses.replace(plan, train=bm25), demo, splits.train, cache)
    assert bm25_info["miner"] == "bm25" and "bm25-negatives-" in bm25_info["path"]


def test_without_a_cache_folder_dense_negatives_are_mined_each_time(demo, tiny_model_dir, tmp_path):
    plan = _plan(tiny_model_dir, tmp_path, hard_negative_margin=-1.0)
    splits = _splits(demo, plan)
    mining = DenseMining.from_plan(plan, "cpu")
    a, info = cached_dense_negatives(demo, splits.train, DEPTH, mining, None, skip=SKIP, margin=-1.0)
    assert info["path"] is None and not info["reused"]
    assert all(len(v) == DEPTH - SKIP for v in a.values())  # margin -1 on cosines keeps everything


def test_negative_options_defaults_and_errors():
    default = TrainConfig()
    assert default.negatives == "bm25" and default.hard_negative_margin is None
    assert non_default(default) == {}  # existing cell ids are unchanged
    dense = TrainConfig(negatives="dense")
    assert dense.hard_negative_margin == DENSE_NEGATIVE_MARGIN and dense.negatives_model is None
    assert non_default(dense) == {"negatives": "dense", "hard_negative_margin": DENSE_NEGATIVE_MARGIN}
    with pytest.raises(ConfigError, match="--negatives-model: only with --negatives dense"):
        TrainConfig(negatives_model="x")
    with pytest.raises(ConfigError, match="--hard-negative-margin: only with --negatives dense"):
        TrainConfig(hard_negative_margin=0.1)
    with pytest.raises(ConfigError, match="--negatives: unknown value"):
        TrainConfig(negatives="splade")
    with pytest.raises(ConfigError, match="--hard-negative-depth"):
        TrainConfig(hard_negatives=2, hard_negative_depth=5, hard_negative_skip=4)
    with pytest.raises(ConfigError, match="--hard-negative-skip"):
        TrainConfig(hard_negative_skip=-1)


def test_negatives_model_can_be_another_model(demo, tiny_model_dir, tiny_model_nodrop, tmp_path):
    plan = _plan(tiny_model_dir, tmp_path, negatives_model=str(tiny_model_nodrop), hard_negative_margin=-1.0)
    mining = DenseMining.from_plan(plan, "cpu")
    assert mining.model == str(tiny_model_nodrop) and mining.num_layers is None and mining.normalize
    own = _plan(tiny_model_dir, tmp_path, hard_negative_margin=-1.0)
    splits = _splits(demo, plan)
    _, a = training_negatives(plan, demo, splits.train, tmp_path / "cache")
    _, b = training_negatives(own, demo, splits.train, tmp_path / "cache")
    assert a["path"] != b["path"]  # another model's fingerprint: another file
    bad = _plan(tiny_model_dir, tmp_path, negatives_model=str(tmp_path / "nowhere"))
    with pytest.raises(ConfigError, match="--negatives-model"):
        training_negatives(bad, demo, splits.train, tmp_path / "cache")


def test_train_command_with_dense_negatives(tiny_model_dir, tmp_path):
    run_dir = tmp_path / "run"
    args = [
        "train",
        "--dataset",
        "demo",
        "--model",
        str(tiny_model_dir),
        "--method",
        "finetune",
        "--negatives",
        "dense",
        "--hard-negative-skip",
        "1",
        "--hard-negative-margin",
        "-1",
        "--num-epochs",
        "1",
        "--batch-size",
        "16",
        "--query-max-length",
        "16",
        "--doc-max-length",
        "48",
        "--embedding-cache-dir",
        str(tmp_path / "embeddings"),
        "--run-dir",
        str(run_dir),
        "--num-threads",
        "1",
        "--quiet",
    ]
    res = CliRunner(env={"COLUMNS": "1000"}).invoke(app, args)
    assert res.exit_code == 0, res.output
    out = json.loads((run_dir / "result.json").read_text())
    assert [h["epoch"] for h in out["history"]] == [0, 1]
    assert out["plan"]["train"]["negatives"] == "dense"
    assert out["plan"]["train"]["hard_negative_skip"] == 1
    negatives = out["setup"]["hard_negatives"]
    assert negatives["miner"] == "dense" and "dense-negatives-" in negatives["path"]
    assert negatives["mined"]["candidates_mean"] == 29.0  # ranks [1, 30), nothing dropped


# ---------------------------------------------------------------------------------------------- two ranks
def _prepare_worker(rank: int, world: int, store: str, cache_dir: str, out: str) -> None:
    import torch.distributed as dist

    from maw.training.distributed import DistributedContext
    from maw.training.negatives import cached_lists

    dist.init_process_group("gloo", init_method=f"file://{store}", rank=rank, world_size=world)
    ctx = DistributedContext(rank=rank, world_size=world)

    def prepare():  # the collective part (dense mining: every rank encodes its corpus shards)
        Path(out, f"prepared-{rank}").write_text("1")
        dist.barrier()

    def compute():
        Path(out, f"computed-{rank}").write_text("1")
        return {"q1": ["d2"]}

    lists, info = cached_lists("dense-negatives", ["k"], compute, cache_dir, ctx, prepare=prepare)
    Path(out, f"rank-{rank}.json").write_text(json.dumps({"lists": lists, "reused": info["reused"]}))
    dist.destroy_process_group()


def _two_ranks(tmp_path, name: str):
    out = tmp_path / name
    out.mkdir()
    store, cache = str(tmp_path / f"{name}.store"), str(tmp_path / "cache")
    got = run_two_ranks(_prepare_worker, lambda r: (r, 2, store, cache, str(out)), out)
    return got, sorted(p.name for p in out.iterdir() if not p.name.startswith("rank-"))


def test_collective_mining_prepares_on_every_rank_and_computes_on_rank0(tmp_path):
    got, ran = _two_ranks(tmp_path, "first")
    assert ran == ["computed-0", "prepared-0", "prepared-1"]
    assert got[0] == got[1] == {"lists": {"q1": ["d2"]}, "reused": False}
    again, ran = _two_ranks(tmp_path, "second")  # the file exists: nobody prepares or computes
    assert ran == [] and again[0] == again[1] == {"lists": {"q1": ["d2"]}, "reused": True}
