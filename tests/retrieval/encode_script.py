"""Dense retrieval under ``torchrun --nproc_per_node N`` (gloo on CPU): every rank encodes its shards
of the corpus into one store (shard i by rank i % N), rank 0 searches and writes the run to --out."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from test_dense import CORPUS, QUERIES, tiny_encoder  # noqa: E402
from transformers import AutoTokenizer  # noqa: E402

from maw.config import default_model  # noqa: E402
from maw.retrieval.dense import DenseRetriever  # noqa: E402
from maw.training.distributed import init_distributed, shutdown  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--cache", required=True)
    ap.add_argument("--out", required=True)
    args = ap.parse_args()
    ctx = init_distributed("cpu")
    enc = tiny_encoder(AutoTokenizer.from_pretrained(default_model()))
    r = DenseRetriever(enc, 16, 32, 4, cache_dir=args.cache, device="cpu", latency_queries=0, shard_size=3)
    run = r.retrieve(QUERIES, CORPUS, k=5)
    if ctx.rank == 0:
        Path(args.out).write_text(
            json.dumps({"world_size": ctx.world_size, "run": run, "timings": r.timings})
        )
    else:
        assert run == {}
    shutdown(ctx)


if __name__ == "__main__":
    main()
