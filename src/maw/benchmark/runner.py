"""``maw benchmark``: every (dataset, method, seed) cell, resumable, then the reports.

A run lives in one folder ``<out>/<run_name>/`` (``run_name`` defaults to a timestamp)::

    config.json                  the resolved BenchmarkConfig (CLI > --config TOML > --quick > defaults)
    environment.json             library versions, device, threads (maw.utils.io.environment_info)
    cells/<dataset>/<method>-seed<seed>.json   one result per cell, written atomically when it ends
    runs/<dataset>/<method>-seed<seed>.trec    the TREC run file of every bm25 and dense cell (top
                                 ``top_k`` per test query, as ``maw evaluate --save-run``), written
                                 atomically before its cell; the cell names it in ``run_file``
                                 (relative to the run folder)
    checkpoints/<dataset>/<method>-seed<seed>/ the trainer's run_dir (best/, latest/, history.json)
    prefix_cache/<dataset>/      frozen-prefix hidden states shared by the trained methods
    embeddings/<dataset>/        document-embedding stores (sharded; a killed encoding resumes): the
                                 zero-shot one is kept, a trained cell's is removed after its search
    results/, results.json, results.csv, summary.txt, plots/, REPORT.md   (rebuilt from the cells)

Cells:

* ``bm25`` (bm25s) and ``zeroshot`` (the backbone as is) do not depend on the seed: they run once
  and their cell is copied for every other seed with ``reused_from_seed`` recorded.
* ``lora``, ``finetune``, ``maw``, ``full`` train with ``maw.training.trainer.train`` (training seed
  = the cell's seed; the data splits use ``data.split_seed`` and are the same for every seed), then
  the best checkpoint retrieves the test queries from the full corpus.

The cells run through :func:`maw.benchmark.schedule.run_jobs` (claim -> run -> log, shared with
``maw sweep``); what one cell computes is :func:`run_cell`.

Robustness: a cell whose file says ``ok`` is skipped on a rerun of the same command (same ``--out``
and ``--run-name``), failed cells run again, and an interrupted training resumes from its
``latest`` checkpoint. A failing cell (bad data, non-finite loss, out of memory) is written with
status ``failed`` and its error, and the run goes on; the exit code is 1 when any cell of the run
failed. Reports are rebuilt from all cells on disk at the end, also after Ctrl-C.
Rerunning a run folder with a configuration that changes results (other epochs, model, ...) is
refused with the list of differences: use a new ``--run-name``. Runtime-only options (declared in
``maw.config``: which datasets / methods / seeds to run, devices, cache folders, ...) may differ.
Every cell runs the :class:`maw.plan.Plan` of :func:`cell_plan` and stores it in its ``config``.

Many processes, two ways:

* ``torchrun --nproc-per-node N -m maw.cli benchmark --run-name NAME`` (one node or many): every
  cell runs on all N ranks, one cell after the other. Rank 0 claims the cell (its lock file) and
  tells the others; trained cells train with DistributedDataParallel (validation sharded), every
  dense cell encodes the corpus shard by shard across the ranks (``i % N == rank``), rank 0
  searches, scores and writes the cell file, the reports and the logs. BM25 runs on rank 0. A
  cell that fails on any rank stops the run (a collective would otherwise wait for the missing
  rank until the timeout): its error is in the cell file or in torchrun's error summary, and the
  same command resumes, finished cells kept.
* Several independent ``maw benchmark`` processes on one run folder (one per GPU with
  ``CUDA_VISIBLE_DEVICES``, one per node, or a second launch by mistake; also several torchrun
  launches) split the cells between them through the lock file per cell
  (:class:`maw.benchmark.cells.CellLock`): each cell runs once, and no checkpoint is written twice.
  Many small cells keep many GPUs busy this way without any communication.
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import gc
import logging
import os
import shutil
import time
import traceback
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

from maw.benchmark.cells import (
    SEED_INDEPENDENT,
    THROUGHPUT_SAMPLE,
    cell_path,
    dataset_key,
    is_done,
    new_cell,
    read_cell,
    write_cell,
)
from maw.benchmark.report import build_reports
from maw.benchmark.schedule import Job, Outcome, run_jobs
from maw.benchmark.tracking import Tracker, make_tracker
from maw.config import (
    TRAINED_METHODS,
    BenchmarkConfig,
    ConfigError,
    differences,
    from_dict,
    structural,
    to_dict,
)
from maw.evaluation.metrics import PRIMARY_METRICS
from maw.plan import Plan, resolve
from maw.retrieval.dense import DenseRetriever, rank_and_world
from maw.retrieval.index import IndexSpec
from maw.training.distributed import DistributedContext, init_distributed, rank0_first, shutdown
from maw.training.prefix_cache import PrefixCache, PrefixCachedRetriever, check_free_space, over_cap_reason
from maw.utils.io import atomic_path, atomic_write_json, environment_info, read_json
from maw.utils.precision import autocast_dtype, dtype_name, retriever_amp

log = logging.getLogger(__name__)


def default_run_name() -> str:
    return time.strftime("%Y%m%d-%H%M%S")


def run_folder(cfg: BenchmarkConfig) -> Path:
    return Path(cfg.out) / (cfg.run_name or default_run_name())


def _saved_config(path: Path) -> BenchmarkConfig:
    try:
        return from_dict(BenchmarkConfig, read_json(path))
    except ConfigError as exc:
        raise ConfigError(f"{path}: {exc}; use a new --run-name") from None


def check_dataset_keys(datasets: list[str]) -> list[str]:
    keys = [dataset_key(d) for d in datasets]
    dup = sorted({k for k in keys if keys.count(k) > 1})
    if dup:
        raise ConfigError(
            f"--datasets: several datasets map to the same results folder {dup}; rename one folder"
        )
    return keys


class CellDataset:
    """A loaded dataset, its splits and the test queries (loaded on first use)."""

    def __init__(self, name: str, key: str, cfg: BenchmarkConfig):
        self.name, self.key, self.cfg = name, key, cfg
        self.dataset = self.splits = self.queries = None
        self.info: dict[str, Any] = {}
        self.error: str | None = None

    def load(self) -> None:
        from maw.data import load_dataset, make_splits
        from maw.data.subsample import subsample_for_splits
        from maw.data.types import DataError

        data_cfg = dataclasses.replace(self.cfg.data, dataset=self.name)
        self.dataset = load_dataset(self.name, data_cfg.data_dir)
        self.splits = make_splits(self.dataset, data_cfg)
        self.dataset = subsample_for_splits(self.dataset, self.splits, data_cfg)  # size presets
        missing = sorted(q for q in self.splits.test if q not in self.dataset.queries)
        if missing:
            raise DataError(
                f"{self.dataset.source or self.name}: {len(missing)} judged test queries have no text, e.g. {missing[:5]}"
            )
        if not self.splits.test:
            raise DataError(
                f"{self.dataset.source or self.name}: the test split {data_cfg.test_split!r} has no judged query"
            )
        self.queries = {q: self.dataset.queries[q] for q in self.splits.test}
        self.info = {
            "name": self.dataset.name,
            "argument": self.name,
            "source": self.dataset.source,
            "fingerprint": self.dataset.fingerprint,
            "counts": {
                "docs": len(self.dataset.corpus),
                "queries": len(self.dataset.queries),
                "train_queries": len(self.splits.train),
                "val_queries": len(self.splits.val),
                "test_queries": len(self.splits.test),
            },
            "provenance": self.splits.provenance,
            "loader_report": self.dataset.report,
            "corpus_subsample": self.dataset.report.get("corpus_subsample"),
        }


def _device(plan: Plan) -> str:
    """``--device``, else this process's GPU (``cuda:LOCAL_RANK`` under torchrun), else CPU."""
    if plan.runtime.device:
        return plan.runtime.device
    if not torch.cuda.is_available():
        return "cpu"
    local = os.environ.get("LOCAL_RANK")
    return f"cuda:{local}" if local is not None else "cuda"


