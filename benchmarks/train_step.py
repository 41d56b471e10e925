"""Time one training epoch of ``finetune`` and ``maw`` (soft; grpo G=4), with and without the
frozen-prefix cache, side by side in one process.

Setup (defaults): all-MiniLM-L6-v2, the last layer trains (finetune) / carries MAW (query
granularity, D=8), batch 32, one BM25 hard negative per query, on a seeded subsample of SciFact
train queries; the corpus is reduced to the positives of those queries plus a seeded sample of
other documents (so building the cache and mining negatives stay cheap). Validation is not timed:
each configuration runs the optimiser steps of epoch 1 only (``Trainer.benchmark_epoch``). The
cache is built once per configuration before timing (its build time is printed separately).

Goals: with the cache, a finetune epoch >= 3x faster than without; maw soft <= 1.5x and maw grpo
(G=4) <= 3x the epoch time of finetune (same layers, batch, cache setting).

    python benchmarks/train_step.py [--dataset ../shared/datasets/scifact] [--train-queries 96]
        [--corpus-docs 1000] [--batch-size 32] [--threads N] [--methods finetune,maw-soft,maw-grpo]
"""

from __future__ import annotations

import argparse
import random
import statistics
import tempfile
import time
from dataclasses import replace
from pathlib import Path

import torch
from rich.console import Console
from rich.table import Table

from maw.config import DataConfig, EvalConfig, MAWConfig, ModelConfig, TrainConfig, default_model
from maw.data import load_dataset, make_splits
from maw.data.types import RetrievalDataset, Splits
from maw.training.distributed import DistributedContext
from maw.training.trainer import Trainer

CONFIGS = {
    "finetune": ("finetune", None),
    "maw-soft": ("maw", "soft"),
    "maw-grpo": ("maw", "grpo"),
}


