"""Fixtures of the export tests: a tiny random BERT and tiny trained checkpoints (see export_testkit)."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))

from export_testkit import VARIANTS, train_tiny  # noqa: E402

from tiny_bert import write_tiny_model  # noqa: E402


@pytest.fixture(scope="session")
def tiny_model(tmp_path_factory) -> Path:
    return write_tiny_model(tmp_path_factory.mktemp("tiny_bert"))


@pytest.fixture(scope="session")
def checkpoints(tmp_path_factory, tiny_model):
    """variant -> run folder (``RUN/best`` is the checkpoint), trained on first use."""
    made: dict[str, Path] = {}

    def get(variant: str) -> Path:
        if variant not in made:
            method, maw = VARIANTS[variant]
            run_dir = tmp_path_factory.mktemp(f"run-{variant}")
            train_tiny(method, maw, tiny_model, run_dir)
            made[variant] = run_dir
        return made[variant]

    return get