def cell_plan(cfg: BenchmarkConfig, dataset: str, method: str, seed: int) -> Plan:
    """The plan of one cell: the run's configs with this dataset and (for trained methods) this seed."""
    data = dataclasses.replace(cfg.data, dataset=dataset)
    train = dataclasses.replace(cfg.train, seed=seed)
    return resolve(method, data, cfg.model, cfg.maw, train, cfg.eval, cfg.runtime)


def store_dir(plan: Plan, run_dir: Path, key: str) -> Path:
    """Where a cell's document-embedding store goes: ``--embedding-cache-dir``, else the run folder's
    ``embeddings/<dataset>/``, which every process of the run (all nodes) shares by construction."""
    return Path(plan.eval.embedding_cache_dir or run_dir / "embeddings" / key)


def trainer_dir(run_dir: str | Path, dataset: str, method: str, seed: int) -> Path:
    """``run_dir/checkpoints/<dataset>/<method>-seed<seed>``: a trained cell's trainer run folder
    (best/, latest/, history.json); a sweep's final resumes the sweep's training there."""
    return Path(run_dir) / "checkpoints" / dataset / f"{method}-seed{seed}"


def run_file_path(run_dir: str | Path, dataset: str, method: str, seed: int) -> Path:
    """``run_dir/runs/<dataset>/<method>-seed<seed>.trec``: a cell's TREC run file (beside ``cells/``)."""
    return Path(run_dir) / "runs" / dataset / f"{method}-seed{seed}.trec"


