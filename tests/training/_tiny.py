"""Tiny, deterministic fixtures for the training tests (also imported by the subprocess scripts).

* ``write_tiny_beir(folder)``: a small BEIR collection (60 documents about invented entities,
  queries that paraphrase them), with ``qrels/train.tsv`` and ``qrels/test.tsv``.
* ``tiny_configs(...)``: the config objects the tests train with (small, fast, CPU).
"""

from __future__ import annotations

import json
import random
from pathlib import Path

SYLLABLES = [
    "ka",
    "lor",
    "ven",
    "mi",
    "tas",
    "dor",
    "rel",
    "sun",
    "pa",
    "gri",
    "mo",
    "zet",
    "bal",
    "nor",
    "fi",
    "qua",
]
KINDS = [
    "bridge",
    "library",
    "harbor",
    "observatory",
    "mill",
    "castle",
    "garden",
    "tower",
    "market",
    "school",
]
PLACES = ["osmar", "delt", "ruvia", "kesh", "antal", "borin", "cyra", "lune"]
THINGS = [
    "glass windows",
    "stone arches",
    "old maps",
    "copper bells",
    "red tiles",
    "tall pines",
    "rare books",
    "fresh fish",
]


def _name(rng: random.Random) -> str:
    return "".join(rng.choice(SYLLABLES) for _ in range(rng.randint(2, 3)))


def write_tiny_beir(folder: str | Path, num_docs: int = 60, seed: int = 0) -> Path:
    """Write the tiny collection; returns ``folder``. Deterministic for a given seed."""
    rng = random.Random(seed)
    folder = Path(folder)
    (folder / "qrels").mkdir(parents=True, exist_ok=True)
    docs, queries, train, test = [], [], [], []
    for i in range(num_docs):
        name, kind, place, thing = _name(rng), rng.choice(KINDS), rng.choice(PLACES), rng.choice(THINGS)
        year = rng.randint(1700, 1990)
        docs.append(
            {
                "_id": f"d{i}",
                "title": f"The {name} {kind}",
                "text": f"The {name} {kind} stands in {place}. It was completed in {year} and is famous for its {thing}.",
            }
        )
        q1 = {"_id": f"q{i}a", "text": f"which {kind} in {place} is known for {thing}"}
        q2 = {"_id": f"q{i}b", "text": f"when was the {name} {kind} built"}
        queries += [q1, q2]
        (test if i % 5 == 0 else train).append((q1["_id"], f"d{i}"))
        (test if i % 5 == 0 else train).append((q2["_id"], f"d{i}"))
    # one query with two positives, and a duplicated positive across queries (false-negative masking)
    queries.append({"_id": "qmulti", "text": "bridges and libraries"})
    train += [("qmulti", "d1"), ("qmulti", "d2")]
    with open(folder / "corpus.jsonl", "w", encoding="utf-8") as fh:
        for d in docs:
            fh.write(json.dumps(d) + "\n")
    with open(folder / "queries.jsonl", "w", encoding="utf-8") as fh:
        for q in queries:
            fh.write(json.dumps(q) + "\n")
    for split, rows in (("train", train), ("test", test)):
        with open(folder / "qrels" / f"{split}.tsv", "w", encoding="utf-8") as fh:
            fh.write("query-id\tcorpus-id\tscore\n")
            for q, d in rows:
                fh.write(f"{q}\t{d}\t1\n")
    return folder


def tiny_configs(model_dir: str | Path, **train_overrides):
    """(DataConfig, ModelConfig, MAWConfig, TrainConfig, EvalConfig) for fast CPU tests."""
    from maw.config import DataConfig, EvalConfig, MAWConfig, ModelConfig, TrainConfig

    data = DataConfig(val_fraction=0.2, split_seed=13)
    model = ModelConfig(model=str(model_dir), query_max_length=16, doc_max_length=48)
    maw = MAWConfig(depth_dim=4, granularity="query", group_size=2)
    train = TrainConfig(
        num_epochs=2,
        batch_size=8,
        learning_rate=1e-3,
        hard_negatives=1,
        hard_negative_depth=5,
        patience=5,
        progress=False,
        num_threads=1,
        checkpoint_every=0,
        prefix_cache_dtype="float32",
    )
    for k, v in train_overrides.items():
        setattr(train, k, v)
    return data, model, maw, train, EvalConfig(eval_batch_size=32)


def load_tiny(folder: str | Path, data_cfg):
    from maw.data import load_beir, make_splits

    ds = load_beir(folder, name="tiny")
    return ds, make_splits(ds, data_cfg)
