"""``maw evaluate`` under ``torchrun --nproc-per-node 2`` (CPU, gloo) equals one process.

Each rank encodes its shards of the corpus (shard i by rank i % 2) into the embedding store, rank 0
searches and writes the one result file. The embeddings and every metric equal a one-process run.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from maw.retrieval.store import EmbeddingStore
from tiny_bert import write_tiny_model

WORDS = "cat dog quark gluon market rate lava magma bread yeast river ocean planet star seed tree".split()


def _collection(folder: Path, n_docs: int = 40, n_queries: int = 8) -> Path:
    rng = np.random.default_rng(0)
    (folder / "qrels").mkdir(parents=True)
    with open(folder / "corpus.jsonl", "w") as fh:
        for i in range(n_docs):
            text = " ".join(rng.choice(WORDS, 10))
            fh.write(json.dumps({"_id": f"d{i}", "title": "", "text": text}) + "\n")
    with open(folder / "queries.jsonl", "w") as fh:
        for q in range(n_queries):
            fh.write(json.dumps({"_id": f"q{q}", "text": " ".join(rng.choice(WORDS, 3))}) + "\n")
    with open(folder / "qrels" / "test.tsv", "w") as fh:
        fh.write("query-id\tcorpus-id\tscore\n")
        fh.writelines(f"q{q}\td{3 * q + 1}\t1\n" for q in range(n_queries))
    return folder


def _store(cache: Path, n_docs: int, shard_size: int) -> EmbeddingStore:
    (folder,) = cache.iterdir()
    return EmbeddingStore(folder, n_docs, 32, "float16", shard_size=shard_size)


@pytest.mark.slow
def test_evaluate_two_processes_equals_one(tmp_path):
    torchrun = shutil.which("torchrun", path=str(Path(sys.executable).parent))
    if torchrun is None:
        pytest.skip("torchrun is not installed next to this Python")
    data = _collection(tmp_path / "toy")
    model = write_tiny_model(tmp_path / "tiny-bert")
    args = ["evaluate", "--dataset", str(data), "--method", "zeroshot", "--model", str(model)]
    args += ["--query-max-length", "16", "--doc-max-length", "32", "--shard-size", "7"]
    args += ["--latency-queries", "0", "--device", "cpu", "--quiet"]
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "OMP_NUM_THREADS": "1"}

    def launch(prefix: list[str], name: str) -> dict:
        cmd = [*prefix, *args, "--embedding-cache-dir", str(tmp_path / f"cache-{name}")]
        cmd += ["--out", str(tmp_path / f"{name}.json"), "--save-run", str(tmp_path / f"{name}.trec")]
        done = subprocess.run(cmd, capture_output=True, text=True, timeout=300, env=env, cwd=tmp_path)
        assert done.returncode == 0, done.stderr[-4000:]
        return json.loads((tmp_path / f"{name}.json").read_text())

    one = launch([sys.executable, "-m", "maw.cli"], "one")
    two = launch([torchrun, "--standalone", "--nproc-per-node", "2", "-m", "maw.cli"], "two")

    store_one, store_two = _store(tmp_path / "cache-one", 40, 7), _store(tmp_path / "cache-two", 40, 7)
    assert [store_two.shard_info(i)["rank"] for i in range(6)] == [0, 1, 0, 1, 0, 1]
    np.testing.assert_allclose(store_two.to_array(), store_one.to_array(), atol=1e-3)
    assert two["efficiency"]["processes"] == 2 and "processes" not in one["efficiency"]
    assert two["metrics"] == pytest.approx(one["metrics"], abs=1e-6)
    assert two["per_query"]["nDCG@10"] == pytest.approx(one["per_query"]["nDCG@10"], abs=1e-6)
    assert (tmp_path / "two.trec").read_text().count("\n") == (tmp_path / "one.trec").read_text().count("\n")
    assert not (tmp_path / "runs").exists()  # the second rank wrote nothing of its own