def _save_run(cell: dict[str, Any], run, plan: Plan, run_dir: Path | None) -> None:
    """Write the cell's test run as a TREC run file (atomically; the top ``top_k`` per query, tag
    ``maw-<method>``, as ``maw evaluate --save-run``) and name it in ``cell["run_file"]``, relative to
    the run folder."""
    if run_dir is None:
        return
    from maw.evaluation.runfile import write_trec_run

    path = run_file_path(run_dir, cell["dataset"], cell["method"], cell["seed"])
    write_trec_run(run, path, tag=f"maw-{cell['method']}", k=plan.eval.top_k)
    cell["run_file"] = path.relative_to(run_dir).as_posix()


def _dense_cell(
    cell: dict[str, Any],
    encoder,
    ds: CellDataset,
    plan: Plan,
    cache_dir: Path,
    prefix: tuple[str, int] | None = None,
    run_dir: Path | None = None,
) -> None:
    """Test retrieval with a dense encoder over the full corpus: metrics + runtimes into ``cell``.

    The document embeddings go to a store under ``cache_dir`` (a kill during encoding keeps the
    finished shards). ``prefix``: (doc prefix-cache folder, first trainable layer) of a trained encoder, see
    :class:`maw.training.prefix_cache.PrefixCachedRetriever`; otherwise the corpus is encoded by the whole model. ``run_dir``:
    the run folder its TREC run file goes to (:func:`run_file_path`).
    """
    from maw.evaluation.metrics import evaluate_run

    kwargs = dict(
        query_max_length=plan.model.query_max_length,
        doc_max_length=plan.model.doc_max_length,
        batch_size=plan.eval.eval_batch_size,
        device=_device(plan),
        latency_queries=plan.eval.latency_queries,
        show_progress=plan.runtime.progress,
        index=IndexSpec.of(plan.eval),
        embedding_dtype=plan.eval.embedding_dtype,
        shard_size=plan.eval.shard_size,
        cache_dir=cache_dir,
        amp=retriever_amp(plan.model.precision),
    )
    if prefix is not None:
        retriever = PrefixCachedRetriever(encoder, prefix[0], prefix[1], THROUGHPUT_SAMPLE, **kwargs)
    else:
        retriever = DenseRetriever(encoder, **kwargs)
    run = retriever.retrieve(ds.queries, ds.dataset.corpus, k=plan.eval.top_k)
    if rank_and_world()[0] != 0:
        return  # under torchrun every rank encoded its shards; rank 0 searched and holds the run
    t = retriever.timings
    result = evaluate_run(ds.splits.test, run)
    _save_run(cell, run, plan, run_dir)
    cell["metrics"], cell["per_query"] = result.aggregate, result.per_query
    cell["runtimes"].update(
        encode_s=t.get("doc_encode_seconds"),
        search_s=(t.get("query_encode_seconds") or 0.0) + (t.get("search_seconds") or 0.0),
        query_latency_ms=t.get("query_latency_ms"),
        qps=t.get("qps"),
        index_bytes=t.get("index_bytes"),
        encode_docs_per_s=t.get("docs_per_second"),
    )
    cell["timings"] = dict(t)


