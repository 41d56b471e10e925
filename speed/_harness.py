"""The speed scripts' timing harness: the optimiser steps of one training epoch, timed.

``time_epoch(trainer, epoch, max_steps)`` runs, after ``trainer.setup()``, the optimiser steps of
``epoch`` as ``maw.training.trainer.Trainer`` does (same batches, negatives and step), without
validation, checkpoints or history. Used by ``speed/train_step.py`` and ``speed/bf16.py``.
"""

from __future__ import annotations

import time
from typing import Any

from maw.training.methods import frozen_prefix_eval_mode
from maw.training.state import TrainingState
from maw.training.trainer import Trainer


def time_epoch(trainer: Trainer, epoch: int = 1, max_steps: int | None = None) -> dict[str, Any]:
    """Time the optimiser steps of one epoch (at most ``max_steps``). Returns ``{"seconds",
    "cpu_seconds" (process CPU time, less sensitive to other load on the machine), "steps",
    "step_seconds": [...], "losses": [...]}``."""
    trainer.state = TrainingState(epoch=epoch)
    batches, negatives = trainer.epoch_data(epoch)
    frozen_prefix_eval_mode(trainer.encoder, trainer.layers)
    accum = trainer.train_cfg.grad_accum
    times, losses = [], []
    t_all, cpu_all = time.perf_counter(), time.process_time()
    for i in range(0, len(batches), accum):
        if max_steps is not None and len(times) >= max_steps:
            break
        t0 = time.perf_counter()
        result = trainer.step(batches[i : i + accum], negatives, trainer.state)
        times.append(time.perf_counter() - t0)
        losses.append(result.loss)
    return {
        "seconds": time.perf_counter() - t_all,
        "cpu_seconds": time.process_time() - cpu_all,
        "steps": len(times),
        "step_seconds": times,
        "losses": losses,
    }
