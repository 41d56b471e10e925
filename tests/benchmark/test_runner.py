"""The runner in-process on a tiny BEIR folder: cells, seed reuse, skip on rerun, failures, config."""

from __future__ import annotations

import json
import os

import pytest

from maw.benchmark import runner as runner_mod
from maw.benchmark.cells import cell_path, load_cells, read_cell
from maw.benchmark.presets import QUICK_PRESET, benchmark_config
from maw.benchmark.runner import run_benchmark
from maw.benchmark.tracking import make_tracker
from maw.config import ConfigError, resolve_config, to_dict


def make_cfg(tmp_path, datasets, methods, model=None, seeds=(1, 2), **train):
    """The config of a small run; nested overrides as ``maw benchmark`` builds them from its flags."""
    model_options = {"query_max_length": 16, "doc_max_length": 32}
    if model is not None:
        model_options["model"] = str(model)
    return benchmark_config(
        {
            "datasets": ",".join(map(str, datasets)),
            "methods": ",".join(methods),
            "seeds": ",".join(map(str, seeds)),
            "out": str(tmp_path / "runs"),
            "run_name": "r",
            "model": model_options,
            "eval": {"embedding_cache_dir": str(tmp_path / "emb-cache")},  # never the user's ~/.cache
            "runtime": {"progress": False},
            "train": train,
        }
    )


def test_benchmark_config_layers(tmp_path):
    cfg = benchmark_config({})
    assert (
        cfg.datasets == ("demo",)
        and cfg.methods == ("bm25", "zeroshot", "lora", "finetune", "maw")
        and not cfg.quick
    )
    # the benchmark's one default that differs from the library's (see maw.benchmark.presets)
    assert cfg.train.prefix_cache_dtype == "float32"
    assert resolve_config({}).train.prefix_cache_dtype == "float16"
    quick = benchmark_config({"quick": True})
    assert quick.quick and quick.train.num_epochs == QUICK_PRESET["train"]["num_epochs"]
    assert quick.data.train_samples == 200 and quick.data.test_samples is None
    (tmp_path / "t.toml").write_text("[train]\nbatch_size = 16\nnum_epochs = 3\n")
    toml = tmp_path / "b.toml"
    toml.write_text(
        'quick = true\nseeds = "1, 2"\n[train]\nnum_epochs = 2\nbatch_size = 16\n[model]\ndoc_max_length = 200\n'
    )
    cfg = benchmark_config({"train": {"batch_size": 8}}, config_file=toml)
    # TOML beats the preset, flags beat the TOML, the preset fills the rest
    assert (cfg.train.num_epochs, cfg.train.batch_size, cfg.model.doc_max_length) == (2, 8, 200)
    assert cfg.data.val_samples == 50 and cfg.seeds == (1, 2) and cfg.quick
    # a resumed run's saved config is the base; flags still win
    base = json.loads(json.dumps(to_dict(cfg)))
    again = benchmark_config({"train": {"num_epochs": 5}}, base=base)
    assert again.train.num_epochs == 5 and again.train.batch_size == 8 and again.model.doc_max_length == 200
    # maw train / evaluate: the same layers without the benchmark's presets, which they refuse
    plain = resolve_config({"train": {"batch_size": 8}}, toml.with_name("t.toml"))
    assert plain.train.batch_size == 8 and plain.train.num_epochs == 3 and plain.data.train_samples is None
    with pytest.raises(ConfigError, match=r"b.toml: quick: presets of `maw benchmark` only"):
        resolve_config({}, toml)
    with pytest.raises(ConfigError, match=r"options: preset: presets of"):
        resolve_config({"preset": "smoke"})


