"""A sweep's result files: where its cells are, reading them, each arm's best cell.

``out/cells/<dataset>/<arm>-<id>-seed<seed>.json`` (one validation-only sweep cell) and
``out/final/cells/...`` (the final's benchmark cells); see :mod:`maw.sweep.runner`, which writes
them, and :mod:`maw.sweep.study`, which reports them.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from maw.benchmark.cells import cell_path
from maw.sweep.grid import Cell, Grid
from maw.utils.io import read_json


def sweep_cell_path(out: Path, grid: Grid, cell: Cell) -> Path:
    return cell_path(out, grid.key, cell.name, cell.cfg.train.seed)


def read_sweep_cell(path: Path) -> dict[str, Any] | None:
    """A sweep cell file, or None when absent or unreadable (then it runs again)."""
    try:
        data = read_json(path)
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) and "status" in data else None


def sweep_done(path: Path) -> bool:
    cell = read_sweep_cell(path)
    return cell is not None and cell["status"] == "ok"


def best_cells(grid: Grid, out: Path) -> dict[str, tuple[Cell, dict[str, Any]]]:
    """arm -> (its best finished cell by validation score, the cell record); arms without any
    finished cell are absent. Ties keep the earlier cell in grid order."""
    best: dict[str, tuple[Cell, dict[str, Any]]] = {}
    for cell in grid.cells:
        rec = read_sweep_cell(sweep_cell_path(out, grid, cell))
        if rec is None or rec["status"] != "ok" or rec.get("score") is None:
            continue
        if cell.arm not in best or rec["score"] > best[cell.arm][1]["score"]:
            best[cell.arm] = (cell, rec)
    return best


def final_dir(out: Path) -> Path:
    return out / "final"
