"""Corpus-encoding throughput: maw ``Encoder.encode`` vs ``SentenceTransformer.encode``.

Same model (``maw.config.default_model()`` unless ``--model``), same texts (the first ``--num-docs``
documents of a BEIR corpus, ``title + " " + text``), same max length (256), same batch size, same
torch threads, same process. The two encoders run alternately ``--repeats`` times after one warm-up
each; the script prints docs/s per run (wall clock, and per CPU-second of this process - the
steadier figure on a shared machine), the medians, the ratios ours/theirs (> 1 means maw is
faster) and the largest absolute difference between the two sets of embeddings.

    python speed/encode_throughput.py --dataset ../shared/datasets/scifact --num-docs 1000
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path

import numpy as np
import torch


def read_texts(folder: Path, n: int) -> list[str]:
    texts = []
    with open(folder / "corpus.jsonl", encoding="utf-8") as fh:
        for line in fh:
            if not line.strip():
                continue
            doc = json.loads(line)
            texts.append((doc.get("title", "") + " " + doc["text"]).strip())
            if len(texts) >= n:
                break
    return texts


def main() -> None:
    from sentence_transformers import SentenceTransformer

    from maw.config import default_model
    from maw.models.encoder import Encoder

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dataset", default="../shared/datasets/scifact", help="BEIR-format folder")
    parser.add_argument("--num-docs", type=int, default=1000)
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--max-length", type=int, default=256)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's default)")
    parser.add_argument("--model", default=None)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--fp16", action="store_true", help="both models in float16 (CUDA)")
    args = parser.parse_args()

    folder = Path(args.dataset)
    if not (folder / "corpus.jsonl").is_file():
        parser.error(f"--dataset: {folder} is not a BEIR folder (no corpus.jsonl)")
    if args.threads:
        torch.set_num_threads(args.threads)
    model_path = args.model or default_model()
    texts = read_texts(folder, args.num_docs)

    ours = Encoder.from_pretrained(model_path).to(args.device).eval()
    theirs = SentenceTransformer(model_path, device=args.device)
    theirs.max_seq_length = args.max_length
    if args.fp16:
        ours.half()
        theirs.half()

    def run_ours() -> np.ndarray:
        return ours.encode(texts, max_length=args.max_length, batch_size=args.batch_size)

    def run_theirs() -> np.ndarray:
        return theirs.encode(texts, batch_size=args.batch_size, normalize_embeddings=True, convert_to_numpy=True)

    print(
        f"{len(texts)} docs from {folder}, max_length={args.max_length}, batch_size={args.batch_size}, "
        f"threads={torch.get_num_threads()}, device={args.device}, fp16={args.fp16}, torch {torch.__version__}"
    )
    emb_ours, emb_theirs = run_ours(), run_theirs()  # warm-up (also the equality check)
    rates: dict[str, list[float]] = {"maw": [], "sentence-transformers": []}
    cpu_rates: dict[str, list[float]] = {"maw": [], "sentence-transformers": []}
    for rep in range(args.repeats):
        for name, fn in (("maw", run_ours), ("sentence-transformers", run_theirs)) if rep % 2 == 0 else (
            ("sentence-transformers", run_theirs),
            ("maw", run_ours),
        ):
            t0, c0 = time.perf_counter(), time.process_time()
            fn()
            seconds, cpu = time.perf_counter() - t0, time.process_time() - c0
            rates[name].append(len(texts) / seconds)
            cpu_rates[name].append(len(texts) / cpu)
            print(
                f"  run {rep + 1} {name:>21}: {len(texts) / seconds:8.1f} docs/s ({seconds:.2f} s wall), "
                f"{len(texts) / cpu:8.1f} docs/CPU-s ({cpu:.2f} s CPU)"
            )
    med = {name: statistics.median(values) for name, values in rates.items()}
    med_cpu = {name: statistics.median(values) for name, values in cpu_rates.items()}
    print(f"maw Encoder.encode                    median {med['maw']:8.1f} docs/s, {med_cpu['maw']:8.1f} docs/CPU-s")
    print(
        f"SentenceTransformer.encode            median {med['sentence-transformers']:8.1f} docs/s, "
        f"{med_cpu['sentence-transformers']:8.1f} docs/CPU-s"
    )
    best = {name: max(values) for name, values in rates.items()}
    best_cpu = {name: max(values) for name, values in cpu_rates.items()}
    print(
        f"ratio ours/theirs = {med['maw'] / med['sentence-transformers']:.3f}x (median wall), "
        f"{med_cpu['maw'] / med_cpu['sentence-transformers']:.3f}x (median CPU time), "
        f"{best['maw'] / best['sentence-transformers']:.3f}x (best wall), "
        f"{best_cpu['maw'] / best_cpu['sentence-transformers']:.3f}x (best CPU time)"
    )
    print(f"max |embedding difference| = {float(np.abs(emb_ours - emb_theirs).max()):.2e}")


if __name__ == "__main__":
    main()
