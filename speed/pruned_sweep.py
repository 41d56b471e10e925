"""The pruned sweep's cost against the same configurations unpruned, side by side in one run.

Runs the demo sweep (``examples/sweeps/demo.toml``: the built-in demo collection, the default
backbone, the quick preset's lengths) twice into temporary folders, with ``--epochs`` epochs per
configuration (the demo grid's own is 1, where pruning has nothing to stop): once with the grid's
successive-halving pruner (``maw.sweep.pruning``), once with ``pruner = "none"``. Prints each
arm's training seconds, the configurations pruned, the best validation score per arm in both runs
(pruning should rarely change the winner), and the ratio of the totals. Goal: <= 40%.

Then, for a committed sweep folder (``--estimate results/scifact/sweep``), the same ratio
estimated from its cells (``maw.sweep.study.pruning_cost``: a pruned configuration's mean epoch
time x the median epochs of its arm's unpruned configurations).

    python speed/pruned_sweep.py [--epochs 4] [--budget 4] [--threads 2] [--drop-arms full] [--estimate DIR]
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def run(pruner: str, args, tmp: Path) -> dict:
    from maw.sweep.grid import load_grid
    from maw.sweep.runner import run_sweep, sweep_cell_path
    from maw.sweep.study import pruning_cost

    text = (ROOT / "examples" / "sweeps" / "demo.toml").read_text()
    text = text.replace("[sweep]\n", f'[sweep]\npruner = "{pruner}"\n', 1)
    text = text.replace("budget = 2 ", f"budget = {args.budget} ", 1)
    for arm in args.drop_arms.split(",") if args.drop_arms else []:  # e.g. full: a whole-model pass per step
        head = f"[sweep.arms.{arm}]"
        start = text.index(head)
        end = text.find("[sweep.arms.", start + len(head))
        text = text[:start] + (text[end:] if end != -1 else "")
    grid_file = tmp / f"demo-{pruner}.toml"
    grid_file.write_text(text)
    overrides = {
        "train": {"num_epochs": args.epochs, "patience": args.epochs},  # pruning, not patience, stops early
        "runtime": {"num_threads": args.threads, "progress": False},
    }
    grid = load_grid(grid_file, overrides)
    out = tmp / f"out-{pruner}"
    t0 = time.perf_counter()
    outcome = run_sweep(grid, out, tmp / f"ckpt-{pruner}", log=print)
    wall = time.perf_counter() - t0
    arms: dict[str, dict] = {}
    records: dict[str, list[dict]] = {}
    for c in grid.cells:
        rec = json.loads(sweep_cell_path(out, grid, c).read_text())
        records.setdefault(c.arm, []).append(rec)
        a = arms.setdefault(c.arm, {"train_s": 0.0, "epochs": 0, "pruned": 0, "cells": 0, "best": None})
        a["train_s"] += rec.get("train_s") or 0.0
        a["epochs"] += rec.get("epochs_run") or 0
        a["cells"] += 1
        a["pruned"] += bool(rec.get("pruned"))
        if rec.get("score") is not None and (a["best"] is None or rec["score"] > a["best"][0]):
            a["best"] = (rec["score"], rec["label"])
    floor = pruning_cost(records, args.epochs)["floor_epochs"]  # the demo's first rung: epoch 1
    return {"arms": arms, "wall": wall, "failed": outcome.failed, "floor_epochs": floor}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--epochs", type=int, default=4)
    ap.add_argument("--budget", type=int, default=4)
    ap.add_argument("--drop-arms", default="", help="arms of the demo grid left out (comma-separated)")
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--estimate", default=None, help="a committed sweep folder to estimate the ratio from")
    ap.add_argument("--grid", default=None, help="its grid file (default: examples/sweeps/<dataset>.toml)")
    ap.add_argument("--skip-demo", action="store_true")
    args = ap.parse_args()
    if not args.skip_demo:
        with tempfile.TemporaryDirectory() as tmp:
            res = {p: run(p, args, Path(tmp)) for p in ("successive-halving", "none")}
        pr, un = res["successive-halving"], res["none"]
        print(f"\ndemo sweep, {args.epochs} epochs per configuration: training seconds per arm")
        print(
            f"{'arm':10s} {'pruned s':>9s} {'unpruned s':>11s} {'epochs':>12s} {'pruned cells':>13s}  "
            "best (pruned | unpruned)"
        )
        for arm in un["arms"]:
            p, u = pr["arms"][arm], un["arms"][arm]
            print(
                f"{arm:10s} {p['train_s']:9.0f} {u['train_s']:11.0f} {p['epochs']:>5d} vs {u['epochs']:<4d} "
                f"{p['pruned']:>6d} of {p['cells']:<4d}  "
                f"{p['best'][0]:.4f} {p['best'][1]} | {u['best'][0]:.4f} {u['best'][1]}"
            )
        tp = sum(a["train_s"] for a in pr["arms"].values())
        tu = sum(a["train_s"] for a in un["arms"].values())
        ep = sum(a["epochs"] for a in pr["arms"].values())
        eu = sum(a["epochs"] for a in un["arms"].values())
        floor = un["floor_epochs"]
        print(
            f"epochs trained: pruned {ep}, unpruned {eu}: {100 * ep / eu:.0f}% (machine-independent; the seconds "
            "also count each cell's epoch-0 validation and move with the load of a shared machine); the floor of "
            f"any successive halving with a rung at epoch 1 (each configuration to it, one per arm to the end): "
            f"{floor:.0f} epochs, {100 * floor / eu:.0f}%"
        )
        print(
            f"total: pruned {tp:.0f} s, unpruned {tu:.0f} s: the pruned sweep cost {100 * tp / tu:.0f}% "
            f"(goal <= 40%); wall {pr['wall']:.0f} s vs {un['wall']:.0f} s"
        )
    if args.estimate:
        from maw.sweep.grid import load_grid
        from maw.sweep.study import pruning_cost, sweep_records

        out = Path(args.estimate)
        manifest = json.loads((out / "sweep.json").read_text())
        grid = load_grid(args.grid or ROOT / manifest["grid_file"])
        rungs = grid.pruner.rungs(grid.base.train.num_epochs) or [1]
        cost = pruning_cost(sweep_records(out, grid), grid.base.train.num_epochs, rungs[0])
        print(
            f"{out}: {cost['train_s']:.0f} s of training; the same configurations unpruned, estimated: "
            f"{cost['unpruned_estimate_s']:.0f} s; ratio {100 * cost['train_s'] / max(cost['unpruned_estimate_s'], 1e-9):.0f}%"
        )
        print(
            f"in epochs: {cost['epochs']:.0f} of {cost['unpruned_epochs']:.0f} "
            f"({100 * cost['epochs'] / max(cost['unpruned_epochs'], 1e-9):.0f}%); the floor of any successive halving "
            f"with its first rung at epoch {rungs[0]} (each configuration to it, one per arm to the end): "
            f"{cost['floor_epochs']:.0f} epochs ({100 * cost['floor_epochs'] / max(cost['unpruned_epochs'], 1e-9):.0f}%)"
        )


if __name__ == "__main__":
    main()
