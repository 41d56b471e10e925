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

Evaluating a split: ``--split X`` makes ``X`` the test split of ``make_splits``; the train and
validation splits play no part in ``maw evaluate``.
"""

from __future__ import annotations

import dataclasses
import re
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from maw.config import ConfigError, DataConfig, EvalConfig, ModelConfig
from maw.evaluation.metrics import NOT_APPLICABLE, PRIMARY_METRICS, MetricResult, evaluate_run
from maw.utils.io import atomic_write_json, default_cache_dir, environment_info

EVALUATE_METHODS = ("bm25", "zeroshot")


@dataclass
class EvaluateConfig:
    """Everything ``maw evaluate`` needs (built by the CLI, passed down unchanged)."""

    method: str = "bm25"
    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)
    out: str | None = None  # result JSON; default runs/evaluate/<dataset>-<method>-<split>.json
    use_cache: bool = True  # document-embedding cache in eval.cache_dir (default ~/.cache/maw/embeddings)
    device: str | None = None  # None: cuda if available else cpu
    latency_queries: int = 50  # queries timed one at a time for the latency figure (dense)
    show_progress: bool = True

    def validate(self) -> None:
        if self.method not in EVALUATE_METHODS:
            raise ConfigError(
                f"--method: unknown method {self.method!r}; choose one of {', '.join(EVALUATE_METHODS)}"
            )
        checks = (
            ("--top-k", self.eval.top_k),
            ("--batch-size", self.eval.eval_batch_size),
            ("--query-max-length", self.model.query_max_length),
            ("--doc-max-length", self.model.doc_max_length),
        )
        for option, value in checks:
            if value < 1:
                raise ConfigError(f"{option}: must be >= 1, got {value}")
        if self.data.test_samples is not None and self.data.test_samples < 1:
            raise ConfigError(f"--test-samples: must be >= 1, got {self.data.test_samples}")
        if self.latency_queries < 0:
            raise ConfigError(f"--latency-queries: must be >= 0, got {self.latency_queries}")
        if self.model.num_layers is not None and self.model.num_layers < 1:
            raise ConfigError(f"--num-layers: must be >= 1, got {self.model.num_layers}")
        if self.device is not None:
            import torch

            if not (self.device == "cpu" or self.device.startswith("cuda")):
                raise ConfigError(f"--device: use 'cpu' or 'cuda[:N]', got {self.device!r}")
            if self.device.startswith("cuda") and not torch.cuda.is_available():
                raise ConfigError(f"--device: {self.device!r} requested but CUDA is not available")
        if self.data.candidate_pool:
            raise ConfigError("candidate_pool: maw evaluate always retrieves from the full corpus")
        if not str(self.eval.split).strip():
            raise ConfigError("--split: must not be empty")


def default_out_path(dataset_name: str, method: str, split: str) -> Path:
    safe = re.sub(r"[^A-Za-z0-9._-]+", "_", f"{dataset_name}-{method}-{split}").strip("_")
    return Path("runs") / "evaluate" / f"{safe}.json"


def _data_config_for_split(data: DataConfig, split: str) -> DataConfig:
    """``split`` as the test split; train/val renamed away when they collide (unused here)."""
    cfg = dataclasses.replace(data, test_split=split)
    if cfg.train_split == split:
        cfg.train_split = ""
    if cfg.val_split == split:
        cfg.val_split = ""
    return cfg


def run_evaluation(cfg: EvaluateConfig, console: Any | None = None) -> dict[str, Any]:
    """Run the evaluation described by ``cfg``, write the result JSON, return it as a dict."""
    from maw.data import load_dataset, make_splits
    from maw.data.types import DataError

    cfg.validate()
    runtimes: dict[str, float] = {}
    t0 = time.perf_counter()
    dataset = load_dataset(cfg.data.dataset, cfg.data.data_dir)
    data_cfg = _data_config_for_split(cfg.data, cfg.eval.split)
    splits = make_splits(dataset, data_cfg)
    runtimes["load_data_seconds"] = time.perf_counter() - t0

    qrels = splits.test
    missing = sorted(q for q in qrels if q not in dataset.queries)
    if missing:
        raise DataError(
            f"{dataset.source or dataset.name}: {len(missing)} judged queries of split {cfg.eval.split!r} "
            f"have no text in the queries file, e.g. {missing[:5]}"
        )
    queries = {q: dataset.queries[q] for q in qrels}

    t0 = time.perf_counter()
    if cfg.method == "bm25":
        from maw.retrieval.bm25 import BM25Retriever

        retriever = BM25Retriever(dataset.corpus)
        run = retriever.retrieve(queries, k=cfg.eval.top_k)
        efficiency = dict(retriever.timings)
        retriever_info: dict[str, Any] = {"name": "bm25s", **retriever.params}
    else:
        from maw.models.encoder import Encoder
        from maw.retrieval.dense import DenseRetriever

        try:
            encoder = Encoder.from_pretrained(
                cfg.model.model, num_layers=cfg.model.num_layers, normalize=cfg.model.normalize
            )
        except OSError as exc:
            raise ConfigError(f"--model: cannot load {cfg.model.model!r}: {exc}") from None
        except ValueError as exc:  # e.g. --num-layers out of range (the message names the flag)
            raise ConfigError(str(exc)) from None
        cache_dir = (cfg.eval.cache_dir or default_cache_dir("embeddings")) if cfg.use_cache else None
        retriever = DenseRetriever(
            encoder,
            query_max_length=cfg.model.query_max_length,
            doc_max_length=cfg.model.doc_max_length,
            batch_size=cfg.eval.eval_batch_size,
            cache_dir=cache_dir,
            device=cfg.device,
            latency_queries=cfg.latency_queries,
            show_progress=cfg.show_progress,
        )
        run = retriever.retrieve(queries, dataset.corpus, k=cfg.eval.top_k)
        efficiency = dict(retriever.timings)
        retriever_info = {
            "name": "dense-exact-ip",
            "model": cfg.model.model,
            "query_max_length": cfg.model.query_max_length,
            "doc_max_length": cfg.model.doc_max_length,
            "cache_dir": str(cache_dir) if cache_dir else None,
        }
    runtimes["retrieve_seconds"] = time.perf_counter() - t0

    t0 = time.perf_counter()
    result: MetricResult = evaluate_run(qrels, run)
    runtimes["metrics_seconds"] = time.perf_counter() - t0

    config: dict[str, Any] = {
        "method": cfg.method,
        "data": dataclasses.asdict(data_cfg),
        "eval": dataclasses.asdict(cfg.eval),
        "use_cache": cfg.use_cache,
        "device": cfg.device,
    }
    if cfg.method != "bm25":
        config["model"] = dataclasses.asdict(cfg.model)
    out_path = Path(cfg.out) if cfg.out else default_out_path(dataset.name, cfg.method, cfg.eval.split)
    record: dict[str, Any] = {
        "kind": "maw.evaluate",
        "created": datetime.now(UTC).isoformat(timespec="seconds"),
        "config": config,
        "versions": environment_info(),
        "dataset": {
            "name": dataset.name,
            "source": dataset.source,
            "fingerprint": dataset.fingerprint,
            "num_docs": len(dataset.corpus),
            "num_queries": len(dataset.queries),
            "split": cfg.eval.split,
            "num_split_queries": len(qrels),
            "num_evaluated_queries": result.num_queries,
            "provenance": splits.provenance,
            "loader_report": dataset.report,
        },
        "retriever": retriever_info,
        "metrics": result.aggregate,
        "primary_metrics": PRIMARY_METRICS,
        "metric_notes": result.notes,
        "not_applicable": dict(NOT_APPLICABLE),
        "efficiency": efficiency,
        "runtimes": runtimes,
        "per_query": result.per_query,
        "output": str(out_path),
    }
    atomic_write_json(out_path, record)
    if console is not None:
        print_metrics(record, console)
    return record


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
