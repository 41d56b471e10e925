"""Every MAW router starts at the pretrained model: epoch-0 validation of each router vs zero-shot.

Epoch 0 of a training run is validation before any optimiser step. For each router (``soft`` in
its ``convex`` parametrisation, ``gumbel`` / ``grpo`` / ``supervised`` in their default ``gated``
one) this builds what ``maw train --method maw --router R`` builds (``maw.plan.resolve`` +
``maw.training.trainer.Trainer``: MAW injected, prefix cache, same validation pool), runs the
epoch-0 validation, and prints its scores next to the backbone's own (``finetune``'s epoch 0, the
zero-shot model) with the largest difference over the metrics. ``--parametrisation convex``
shows what the gate avoids: a one-hot depth scaled by D changes the model before any step.

    python speed/identity_init.py [--dataset ../shared/datasets/scifact] [--routers soft,gumbel,grpo,supervised]
        [--depth-dim 8] [--granularity query] [--maw-layers 6] [--parametrisation default|convex]
        [--prefix-cache-dir DIR]

The same figure from the command line: the first history entry (epoch 0) of ``maw train --method
maw --router R``.
"""

from __future__ import annotations

import argparse
import tempfile
import time

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
from maw.plan import resolve
from maw.training.distributed import DistributedContext
from maw.training.trainer import Trainer

METRICS = ("nDCG@10", "R@100", "RR@10", "AP")


def epoch0(plan, dataset, splits, run_dir) -> tuple[dict[str, float], float]:
    """Validation scores of the plan's model before any step, and the seconds it took (setup included)."""
    t0 = time.perf_counter()
    trainer = Trainer(plan, dataset, splits, run_dir, DistributedContext(), None)
    trainer.setup()
    metrics, _ = trainer.validate()
    return metrics, time.perf_counter() - t0


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--dataset", default="../shared/datasets/scifact")
    ap.add_argument("--model", default=None, help="backbone (default: maw.config.default_model())")
    ap.add_argument("--routers", default="soft,gumbel,grpo,supervised")
    ap.add_argument("--depth-dim", type=int, default=MAWConfig().depth_dim)
    ap.add_argument("--granularity", default=MAWConfig().granularity)
    ap.add_argument("--maw-layers", default=MAWConfig().maw_layers)
    ap.add_argument(
        "--parametrisation", default="default", help="default (each router's own) or convex / gated / signed"
    )
    ap.add_argument(
        "--prefix-cache-dir", default=None, help="reuse a frozen-prefix cache (default: a temporary one)"
    )
    ap.add_argument("--threads", type=int, default=None)
    args = ap.parse_args()

    data_cfg = DataConfig(dataset=args.dataset)
    dataset = load_dataset(args.dataset)
    splits = make_splits(dataset, data_cfg)
    model_cfg = ModelConfig(model=args.model or default_model())
    eval_cfg = EvalConfig()
    runtime = RuntimeConfig(num_threads=args.threads, progress=False)
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        # one float32 cache shared by every run, as in a benchmark
        train_cfg = TrainConfig(
            prefix_cache_dir=args.prefix_cache_dir or f"{tmp}/prefix_cache", prefix_cache_dtype="float32"
        )
        base = resolve("finetune", data_cfg, model_cfg, None, train_cfg, eval_cfg, runtime)
        zero, secs = epoch0(base, dataset, splits, f"{tmp}/finetune")
        rows.append(("zero-shot (finetune, epoch 0)", "-", zero, secs))
        for router in args.routers.split(","):
            extra = {} if args.parametrisation == "default" else {"parametrisation": args.parametrisation}
            maw_cfg = MAWConfig(
                router=router,
                depth_dim=args.depth_dim,
                granularity=args.granularity,
                maw_layers=args.maw_layers,
                **extra,
            )
            plan = resolve("maw", data_cfg, model_cfg, maw_cfg, train_cfg, eval_cfg, runtime)
            val, secs = epoch0(plan, dataset, splits, f"{tmp}/maw-{router}")
            rows.append((f"maw {router}", plan.maw.parametrisation, val, secs))

    table = Table(
        title=f"epoch-0 validation on {dataset.name} ({len(splits.val)} validation queries; "
        f"D = {args.depth_dim}, {args.granularity} granularity, MAW layers {args.maw_layers})"
    )
    for col in ("run", "parametrisation", *METRICS, "max |Δ| vs zero-shot", "s"):
        table.add_column(col, justify="left" if col in ("run", "parametrisation") else "right")
    for name, param, val, secs in rows:
        delta = max(abs(val[m] - zero[m]) for m in METRICS)
        table.add_row(name, param, *(f"{val[m]:.4f}" for m in METRICS), f"{delta:.1e}", f"{secs:.0f}")
    Console(width=160).print(table)
    worst = max(max(abs(v[m] - zero[m]) for m in METRICS) for _, _, v, _ in rows[1:])
    print(f"largest difference from zero-shot over routers and metrics: {worst:.2e}")


if __name__ == "__main__":
    main()
