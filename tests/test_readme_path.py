"""The README's train -> evaluate -> export -> sentence-transformers path runs as written.

The commands are read from the README's code block that starts with ``maw train --dataset demo``
and run in a temporary folder, in order, with the real default backbone (offline).
"""

from __future__ import annotations

import os
import shlex
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow

README = Path(__file__).resolve().parents[1] / "README.md"


def readme_commands() -> list[str]:
    lines = README.read_text(encoding="utf-8").splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith("maw train --dataset demo"))
    end = next(i for i in range(start, len(lines)) if lines[i].startswith("```"))
    return lines[start:end]


def test_readme_train_evaluate_export_load(tmp_path):
    commands = readme_commands()
    assert [c.split()[0] for c in commands] == ["maw", "maw", "maw", "python"]
    bin_dir = Path(sys.executable).parent
    env = {**os.environ, "PATH": f"{bin_dir}{os.pathsep}{os.environ.get('PATH', '')}"}
    outputs = []
    for command in commands:
        argv = shlex.split(command)
        if argv[0] == "python":
            argv[0] = sys.executable
        proc = subprocess.run(argv, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=1200)
        assert proc.returncode == 0, f"{command}\n{proc.stdout}\n{proc.stderr}"
        outputs.append(proc.stdout)
    assert outputs[-1].strip() == "(1, 384)"
    assert (tmp_path / "runs/demo-maw/test.trec").stat().st_size > 0
    assert (
        (tmp_path / "exports/demo-maw/README.md")
        .read_text()
        .startswith("---\nlibrary_name: sentence-transformers")
    )
