"""Shared fixtures of the training tests: a tiny BEIR collection and a tiny random BERT (session-scoped)."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _tiny import Tiny, write_tiny_beir  # noqa: E402

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
def tiny(tiny_data_dir, tiny_model_dir) -> Tiny:
    """The tiny collection and its splits; ``tiny.plan(method, **overrides)`` makes plans."""
    return Tiny.load(tiny_data_dir, tiny_model_dir)
