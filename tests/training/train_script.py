"""Train a tiny random BERT on the tiny BEIR collection (run by the resume and multi-process tests).

    python train_script.py --data DIR --model DIR --run-dir DIR --out result.json [--method finetune]
        [--router grpo] [--epochs 3] [--checkpoint-every 3] [--batch-size 8]

Also works under ``torchrun --nproc_per_node 2`` (``train`` joins the process group). Rank 0 writes
``--out``: the history, where the run resumed from, and the world size.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _tiny import Tiny  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--data", required=True)
    ap.add_argument("--model", required=True)
    ap.add_argument("--run-dir", required=True)
    ap.add_argument("--out", required=True)
    ap.add_argument("--method", default="finetune")
    ap.add_argument("--router", default="soft")
    ap.add_argument("--epochs", type=int, default=3)
    ap.add_argument("--checkpoint-every", type=int, default=3)
    ap.add_argument("--batch-size", type=int, default=8)
    ap.add_argument("--no-cache", action="store_true")
    args = ap.parse_args()

    from maw.training.trainer import train

    tiny = Tiny.load(args.data, args.model)
    plan = tiny.plan(
        args.method,
        num_epochs=args.epochs,
        checkpoint_every=args.checkpoint_every,
        batch_size=args.batch_size,
        prefix_cache=not args.no_cache,
        router=args.router,
    )
    result = train(plan, tiny.dataset, tiny.splits, args.run_dir)
    if result.setup["rank"] != 0:
        return
    Path(args.out).write_text(
        json.dumps(
            {
                "history": result.history,
                "resumed_from": result.resumed_from,
                "best_epoch": result.best_epoch,
                "world_size": result.setup.get("world_size"),
            }
        )
    )


if __name__ == "__main__":
    main()
