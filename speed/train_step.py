"""Time one training epoch of ``finetune`` and ``maw`` (soft; grpo G=4), with and without the
frozen-prefix cache, side by side in one process.

An epoch is what ``Trainer`` runs per epoch: the optimiser steps over the train queries, then the
validation pass (encode the val queries and the corpus, retrieve, score nDCG@10). Both parts are
timed and printed separately; the goals are judged on their sum, with the train-only ratios
printed beside them. The cache is built once per configuration before timing (its build time is
printed separately: it is paid once per run, not per epoch).

Setup (defaults): all-MiniLM-L6-v2, the last layer trains (finetune) / carries MAW (query
granularity, D=8), batch 32, one BM25 hard negative per query, on a seeded subsample of SciFact
train queries (and 8 val queries). The corpus is reduced to the positives of those queries plus a
seeded sample of other documents, sized so that documents per train query match the full
dataset's (SciFact: 5,183 docs / 728 train queries), so train and validation keep their real
proportions.

Goals: with the cache, a finetune epoch >= 3x faster than without; maw soft <= 1.5x and maw grpo
(G=4) <= 3x the epoch time of finetune (same layers, batch, cache setting).

    python speed/train_step.py [--dataset ../shared/datasets/scifact] [--train-queries 96]
        [--corpus-docs N] [--batch-size 32] [--threads N] [--methods finetune,maw-soft,maw-grpo]
"""

from __future__ import annotations

import argparse
import random
import statistics
import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path

import torch
from rich.console import Console
from rich.table import Table

from maw.config import (
    DataConfig,
    EvalConfig,
    MAWConfig,
    ModelConfig,
    RuntimeConfig,
    TrainConfig,
    default_model,
)
from maw.data import load_dataset, make_splits
from maw.data.types import RetrievalDataset, Splits
from maw.plan import resolve
from maw.training.distributed import DistributedContext
from maw.training.trainer import Trainer

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _harness import time_epoch  # noqa: E402

CONFIGS = {
    "finetune": ("finetune", None),
    "maw-soft": ("maw", "soft"),
    "maw-grpo": ("maw", "grpo"),
}


def reduced(
    dataset: RetrievalDataset, splits: Splits, n_queries: int, n_docs: int | None, seed: int
) -> tuple[RetrievalDataset, Splits]:
    """Keep ``n_queries`` train queries (and 8 val), their positives and other documents up to
    ``n_docs`` in all (default: the full dataset's documents per train query times ``n_queries``)."""
    rng = random.Random(seed)
    train_q = sorted(rng.sample(sorted(splits.train), min(n_queries, len(splits.train))))
    val_q = sorted(splits.val)[:8]
    if n_docs is None:
        n_docs = round(len(dataset.corpus) * len(train_q) / len(splits.train))
    keep = {d for q in train_q + val_q for d in {**splits.train, **splits.val}[q]}
    others = sorted(set(dataset.corpus) - keep)
    keep |= set(rng.sample(others, min(max(n_docs - len(keep), 0), len(others))))
    corpus = {d: dataset.corpus[d] for d in dataset.corpus if d in keep}
    train = {q: {d: g for d, g in splits.train[q].items() if d in corpus} for q in train_q}
    val = {q: {d: g for d, g in splits.val[q].items() if d in corpus} for q in val_q}
    ds = RetrievalDataset(
        dataset.name + "-bench", corpus, dataset.queries, dataset.qrels, dataset.fingerprint, dataset.source
    )
    return ds, Splits(train=train, val=val, test={}, provenance={"benchmark": "reduced"})


