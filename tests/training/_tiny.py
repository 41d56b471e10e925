"""Tiny, deterministic fixtures for the training tests (also imported by the subprocess scripts).

* ``write_tiny_beir(folder)``: a small BEIR collection (60 documents about invented entities,
  queries that paraphrase them), with ``qrels/train.tsv`` and ``qrels/test.tsv``.
* ``tiny_plan(method, model_dir, **overrides)``: the plan the tests train with (small, fast, CPU);
  ``overrides`` are config fields of any section (``num_epochs=1``, ``router="grpo"``, ...).
"""

from __future__ import annotations

import json
import random
from dataclasses import dataclass
from pathlib import Path
from typing import Any

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


# the tiny settings every training test starts from, per config section (fast, CPU, deterministic)
TINY = {
    "data": {"val_fraction": 0.2, "split_seed": 13},
    "model": {"query_max_length": 16, "doc_max_length": 48},
    "maw": {"depth_dim": 4, "granularity": "query", "group_size": 2},
    "train": {
        "num_epochs": 2,
        "batch_size": 8,
        "learning_rate": 1e-3,
        "hard_negatives": 1,
        "hard_negative_depth": 5,
        "patience": 5,
        "checkpoint_every": 0,
        "prefix_cache_dtype": "float32",
    },
    "eval": {"eval_batch_size": 32},
    "runtime": {"progress": False, "num_threads": 1},
}


def section_of(name: str) -> str:
    """The config section (``maw.config.SECTIONS`` key) that has the field ``name``."""
    import dataclasses

    from maw.config import SECTIONS

    for section, cls in SECTIONS.items():
        if name in {f.name for f in dataclasses.fields(cls)}:
            return section
    raise KeyError(f"no config section has a field {name!r}")


def tiny_configs(model_dir: str | Path, **overrides) -> dict:
    """``{section: frozen config}`` of the tiny settings, ``overrides`` (field=value of any
    section) applied. Each section is built anew (not ``dataclasses.replace``) so derived defaults
    follow the overrides, e.g. MAW's parametrisation follows ``router``."""
    from maw.config import SECTIONS

    values = {s: dict(v) for s, v in TINY.items()}
    values["model"]["model"] = str(model_dir)
    for name, value in overrides.items():
        values[section_of(name)][name] = value
    return {s: cls(**values[s]) for s, cls in SECTIONS.items()}


def tiny_plan(method: str, model_dir: str | Path, **overrides):
    """The resolved :class:`maw.plan.Plan` of ``method`` with the tiny settings and ``overrides``."""
    from maw.plan import resolve

    c = tiny_configs(model_dir, **overrides)
    return resolve(method, c["data"], c["model"], c["maw"], c["train"], c["eval"], c["runtime"])


def load_tiny(folder: str | Path, data_cfg):
    from maw.data import load_beir, make_splits

    ds = load_beir(folder, name="tiny")
    return ds, make_splits(ds, data_cfg)


@dataclass
class Tiny:
    """The tiny collection loaded with the tiny data settings, and plans on the tiny model."""

    dataset: Any
    splits: Any
    data_dir: Path
    model_dir: Path

    @classmethod
    def load(cls, data_dir: str | Path, model_dir: str | Path) -> Tiny:
        ds, splits = load_tiny(data_dir, tiny_configs(model_dir)["data"])
        return cls(ds, splits, Path(data_dir), Path(model_dir))

    def plan(self, method: str = "finetune", **overrides):
        """:func:`tiny_plan` on this collection (``plan.data.dataset`` names its folder)."""
        return tiny_plan(method, self.model_dir, dataset=str(self.data_dir), **overrides)


def run_two_ranks(target, args_of, out: Path) -> dict[int, dict]:
    """Start ``target(*args_of(rank))`` in 2 spawned processes, fail the test if one hangs, and
    return what each rank wrote to ``out/rank-<r>.json``."""
    import multiprocessing as mp

    import pytest

    procs = [mp.get_context("spawn").Process(target=target, args=args_of(r)) for r in range(2)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(timeout=120)
    if any(p.is_alive() for p in procs):
        for p in procs:
            p.kill()
        pytest.fail("a rank hung")
    return {r: json.loads((Path(out) / f"rank-{r}.json").read_text()) for r in range(2)}
