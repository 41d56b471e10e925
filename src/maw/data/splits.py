"""Train / validation / test query sets of one experiment, built from a dataset's qrels.

Rules (recorded in ``Splits.provenance`` so a result file says exactly which queries it used):

- test = ``qrels[cfg.test_split]``, every judged query kept (also those with only 0 grades);
  an absent or empty test split is an error.
- train = ``qrels[cfg.train_split]`` restricted to queries with at least one positive (grade > 0)
  judgement; absent -> empty (zero-shot / BM25 still work; trainers call
  :func:`require_training_split`).
- val = ``qrels[cfg.val_split]`` (positive queries) when that split exists; otherwise
  ``cfg.val_fraction`` of the train queries (at least one) carved out with a seeded RNG.
  Validation is never taken from test.
- ``cfg.*_samples`` subsample each split by query (seeded), after carving.

Every random choice draws from ``random.Random(f"{cfg.split_seed}/<purpose>")`` over sorted query
ids, so splits are identical across runs, machines and Python hash seeds.
"""

from __future__ import annotations

import random
from typing import Any

from maw.config import DataConfig
from maw.data.types import DataError, Qrels, RetrievalDataset, Splits


def _rng(seed: int, purpose: str) -> random.Random:
    return random.Random(f"{seed}/{purpose}")


def _positive_only(qrels: Qrels) -> tuple[Qrels, int]:
    kept = {q: dict(docs) for q, docs in qrels.items() if any(g > 0 for g in docs.values())}
    return kept, len(qrels) - len(kept)


def _subsample(
    qrels: Qrels, n: int | None, seed: int, purpose: str, option: str
) -> tuple[Qrels, dict[str, Any] | None]:
    if n is None:
        return qrels, None
    if n < 0:
        raise DataError(f"{option}: must be >= 0, got {n}")
    if n >= len(qrels):
        return qrels, {"requested": n, "available": len(qrels), "kept": len(qrels), "seed": seed}
    chosen = set(_rng(seed, purpose).sample(sorted(qrels), n))
    return {q: qrels[q] for q in sorted(chosen)}, {
        "requested": n,
        "available": len(qrels),
        "kept": n,
        "seed": seed,
    }


def make_splits(dataset: RetrievalDataset, cfg: DataConfig) -> Splits:
    """Build the train / val / test query sets of ``dataset`` following ``cfg`` (see module doc).

    Raises:
        DataError: the test split is absent or empty; val split equals the test split; a
            negative sample count; a test query appearing in train or val (leakage).
    """
    seed = cfg.split_seed
    available = ", ".join(dataset.splits) or "none"
    if cfg.test_split not in dataset.qrels:
        raise DataError(
            f"dataset {dataset.name!r} has no {cfg.test_split!r} split (qrels/{cfg.test_split}.tsv); "
            f"available splits: {available}"
        )
    if cfg.val_split == cfg.test_split or cfg.train_split == cfg.test_split:
        raise DataError(
            f"the test split {cfg.test_split!r} cannot also be the train or validation split "
            f"(train={cfg.train_split!r}, val={cfg.val_split!r})"
        )
    if not 0 <= cfg.val_fraction < 1:
        raise DataError(f"--val-fraction: must be in [0, 1), got {cfg.val_fraction}")
    test_all = dataset.qrels[cfg.test_split]
    if not test_all:
        raise DataError(
            f"dataset {dataset.name!r}: split {cfg.test_split!r} has no judged queries (empty qrels file?)"
        )
    prov: dict[str, Any] = {"dataset": dataset.name, "fingerprint": dataset.fingerprint, "seed": seed}

    test, sub = _subsample(
        {q: dict(d) for q, d in test_all.items()}, cfg.test_samples, seed, "test", "--test-samples"
    )
    prov["test"] = {
        "source": cfg.test_split,
        "queries": len(test),
        "judgements": sum(map(len, test.values())),
    }
    if sub:
        prov["test"]["subsampled"] = sub

    if cfg.train_split in dataset.qrels:
        train, no_pos = _positive_only(dataset.qrels[cfg.train_split])
        prov["train"] = {"source": cfg.train_split, "dropped_no_positive": no_pos}
    else:
        train = {}
        prov["train"] = {"source": None, "note": f"no {cfg.train_split!r} split; train is empty"}

    if cfg.val_split in dataset.qrels:
        val, no_pos = _positive_only(dataset.qrels[cfg.val_split])
        prov["val"] = {"source": cfg.val_split, "carved": False, "dropped_no_positive": no_pos}
    elif len(train) >= 2 and cfg.val_fraction > 0:
        n_val = min(len(train) - 1, max(1, round(cfg.val_fraction * len(train))))
        carved = set(_rng(seed, "carve-val").sample(sorted(train), n_val))
        val = {q: train[q] for q in sorted(carved)}
        train = {q: d for q, d in train.items() if q not in carved}
        prov["val"] = {
            "source": cfg.train_split,
            "carved": True,
            "fraction": cfg.val_fraction,
            "seed": seed,
            "carved_queries": n_val,
        }
    else:
        val = {}
        why = "val_fraction is 0" if cfg.val_fraction == 0 else "fewer than 2 training queries to carve from"
        prov["val"] = {"source": None, "carved": False, "note": f"no {cfg.val_split!r} split and {why}"}

    train, sub = _subsample(train, cfg.train_samples, seed, "train", "--train-samples")
    if sub:
        prov["train"]["subsampled"] = sub
    val, sub = _subsample(val, cfg.val_samples, seed, "val", "--val-samples")
    if sub:
        prov["val"]["subsampled"] = sub
    prov["train"]["queries"] = len(train)
    prov["val"]["queries"] = len(val)
    return Splits(train=train, val=val, test=test, provenance=prov)


def require_training_split(splits: Splits, name: str) -> Qrels:
    """Return ``splits.train``, or raise a clear DataError when there is nothing to train on.

    ``name`` is the dataset's name (used in the message).
    """
    if not splits.train:
        source = splits.provenance.get("train", {}).get("source")
        why = (
            "its training split has no query with a positive judgement"
            if source
            else "it has no training split"
        )
        raise DataError(
            f"dataset {name!r} cannot be used for training: {why}. Use a zero-shot method (bm25, zeroshot) "
            f"or a dataset with qrels/train.tsv"
        )
    return splits.train
