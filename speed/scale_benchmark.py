"""``maw benchmark --preset smoke`` on a large synthetic corpus: peak memory, disk and wall time.

Writes a synthetic BEIR collection of ``--docs`` documents (random words, as ``speed/scale.py``)
with ``--train-queries`` training and ``--test-queries`` test queries (one judged document each,
the query 4 words of it; validation is carved from train), and a tiny random BERT (``--layers`` 2, hidden size 384 like
all-MiniLM-L6-v2, the MiniLM tokenizer), then runs as a child process

    maw benchmark --datasets DIR --preset smoke --model TINY --methods bm25,zeroshot,lora,finetune,maw

with HOME in the work folder, so every cache (corpus table, BM25 negatives, frozen-prefix cache,
embeddings) is counted. The smoke preset keeps every judged document plus a seeded sample of the
rest, 2,000 documents; the full corpus is still read (as a memory-mapped table) to subsample it.

Printed: peak RSS of the child (``os.wait4``; the largest process), wall seconds, disk used by the
run folder and by the caches (bytes of the files, ``du``-like), the input corpus size, and the
first lines of REPORT.md (which must say the corpus was subsampled).

    python speed/scale_benchmark.py --docs 200000
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from scale import write_collection, write_tiny_model  # noqa: E402


def add_train_split(folder: Path, n_docs: int, n_train: int, n_test: int, seed: int = 1) -> None:
    """Add ``n_train`` training queries (ids after the test ones), one judged document each, and make
    every query (test and train) 4 words of its judged document, so retrieval has a signal."""
    rng = np.random.default_rng(seed)
    test = {}
    for line in (folder / "qrels" / "test.tsv").read_text().splitlines()[1:]:
        q, d, _ = line.split("\t")
        test[q] = int(d[1:])
    train = dict(
        zip((f"q{n_test + i}" for i in range(n_train)), rng.choice(n_docs, n_train).tolist(), strict=True)
    )
    judged = {**test, **train}
    wanted = set(judged.values())
    words: dict[int, list[str]] = {}
    with open(folder / "corpus.jsonl", encoding="utf-8") as fh:
        for row, line in enumerate(fh):
            if row in wanted:
                words[row] = json.loads(line)["text"].split()
    with open(folder / "queries.jsonl", "w", encoding="utf-8") as fh:
        for q, d in judged.items():
            fh.write(json.dumps({"_id": q, "text": " ".join(rng.choice(words[d], 4))}) + "\n")
    with open(folder / "qrels" / "train.tsv", "w", encoding="utf-8") as fh:
        fh.write("query-id\tcorpus-id\tscore\n")
        fh.writelines(f"{q}\td{d}\t1\n" for q, d in train.items())


def disk_bytes(folder: Path) -> int:
    return sum(p.stat().st_size for p in folder.rglob("*") if p.is_file()) if folder.exists() else 0


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--docs", type=int, default=200_000)
    ap.add_argument("--train-queries", type=int, default=1000)
    ap.add_argument("--test-queries", type=int, default=300)
    ap.add_argument("--layers", type=int, default=2)
    ap.add_argument("--methods", default="bm25,zeroshot,lora,finetune,maw")
    ap.add_argument("--workdir", default=None)
    args = ap.parse_args()
    work = Path(args.workdir) if args.workdir else Path(tempfile.mkdtemp(prefix="maw-scale-bench-"))
    work.mkdir(parents=True, exist_ok=True)
    model = write_tiny_model(work / "tiny-bert-384", args.layers)
    data = work / f"synthetic-{args.docs}"
    if not (data / "qrels" / "train.tsv").exists():
        write_collection(data, args.docs, args.test_queries, words=8)
        add_train_split(data, args.docs, args.train_queries, args.test_queries)
    home, out = work / "home", work / "runs"
    cmd = [
        sys.executable, "-m", "maw.cli", "benchmark", "--datasets", str(data), "--preset", "smoke",
        "--model", str(model), "--methods", args.methods, "--out", str(out), "--run-name", "smoke",
    ]  # fmt: skip
    env = {**os.environ, "HOME": str(home), "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}
    t0 = time.perf_counter()
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL)
    _, status, usage = os.wait4(proc.pid, 0)
    wall = time.perf_counter() - t0
    code = os.waitstatus_to_exitcode(status)
    if code != 0:
        raise SystemExit(f"maw benchmark failed ({code}): {' '.join(cmd)}")
    corpus = (data / "corpus.jsonl").stat().st_size
    print(f"maw benchmark --preset smoke, methods {args.methods}, on {args.docs:,} synthetic documents "
          f"({corpus / 2**20:,.1f} MiB corpus.jsonl), {args.train_queries:,} train / {args.test_queries:,} test queries")  # fmt: skip
    print(f"  peak RSS          {usage.ru_maxrss * 1024 / 2**20:10,.1f} MiB")
    print(f"  wall              {wall:10,.1f} s")
    print(f"  disk: run folder  {disk_bytes(out) / 2**20:10,.1f} MiB")
    cache = home / ".cache" / "maw"
    for sub in sorted(p for p in cache.iterdir() if p.is_dir()) if cache.exists() else []:
        print(f"  disk: cache/{sub.name:<14}{disk_bytes(sub) / 2**20:8,.1f} MiB")
    report = out / "smoke" / "REPORT.md"
    print("\nREPORT.md, first lines:")
    print("\n".join(report.read_text().splitlines()[:8]))
    print(f"work folder: {work}")


if __name__ == "__main__":
    main()
