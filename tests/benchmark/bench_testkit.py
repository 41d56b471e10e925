"""Synthetic cells for the report / significance tests (no models, no data needed)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from maw.benchmark.cells import new_cell, write_cell
from maw.benchmark.report import PRIMARY_METRICS
from tiny_bert import write_tiny_model  # noqa: F401 (re-exported to the tests)


def synthetic_cell(dataset: str, method: str, seed: int, scores: np.ndarray, **extra) -> dict:
    """An ok cell whose per-query values for every primary metric are ``scores`` (clipped to [0, 1])."""
    scores = np.clip(np.asarray(scores, dtype=np.float64), 0.0, 1.0)
    per_query = {m: {f"q{i}": float(v) for i, v in enumerate(scores)} for m in PRIMARY_METRICS}
    cell = new_cell(dataset, method, seed, {"method": method})
    cell.update(
        status="ok",
        metrics={m: float(scores.mean()) for m in PRIMARY_METRICS} | {"nDCG@100": float(scores.mean())},
        per_query=per_query,
        params={"total": 22_700_000, "trainable": 0 if method in ("bm25", "zeroshot") else 1_800_000},
        runtimes={
            "train_s": 0.0 if method in ("bm25", "zeroshot") else 12.5,
            "encode_s": 3.0,
            "search_s": 0.2,
            "query_latency_ms": 0.5 if method == "bm25" else 4.0,
            "qps": 2000.0 if method == "bm25" else 250.0,
            "index_bytes": 1000 if method == "bm25" else 5000,
            "encode_docs_per_s": 100.0,
        },
        dataset_info={
            "name": dataset,
            "fingerprint": "abc123",
            "source": "/synthetic",
            "counts": {"docs": 10},
            "provenance": {"test": {"queries": len(scores)}},
        },
    )
    if method not in ("bm25", "zeroshot"):
        cell["history"] = [
            {"epoch": 0, "val_nDCG@10": 0.5},
            {"epoch": 1, "train_loss": 1.2, "val_nDCG@10": 0.55},
            {"epoch": 2, "train_loss": 0.9, "val_nDCG@10": 0.6},
        ]
    if method == "maw":
        cell["router_stats"] = {
            "6": {
                "counts": [[5, 1, 0, 2], [0, 0, 8, 0], [2, 2, 2, 2]],
                "entropy": [0.9, 0.0, 1.38],
                "units": 8,
            }
        }
    cell.update(extra)
    return cell


def write_synthetic_run(
    run_dir: Path,
    dataset: str,
    deltas: dict[str, float],
    seeds=(13, 42),
    n: int = 60,
    noise: float = 0.02,
    base_seed: int = 0,
) -> Path:
    """Write cells where method m's per-query score = base + deltas[m] + small noise, per seed."""
    rng = np.random.default_rng(base_seed)
    base = rng.uniform(0.2, 0.7, size=n)
    for method, delta in deltas.items():
        for k, seed in enumerate(seeds):
            scores = base + delta + rng.normal(0.0, noise, size=n)
            extra = {}
            if method in ("bm25", "zeroshot") and k > 0:
                extra = {"reused_from_seed": seeds[0]}
                scores = base + delta  # identical copies
            elif method in ("bm25", "zeroshot"):
                scores = base + delta
            write_cell(run_dir, synthetic_cell(dataset, method, seed, scores, **extra))
    return run_dir


def write_three_datasets(run: Path) -> Path:
    """Synthetic cells of three datasets where MAW is better than, worse than and equal to finetune."""
    write_synthetic_run(
        run, "better", {"bm25": -0.05, "zeroshot": 0.0, "lora": 0.02, "finetune": 0.03, "maw": 0.10}
    )
    write_synthetic_run(
        run, "worse", {"bm25": 0.0, "zeroshot": 0.0, "finetune": 0.05, "maw": -0.05}, base_seed=1
    )
    write_synthetic_run(
        run, "same", {"bm25": 0.0, "zeroshot": 0.0, "finetune": 0.0, "maw": 0.0}, base_seed=2, noise=0.05
    )
    return run


@pytest.fixture
def synthetic_run(tmp_path: Path) -> Path:
    return write_three_datasets(tmp_path / "run")


# --------------------------------------------------------------------------- tiny real inputs
WORDS = ["bridge", "library", "harbor", "tower", "garden", "market", "castle", "mill"]
PLACES = ["osmar", "delt", "ruvia", "kesh", "antal", "borin"]


def write_tiny_beir(folder: Path, num_docs: int = 36, with_train: bool = True) -> Path:
    """A small BEIR folder: docs about (kind, place, year); queries paraphrase one doc each."""
    import json

    (folder / "qrels").mkdir(parents=True, exist_ok=True)
    docs, queries, train, test = [], [], [], []
    for i in range(num_docs):
        kind, place, year = WORDS[i % len(WORDS)], PLACES[(i // len(WORDS)) % len(PLACES)], 1800 + 7 * i
        docs.append(
            {
                "_id": f"d{i}",
                "title": f"The {place} {kind}",
                "text": f"The {kind} of {place} was finished in {year}.",
            }
        )
        queries.append({"_id": f"q{i}", "text": f"when was the {kind} in {place} completed"})
        (test if i % 4 == 0 else train).append((f"q{i}", f"d{i}"))
    (folder / "corpus.jsonl").write_text("".join(json.dumps(d) + "\n" for d in docs))
    (folder / "queries.jsonl").write_text("".join(json.dumps(q) + "\n" for q in queries))
    for split, rows in (("train", train if with_train else []), ("test", test)):
        if rows:
            (folder / "qrels" / f"{split}.tsv").write_text(
                "query-id\tcorpus-id\tscore\n" + "".join(f"{q}\t{d}\t1\n" for q, d in rows)
            )
    return folder


@pytest.fixture(scope="session")
def tiny_beir(tmp_path_factory) -> Path:
    return write_tiny_beir(tmp_path_factory.mktemp("data") / "tinyset")


@pytest.fixture(scope="session")
def tiny_model(tmp_path_factory) -> Path:
    return write_tiny_model(tmp_path_factory.mktemp("model") / "tiny-bert")
