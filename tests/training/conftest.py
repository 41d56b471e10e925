"""Shared fixtures of the training tests: a tiny BEIR collection and a tiny random BERT (session-scoped)."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _tiny import load_tiny, tiny_configs, write_tiny_beir  # noqa: E402

from tiny_bert import write_tiny_model  # noqa: E402


@pytest.fixture(scope="session")
def tiny_data_dir(tmp_path_factory) -> Path:
    return write_tiny_beir(tmp_path_factory.mktemp("tiny_beir"))


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory) -> Path:
    return write_tiny_model(tmp_path_factory.mktemp("tiny_bert"))


@pytest.fixture(scope="session")
def tiny_model_nodrop(tmp_path_factory) -> Path:
    """Same architecture without dropout (exact comparisons between code paths)."""
    return write_tiny_model(tmp_path_factory.mktemp("tiny_bert_nodrop"), dropout=0.0)


@pytest.fixture()
def tiny(tiny_data_dir, tiny_model_dir):
    """(dataset, splits, data_cfg, model_cfg, maw_cfg, train_cfg, eval_cfg) — fresh configs per test."""
    data, model, maw, train, ev = tiny_configs(tiny_model_dir)
    ds, splits = load_tiny(tiny_data_dir, data)
    return ds, splits, data, model, maw, train, ev
