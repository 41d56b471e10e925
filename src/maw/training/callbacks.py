"""The trainer's hooks: what happens around the steps and after each epoch's validation.

The loop (:mod:`maw.training.trainer`) calls every callback, in list order, at
``on_train_begin`` / ``on_epoch_begin`` / ``on_step_end`` / ``on_epoch_end`` / ``on_train_end``,
as sentence-transformers' trainer does. ``on_epoch_end`` gets the epoch's history entry, already
in ``state.history``, with ``state`` moved on to the next epoch. The trainer's list, in order:

1. :class:`EarlyStopping`: the best epoch on validation (``SELECTION_METRIC``), its weights kept in
   memory and in ``run_dir/best``; ``patience`` epochs without improvement, or the last epoch,
   finish training (``"early_stopped": true`` in the entry when patience ended it early).
2. :class:`StopHook`: ``train(..., on_epoch_end=f)``: ``f(epoch, val metrics)`` is called on rank 0
   after every trained epoch (a sweep's pruner); ``True`` finishes training there unless it is
   finished anyway (the entry then says ``"pruned": true``). Rank 0's answer holds on every rank.
3. :class:`Checkpoints`: ``run_dir/latest`` every ``checkpoint_every`` optimiser steps within an
   epoch and at every epoch end (resumable; rank 0 writes, nothing with non-finite weights).
4. :class:`History`: ``run_dir/history.json`` after every epoch (rank 0).
5. :class:`ProgressBar`: a rich progress bar per epoch and one line per epoch (``--progress``, rank 0).

Epoch 0 (the model before training, validated once in a fresh run) goes through
:class:`EarlyStopping` and :class:`History` only: there is no step to save or stop.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import torch

from maw.evaluation.metrics import SELECTION_METRIC
from maw.training import distributed as dist_utils
from maw.training.checkpoint import TrainingState, model_tensors, save_checkpoint
from maw.training.state import StepResult
from maw.training.step import TrainingError
from maw.utils.io import atomic_write_json


class TrainerCallback:
    """A hook of the training loop; every method does nothing unless overridden. ``trainer`` is the
    :class:`maw.training.trainer.Trainer` (its ``state``, ``step``, ``run_dir``, ``ctx``, ...)."""

    def on_train_begin(self, trainer) -> None:
        """Before the first step of this process (after setup, resume and epoch 0)."""

    def on_epoch_begin(self, trainer, num_batches: int) -> None:
        """Before the first (or, resumed, the next) step of ``trainer.state.epoch``."""

    def on_step_end(self, trainer, step: StepResult, num_batches: int) -> None:
        """After an optimiser step (``state.step_in_epoch`` micro-batches of ``num_batches`` done)."""

    def on_epoch_end(self, trainer, entry: dict[str, Any]) -> None:
        """After an epoch's validation; ``entry`` is its history entry."""

    def on_train_end(self, trainer) -> None:
        """When the loop ends, finished or not."""


def check_finite_weights(trainer, epoch: int) -> None:
    """Refuse to save non-finite weights: the last good checkpoint stays."""
    bad = [n for n, p in trainer.step.named_params if not torch.isfinite(p.detach()).all()]
    if bad:
        raise TrainingError(
            f"non-finite weights after epoch {epoch}, optimiser step {trainer.state.global_step} ({bad[:3]}); "
            f"not saving; the last good checkpoint is {trainer.run_dir / 'latest'}"
        )


class EarlyStopping(TrainerCallback):
    """Best epoch and early stopping; the best weights (``best_tensors``) are what training returns."""

    def __init__(self) -> None:
        self.best_tensors: dict[str, torch.Tensor] | None = None

    def on_epoch_end(self, trainer, entry: dict[str, Any]) -> None:
        state, cfg, epoch = trainer.state, trainer.train_cfg, entry["epoch"]
        score = entry["val"][SELECTION_METRIC]
        if state.best_score is None or (score is not None and score > state.best_score):
            state.best_score, state.best_epoch, state.bad_epochs = score, epoch, 0
            self._save_best(trainer, epoch)
        else:
            state.bad_epochs += 1
        if state.bad_epochs >= cfg.patience or epoch >= cfg.num_epochs:  # never at epoch 0
            state.finished = True
            if state.bad_epochs >= cfg.patience and epoch < cfg.num_epochs:
                entry["early_stopped"] = True

    def _save_best(self, trainer, epoch: int) -> None:
        check_finite_weights(trainer, epoch)
        self.best_tensors = model_tensors(trainer.encoder)
        if trainer.train_cfg.save_checkpoints and trainer.ctx.is_main:
            state = trainer.state
            best = TrainingState(
                epoch=epoch, global_step=state.global_step, best_score=state.best_score, best_epoch=epoch
            )
            save_checkpoint(
                trainer.run_dir / "best", trainer.encoder, trainer.config, best, include_rng=False
            )