def _bm25_cell(cell: dict[str, Any], ds: CellDataset, plan: Plan, run_dir: Path | None = None) -> None:
    from maw.evaluation.metrics import evaluate_run
    from maw.retrieval.bm25 import BM25Retriever

    retriever = BM25Retriever(ds.dataset.corpus)
    run = retriever.retrieve(ds.queries, k=plan.eval.top_k)
    t = dict(retriever.timings)
    # Latency as for dense retrieval: one query at a time, over the first ``latency_queries`` queries.
    times = []
    for q in list(ds.queries)[: plan.eval.latency_queries]:
        t0 = time.perf_counter()
        retriever.retrieve({q: ds.queries[q]}, k=plan.eval.top_k)
        times.append(1000.0 * (time.perf_counter() - t0))
    result = evaluate_run(ds.splits.test, run)
    _save_run(cell, run, plan, run_dir)
    cell["metrics"], cell["per_query"] = result.aggregate, result.per_query
    cell["params"] = {"total": 0, "trainable": 0}
    cell["runtimes"].update(
        train_s=0.0,
        encode_s=t["index_seconds"],
        search_s=t["query_seconds"],
        query_latency_ms=sum(times) / len(times) if times else None,
        qps=t["qps"],
        index_bytes=t["index_bytes"],
        encode_docs_per_s=t["index_docs_per_second"],
    )
    cell["timings"] = {
        **t,
        "latency_queries": len(times),
        "query_latency_samples_ms": times,
        "retriever": retriever.params,
    }


def _prefix_cache_dir(cfg: BenchmarkConfig, run_dir: Path, key: str) -> str:
    """The frozen-prefix cache folder shared by every method and seed of one dataset."""
    return cfg.train.prefix_cache_dir or str(run_dir / "prefix_cache" / key)


def shared_prefix_layer(cfg: BenchmarkConfig, dataset: str) -> int | None:
    """First trainable layer k (0-indexed) of the run's trained methods whose prefix is cached: the
    zero-shot cell builds that cache, so the corpus goes through the frozen layers only once per
    dataset. None when no trained method uses a cached prefix (k = 0, or prefix_cache off)."""
    if not cfg.train.prefix_cache:
        return None
    ks = [cell_plan(cfg, dataset, m, 0).layers.first_trainable for m in cfg.methods if m in TRAINED_METHODS]
    ks = [k for k in ks if k > 0]
    return min(ks) if ks else None


def _zeroshot_cell(
    cell: dict[str, Any],
    ds: CellDataset,
    plan: Plan,
    cfg: BenchmarkConfig,
    run_dir: Path,
    ctx: DistributedContext,
) -> None:
    """The pretrained encoder as is. When trained methods follow, the corpus passes through the
    frozen layers once, into their shared prefix cache (rank 0 builds it), and the top layers run
    on top of it (embeddings equal to a full encode up to float rounding with the float32 cache);
    otherwise a plain full encode with the on-disk embedding cache."""
    from maw.models.encoder import Encoder
    from maw.training.methods import count_parameters

    model = plan.model
    try:
        encoder = Encoder.from_pretrained(model.model, num_layers=model.num_layers, normalize=model.normalize)
    except OSError as exc:
        raise ConfigError(f"--model: cannot load {model.model!r}: {exc}") from None
    cell["params"] = {"total": count_parameters(encoder)["total"], "trainable": 0}
    cell["runtimes"]["train_s"] = 0.0
    encoder.to(_device(plan)).eval()
    k = shared_prefix_layer(cfg, ds.name)

    def build() -> tuple[str | None, str | None, float]:
        """(cache folder, reason it was skipped, build seconds); rank 0 writes the cache."""
        texts, max_bytes = ds.dataset.doc_texts(), int(cfg.train.prefix_cache_max_gb * 1e9)
        docs_plan = PrefixCache.plan(
            encoder, texts, model.doc_max_length, k, _prefix_cache_dir(cfg, run_dir, ds.key),
            cfg.train.prefix_cache_dtype, "docs", max_bytes,
            amp=dtype_name(autocast_dtype(model.precision, _device(plan))),  # the trainer's encoding autocast
        )  # fmt: skip
        # the trainer's cap (prefix_cache_max_gb) holds for the cache built here too
        skipped = over_cap_reason([docs_plan], max_bytes)
        if skipped is not None:
            log.warning("zeroshot: %s", skipped)
            return None, skipped, 0.0
        t0 = time.perf_counter()
        if not docs_plan.exists:
            check_free_space(docs_plan.folder.parent, docs_plan.write_bytes)
        cache = PrefixCache.build(docs_plan, encoder, texts, plan.eval.eval_batch_size, plan.runtime.progress)
        return str(cache.folder), None, time.perf_counter() - t0

    folder, skipped, build_s = rank0_first(ctx, build) if k is not None else (None, None, 0.0)
    if folder is None:
        _dense_cell(cell, encoder, ds, plan, store_dir(plan, run_dir, ds.key), run_dir=run_dir)
        if skipped is not None:
            cell["timings"]["prefix_cache_skipped"] = skipped
        return
    # keyed by the pretrained weights and the prefix cache: reused by a rerun of the run
    store = store_dir(plan, run_dir, ds.key)
    _dense_cell(cell, encoder, ds, plan, store, prefix=(folder, k), run_dir=run_dir)
    if not ctx.is_main:
        return
    cell["runtimes"]["encode_s"] += build_s  # frozen layers (0 when the cache existed) + top layers
    cell["timings"]["prefix_build_seconds"] = build_s


