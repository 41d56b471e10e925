"""Peak memory of ``maw evaluate`` (zero-shot, dense) as the corpus grows: bytes per document.

For each size in ``--sizes``, the script writes a synthetic BEIR collection (random words, 8 per
document by default; ``--queries`` queries, one judged document each) and runs, as a subprocess,

    maw evaluate --dataset DIR --method zeroshot --model TINY --quiet ...

with a tiny random BERT (``--layers`` 1, hidden size 384 like all-MiniLM-L6-v2's embeddings, 6
heads, FFN 384, the MiniLM tokenizer; documents cut at ``--doc-max-length`` 16 tokens) saved to a
temporary folder, so encoding is fast and the embeddings have the size of the real model's. HOME points into the work folder, so the corpus
table and the embedding store are built there (a first run: table build + encoding included).

Printed per size: peak RSS of the child (``os.wait4`` rusage, ru_maxrss), docs/s (the result
file's ``efficiency.docs_per_second``), wall seconds; then the peak-RSS growth per document between
consecutive sizes and the extrapolation to MS MARCO's 8,841,823 passages from the largest size
with the largest growth measured (conservative: fixed buffers make the small sizes' growth larger).
Target: growth <= 3,500 bytes per document with the default exact index (8.8M -> <= 31 GB).

``--nproc N`` (N > 1) also runs each size under ``torchrun --standalone --nproc-per-node N`` (CPU:
gloo) into a fresh cache and prints, next to the one-process run, the largest absolute difference
of the stored document embeddings and of every metric (they must agree to float tolerance).

    python speed/scale.py --sizes 20000,200000            # 1000000 too when there is time
    python speed/scale.py --sizes 20000 --nproc 2          # one process vs two, same corpus
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

MSMARCO_PASSAGES = 8_841_823
TARGET_BYTES_PER_DOC = 3_500
ISSUE_BASELINE = 6_770  # bytes per document before this change, as measured in issue 16


def write_tiny_model(folder: Path, layers: int) -> Path:
    """A random BERT with hidden size 384 (6 heads, FFN 384) and the MiniLM tokenizer."""
    import torch
    from transformers import AutoTokenizer, BertConfig, BertModel

    from maw.config import default_model

    tok = AutoTokenizer.from_pretrained(default_model())
    cfg = BertConfig(
        vocab_size=len(tok),
        hidden_size=384,
        num_hidden_layers=layers,
        num_attention_heads=6,
        intermediate_size=384,
        max_position_embeddings=128,
    )
    torch.manual_seed(0)
    BertModel(cfg, add_pooling_layer=False).save_pretrained(folder, safe_serialization=True)
    tok.save_pretrained(folder)
    return folder


def write_collection(folder: Path, n_docs: int, n_queries: int, words: int, seed: int = 0) -> Path:
    """BEIR folder of ``n_docs`` random-word documents, ``n_queries`` queries, one judgement each."""
    rng = np.random.default_rng(seed)
    vocab = np.array(
        ["".join(rng.choice(list("abcdefghijklmnopqrstuvwxyz"), rng.integers(3, 9))) for _ in range(5000)]
    )
    folder.mkdir(parents=True, exist_ok=True)
    with open(folder / "corpus.jsonl", "w", encoding="utf-8") as fh:
        for start in range(0, n_docs, 10_000):
            ids = rng.integers(0, len(vocab), (min(10_000, n_docs - start), words))
            fh.writelines(
                json.dumps({"_id": f"d{start + i}", "title": "", "text": " ".join(vocab[row])}) + "\n"
                for i, row in enumerate(ids)
            )
    judged = rng.choice(n_docs, n_queries, replace=False)
    with open(folder / "queries.jsonl", "w", encoding="utf-8") as fh:
        for q in range(n_queries):
            fh.write(
                json.dumps({"_id": f"q{q}", "text": " ".join(vocab[rng.integers(0, len(vocab), 6)])}) + "\n"
            )
    (folder / "qrels").mkdir(exist_ok=True)
    with open(folder / "qrels" / "test.tsv", "w", encoding="utf-8") as fh:
        fh.write("query-id\tcorpus-id\tscore\n")
        fh.writelines(f"q{q}\td{d}\t1\n" for q, d in enumerate(judged.tolist()))
    return folder


def run_evaluate(
    dataset: Path, model: Path, out: Path, home: Path, doc_max_length: int, extra: list[str], nproc: int = 1
) -> tuple[int, float]:
    """Run ``maw evaluate`` as a child (under torchrun when ``nproc`` > 1); returns (peak RSS bytes
    of the largest process, wall seconds)."""
    launcher = [sys.executable, "-m"]
    if nproc > 1:
        launcher = [
            sys.executable,
            "-m",
            "torch.distributed.run",
            "--standalone",
            f"--nproc-per-node={nproc}",
            "-m",
        ]
    cmd = [
        *launcher, "maw.cli", "evaluate",
        "--dataset", str(dataset), "--method", "zeroshot", "--model", str(model),
        "--query-max-length", "16", "--doc-max-length", str(doc_max_length), "--top-k", "100",
        "--latency-queries", "10", "--quiet", "--out", str(out), *extra,
    ]  # fmt: skip
    env = {**os.environ, "HOME": str(home), "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}
    t0 = time.perf_counter()
    proc = subprocess.Popen(cmd, env=env)
    _, status, usage = os.wait4(proc.pid, 0)
    wall = time.perf_counter() - t0
    if os.waitstatus_to_exitcode(status) != 0:
        raise SystemExit(f"maw evaluate failed ({os.waitstatus_to_exitcode(status)}): {' '.join(cmd)}")
    return usage.ru_maxrss * 1024, wall  # ru_maxrss is in KiB on Linux (largest of the process tree)


def store_of(home: Path):
    """The one embedding store a run under ``home`` wrote."""
    from maw.retrieval.store import EmbeddingStore

    (folder,) = (home / ".cache" / "maw" / "embeddings").iterdir()
    meta = json.loads((folder / "meta.json").read_text())
    return EmbeddingStore(folder, meta["rows"], meta["dim"], meta["dtype"], meta["shard_size"])


def compare_processes(home_one: Path, home_n: Path, out_one: Path, out_n: Path) -> tuple[float, float]:
    """(max |embedding difference|, max |metric difference|) between a 1-process and an N-process run."""
    a, b = store_of(home_one), store_of(home_n)
    emb = max(
        float(np.abs(a.shard(i).astype(np.float32) - b.shard(i).astype(np.float32)).max())
        for i in range(a.num_shards)
    )
    m_a, m_b = (json.loads(p.read_text())["metrics"] for p in (out_one, out_n))
    metric = max(abs(m_a[k] - m_b[k]) for k in m_a if isinstance(m_a[k], float))
    return emb, metric


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sizes", default="20000,200000", help="comma-separated corpus sizes (ascending)")
    ap.add_argument("--queries", type=int, default=200)
    ap.add_argument("--words", type=int, default=8, help="words per document")
    ap.add_argument("--layers", type=int, default=1, help="layers of the random BERT (hidden size 384)")
    ap.add_argument("--doc-max-length", type=int, default=16)
    ap.add_argument("--workdir", default=None, help="keep collections, caches and results here")
    ap.add_argument("--nproc", type=int, default=1, help="also run each size under torchrun with N processes")
    ap.add_argument("extra", nargs="*", help="more `maw evaluate` flags (after --)")
    args = ap.parse_args()
    sizes = sorted(int(s) for s in args.sizes.split(","))
    work = Path(args.workdir) if args.workdir else Path(tempfile.mkdtemp(prefix="maw-scale-"))
    work.mkdir(parents=True, exist_ok=True)
    model = write_tiny_model(work / "tiny-bert-384", args.layers)
    rows = []
    for n in sizes:
        data = write_collection(work / f"synthetic-{n}", n, args.queries, args.words)
        out = work / f"result-{n}.json"
        rss, wall = run_evaluate(data, model, out, work / f"home-{n}", args.doc_max_length, args.extra)
        eff = json.loads(out.read_text())["efficiency"]
        rows.append((n, rss, wall, eff.get("docs_per_second"), eff.get("index_bytes")))
        print(f"{n:>10,} docs: peak RSS {rss / 2**20:9,.1f} MiB   {eff.get('docs_per_second') or 0:8,.0f} docs/s"
              f"   wall {wall:7.1f} s   index_bytes {eff.get('index_bytes') or 0:,.0f}", flush=True)  # fmt: skip
        if args.nproc > 1:
            out_n, home_n = work / f"result-{n}-np{args.nproc}.json", work / f"home-{n}-np{args.nproc}"
            rss_n, wall_n = run_evaluate(
                data, model, out_n, home_n, args.doc_max_length, args.extra, nproc=args.nproc
            )
            eff_n = json.loads(out_n.read_text())["efficiency"]
            emb, metric = compare_processes(work / f"home-{n}", home_n, out, out_n)
            print(f"{'':>10}  torchrun x{args.nproc}: peak RSS per process {rss_n / 2**20:,.1f} MiB   "
                  f"{eff_n.get('docs_per_second') or 0:8,.0f} docs/s   wall {wall_n:7.1f} s   "
                  f"max |d embedding| {emb:.2e}   max |d metric| {metric:.2e}", flush=True)  # fmt: skip
    print(f"\n{'from':>10} {'to':>10} {'growth bytes/doc':>17}")
    for (n_a, rss_a, *_), (n_b, rss_b, *_) in zip(rows, rows[1:], strict=False):
        print(f"{n_a:>10,} {n_b:>10,} {(rss_b - rss_a) / (n_b - n_a):>17,.0f}")
    if len(rows) >= 2:
        # conservative: the largest growth between any two consecutive sizes, from the largest size
        growth = max((b[1] - a[1]) / (b[0] - a[0]) for a, b in zip(rows, rows[1:], strict=False))
        n_b, rss_b = rows[-1][0], rows[-1][1]
        at_msmarco = rss_b + growth * (MSMARCO_PASSAGES - n_b)
        print(
            f"\nextrapolated peak RSS at {MSMARCO_PASSAGES:,} passages: {at_msmarco / 2**30:.1f} GiB "
            f"(the largest growth measured, {growth:,.0f} bytes/doc, from {n_b:,}; target <= "
            f"{TARGET_BYTES_PER_DOC:,}: {'met' if growth <= TARGET_BYTES_PER_DOC else 'NOT met'}; "
            f"ratio to the issue-16 figure before this change, {ISSUE_BASELINE:,} bytes/doc: "
            f"{growth / ISSUE_BASELINE:.2f})"
        )
    print(f"work folder: {work}")


if __name__ == "__main__":
    main()