def test_config_errors(tmp_path):
    with pytest.raises(ConfigError, match="--seeds"):
        benchmark_config({"seeds": "1,x"})
    with pytest.raises(ConfigError, match="--methods: unknown method"):
        benchmark_config({"methods": "bm25,colbert"})
    bad = tmp_path / "bad.toml"
    bad.write_text("[train]\nnum_epoch = 3\n")
    with pytest.raises(ConfigError, match=r"bad.toml.*num_epoch"):
        benchmark_config({}, config_file=bad)
    with pytest.raises(ConfigError, match="--config: file not found"):
        benchmark_config({}, config_file=tmp_path / "nope.toml")
    with pytest.raises(ConfigError, match="same results folder"):
        run_benchmark(make_cfg(tmp_path, [tmp_path / "a" / "x", tmp_path / "b" / "x"], ["bm25"]))


def test_tracker_missing_package_is_a_clear_error(tmp_path):
    for kind, module in (("tensorboard", "tensorboard"), ("mlflow", "mlflow")):
        try:
            __import__(module)
        except ImportError:
            with pytest.raises(
                ConfigError, match=f"--tracker {kind}: the '{module}' package is not installed"
            ):
                make_tracker(kind, tmp_path)
    with pytest.raises(ConfigError, match="--tracker: unknown tracker"):
        make_tracker("wandb", tmp_path)


def test_cells_reuse_skip_and_config_guard(tmp_path, tiny_beir, tiny_model):
    cfg = make_cfg(tmp_path, [tiny_beir], ["bm25", "zeroshot"], model=tiny_model)
    out = run_benchmark(cfg)
    assert out.exit_code == 0 and not out.failed
    assert out.ran == [("tinyset", "bm25", 1), ("tinyset", "zeroshot", 1)]
    assert out.skipped == [("tinyset", "bm25", 2), ("tinyset", "zeroshot", 2)]  # seed-independent: reused
    run = out.folder
    c1, c2 = (
        read_cell(cell_path(run, "tinyset", "zeroshot", 1)),
        read_cell(cell_path(run, "tinyset", "zeroshot", 2)),
    )
    assert c2["reused_from_seed"] == 1 and c1["reused_from_seed"] is None and c2["seed_independent"]
    assert c1["metrics"] == c2["metrics"] and c1["metrics"]["nDCG@10"] is not None
    assert c1["params"]["trainable"] == 0 and c1["params"]["total"] > 0
    assert set(c1["per_query"]["nDCG@10"]) == {f"q{i}" for i in range(0, 36, 4)}
    for c in (c1, read_cell(cell_path(run, "tinyset", "bm25", 1))):
        assert all(
            c["runtimes"][k] is not None
            for k in ("encode_s", "search_s", "query_latency_ms", "qps", "index_bytes")
        )
    assert c1["dataset_info"]["counts"]["test_queries"] == 9 and c1["dataset_info"]["fingerprint"]
    for name in (
        "results.json",
        "results.csv",
        "summary.txt",
        "REPORT.md",
        "results/tinyset.json",
        "config.json",
        "environment.json",
    ):
        assert (run / name).is_file(), name
    assert json.loads((run / "config.json").read_text())["methods"] == ["bm25", "zeroshot"]

    mtimes = {p: p.stat().st_mtime_ns for p in (run / "cells").rglob("*.json")}
    again = run_benchmark(make_cfg(tmp_path, [tiny_beir], ["bm25", "zeroshot"], model=tiny_model))
    assert again.ran == [] and len(again.skipped) == 4 and again.exit_code == 0
    assert mtimes == {p: p.stat().st_mtime_ns for p in (run / "cells").rglob("*.json")}

    # an extra seed extends the run; a result-changing option is refused with the differences
    more = run_benchmark(make_cfg(tmp_path, [tiny_beir], ["bm25"], model=tiny_model, seeds=(1, 2, 3)))
    assert more.skipped == [("tinyset", "bm25", 1), ("tinyset", "bm25", 2), ("tinyset", "bm25", 3)]
    with pytest.raises(ConfigError, match=r"different configuration \(train.num_epochs: saved 3, now 1\)"):
        run_benchmark(make_cfg(tmp_path, [tiny_beir], ["bm25"], model=tiny_model, num_epochs=1))


