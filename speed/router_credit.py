"""Hard MAW routers on the same budget: GRPO (group baseline), GRPO (leave-one-out) and
straight-through Gumbel, side by side, per epoch.

Each run is what ``maw train --method maw --router R`` runs (``maw.plan.resolve`` +
``maw.training.trainer.train``), with the same data, epochs, batch, learning rates and seed; only
the router (and GRPO's baseline) differs. ``grpo-loo-warm`` starts GRPO's policy network from the
``soft`` run's best router (``router_init``; it has then had the soft run's budget too). Every hard router uses the default ``gated``
parametrisation, so epoch 0 is the zero-shot model for all of them. Per epoch it prints the
validation nDCG@10, the router's policy entropy on the training samples (the uniform policy's is
ln D), the KL to GRPO's reference policy, and the mean gate |a| of the MAW layers.

    python speed/router_credit.py [--dataset demo] [--model PATH] [--epochs 2] [--train-samples 100]
        [--val-samples 30] [--batch-size 32] [--threads N]
        [--runs grpo-group,grpo-loo,gumbel[,soft,grpo-loo-warm]]

The same runs from the command line: ``maw train --method maw --router grpo --grpo-baseline
leave_one_out [--router-init RUN_OF_SOFT]``.
"""

from __future__ import annotations

import argparse
import math
import sys
import tempfile
import time
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
from maw.plan import resolve
from maw.training.router_logs import policy_entropy
from maw.training.trainer import train

RUNS = {  # name: (router, grpo baseline, warm start from the "soft" run)
    "grpo-group": ("grpo", "group", False),
    "grpo-loo": ("grpo", "leave_one_out", False),
    "gumbel": ("gumbel", None, False),
    "supervised": ("supervised", None, False),
    "soft": ("soft", None, False),
    "grpo-loo-warm": ("grpo", "leave_one_out", True),  # needs "soft" earlier in --runs
}


def model_name(path: str) -> str:
    """A short name of a backbone path (the folder above a packaged ``.../name/model``)."""
    p = Path(path)
    return p.parent.name if p.name == "model" else p.name


def fmt(x: float | None, spec: str = ".4f") -> str:
    return "-" if x is None else format(x, spec)


