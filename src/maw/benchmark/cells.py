"""Cell storage: one JSON file per (dataset, method, seed), written atomically when the cell ends.

A run folder holds ``cells/<dataset>/<method>-seed<seed>.json``. Reports are always rebuilt from
the cells on disk, so an interrupted run (Ctrl-C, a killed process) leaves a consistent folder
and a rerun picks up where it stopped: a cell whose file exists with ``status == "ok"`` is done
and skipped; a missing cell or one that ``failed`` is (re)run.

Cell schema (keys always present; extra keys are allowed and kept)::

    {"dataset", "method", "seed", "status": "ok"|"failed", "error": str|None,
     "metrics": {name: value|None}, "per_query": {metric: {qid: value}}, "history": [...],
     "router_stats": {...}, "params": {"total": int, "trainable": int},
     "runtimes": {"train_s", "encode_s", "search_s", "query_latency_ms", "qps", "index_bytes",
                  "encode_docs_per_s"},
     "checkpoint": path|None, "config": {...}}

Extra keys written by the runner: ``seed_independent`` (bm25 and zeroshot do not depend on the
seed: they run once and the result is reused for every seed), ``reused_from_seed``,
``dataset_info`` (name, fingerprint, source, counts, split provenance), ``traceback``,
``finished_at``.
"""

from __future__ import annotations

import json
import os
import re
import socket
import time
from pathlib import Path
from typing import Any

from maw.utils.io import atomic_write_json, read_json
from maw.utils.portable import cell_labels, portable

SEED_INDEPENDENT = ("bm25", "zeroshot")
THROUGHPUT_SAMPLE = 256  # documents timed for encode_docs_per_s when the corpus came from a prefix cache
RUNTIME_KEYS = (
    "train_s",
    "encode_s",
    "search_s",
    "query_latency_ms",
    "qps",
    "index_bytes",
    "encode_docs_per_s",
)
REQUIRED_KEYS = (
    "dataset",
    "method",
    "seed",
    "status",
    "error",
    "metrics",
    "per_query",
    "history",
    "router_stats",
    "params",
    "runtimes",
    "checkpoint",
    "config",
)


class CellError(ValueError):
    """A cell file is unreadable or does not follow the schema; the message names the file."""


def dataset_key(name_or_path: str) -> str:
    """Folder-safe name of a dataset argument: "demo" -> "demo", "../x/scifact/" -> "scifact",
    "irds:beir/scifact/test" -> "beir_scifact_test" (the whole ir_datasets id, not its last part)."""
    text = str(name_or_path)
    if text.startswith("irds:"):
        base = text[len("irds:") :].strip("/").replace("/", "_")
    else:
        base = Path(text.rstrip("/\\")).name or text
    key = re.sub(r"[^A-Za-z0-9._-]+", "_", base).strip("._")
    if not key:
        raise ValueError(f"--datasets: cannot derive a folder name from {name_or_path!r}")
    return key


def cell_path(run_dir: str | Path, dataset: str, method: str, seed: int) -> Path:
    """``run_dir/cells/<dataset>/<method>-seed<seed>.json`` (dataset is a :func:`dataset_key`)."""
    return Path(run_dir) / "cells" / dataset / f"{method}-seed{seed}.json"


def new_cell(dataset: str, method: str, seed: int, config: dict[str, Any] | None = None) -> dict[str, Any]:
    """An empty cell with every schema key present (status "failed" until filled)."""
    return {
        "dataset": dataset,
        "method": method,
        "seed": int(seed),
        "status": "failed",
        "error": None,
        "metrics": {},
        "per_query": {},
        "history": [],
        "router_stats": {},
        "params": {"total": None, "trainable": None},
        "runtimes": {k: None for k in RUNTIME_KEYS},
        "checkpoint": None,
        "config": config or {},
        "seed_independent": method in SEED_INDEPENDENT,
    }


