"""make_splits: carving, subsampling, positives-only train, test untouched, clear errors."""

from __future__ import annotations

import pytest

from maw.config import ConfigError, DataConfig
from maw.data import DataError, RetrievalDataset, load_dataset, make_splits, require_training_split
from maw.data.types import Document


def toy(
    n_train: int = 40, n_test: int = 10, dev: bool = False, zero_grade_train: int = 0
) -> RetrievalDataset:
    corpus = {f"d{i}": Document("", f"doc {i}") for i in range(10)}
    qrels: dict = {"train": {}, "test": {}}
    for i in range(n_train):
        qrels["train"][f"tr{i}"] = {f"d{i % 10}": 1, f"d{(i + 1) % 10}": 0}
    for i in range(zero_grade_train):
        qrels["train"][f"zero{i}"] = {"d0": 0}
    for i in range(n_test):
        qrels["test"][f"te{i}"] = {f"d{i % 10}": 0} if i == 0 else {f"d{i % 10}": 2}
    if dev:
        qrels["dev"] = {f"dev{i}": {"d1": 1} for i in range(5)}
    queries = {q: q for split in qrels.values() for q in split}
    return RetrievalDataset("toy", corpus, queries, qrels, fingerprint="f")


def test_carving_is_seeded_deterministic_and_disjoint():
    ds = toy()
    a, b = make_splits(ds, DataConfig()), make_splits(ds, DataConfig())
    assert a.val == b.val and a.train == b.train
    assert len(a.val) == 4 and len(a.train) == 36  # 10% of 40
    assert set(a.val).isdisjoint(a.train) and set(a.val) | set(a.train) == set(ds.qrels["train"])
    c = make_splits(ds, DataConfig(split_seed=99))
    assert set(c.val) != set(a.val)
    prov = a.provenance["val"]
    assert prov["carved"] is True and prov["seed"] == 13 and prov["fraction"] == 0.1 and prov["queries"] == 4


def test_test_split_is_never_touched():
    ds = toy()
    s = make_splits(ds, DataConfig(val_fraction=0.5, train_samples=3))
    assert s.test == ds.qrels["test"]  # all judged test queries kept, including the 0-grade one
    assert "te0" in s.test
    assert set(s.test).isdisjoint(set(s.train) | set(s.val))


def test_carving_keeps_at_least_one_query_each_side():
    s = make_splits(toy(n_train=3), DataConfig(val_fraction=0.01))
    assert len(s.val) == 1 and len(s.train) == 2
    s = make_splits(toy(n_train=3), DataConfig(val_fraction=0.99))
    assert len(s.val) == 2 and len(s.train) == 1
    s = make_splits(toy(n_train=1), DataConfig())
    assert len(s.train) == 1 and s.val == {}


def test_existing_dev_split_is_used():
    s = make_splits(toy(dev=True), DataConfig())
    assert set(s.val) == {f"dev{i}" for i in range(5)} and len(s.train) == 40
    assert s.provenance["val"] == {"source": "dev", "carved": False, "dropped_no_positive": 0, "queries": 5}


def test_train_keeps_only_queries_with_a_positive():
    s = make_splits(toy(zero_grade_train=5), DataConfig(val_fraction=0.25))
    assert not any(q.startswith("zero") for q in set(s.train) | set(s.val))
    assert s.provenance["train"]["dropped_no_positive"] == 5


def test_subsampling_counts_and_seed():
    ds = toy()
    cfg = DataConfig(train_samples=10, val_samples=2, test_samples=5)
    s = make_splits(ds, cfg)
    assert (len(s.train), len(s.val), len(s.test)) == (10, 2, 5)
    assert s.provenance["test"]["subsampled"] == {"requested": 5, "available": 10, "kept": 5, "seed": 13}
    assert make_splits(ds, cfg).train == s.train
    assert make_splits(ds, DataConfig(train_samples=10, split_seed=1)).train != s.train
    big = make_splits(ds, DataConfig(train_samples=1000))
    assert len(big.train) == 36 and big.provenance["train"]["subsampled"]["kept"] == 36
    with pytest.raises((DataError, ConfigError), match="--train-samples: must be >= "):  # config or splits
        make_splits(ds, DataConfig(train_samples=-1))


def test_no_train_split_and_require_training_split():
    ds = toy()
    del ds.qrels["train"]
    s = make_splits(ds, DataConfig())
    assert s.train == {} and s.val == {} and len(s.test) == 10
    with pytest.raises(DataError, match="'toy' cannot be used for training: it has no training split"):
        require_training_split(s, ds.name)
    assert require_training_split(make_splits(toy(), DataConfig()), "toy")


def test_missing_or_empty_test_split():
    ds = toy()
    with pytest.raises(DataError, match=r"no 'heldout' split .* available splits: test, train"):
        make_splits(ds, DataConfig(test_split="heldout"))
    ds.qrels["test"] = {}
    with pytest.raises(DataError, match="split 'test' has no judged queries"):
        make_splits(ds, DataConfig())


def test_test_split_cannot_double_as_val():
    with pytest.raises(DataError, match="cannot also be the train or validation split"):
        make_splits(toy(), DataConfig(val_split="test"))


def test_leakage_is_an_error():
    ds = toy()
    ds.qrels["train"]["te3"] = {"d3": 1}
    with pytest.raises(DataError, match="test queries leak"):
        make_splits(ds, DataConfig())


def test_demo_splits():
    ds = load_dataset("demo")
    s = make_splits(ds, DataConfig())
    assert len(s.test) == len(ds.qrels["test"]) and len(s.train) + len(s.val) == len(ds.qrels["train"])
    assert len(s.val) == round(0.1 * len(ds.qrels["train"]))


@pytest.mark.shared_data
def test_scifact_splits(shared_datasets):
    from maw.data import load_beir

    s = make_splits(load_beir(shared_datasets / "scifact"), DataConfig())
    assert len(s.test) == 300 and len(s.train) + len(s.val) == 809 and len(s.val) == 81


def test_val_fraction_bounds():
    s = make_splits(toy(), DataConfig(val_fraction=0))
    assert s.val == {} and len(s.train) == 40 and "val_fraction is 0" in s.provenance["val"]["note"]
    with pytest.raises((DataError, ConfigError), match=r"--val-fraction: must be in \[0, 1\)"):
        make_splits(toy(), DataConfig(val_fraction=1.5))