def _trained_cell(
    cell: dict[str, Any],
    ds: CellDataset,
    plan: Plan,
    cfg: BenchmarkConfig,
    run_dir: Path,
    ctx: DistributedContext,
) -> None:
    from maw.training.trainer import train

    cell_dir = trainer_dir(run_dir, ds.key, plan.method, plan.train.seed)
    train_cfg = dataclasses.replace(plan.train, prefix_cache_dir=_prefix_cache_dir(cfg, run_dir, ds.key))
    # under torchrun every rank trains this cell (DistributedDataParallel) and encodes its shards
    result = train(dataclasses.replace(plan, train=train_cfg), ds.dataset, ds.splits, cell_dir, ctx=ctx)
    cell["history"] = list(result.history)
    cell["router_stats"] = dict(result.router_stats or {})
    cell["params"] = dict(result.params)
    cell["checkpoint"] = str(result.best_dir) if result.best_dir else None
    cell["best_epoch"] = result.best_epoch
    cell["train_setup"] = {**dict(result.setup), "plan": result.plan, "resumed_from": result.resumed_from}
    cell["runtimes"]["train_s"] = float(result.train_seconds)
    setup = result.setup or {}
    prefix = (
        (setup["doc_cache"], int(setup["first_trainable"]))
        if setup.get("prefix_cache") and setup.get("doc_cache")
        else None
    )
    # new weights: a store of this cell's own (never shared with the zero-shot one, even when the
    # best epoch is 0), removed after the search
    store = store_dir(plan, run_dir, ds.key) / f"{plan.method}-seed{plan.train.seed}"
    _dense_cell(cell, result.encoder, ds, plan, store, prefix=prefix, run_dir=run_dir)
    if ctx.is_main:  # only the folder this cell wrote (keyed by its weights), then the empty parent
        shutil.rmtree(cell["timings"]["embedding_store"], ignore_errors=True)
        with contextlib.suppress(OSError):
            store.rmdir()
        cell["timings"]["embedding_store"] = None


def run_benchmark(
    cfg: BenchmarkConfig, log: Callable[[str], None] | None = None, ctx: DistributedContext | None = None
) -> Outcome:
    """Run every missing cell of ``cfg``, then rebuild the reports. See the module docstring.

    ``ctx``: the process group (default: join torchrun's if launched by it, else one process).
    """
    own_ctx = ctx is None
    ctx = ctx or init_distributed(cfg.runtime.device)
    try:
        return _run_benchmark(cfg, log or (lambda msg: None), ctx)
    finally:
        if own_ctx:
            shutdown(ctx)