def test_failures_are_recorded_and_the_run_goes_on(tmp_path, tiny_beir, monkeypatch):
    missing = tmp_path / "no-such-dataset"
    cfg = make_cfg(tmp_path, [missing, tiny_beir], ["bm25"], seeds=(1, 2))
    calls = []
    real = runner_mod._bm25_cell

    def flaky(cell, ds, cfg, **kw):
        calls.append(ds.key)
        real(cell, ds, cfg, **kw)
        cell["metrics"]["nDCG@10"] = float("nan")  # a non-finite figure is stored as null, not crash

    monkeypatch.setattr(runner_mod, "_bm25_cell", flaky)
    out = run_benchmark(cfg)
    assert out.exit_code == 1
    assert [f[:3] for f in out.failed] == [("no-such-dataset", "bm25", 1), ("no-such-dataset", "bm25", 2)]
    assert "DataError" in out.failed[0][3] and "no-such-dataset" in out.failed[0][3]
    assert calls == ["tinyset"]  # the failed dataset was tried once; the good one ran once
    cells = {(c["dataset"], c["seed"]): c for c in load_cells(out.folder)}
    bad = cells[("no-such-dataset", 1)]
    assert bad["status"] == "failed" and "Traceback" in bad["traceback"]
    assert cells[("tinyset", 1)]["status"] == "ok" and cells[("tinyset", 1)]["metrics"]["nDCG@10"] is None
    assert "FAILED bm25 seed 1: DataError" in (out.folder / "summary.txt").read_text()
    # failed cells are retried on the next invocation; finished ones are not
    monkeypatch.setattr(runner_mod, "_bm25_cell", real)
    again = run_benchmark(make_cfg(tmp_path, [missing, tiny_beir], ["bm25"], seeds=(1, 2)))
    assert again.ran == [] and len(again.failed) == 2 and ("tinyset", "bm25", 1) in again.skipped


def test_interrupt_keeps_finished_cells_and_rebuilds_reports(tmp_path, tiny_beir, monkeypatch):
    def interrupted(*a, **k):
        raise KeyboardInterrupt

    monkeypatch.setattr(runner_mod, "_zeroshot_cell", interrupted)
    out = run_benchmark(make_cfg(tmp_path, [tiny_beir], ["bm25", "zeroshot"], seeds=(1,)))
    assert out.interrupted and out.exit_code == 130 and out.ran == [("tinyset", "bm25", 1)]
    assert [p.name for p in (out.folder / "cells" / "tinyset").iterdir()] == ["bm25-seed1.json"]
    assert "bm25" in (out.folder / "summary.txt").read_text()
    assert not [p for p in out.folder.rglob("*") if p.name.endswith(".tmp")]
    assert os.path.exists(out.folder / "REPORT.md")


def test_tensorboard_tracker_writes_events(tmp_path):
    pytest.importorskip("tensorboard", reason="optional: pip install tensorboard")
    from bench_testkit import synthetic_cell
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    tracker = make_tracker("tensorboard", tmp_path)
    cell = synthetic_cell("d", "maw", 7, [0.2, 0.4])
    tracker.log_cell(cell)
    tracker.close()
    folder = tmp_path / "tensorboard" / "d" / "maw-seed7"
    acc = EventAccumulator(str(folder))
    acc.Reload()
    tags = set(acc.Tags()["scalars"])
    assert {"test/nDCG@10", "runtime/query_latency_ms", "history/val_nDCG@10", "history/train_loss"} <= tags
    assert [e.value for e in acc.Scalars("history/val_nDCG@10")] == pytest.approx([0.5, 0.55, 0.6])
    assert acc.Scalars("test/nDCG@10")[0].value == pytest.approx(0.3)