def ratio(a: float, b: float) -> str:
    return f"{a / b:.2f}x"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    default_data = Path(__file__).resolve().parents[1] / ".." / "shared" / "datasets" / "scifact"
    ap.add_argument("--dataset", default=str(default_data) if default_data.exists() else "demo")
    ap.add_argument("--model", default=None)
    ap.add_argument("--train-queries", type=int, default=96)
    ap.add_argument(
        "--corpus-docs",
        type=int,
        default=None,
        help="documents in the reduced corpus (default: keep the dataset's docs per train query)",
    )
    ap.add_argument("--batch-size", type=int, default=32)
    ap.add_argument("--group-size", type=int, default=4)
    ap.add_argument("--depth-dim", type=int, default=8)
    ap.add_argument("--granularity", default="query")
    ap.add_argument("--doc-max-length", type=int, default=256)
    ap.add_argument(
        "--max-steps", type=int, default=None, help="time at most N optimiser steps per configuration"
    )
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--methods", default="finetune,maw-soft,maw-grpo")
    ap.add_argument("--device", default=None)
    args = ap.parse_args()
    console = Console(width=None if sys.stdout.isatty() else 160)  # logs: wide enough for the table

    data_cfg = DataConfig(dataset=args.dataset)
    dataset = load_dataset(args.dataset)
    splits = make_splits(dataset, data_cfg)
    ds, sp = reduced(dataset, splits, args.train_queries, args.corpus_docs, seed=0)
    model_cfg = ModelConfig(model=args.model or default_model(), doc_max_length=args.doc_max_length)
    base_train = TrainConfig(batch_size=args.batch_size, num_epochs=1, save_checkpoints=False)
    runtime = RuntimeConfig(device=args.device, num_threads=args.threads, progress=False)
    eval_cfg = EvalConfig(eval_batch_size=64)

    if args.threads:
        torch.set_num_threads(args.threads)
    ctx = DistributedContext(
        device=torch.device(args.device or ("cuda" if torch.cuda.is_available() else "cpu"))
    )
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for name in args.methods.split(","):
            method, router = CONFIGS[name]
            maw_cfg = MAWConfig(
                router=router or "soft",
                depth_dim=args.depth_dim,
                granularity=args.granularity,
                group_size=args.group_size,
            )
            for cache in (True, False):
                tcfg = replace(base_train, prefix_cache=cache, prefix_cache_dir=str(Path(tmp) / "cache"))
                plan = resolve(method, data_cfg, model_cfg, maw_cfg, tcfg, eval_cfg, runtime)
                if not rows:
                    console.print(
                        f"dataset {args.dataset}: {len(sp.train)} train queries, {len(ds.corpus)} docs; "
                        f"batch {args.batch_size}; query/doc max length {plan.model.query_max_length}/"
                        f"{plan.model.doc_max_length}; threads {args.threads or 'default'}"
                    )
                trainer = Trainer(plan, ds, sp, Path(tmp) / f"{name}-{cache}", ctx)
                trainer.setup()
                timing = time_epoch(trainer, 1, args.max_steps)
                t0, c0 = time.perf_counter(), time.process_time()
                trainer.validate()
                val_s, val_cpu = time.perf_counter() - t0, time.process_time() - c0
                rows.append(
                    {
                        "config": name,
                        "cache": cache,
                        "train_s": timing["seconds"],
                        "val_s": val_s,
                        "epoch_s": timing["seconds"] + val_s,
                        "epoch_cpu": timing["cpu_seconds"] + val_cpu,
                        "steps": timing["steps"],
                        "median_step_s": statistics.median(timing["step_seconds"]),
                        "cache_s": trainer.cache_info.get("cache_seconds"),
                    }
                )
                r = rows[-1]
                console.print(
                    f"{name:9s} cache={cache!s:5s} train {r['train_s']:.1f}s ({r['steps']} steps, median "
                    f"{r['median_step_s']:.2f}s/step) + validation {val_s:.1f}s = epoch {r['epoch_s']:.1f}s "
                    f"wall / {r['epoch_cpu']:.1f}s CPU"
                    + (f"; cache built in {r['cache_s']:.1f}s" if r["cache_s"] else "")
                )
                del trainer

    by = {(r["config"], r["cache"]): r for r in rows}
    table = Table(title="one epoch = optimiser steps + validation pass (wall seconds)")
    cols = (
        "config",
        "prefix cache",
        "train s",
        "validation s",
        "epoch s",
        "epoch CPU s",
        "no-cache / cache: epoch (train only)",
        "vs finetune, same cache: epoch (train only)",
    )
    for col in cols:
        table.add_column(col, justify="right")
    for r in rows:
        other, ft = by.get((r["config"], not r["cache"])), by.get(("finetune", r["cache"]))
        speedup = (
            f"{ratio(other['epoch_s'], r['epoch_s'])} ({ratio(other['train_s'], r['train_s'])})"
            if other and r["cache"]
            else ""
        )
        vs = f"{ratio(r['epoch_s'], ft['epoch_s'])} ({ratio(r['train_s'], ft['train_s'])})" if ft else ""
        table.add_row(
            r["config"],
            "yes" if r["cache"] else "no",
            f"{r['train_s']:.1f}",
            f"{r['val_s']:.1f}",
            f"{r['epoch_s']:.1f}",
            f"{r['epoch_cpu']:.1f}",
            speedup,
            vs,
        )
    console.print(table)
    ft_c, ft_n = by.get(("finetune", True)), by.get(("finetune", False))
    if ft_c and ft_n:
        console.print(
            f"finetune: cache speed-up per epoch {ratio(ft_n['epoch_s'], ft_c['epoch_s'])} wall, "
            f"{ratio(ft_n['epoch_cpu'], ft_c['epoch_cpu'])} CPU (goal >= 3x); train steps only "
            f"{ratio(ft_n['train_s'], ft_c['train_s'])}, validation only {ratio(ft_n['val_s'], ft_c['val_s'])}"
        )
    for name, goal in (("maw-soft", 1.5), ("maw-grpo", 3.0)):
        for cache in (True, False):
            r, ft = by.get((name, cache)), by.get(("finetune", cache))
            if r and ft:
                console.print(
                    f"{name} / finetune (cache={cache}): epoch {ratio(r['epoch_s'], ft['epoch_s'])} wall, "
                    f"{ratio(r['epoch_cpu'], ft['epoch_cpu'])} CPU (goal <= {goal}x); train steps only "
                    f"{ratio(r['train_s'], ft['train_s'])}"
                )


if __name__ == "__main__":
    main()
