"""``maw sweep``: an equal-budget hyper-parameter sweep selected on validation, and its final study.

* :mod:`maw.sweep.grid`: the TOML grid, its arms and the configurations each arm trains;
* :mod:`maw.sweep.runner`: the cells, resumable, validation only; the final on test;
* :mod:`maw.sweep.study`: ``leaderboard.md`` (validation) and ``REPORT.md`` (test, planned comparisons).
"""

from maw.sweep.grid import Grid, load_grid
from maw.sweep.runner import run_final, run_sweep

__all__ = ["Grid", "load_grid", "run_final", "run_sweep"]
