"""``maw evaluate``: retrieve the queries of one split with BM25 or a zero-shot dense model, score them.

One call of :func:`run_evaluation` loads the dataset (``maw.data.load_dataset`` + ``make_splits``),
retrieves over the **full corpus** (top ``EvalConfig.top_k``), computes the metric suite of
``maw.evaluation.metrics`` and writes ONE JSON file atomically with:

* ``config``: the method and the ``DataConfig`` / ``ModelConfig`` / ``EvalConfig`` used;
* ``versions``: ``maw.utils.io.environment_info()``;
* ``dataset``: name, source, fingerprint, document / query counts, split provenance;
* ``metrics``: aggregate metric values (plus ``None`` for ``NOT_APPLICABLE``), ``metric_notes``;
* ``per_query``: metric -> query id -> value;
* ``efficiency``: index / encode throughput, query latency, QPS, index bytes;
* ``runtimes``: wall seconds of each stage.

Under ``torchrun`` every rank runs this function: each encodes its shards of the corpus into the
shared embedding store (``maw.retrieval.dense``), rank 0 searches, computes the metrics and writes
the result (and run) file once; the other ranks return ``None``. BM25 runs on rank 0 only.

Evaluating a split: ``--split X`` makes ``X`` the test split of ``make_splits``; the train and
validation splits play no part in ``maw evaluate``.
"""

from __future__ import annotations

import dataclasses
import re
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from maw.config import ConfigError, DataConfig, to_dict
from maw.data.types import DataError, Qrels, RetrievalDataset, Splits
from maw.evaluation.metrics import NOT_APPLICABLE, PRIMARY_METRICS, MetricResult, evaluate_run
from maw.plan import Plan
from maw.utils.io import atomic_write_json, default_cache_dir, environment_info


def default_out_path(dataset_name: str, method: str, split: str) -> Path:
    safe = re.sub(r"[^A-Za-z0-9._-]+", "_", f"{dataset_name}-{method}-{split}").strip("_")
    return Path("runs") / "evaluate" / f"{safe}.json"


def _data_config_for_split(data: DataConfig, split: str) -> DataConfig:
    """``split`` as the test split; train/val renamed away when they collide (unused here)."""
    return dataclasses.replace(
        data,
        test_split=split,
        train_split="" if data.train_split == split else data.train_split,
        val_split="" if data.val_split == split else data.val_split,
    )


@dataclass
class Retrieval:
    """A retriever's run over the split's queries, its efficiency figures and its description."""

    run: dict[str, dict[str, float]]
    efficiency: dict[str, Any]
    retriever: dict[str, Any]