def _run_benchmark(cfg: BenchmarkConfig, log: Callable[[str], None], ctx: DistributedContext) -> Outcome:
    keys = check_dataset_keys(cfg.datasets)
    if cfg.run_name is None:
        if ctx.enabled:
            raise ConfigError(
                "--run-name: under torchrun every rank must work in the same run folder; pass --run-name"
            )
        cfg = dataclasses.replace(cfg, run_name=default_run_name())
    for name in cfg.datasets:  # resolve every cell's plan before any work: bad options fail here
        for method in cfg.methods:
            cell_plan(cfg, name, method, cfg.seeds[0])
    run_dir = run_folder(cfg)
    main = ctx.is_main  # rank 0 claims cells, writes every file and logs; all ranks run each cell
    if not main:
        log = lambda msg: None  # noqa: E731
    tracker = Tracker()

    def prepare() -> None:
        nonlocal tracker
        saved_path = run_dir / "config.json"
        if saved_path.exists():
            conflicts = differences(structural(_saved_config(saved_path)), structural(cfg))
            if conflicts:
                raise ConfigError(
                    f"--run-name {cfg.run_name}: {run_dir} was made with a different configuration "
                    f"({'; '.join(conflicts)}); use a new --run-name, or the same options to resume it"
                )
        tracker = make_tracker(cfg.tracker, run_dir)  # fails before any work when the package is missing
        run_dir.mkdir(parents=True, exist_ok=True)
        atomic_write_json(saved_path, to_dict(cfg))
        atomic_write_json(run_dir / "environment.json", environment_info())

    rank0_first(ctx, prepare)
    outcome = Outcome(folder=run_dir)
    total = len(cfg.datasets) * len(cfg.methods) * len(cfg.seeds)
    failed_once: dict[tuple[str, str], dict[str, Any]] = {}  # seed-independent failures of this invocation
    procs = f", each cell on {ctx.world_size} processes" if ctx.enabled else ""
    log(f"run folder {run_dir} ({total} cells{procs})")

    def run(ds: CellDataset, method: str, seed: int) -> dict[str, Any]:
        first = failed_once.get((ds.key, method))
        if first is None:
            return run_cell(ds, method, seed, cfg, run_dir, ctx)
        # the same seed-independent computation failed for another seed (rank 0 only: never under
        # torchrun, where a failed cell stops the run): its failure, nothing computed
        cell = {**first, "seed": seed, "reused_from_seed": first["seed"]}
        write_cell(run_dir, cell)
        return cell

    def ok(cell: dict[str, Any]) -> str:
        shown = ", ".join(
            f"{m} {cell['metrics'][m]:.4f}" for m in PRIMARY_METRICS if cell["metrics"].get(m) is not None
        )
        return f"ok in {cell['cell_seconds']:.1f} s ({shown})"

    def after(cell: dict[str, Any]) -> None:
        if cell["status"] == "ok":
            try:
                tracker.log_cell(cell)
            except Exception as exc:  # tracking is optional; the result is already safe on disk
                log(f"tracker error {type(exc).__name__}: {exc}")
        elif cell["method"] in SEED_INDEPENDENT:
            failed_once.setdefault((cell["dataset"], cell["method"]), cell)

    def jobs():
        done = 0
        for name, key in zip(cfg.datasets, keys, strict=True):
            ds = CellDataset(name, key, cfg)
            for method in cfg.methods:
                for seed in cfg.seeds:
                    done += 1
                    yield Job(
                        label=(key, method, seed),
                        tag=f"[{done}/{total}] {key} {method} seed {seed}",
                        folder=run_dir,
                        dataset=key,
                        name=method,
                        seed=seed,
                        run=functools.partial(run, ds, method, seed),
                        done=functools.partial(is_done, run_dir, key, method, seed),
                        ok=ok,
                        reuse=functools.partial(_reuse, run_dir, key, method, seed, cfg.seeds)
                        if method in SEED_INDEPENDENT
                        else None,
                        after=after,
                    )

    try:
        run_jobs(jobs(), outcome, log, ctx)
    finally:
        tracker.close()
        if main:
            build_reports(run_dir)
    if not main:
        return outcome
    # cells of this configuration that are failed on disk (e.g. from an earlier invocation) also count
    for key in keys:
        for method in cfg.methods:
            for seed in cfg.seeds:
                path = cell_path(run_dir, key, method, seed)
                if path.exists() and (key, method, seed) not in {f[:3] for f in outcome.failed}:
                    c = read_cell(path)
                    if c["status"] != "ok":
                        outcome.fail((key, method, seed), c["error"])
    log(
        f"reports in {run_dir} (REPORT.md, summary.txt); {len(outcome.ran)} ran, {len(outcome.skipped)} skipped, "
        f"{len(outcome.failed)} failed, {outcome.seconds:.1f} s"
    )
    return outcome