def epoch_row(h: dict, gated: bool) -> dict:
    """nDCG@10, train / val policy entropy, KL to the reference, mean gate |a| of one history entry
    (epoch 0 logs no gate: it is 0 by construction when ``gated``)."""
    log = h.get("router", {})
    gates = log.get("gate_abs_mean") or {}
    return {
        "ndcg": h["val"]["nDCG@10"],
        "entropy": log.get("policy_entropy"),
        "val_entropy": log.get("val_policy_entropy", policy_entropy(log.get("val_depth_statistics", {}))),
        "kl": log.get("kl_ref"),
        "gate": sum(gates.values()) / len(gates) if gates else (0.0 if gated and h["epoch"] == 0 else None),
        "adv": log.get("advantage_abs"),
        "seconds": h.get("train_seconds"),
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--dataset", default="demo")
    ap.add_argument("--model", default=None, help="backbone (default: maw.config.default_model())")
    ap.add_argument("--epochs", type=int, default=2)
    ap.add_argument("--train-samples", type=int, default=100)
    ap.add_argument("--val-samples", type=int, default=30)
    ap.add_argument("--val-fraction", type=float, default=0.2, help="share of train queries carved for val")
    ap.add_argument("--batch-size", type=int, default=32)
    ap.add_argument("--learning-rate", type=float, default=TrainConfig().learning_rate)
    ap.add_argument("--policy-lr", type=float, default=MAWConfig().policy_lr)
    ap.add_argument("--group-size", type=int, default=MAWConfig().group_size)
    ap.add_argument("--depth-dim", type=int, default=MAWConfig().depth_dim)
    ap.add_argument("--granularity", default=MAWConfig().granularity)
    ap.add_argument("--maw-layers", default=MAWConfig().maw_layers)
    ap.add_argument("--seed", type=int, default=TrainConfig().seed)
    ap.add_argument("--runs", default="grpo-group,grpo-loo,gumbel", help=f"comma list of {', '.join(RUNS)}")
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--device", default=None)
    args = ap.parse_args()
    console = Console(width=None if sys.stdout.isatty() else 140)
    unknown = [r for r in args.runs.split(",") if r not in RUNS]
    if unknown:
        ap.error(f"--runs: unknown {unknown}; choose from {', '.join(RUNS)}")

    data_cfg = DataConfig(
        dataset=args.dataset,
        train_samples=args.train_samples,
        val_samples=args.val_samples,
        val_fraction=args.val_fraction,
    )
    dataset = load_dataset(args.dataset)
    splits = make_splits(dataset, data_cfg)
    model_cfg = ModelConfig(model=args.model or default_model())
    runtime = RuntimeConfig(device=args.device, num_threads=args.threads, progress=False)
    results, walls = {}, {}
    t_all = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        for name in args.runs.split(","):
            router, baseline, warm = RUNS[name]
            extra = {} if baseline is None else {"grpo_baseline": baseline}
            if warm:
                if "soft" not in walls:
                    ap.error(f"--runs: {name} warm-starts from the soft run: put soft before it")
                extra["router_init"] = str(Path(tmp) / "soft")
            maw_cfg = MAWConfig(
                **extra,
                router=router,
                depth_dim=args.depth_dim,
                granularity=args.granularity,
                maw_layers=args.maw_layers,
                group_size=args.group_size,
                policy_lr=args.policy_lr,
            )
            train_cfg = TrainConfig(
                num_epochs=args.epochs,
                batch_size=args.batch_size,
                learning_rate=args.learning_rate,
                seed=args.seed,
                patience=args.epochs + 1,  # no early stop: every run gets the whole budget
                checkpoint_every=0,
                save_checkpoints=name == "soft",  # its best/ is the warm start
                prefix_cache_dir=str(Path(tmp) / "cache"),  # the same frozen prefix for every run
            )
            plan = resolve("maw", data_cfg, model_cfg, maw_cfg, train_cfg, EvalConfig(), runtime)
            t0 = time.perf_counter()
            res = train(plan, dataset, splits, Path(tmp) / name)
            walls[name] = time.perf_counter() - t0
            results[name] = [epoch_row(h, plan.maw.parametrisation == "gated") for h in res.history]
            console.log(f"{name}: {walls[name]:.1f} s, best epoch {res.best_epoch} ({res.best_score:.4f})")
    total = time.perf_counter() - t_all

    lnD = math.log(args.depth_dim)
    table = Table(
        title=(
            f"MAW hard routers on {args.dataset} ({len(splits.train)} train / {len(splits.val)} val queries), "
            f"{model_name(model_cfg.model)}, layers {args.maw_layers}, {args.granularity}, D={args.depth_dim} "
            f"(ln D = {lnD:.4f}), G={args.group_size}, batch {args.batch_size}, lr {args.learning_rate:g}, "
            f"policy lr {args.policy_lr:g}, seed {args.seed}"
        )
    )
    for col in ("run", "epoch", "val nDCG@10", "entropy", "ln D - entropy", "val entropy", "KL to ref"):
        table.add_column(col, justify="right")
    for col in ("gate |a|", "|Adv|", "train s"):
        table.add_column(col, justify="right")
    for name, rows in results.items():
        for epoch, r in enumerate(rows):
            ent = r["entropy"]
            table.add_row(
                name,
                str(epoch),
                fmt(r["ndcg"]),
                fmt(ent),
                fmt(None if ent is None else lnD - ent, ".2e"),
                fmt(r["val_entropy"]),
                fmt(r["kl"], ".2e"),
                fmt(r["gate"], ".2e"),
                fmt(r["adv"], ".2e"),
                fmt(r["seconds"], ".1f"),
            )
    console.print(table)
    console.print(
        "entropy: mean policy entropy (nats) of the training samples' routing units; val entropy: the "
        "greedy validation pass; KL to ref: GRPO's mean KL(pi || pi_ref) per text and layer (gumbel has no "
        "reference); gate |a|: mean over heads and MAW layers of |tanh(gate)| at the epoch's end."
    )
    walls_text = ", ".join(f"{n} {s:.0f} s" for n, s in walls.items())
    console.print(f"wall time: {total:.0f} s in all ({walls_text}); torch threads {torch.get_num_threads()}")


if __name__ == "__main__":
    main()