class StopHook(TrainerCallback):
    """``on_epoch_end(epoch, val metrics) -> stop`` (rank 0 decides for all); see the module docstring."""

    def __init__(self, on_epoch_end: Callable[[int, dict[str, float]], bool]):
        self.on_epoch_end_fn = on_epoch_end

    def on_epoch_end(self, trainer, entry: dict[str, Any]) -> None:
        ctx = trainer.ctx
        stop = bool(self.on_epoch_end_fn(entry["epoch"], entry["val"])) if ctx.is_main else False
        if dist_utils.broadcast_object(stop, ctx) and not trainer.state.finished:
            trainer.state.finished = True
            entry["pruned"] = True


class Checkpoints(TrainerCallback):
    """``run_dir/latest``: every ``checkpoint_every`` optimiser steps within an epoch, and at its end."""

    def on_step_end(self, trainer, step: StepResult, num_batches: int) -> None:
        state, every = trainer.state, trainer.train_cfg.checkpoint_every
        if every and state.global_step % every == 0 and state.step_in_epoch < num_batches:
            trainer.close_stretch()  # the epoch's time and depth histograms so far go into the state
            self.save(trainer, state.epoch)

    def on_epoch_end(self, trainer, entry: dict[str, Any]) -> None:
        self.save(trainer, entry["epoch"])

    @staticmethod
    def save(trainer, epoch: int) -> None:
        if not trainer.train_cfg.save_checkpoints:
            return
        check_finite_weights(trainer, epoch)
        trainer.state.train_seconds = trainer.elapsed()
        if trainer.ctx.is_main:
            step = trainer.step
            save_checkpoint(
                trainer.run_dir / "latest",
                trainer.encoder,
                trainer.config,
                trainer.state,
                step.optimizer,
                step.scheduler,
                step.scaler,
                step.param_names,
            )
        dist_utils.barrier(trainer.ctx)


class History(TrainerCallback):
    """``run_dir/history.json``: ``state.history`` after every epoch (rank 0)."""

    def on_epoch_end(self, trainer, entry: dict[str, Any]) -> None:
        if trainer.ctx.is_main:
            atomic_write_json(trainer.run_dir / "history.json", trainer.state.history)


class ProgressBar(TrainerCallback):
    """A rich progress bar per epoch (loss, steps/s) and a line per epoch; rank 0, ``--progress``."""

    def on_train_begin(self, trainer) -> None:
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

        self.progress = Progress(
            TextColumn("[bold]{task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            TextColumn("loss {task.fields[loss]}"),
            TextColumn("{task.fields[rate]} steps/s"),
            TimeRemainingColumn(),
        )
        self.progress.start()

    def on_epoch_begin(self, trainer, num_batches: int) -> None:
        state = trainer.state
        self.task = self.progress.add_task(
            f"{trainer.method} epoch {state.epoch}/{trainer.train_cfg.num_epochs}",
            total=num_batches,
            completed=state.step_in_epoch,
            loss="-",
            rate="-",
        )
        self.t0, self.start = time.perf_counter(), state.step_in_epoch

    def on_step_end(self, trainer, step: StepResult, num_batches: int) -> None:
        done = trainer.state.step_in_epoch
        rate = (done - self.start) / max(time.perf_counter() - self.t0, 1e-9)
        self.progress.update(self.task, completed=done, loss=f"{step.loss:.4f}", rate=f"{rate:.2f}")

    def on_epoch_end(self, trainer, entry: dict[str, Any]) -> None:
        state = trainer.state
        self.progress.console.log(
            f"{trainer.method} epoch {entry['epoch']}: train loss {entry['train_loss']:.4f}, "
            f"val nDCG@10 {entry['val'][SELECTION_METRIC]:.4f} (best {state.best_score:.4f} @ epoch "
            f"{state.best_epoch}), {entry['train_seconds']:.1f}s train + {entry['val_seconds']:.1f}s val"
        )

    def on_train_end(self, trainer) -> None:
        self.progress.stop()