def test_prefix_cached_test_embeddings_equal_full_encode(tmp_path, tiny_beir, tiny_model):
    import numpy as np

    from maw.data import load_beir
    from maw.models.encoder import Encoder
    from maw.retrieval.dense import DenseRetriever
    from maw.training.prefix_cache import PrefixCache, PrefixCachedRetriever

    ds = load_beir(tiny_beir)
    enc = Encoder.from_pretrained(str(tiny_model)).eval()
    cache = PrefixCache.open_or_build(enc, ds.doc_texts(), 32, 1, tmp_path / "pc", "float32", 8, "docs")
    # stores kept in float32 (float16 by default), shards of 4 documents: both go through the store
    kw = dict(
        query_max_length=16, doc_max_length=32, batch_size=3, device="cpu", latency_queries=2,
        embedding_dtype="float32", shard_size=4,
    )  # fmt: skip
    retriever = PrefixCachedRetriever(enc, cache.folder, 1, throughput_sample=5, **kw)
    ids, cached = retriever.encode_corpus(ds.corpus)
    assert retriever.timings["docs_per_second_sample"] == min(5, len(ds.corpus))
    assert retriever.timings["docs_per_second"] > 0
    assert retriever.timings["doc_shards"] == -(-len(ds.corpus) // 4) > 1
    full_retriever = DenseRetriever(enc, cache_dir=None, **kw)
    ids_full, full = full_retriever.encode_corpus(ds.corpus)
    assert ids == ids_full and np.allclose(cached, full, atol=1e-5)
    # a cache made for other texts (or other weights) is refused, never silently used
    other = {d: doc for d, doc in list(ds.corpus.items())[:-1]}
    with pytest.raises(RuntimeError, match="does not match"):
        PrefixCachedRetriever(enc, cache.folder, 1, 5, **kw).encode_corpus(other)


def test_prefix_cached_test_embeddings_in_cpu_bf16(tmp_path, tiny_beir, tiny_model):
    """``--precision bf16`` on a CPU: the prefix cache is built and the suffix layers run on cast
    bfloat16 weights; the corpus embeddings match a full bf16 encode to bfloat16 rounding, the
    cache is keyed apart from a float32 one, and the float32 weights come back unchanged."""
    import numpy as np
    import torch

    from maw.data import load_beir
    from maw.models.encoder import Encoder
    from maw.retrieval.dense import DenseRetriever
    from maw.training.prefix_cache import PrefixCache, PrefixCachedRetriever

    ds = load_beir(tiny_beir)
    enc = Encoder.from_pretrained(str(tiny_model)).eval()
    before = {k: v.clone() for k, v in enc.state_dict().items()}
    texts = ds.doc_texts()
    plan = PrefixCache.plan(enc, texts, 32, 1, tmp_path / "pc", "float32", "docs", amp="bfloat16")
    assert plan.key != PrefixCache.plan(enc, texts, 32, 1, tmp_path / "pc", "float32", "docs").key
    cache = PrefixCache.build(plan, enc, texts, 8, False)
    kw = dict(
        query_max_length=16, doc_max_length=32, batch_size=3, device="cpu", latency_queries=2,
        embedding_dtype="float32", shard_size=4, amp="bfloat16",
    )  # fmt: skip
    ids, cached = PrefixCachedRetriever(enc, cache.folder, 1, throughput_sample=5, **kw).encode_corpus(ds.corpus)
    ids_full, full = DenseRetriever(enc, cache_dir=None, **kw).encode_corpus(ds.corpus)
    _, plain = DenseRetriever(enc, cache_dir=None, **{**kw, "amp": "float32"}).encode_corpus(ds.corpus)
    assert ids == ids_full and np.abs(cached - full).max() < 0.03 and np.abs(full - plain).max() < 0.05
    assert not np.array_equal(full, plain)  # bf16 really ran
    after = enc.state_dict()
    assert all(after[k].dtype == torch.float32 and torch.equal(after[k], v) for k, v in before.items())


def test_shared_prefix_layer(tmp_path):
    # the default backbone (all-MiniLM-L6-v2) has 6 layers; k is 0-indexed
    cfg = benchmark_config({"methods": "bm25,zeroshot,lora,finetune,maw"})
    assert runner_mod.shared_prefix_layer(cfg, "demo") == 5
    cfg = benchmark_config({"methods": "zeroshot,finetune,maw", "maw": {"maw_layers": "5,6"}})
    assert runner_mod.shared_prefix_layer(cfg, "demo") == 4
    assert runner_mod.shared_prefix_layer(benchmark_config({"methods": "zeroshot,full"}), "demo") is None
    assert runner_mod.shared_prefix_layer(benchmark_config({"methods": "bm25,zeroshot"}), "demo") is None
    off = benchmark_config({"methods": "zeroshot,finetune", "train": {"prefix_cache": False}})
    assert runner_mod.shared_prefix_layer(off, "demo") is None


def test_cell_plans(tmp_path, tiny_beir, tiny_model):
    cfg = make_cfg(tmp_path, [tiny_beir], ["bm25", "maw"], model=tiny_model, seeds=(3, 4), num_epochs=1)
    plan = runner_mod.cell_plan(cfg, str(tiny_beir), "maw", 4)
    assert plan.method == "maw" and plan.train.seed == 4 and plan.data.dataset == str(tiny_beir)
    assert plan.train.num_epochs == 1 and plan.layers.maw == (2,) and plan.model.doc_max_length == 32
    assert plan.data.split_seed == cfg.data.split_seed  # the split seed is the same for every cell
    bm25 = runner_mod.cell_plan(cfg, str(tiny_beir), "bm25", 4)
    assert bm25.train is None and bm25.maw is None and bm25.layers is None


def test_zeroshot_cell_keeps_the_prefix_cache_cap(tmp_path, tiny_beir, tiny_model):
    cfg = make_cfg(
        tmp_path, [tiny_beir], ["zeroshot", "finetune"], model=tiny_model, seeds=(1,),
        num_epochs=1, prefix_cache_max_gb=1e-9,
    )  # fmt: skip
    assert (
        runner_mod.shared_prefix_layer(cfg, "tinyset") == 1
    )  # a cache would be shared, but it is over the cap
    out = run_benchmark(cfg)
    assert out.exit_code == 0
    run = tmp_path / "runs" / "r"
    zs = read_cell(cell_path(run, "tinyset", "zeroshot", 1))
    assert "above the" in zs["timings"]["prefix_cache_skipped"] and zs["metrics"]["nDCG@10"] is not None
    ft = read_cell(cell_path(run, "tinyset", "finetune", 1))
    assert (
        ft["train_setup"]["prefix_cache"] is False
        and "above the" in ft["train_setup"]["prefix_cache_skipped"]
    )
    assert not list((run / "prefix_cache").rglob("meta.json"))  # no cache was built by either cell


def test_embedding_stores_live_in_the_run_folder(tmp_path, tiny_beir, tiny_model):
    import dataclasses

    cfg = make_cfg(
        tmp_path, [tiny_beir], ["zeroshot", "finetune"], model=tiny_model, seeds=(1,), num_epochs=1
    )
    cfg = dataclasses.replace(cfg, eval=dataclasses.replace(cfg.eval, embedding_cache_dir=None))
    assert run_benchmark(cfg).exit_code == 0
    run = tmp_path / "runs" / "r"
    stores = sorted(p.parent for p in (run / "embeddings" / "tinyset").rglob("meta.json"))
    zs = read_cell(cell_path(run, "tinyset", "zeroshot", 1))
    ft = read_cell(cell_path(run, "tinyset", "finetune", 1))
    # the zero-shot store (pretrained weights over the prefix cache) is kept; the trained cell's is gone
    # paths in a run folder's cells are relative to it (results name no path of the machine)
    assert [str(p.relative_to(run)) for p in stores] == [zs["timings"]["embedding_store"]]
    assert ft["timings"]["embedding_store"] is None and ft["timings"]["doc_shards"] >= 1
    cell_path(run, "tinyset", "zeroshot", 1).unlink()  # run the zero-shot cell again: its store is reused
    assert run_benchmark(cfg).exit_code == 0
    again = read_cell(cell_path(run, "tinyset", "zeroshot", 1))
    assert again["timings"]["doc_cache_hit"] and again["metrics"] == zs["metrics"]