def run_evaluation(
    plan: Plan,
    *,
    encoder: Any = None,
    checkpoint: str | None = None,
    out: str | None = None,
    use_cache: bool = True,
    save_run: str | None = None,
    console: Any | None = None,
    device: str | None = None,
) -> dict[str, Any] | None:
    """Evaluate ``plan`` (bm25, zeroshot, or a trained ``encoder`` loaded from ``checkpoint``), write
    the result JSON (and the TREC run file ``save_run``), return the record as a dict (``None`` on
    ranks other than 0 of a ``torchrun`` launch: they only encode their shards)."""
    from maw.retrieval.dense import rank_and_world

    runtimes: dict[str, float] = {}
    t0 = time.perf_counter()
    dataset, splits, data_cfg = _load(plan)
    queries = _split_queries(dataset, splits.test, plan.eval.split)
    runtimes["load_data_seconds"] = time.perf_counter() - t0

    rank, world = rank_and_world()
    t0 = time.perf_counter()
    if plan.method == "bm25":
        if rank != 0:
            return None  # BM25 is one process's job; rank 0 writes the result
        retrieval = _retrieve_bm25(dataset, queries, plan.eval.top_k)
    else:
        retrieval = _retrieve_dense(plan, dataset, queries, encoder, checkpoint, use_cache, device)
        if rank != 0:
            return None  # this rank encoded its shards; rank 0 searched and writes the result
    runtimes["retrieve_seconds"] = time.perf_counter() - t0
    if world > 1:
        retrieval.efficiency["processes"] = world

    t0 = time.perf_counter()
    result = evaluate_run(splits.test, retrieval.run)
    runtimes["metrics_seconds"] = time.perf_counter() - t0

    name = plan.method if checkpoint is None else f"{plan.method}-{Path(checkpoint).parent.name}"
    out_path = Path(out) if out else default_out_path(dataset.name, name, plan.eval.split)
    if save_run is not None:
        from maw.evaluation.runfile import write_trec_run

        write_trec_run(retrieval.run, save_run, tag=f"maw-{plan.method}", k=plan.eval.top_k)
    record = {
        "kind": "maw.evaluate",
        "created": datetime.now(UTC).isoformat(timespec="seconds"),
        "config": _config(plan, data_cfg, use_cache, checkpoint),
        "versions": environment_info(),
        "dataset": _dataset_info(dataset, splits, plan.eval.split, result),
        "retriever": retrieval.retriever,
        "metrics": result.aggregate,
        "primary_metrics": PRIMARY_METRICS,
        "metric_notes": result.notes,
        "not_applicable": dict(NOT_APPLICABLE),
        "efficiency": retrieval.efficiency,
        "runtimes": runtimes,
        "per_query": result.per_query,
        "output": str(out_path),
        "run_file": str(save_run) if save_run else None,
    }
    atomic_write_json(out_path, record)
    if console is not None:
        print_metrics(record, console)
    return record


def _load(plan: Plan) -> tuple[RetrievalDataset, Splits, DataConfig]:
    """The dataset, its splits with ``--split`` as the test split, and the data config that made them."""
    from maw.data import load_dataset, make_splits
    from maw.data.subsample import subsample_for_splits

    dataset = load_dataset(plan.data.dataset, plan.data.data_dir)
    data_cfg = _data_config_for_split(plan.data, plan.eval.split)
    splits = make_splits(dataset, data_cfg)
    dataset = subsample_for_splits(dataset, splits, data_cfg)  # --corpus-size (no-op by default)
    return dataset, splits, data_cfg


def _split_queries(dataset: RetrievalDataset, qrels: Qrels, split: str) -> dict[str, str]:
    """The text of every judged query of the split (a judged query without text is a data error)."""
    missing = sorted(q for q in qrels if q not in dataset.queries)
    if missing:
        raise DataError(
            f"{dataset.source or dataset.name}: {len(missing)} judged queries of split {split!r} "
            f"have no text in the queries file, e.g. {missing[:5]}"
        )
    return {q: dataset.queries[q] for q in qrels}


def _retrieve_bm25(dataset: RetrievalDataset, queries: dict[str, str], top_k: int) -> Retrieval:
    from maw.retrieval.bm25 import BM25Retriever

    retriever = BM25Retriever(dataset.corpus)
    run = retriever.retrieve(queries, k=top_k)
    return Retrieval(run, dict(retriever.timings), {"name": "bm25s", **retriever.params})