def _reuse(run_dir: Path, key: str, method: str, seed: int, seeds: list[int]) -> bool:
    """Copy a seed-independent cell computed for another seed; False when there is none yet."""
    for other in seeds:
        if other != seed and is_done(run_dir, key, method, other):
            src = read_cell(cell_path(run_dir, key, method, other))
            origin = src.get("reused_from_seed") or src["seed"]
            copy = {**src, "seed": seed, "reused_from_seed": origin, "seed_independent": True}
            copy["config"] = {**src.get("config", {}), "seed": seed}
            source = run_file_path(run_dir, key, method, other)
            if src.get("run_file") and source.is_file():  # the same run, under this seed's name
                target = run_file_path(run_dir, key, method, seed)
                with atomic_path(target) as tmp:
                    shutil.copyfile(source, tmp)
                copy["run_file"] = target.relative_to(run_dir).as_posix()
            write_cell(run_dir, copy)
            return True
    return False


class CellFailedOnARank(RuntimeError):
    """A cell failed under torchrun: the other ranks cannot go on without this one (a collective
    would wait for it), so the run stops; rank 0 has written the cell file when it was the one."""


def run_cell(
    ds: CellDataset,
    method: str,
    seed: int,
    cfg: BenchmarkConfig,
    run_dir: Path,
    ctx: DistributedContext | None = None,
) -> dict[str, Any]:
    """Run one cell; rank 0 writes its file, whatever happened. A failure is recorded in the cell
    and the run goes on, except under torchrun, where it stops the run (:class:`CellFailedOnARank`)."""
    plan = cell_plan(cfg, ds.name, method, seed)
    ctx = ctx or DistributedContext(device=torch.device(_device(plan)))
    cell = new_cell(ds.key, method, seed, {**plan.to_dict(), "seed": seed})
    t0 = time.perf_counter()
    try:
        if ds.dataset is None and ds.error is None:
            try:
                ds.load()
            except Exception as exc:
                ds.error = f"{type(exc).__name__}: {exc}"
                raise
        if ds.error is not None:
            raise RuntimeError(f"dataset {ds.name!r} could not be loaded: {ds.error}")
        cell["dataset_info"] = ds.info
        if method == "bm25":
            if ctx.is_main:  # one process: BM25 has no use for the other ranks
                _bm25_cell(cell, ds, plan, run_dir=run_dir)
        elif method == "zeroshot":
            _zeroshot_cell(cell, ds, plan, cfg, run_dir, ctx)
        elif method in TRAINED_METHODS:
            _trained_cell(cell, ds, plan, cfg, run_dir, ctx)
        else:  # pragma: no cover - validate() rejects unknown methods
            raise ConfigError(f"--methods: unknown method {method!r}")
        cell["status"], cell["error"] = "ok", None
    except Exception as exc:  # one failing cell must not stop the benchmark
        cell["status"] = "failed"
        cell["error"] = f"{type(exc).__name__}: {exc}".strip()
        cell["traceback"] = traceback.format_exc()
    finally:
        gc.collect()
        _empty_cuda_cache()
    cell["cell_seconds"] = time.perf_counter() - t0
    if method in SEED_INDEPENDENT:
        cell["reused_from_seed"] = None
    if ctx.is_main:
        write_cell(run_dir, cell)
    if ctx.enabled and cell["status"] != "ok":
        raise CellFailedOnARank(
            f"rank {ctx.rank}: {ds.key} {method} seed {seed} failed: {cell['error']}; the run stops "
            "(rerun the same command: finished cells are kept)"
        )
    return cell


def _empty_cuda_cache() -> None:
    if torch.cuda.is_available():
        torch.cuda.empty_cache()