def validate_cell(cell: Any, source: str = "<cell>") -> dict[str, Any]:
    """Check the schema; raise CellError naming ``source`` and the problem."""
    if not isinstance(cell, dict):
        raise CellError(f"{source}: a cell must be a JSON object, got {type(cell).__name__}")
    missing = [k for k in REQUIRED_KEYS if k not in cell]
    if missing:
        raise CellError(f"{source}: missing key(s) {missing}")
    if cell["status"] not in ("ok", "failed"):
        raise CellError(f"{source}: status must be 'ok' or 'failed', got {cell['status']!r}")
    if cell["status"] == "failed" and not cell["error"]:
        raise CellError(f"{source}: a failed cell must carry its error")
    for key in ("metrics", "per_query", "router_stats", "params", "runtimes", "config"):
        if not isinstance(cell[key], dict):
            raise CellError(f"{source}: {key!r} must be an object")
    if not isinstance(cell["history"], list):
        raise CellError(f"{source}: 'history' must be a list")
    return cell


def write_cell(run_dir: str | Path, cell: dict[str, Any]) -> Path:
    """Validate and atomically write a cell, machine paths replaced (datasets by their key, paths in
    the run folder relative to it; :mod:`maw.utils.portable`); returns its path."""
    cell = dict(cell)
    cell.setdefault("finished_at", time.strftime("%Y-%m-%dT%H:%M:%S%z"))
    path = cell_path(run_dir, cell.get("dataset", "?"), cell.get("method", "?"), cell.get("seed", 0))
    validate_cell(cell, str(path))
    # results name datasets and models, not this machine's paths (maw.utils.portable)
    atomic_write_json(path, portable(cell, cell_labels(cell, run_dir=run_dir)))
    return path


def read_cell(path: str | Path) -> dict[str, Any]:
    path = Path(path)
    try:
        data = read_json(path)
    except ValueError as exc:  # json.JSONDecodeError
        raise CellError(f"{path}: not valid JSON ({exc})") from None
    return validate_cell(data, str(path))


def is_done(run_dir: str | Path, dataset: str, method: str, seed: int) -> bool:
    """True when the cell file exists and its status is "ok" (failed cells are retried)."""
    path = cell_path(run_dir, dataset, method, seed)
    if not path.exists():
        return False
    try:
        return read_cell(path)["status"] == "ok"
    except CellError:
        return False


def load_cells(run_dir: str | Path) -> list[dict[str, Any]]:
    """Every cell on disk, sorted by (dataset, method, seed). Unreadable files raise CellError."""
    root = Path(run_dir) / "cells"
    if not root.is_dir():
        return []
    cells = [read_cell(p) for p in sorted(root.glob("*/*-seed*.json"))]
    return sorted(cells, key=lambda c: (c["dataset"], c["method"], c["seed"]))


# ---------------------------------------------------------------------------------------------- locks
class CellLock:
    """An exclusive claim on one cell, so that several ``maw benchmark`` processes on one run folder
    (one per GPU or node, or a second launch by mistake) split the cells and never run one twice.

    ``cells/<dataset>/<method>-seed<seed>.lock`` is created with ``O_CREAT | O_EXCL`` (atomic on a
    local or NFSv3+ file system) and holds the owner's host, pid and start time. A lock whose owner
    runs on this host and no longer exists is stale (a killed process) and is taken over; a lock
    of another host is respected until removed (delete the file after that host died).
    """

    def __init__(self, path: Path):
        self.path = path

    @classmethod
    def acquire(cls, run_dir: str | Path, dataset: str, method: str, seed: int) -> CellLock | None:
        """The lock of the cell, or None when another live process holds it."""
        path = cell_path(run_dir, dataset, method, seed).with_suffix(".lock")
        path.parent.mkdir(parents=True, exist_ok=True)
        owner = {"host": socket.gethostname(), "pid": os.getpid(), "since": time.time()}
        for _ in range(2):
            try:
                fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
            except FileExistsError:
                if not cls._stale(path):
                    return None
                path.unlink(missing_ok=True)  # its owner died: take the cell over
                continue
            with os.fdopen(fd, "w") as fh:
                json.dump(owner, fh)
            return cls(path)
        return None

    @staticmethod
    def _stale(path: Path) -> bool:
        try:
            owner = json.loads(path.read_text())
        except (OSError, ValueError):  # being written this instant, or unreadable: treat as held
            return False
        if owner.get("host") != socket.gethostname():
            return False
        if owner.get("pid") == os.getpid():
            return True  # our own leftover (an earlier cell of this process)
        try:
            os.kill(int(owner["pid"]), 0)
        except ProcessLookupError:
            return True
        except (PermissionError, KeyError, ValueError, TypeError):
            return False
        return False

    def release(self) -> None:
        self.path.unlink(missing_ok=True)
