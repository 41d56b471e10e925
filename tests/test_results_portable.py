"""Committed results name datasets and models, never a path of the machine that ran them."""

from __future__ import annotations

import shutil
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "results"
TEXT = {".json", ".md", ".csv", ".txt", ".journal"}


def _machine_paths() -> list[str]:
    shared = (ROOT / ".." / "shared" / "datasets").resolve()
    return sorted(
        {
            str(Path.home()),
            sys.prefix,
            sys.base_prefix,
            str(ROOT),
            str(shared),
            "../shared/datasets",
            "site-packages",
        }
    )


@pytest.mark.skipif(not RESULTS.is_dir(), reason="no results/ folder in this checkout")
def test_no_machine_path_under_results():
    paths = _machine_paths()
    found = []
    for f in sorted(RESULTS.rglob("*")):
        if f.is_file() and f.suffix in TEXT:
            text = f.read_text(encoding="utf-8", errors="replace")
            found += [f"{f.relative_to(ROOT)}: {p}" for p in paths if p in text]
    assert not found, "machine paths in committed results:\n" + "\n".join(found[:20])


def test_results_record_the_code_by_commit_not_by_path():
    """``environment_info()`` (in every result) names the code by its git commit, never a path."""
    import re

    from maw.utils.io import environment_info, source_commit

    commit = environment_info()["maw_commit"]
    assert commit == source_commit()
    if (ROOT / ".git").exists() and shutil.which("git"):
        assert commit is not None and re.fullmatch(r"[0-9a-f]{40}(\+modified)?", commit), commit
