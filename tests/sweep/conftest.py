"""Fixtures of the sweep tests: the tiny BEIR collection of tests/training and the tiny random BERT."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "training"))

from _tiny import write_tiny_beir  # noqa: E402

from tiny_bert import write_tiny_model  # noqa: E402


@pytest.fixture(scope="session")
def tiny_data(tmp_path_factory) -> Path:
    return write_tiny_beir(tmp_path_factory.mktemp("sweep_beir") / "tinyset")


@pytest.fixture(scope="session")
def tiny_model(tmp_path_factory) -> Path:
    return write_tiny_model(tmp_path_factory.mktemp("sweep_bert"))


def grid_text(data: Path, model: Path, arms: str, budget: int = 2, epochs: int = 1) -> str:
    """A grid file on the tiny collection and model (fast, CPU, one thread)."""
    return f"""
datasets = ["{data}"]
[data]
val_fraction = 0.2
[model]
model = "{model}"
query_max_length = 16
doc_max_length = 48
[maw]
depth_dim = 4
[train]
num_epochs = {epochs}
batch_size = 8
learning_rate = 1e-3
hard_negative_depth = 5
checkpoint_every = 0
seed = 7
[eval]
eval_batch_size = 32
latency_queries = 2
top_k = 100
[runtime]
progress = false
num_threads = 1
[sweep]
budget = {budget}
sample_seed = 0
{arms}
"""
