"""The one loop of ``maw benchmark`` and ``maw sweep`` (its cells and its final): claim, run, log.

A :class:`Job` is one cell of a results folder, stored as ``<folder>/cells/<dataset>/<name>-seed<seed>.json``
(:mod:`maw.benchmark.cells`). :func:`run_jobs` takes the jobs in order and, for each:

1. **claims** it (rank 0): skipped when done before (``job.done()``), or when ``job.reuse()`` copied
   the result of another seed (seed-independent cells); otherwise its lock is taken
   (:class:`~maw.benchmark.cells.CellLock`), or it is left to the process that holds it; under the
   lock ``done`` is asked again (another process may have finished it meanwhile). Under torchrun
   rank 0's decision is broadcast, so every rank runs the same cells.
2. **runs** it: ``job.run()`` (every rank) computes the cell, writes its file (rank 0) and returns
   its record (``status`` "ok" or "failed", ``error``); the lock is released whatever happens.
3. **logs** it (rank 0): the :class:`Outcome` lists it as ran or failed, the log gets one line
   (``job.ok(cell)`` for a finished cell), then ``job.after(cell)`` (trackers, reports).

Ctrl-C ends the loop with ``Outcome.interrupted``: finished cells are on disk and the same command
resumes. What a cell computes, and the reports built from the cells, are the callers' business
(``maw.benchmark.runner``, ``maw.sweep.runner``).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from maw.benchmark.cells import CellLock
from maw.training.distributed import DistributedContext, broadcast_object

SKIPS = {
    "done": "done before, skipped",
    "reused": "seed-independent, reused",
    "elsewhere": "being run by another process (lock file), skipped",
}


@dataclass
class Outcome:
    """What one invocation did. Entries are the jobs' labels; a failure is ``(*label, error)`` for
    a tuple label (``(dataset, method, seed)``), else ``(label, error)``."""

    folder: Path
    ran: list[Any] = field(default_factory=list)
    skipped: list[Any] = field(default_factory=list)
    failed: list[tuple] = field(default_factory=list)
    running_elsewhere: list[Any] = field(default_factory=list)  # locked by another process
    seconds: float = 0.0
    interrupted: bool = False

    @property
    def exit_code(self) -> int:
        return 130 if self.interrupted else (1 if self.failed else 0)

    def fail(self, label: Any, error: str) -> None:
        self.failed.append((*label, error) if isinstance(label, tuple) else (label, error))


@dataclass
class Job:
    """One cell: where its file and lock are, how to tell it is done, how to run and report it."""

    label: Any  # what the Outcome lists
    tag: str  # the log lines' prefix, e.g. "[3/10] scifact maw seed 42"
    folder: Path  # the results folder holding cells/
    dataset: str
    name: str
    seed: int
    run: Callable[[], dict[str, Any]]  # computes and writes the cell; returns its record
    done: Callable[[], bool]
    ok: Callable[[dict[str, Any]], str]  # the log line of a finished cell (after "<tag>: ")
    reuse: Callable[[], bool] | None = None  # copies another seed's result: True when it did
    after: Callable[[dict[str, Any]], None] | None = None  # rank 0, after the cell is logged


def claim(job: Job) -> tuple[str, CellLock | None]:
    """``("run", lock)``, or a skip of :data:`SKIPS` with no lock."""
    if job.done():
        return "done", None
    if job.reuse is not None and job.reuse():
        return "reused", None
    lock = CellLock.acquire(job.folder, job.dataset, job.name, job.seed)
    if lock is None:
        return "elsewhere", None
    if job.done():  # finished by another process meanwhile
        lock.release()
        return "done", None
    return "run", lock


def run_jobs(
    jobs: Iterable[Job],
    outcome: Outcome,
    log: Callable[[str], None],
    ctx: DistributedContext | None = None,
) -> Outcome:
    """Claim, run and log every job in order (see the module docstring); returns ``outcome``
    (``seconds`` and ``interrupted`` set). ``ctx``: the process group whose ranks all run each
    cell (rank 0 claims and logs); None: this process alone."""
    main = ctx is None or ctx.is_main
    t_start = time.perf_counter()
    try:
        for job in jobs:
            action, lock = claim(job) if main else (None, None)
            if ctx is not None and ctx.enabled:
                action = broadcast_object(action, ctx)
            if action in SKIPS:
                (outcome.running_elsewhere if action == "elsewhere" else outcome.skipped).append(job.label)
                log(f"{job.tag}: {SKIPS[action]}")
                continue
            try:
                cell = job.run()
            finally:
                if lock is not None:
                    lock.release()
            if not main:
                continue
            if cell["status"] == "ok":
                outcome.ran.append(job.label)
                log(f"{job.tag}: {job.ok(cell)}")
            else:
                outcome.fail(job.label, cell["error"])
                log(f"{job.tag}: FAILED: {cell['error']}")
            if job.after is not None:
                job.after(cell)
    except KeyboardInterrupt:
        outcome.interrupted = True
        log("interrupted: finished cells are kept")
    finally:
        outcome.seconds = time.perf_counter() - t_start
    return outcome