def _retrieve_dense(
    plan: Plan,
    dataset: RetrievalDataset,
    queries: dict[str, str],
    encoder: Any,
    checkpoint: str | None,
    use_cache: bool,
    device: str | None,
) -> Retrieval:
    """Exact (or ``--index``) search of the whole corpus with ``encoder`` (default: ``--model`` zero-shot);
    the corpus embeddings go to the embedding cache unless ``use_cache`` is off."""
    from maw.models.encoder import Encoder
    from maw.retrieval.dense import DenseRetriever
    from maw.retrieval.index import IndexSpec
    from maw.utils.precision import retriever_amp

    model = plan.model
    if encoder is None:
        try:
            encoder = Encoder.from_pretrained(
                model.model, num_layers=model.num_layers, normalize=model.normalize
            )
        except OSError as exc:
            raise ConfigError(f"--model: cannot load {model.model!r}: {exc}") from None
        except ValueError as exc:  # e.g. --num-layers out of range (the message names the flag)
            raise ConfigError(str(exc)) from None
    cache_dir = (plan.eval.embedding_cache_dir or default_cache_dir("embeddings")) if use_cache else None
    retriever = DenseRetriever(
        encoder,
        query_max_length=model.query_max_length,
        doc_max_length=model.doc_max_length,
        batch_size=plan.eval.eval_batch_size,
        cache_dir=cache_dir,
        device=device or plan.runtime.device,
        latency_queries=plan.eval.latency_queries,
        show_progress=plan.runtime.progress,
        index=IndexSpec.of(plan.eval),
        embedding_dtype=plan.eval.embedding_dtype,
        shard_size=plan.eval.shard_size,
        amp=retriever_amp(model.precision),
    )
    run = retriever.retrieve(queries, dataset.corpus, k=plan.eval.top_k)
    info = {
        "name": f"dense-{plan.eval.index}",
        "model": checkpoint or model.model,
        "query_max_length": model.query_max_length,
        "doc_max_length": model.doc_max_length,
        "cache_dir": str(cache_dir) if cache_dir else None,
    }
    return Retrieval(run, dict(retriever.timings), info)


def _config(plan: Plan, data_cfg: DataConfig, use_cache: bool, checkpoint: str | None) -> dict[str, Any]:
    """The record's ``config``: the whole plan (for a trained checkpoint it holds the training config:
    train / maw / layers), the data config of the evaluated split; BM25's names no model."""
    config: dict[str, Any] = {**plan.to_dict(), "data": to_dict(data_cfg), "use_cache": use_cache}
    if plan.method == "bm25":
        del config["model"]  # BM25 uses no model: the record must not name one
    if checkpoint is not None:
        config["checkpoint"] = str(checkpoint)
    return config


def _dataset_info(
    dataset: RetrievalDataset, splits: Splits, split: str, result: MetricResult
) -> dict[str, Any]:
    return {
        "name": dataset.name,
        "source": dataset.source,
        "fingerprint": dataset.fingerprint,
        "num_docs": len(dataset.corpus),
        "num_queries": len(dataset.queries),
        "split": split,
        "num_split_queries": len(splits.test),
        "num_evaluated_queries": result.num_queries,
        "provenance": splits.provenance,
        "loader_report": dataset.report,
    }


def print_metrics(record: dict[str, Any], console: Any) -> None:
    """A rich table of the aggregate metrics and efficiency figures of one evaluation record."""
    from rich.table import Table

    ds = record["dataset"]
    title = (
        f"{ds['name']} / {ds['split']} ({ds['num_evaluated_queries']} queries, {ds['num_docs']} docs) - "
        f"{record['config']['method']}"
    )
    table = Table(title=title)
    table.add_column("metric")
    table.add_column("value", justify="right")
    primary = set(record.get("primary_metrics", []))
    for name, value in record["metrics"].items():
        if name in record.get("not_applicable", {}):
            continue
        shown = "-" if value is None else (f"{value:.0f}" if name == "NoRelRetrieved" else f"{value:.4f}")
        table.add_row(f"[bold]{name}[/bold]" if name in primary else name, shown)
    for name, value in record.get("efficiency", {}).items():
        if isinstance(value, list | dict):
            continue  # samples (e.g. per-query latencies) stay in the JSON
        if isinstance(value, bool) or value is None or isinstance(value, str):
            shown = str(value)
        else:
            shown = f"{value:,.3f}"
        table.add_row(f"[dim]{name}[/dim]", shown)
    console.print(table)
    na = record.get("not_applicable", {})
    if na:
        console.print("not applicable: " + "; ".join(f"{k} ({v})" for k, v in na.items()), style="dim")
    console.print(f"wrote {record['output']}")