def reduced(dataset: RetrievalDataset, splits: Splits, n_queries: int, n_docs: int, seed: int) -> tuple[RetrievalDataset, Splits]:
    """Keep ``n_queries`` train queries (and a few val), their positives and ``n_docs`` other documents."""
    rng = random.Random(seed)
    train_q = sorted(rng.sample(sorted(splits.train), min(n_queries, len(splits.train))))
    val_q = sorted(splits.val)[:8]
    keep = {d for q in train_q + val_q for d in {**splits.train, **splits.val}[q]}
    others = sorted(set(dataset.corpus) - keep)
    keep |= set(rng.sample(others, min(n_docs, len(others))))
    corpus = {d: dataset.corpus[d] for d in dataset.corpus if d in keep}
    train = {q: {d: g for d, g in splits.train[q].items() if d in corpus} for q in train_q}
    val = {q: {d: g for d, g in splits.val[q].items() if d in corpus} for q in val_q}
    ds = RetrievalDataset(dataset.name + "-bench", corpus, dataset.queries, dataset.qrels, dataset.fingerprint, dataset.source)
    return ds, Splits(train=train, val=val, test={}, provenance={"benchmark": "reduced"})


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    default_data = Path(__file__).resolve().parents[1] / ".." / "shared" / "datasets" / "scifact"
    ap.add_argument("--dataset", default=str(default_data) if default_data.exists() else "demo")
    ap.add_argument("--model", default=None)
    ap.add_argument("--train-queries", type=int, default=96)
    ap.add_argument("--corpus-docs", type=int, default=1000)
    ap.add_argument("--batch-size", type=int, default=32)
    ap.add_argument("--group-size", type=int, default=4)
    ap.add_argument("--depth-dim", type=int, default=8)
    ap.add_argument("--granularity", default="query")
    ap.add_argument("--doc-max-length", type=int, default=256)
    ap.add_argument("--max-steps", type=int, default=None, help="time at most N optimiser steps per configuration")
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--methods", default="finetune,maw-soft,maw-grpo")
    ap.add_argument("--device", default=None)
    ap.add_argument("--with-validation", action="store_true", help="also time one validation pass per configuration")
    args = ap.parse_args()
    console = Console()

    dataset = load_dataset(args.dataset)
    splits = make_splits(dataset, DataConfig(dataset=args.dataset))
    ds, sp = reduced(dataset, splits, args.train_queries, args.corpus_docs, seed=0)
    model_cfg = ModelConfig(model=args.model or default_model(), doc_max_length=args.doc_max_length)
    base_train = TrainConfig(batch_size=args.batch_size, num_epochs=1, progress=False, num_threads=args.threads,
                             save_checkpoints=False, device=args.device)
    eval_cfg = EvalConfig(eval_batch_size=64)
    console.print(f"dataset {args.dataset}: {len(sp.train)} train queries, {len(ds.corpus)} docs; batch {args.batch_size}; "
                  f"threads {args.threads or 'default'}")

    if args.threads:
        torch.set_num_threads(args.threads)
    ctx = DistributedContext(device=torch.device(args.device or ("cuda" if torch.cuda.is_available() else "cpu")))
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for name in args.methods.split(","):
            method, router = CONFIGS[name]
            maw_cfg = MAWConfig(router=router or "soft", depth_dim=args.depth_dim, granularity=args.granularity,
                                group_size=args.group_size)
            for cache in (True, False):
                tcfg = replace(base_train, prefix_cache=cache, cache_dir=str(Path(tmp) / "cache"))
                trainer = Trainer(method, ds, sp, model_cfg, maw_cfg, tcfg, eval_cfg, Path(tmp) / f"{name}-{cache}", ctx)
                trainer.setup()
                timing = trainer.benchmark_epoch(1, args.max_steps)
                val_s = None
                if args.with_validation:
                    t0 = time.perf_counter()
                    trainer.validate()
                    val_s = time.perf_counter() - t0
                rows.append({
                    "config": name, "cache": cache, "epoch_s": timing["seconds"], "cpu_s": timing["cpu_seconds"],
                    "steps": timing["steps"], "median_step_s": statistics.median(timing["step_seconds"]),
                    "setup_s": trainer.setup_seconds, "cache_s": trainer.cache_info.get("cache_seconds"), "val_s": val_s,
                })
                console.print(f"{name:9s} cache={cache!s:5s} epoch {timing['seconds']:.2f}s wall / {timing['cpu_seconds']:.2f}s CPU "
                              f"({timing['steps']} steps, median {rows[-1]['median_step_s']:.2f}s/step); "
                              f"setup {trainer.setup_seconds:.1f}s" + (f"; validation pass {val_s:.1f}s" if val_s else ""))
                del trainer

    table = Table(title="one training epoch (optimiser steps only; wall and process CPU seconds)")
    cols = ("config", "prefix cache", "epoch s", "epoch CPU s", "steps", "median s/step", "no-cache / cache (wall, CPU)",
            "vs finetune, same cache (wall, CPU)", "validation pass s")
    for col in cols:
        table.add_column(col, justify="right")
    by = {(r["config"], r["cache"]): r for r in rows}
    for r in rows:
        other = by.get((r["config"], not r["cache"]))
        speedup = f"{other['epoch_s'] / r['epoch_s']:.2f}x, {other['cpu_s'] / r['cpu_s']:.2f}x" if other and r["cache"] else ""
        ft = by.get(("finetune", r["cache"]))
        vs = f"{r['epoch_s'] / ft['epoch_s']:.2f}x, {r['cpu_s'] / ft['cpu_s']:.2f}x" if ft else ""
        table.add_row(r["config"], "yes" if r["cache"] else "no", f"{r['epoch_s']:.2f}", f"{r['cpu_s']:.2f}",
                      str(r["steps"]), f"{r['median_step_s']:.3f}", speedup, vs,
                      f"{r['val_s']:.1f}" if r["val_s"] is not None else "")
    console.print(table)
    ft_c, ft_n = by.get(("finetune", True)), by.get(("finetune", False))
    if ft_c and ft_n:
        console.print(f"finetune: cache speed-up {ft_n['epoch_s'] / ft_c['epoch_s']:.2f}x wall, "
                      f"{ft_n['cpu_s'] / ft_c['cpu_s']:.2f}x CPU (goal >= 3x)")
        if ft_c["val_s"] and ft_n["val_s"]:
            console.print(f"finetune: validation pass speed-up {ft_n['val_s'] / ft_c['val_s']:.2f}x")
    for name, goal in (("maw-soft", 1.5), ("maw-grpo", 3.0)):
        for cache in (True, False):
            r, ft = by.get((name, cache)), by.get(("finetune", cache))
            if r and ft:
                console.print(f"{name} / finetune (cache={cache}): {r['epoch_s'] / ft['epoch_s']:.2f}x wall, "
                              f"{r['cpu_s'] / ft['cpu_s']:.2f}x CPU (goal <= {goal}x)")


if __name__ == "__main__":
    main()
