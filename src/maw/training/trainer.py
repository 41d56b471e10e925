"""Contrastive fine-tuning of a dense encoder (methods lora / finetune / maw / full): the loop.

``train(plan, dataset, splits, run_dir) -> TrainResult``; ``plan`` is a :class:`maw.plan.Plan`
(``maw.plan.resolve``), read as is: nothing here parses or validates options.

The trainer is a few modules, each readable on its own: this one (the wiring and the loop: batches
-> steps -> validate -> epoch-end hooks), :mod:`~maw.training.step` (the optimiser step: objective,
backward, optimiser, LR schedule), :mod:`~maw.training.callbacks` (the hooks: early stopping and the
best checkpoint, a sweep's stop hook, ``latest`` checkpoints, history, progress),
:mod:`~maw.training.state` (the typed state a checkpoint stores), :mod:`~maw.training.validation`
(the per-epoch validation pass), :mod:`~maw.training.checkpoint` (checkpoints and exact resume),
:mod:`~maw.training.router_objectives` (InfoNCE, GRPO and the supervised router's losses),
:mod:`~maw.training.router_logs` (what is logged about routers), :mod:`~maw.training.prefix_cache`
and :mod:`~maw.training.negatives` (the data side).

Recipe
------
* Examples: one per (train query, positive doc). Each micro-batch of ``batch_size`` examples is
  scored with InfoNCE (temperature ``train_cfg.temperature``) against all its documents: the
  positives of the other queries (in-batch negatives) plus ``hard_negatives`` mined negatives per
  example (BM25 or a dense model, ``negatives``; see ``maw.training.negatives``); judged-relevant
  documents of a query are masked out of its negatives (``maw.training.losses``).
* AdamW (no weight decay on biases, LayerNorm weights and routers), linear warmup over
  ``warmup_ratio`` of the optimiser steps (never more than exist) then linear decay
  (``transformers.get_linear_schedule_with_warmup``), gradient clipping at ``max_grad_norm``,
  ``grad_accum`` micro-batches per optimiser step (the loss is normalised by the number of
  examples of the whole step), a fresh seeded example order every epoch, the last partial batch
  kept (in a distributed run, a final batch with fewer examples than ranks is dropped).
* Validation after every epoch and before training (epoch 0, the zero-shot score): nDCG@10 (plus
  R@100, RR@10, AP) of exact retrieval for the VAL queries only (the test split is never touched),
  over the full corpus, or above ``val_pool_above`` documents over the usual re-ranking pool
  (judged + BM25 top-``val_pool_depth`` of the val queries; ``maw.training.validation``); every
  history entry's ``validation`` says which. Early stopping after ``patience`` epochs without improvement; the result holds
  the best epoch's weights (epoch 0 included: if training never helps, the untrained model wins
  and ``best_epoch`` says so).
* Frozen prefix: the embeddings and layers ``[0, k)`` (``k`` = first trainable layer) run in eval
  mode (no dropout) and, with ``prefix_cache`` (default), are computed once for every training /
  validation text and read from a memory-mapped cache (``maw.training.prefix_cache``); each step
  then runs only layers ``[k, N)``. Without the cache the prefix is recomputed under ``no_grad``.
* MAW routers: ``soft`` / ``gumbel`` train by backprop (Gumbel tau annealed linearly from
  ``gumbel_tau_start`` to ``gumbel_tau_end`` over the optimiser steps); ``grpo`` and ``supervised``
  use ``maw.training.router_objectives``. Per epoch the history logs the depth histogram per layer
  and head, the policy entropy, GRPO's mean reward / advantage spread / policy loss / KL, and the
  supervised router's oracle-label histogram.
* Mixed precision: ``--precision`` (``maw.utils.precision``) sets the autocast of the steps and the
  precision of the encoding passes (validation, prefix cache; CPU bf16 on cast weights); bf16 runs on CUDA and on CPUs (native on
  AVX512-BF16 / AMX), fp16 on CUDA only (GradScaler). Gradient checkpointing applies on CUDA only.
  On CPU training is deterministic for a fixed seed (``torch.use_deterministic_algorithms``).
* Checkpoints (``maw.training.checkpoint``): ``run_dir/latest`` every ``checkpoint_every``
  optimiser steps and at every epoch end, ``run_dir/best`` when validation improves. Rerunning the
  same call resumes from ``latest`` (same configuration required) and ends with the same weights
  as an uninterrupted run: the epoch's example order and negatives are functions of
  ``(seed, epoch)``, the position within the epoch is saved, and so are all RNG states.
* A non-finite loss or gradient stops training with :class:`TrainingError` naming the epoch and
  step; nothing is saved after it, so ``latest`` keeps the last good weights.
* Multi-process data parallelism with ``torchrun`` (``maw.training.distributed``): only rank 0
  validates and writes files.

History (``run_dir/history.json``, and ``TrainResult.history``): one dict per epoch (epoch 0 =
before training) with ``train_loss``, ``step_losses``, ``lr``, ``val`` metrics, seconds, and
``router`` statistics for MAW.
"""

from __future__ import annotations

import logging
import random
import time
from collections.abc import Callable
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from maw.config import ConfigError
from maw.data.types import DataError, Qrels, RetrievalDataset, Splits
from maw.models.encoder import Encoder
from maw.plan import Plan
from maw.training import distributed as dist_utils
from maw.training.callbacks import (
    Checkpoints,
    EarlyStopping,
    History,
    ProgressBar,
    StopHook,
    TrainerCallback,
)
from maw.training.checkpoint import (
    checkpoint_config,
    load_checkpoint,
    load_model_tensors,
    recover_checkpoint_dir,
)
from maw.training.methods import build_model, count_parameters, frozen_prefix_eval_mode, warm_start
from maw.training.negatives import (
    Example,
    LazyBM25,
    epoch_batches,
    epoch_negatives,
    relevant_documents,
    training_examples,
    training_negatives,
)
from maw.training.prefix_cache import training_prefix
from maw.training.router_logs import depth_statistics_of, router_log
from maw.training.state import EpochPartial, TrainingState
from maw.training.step import Step, TrainingError
from maw.training.validation import SELECTION_METRIC, validate, validation_documents
from maw.utils.io import atomic_write_json
from maw.utils.precision import precision_info

log = logging.getLogger(__name__)


@dataclass
class TrainResult:
    """What ``train`` returns. ``encoder`` holds the best epoch's weights and is in eval mode.

    router_stats (MAW only, else {}): ``{"router", "epochs": [per-epoch router logs],
    "best_epoch": the best epoch's log, "eval_depth_statistics": depth histogram of the greedy
    (inference) policy on the validation texts at the best epoch}``.
    """

    encoder: Encoder
    history: list[dict[str, Any]]
    best_dir: Path | None
    latest_dir: Path | None
    router_stats: dict[str, Any]
    params: dict[str, int]
    train_seconds: float
    best_epoch: int
    best_score: float | None = None
    plan: dict[str, Any] = field(default_factory=dict)
    resumed_from: dict[str, Any] | None = None
    setup: dict[str, Any] = field(default_factory=dict)


@contextmanager
def _deterministic_cpu(enabled: bool, num_threads: int | None):
    """Deterministic algorithms (and a thread count) for the duration of training; restored after."""
    prev_det = torch.are_deterministic_algorithms_enabled()
    prev_warn = torch.is_deterministic_algorithms_warn_only_enabled()
    prev_threads = torch.get_num_threads()
    if enabled:
        torch.use_deterministic_algorithms(True, warn_only=True)
    if num_threads:
        torch.set_num_threads(num_threads)
    try:
        yield
    finally:
        torch.use_deterministic_algorithms(prev_det, warn_only=prev_warn)
        torch.set_num_threads(prev_threads)


class Trainer:
    """One training run; see the module docstring. Use :func:`train`."""

    def __init__(
        self,
        plan: Plan,
        dataset: RetrievalDataset,
        splits: Splits,
        run_dir: str | Path,
        ctx: dist_utils.DistributedContext,
        retrieve: Callable | None = None,
        on_epoch_end: Callable[[int, dict[str, float]], bool] | None = None,
    ):
        from maw.utils.precision import autocast_dtype

        self.plan, self.dataset, self.splits = plan, dataset, splits
        self.method, self.layers = plan.method, plan.layers
        self.model_cfg, self.maw_cfg, self.train_cfg, self.eval_cfg = (
            plan.model,
            plan.maw,
            plan.train,
            plan.eval,
        )
        self.router_kind = plan.maw.router if plan.maw is not None else None
        self.run_dir = Path(run_dir)
        self.ctx, self.device, self.retrieve = ctx, ctx.device, retrieve
        self.encode_dtype = autocast_dtype(plan.model.precision, self.device)  # validation, prefix cache
        # the hooks, in order (maw.training.callbacks); epoch 0 has the first and the history only
        self.early_stopping, history = EarlyStopping(), History()
        self.callbacks: list[TrainerCallback] = [
            self.early_stopping,
            *([StopHook(on_epoch_end)] if on_epoch_end is not None else []),
            Checkpoints(),
            history,
            *([ProgressBar()] if plan.runtime.progress and ctx.is_main else []),
        ]
        self.epoch0_callbacks = [self.early_stopping, history]

    # ------------------------------------------------------------------ wiring
    def setup(self) -> None:
        """Seeds, model, examples, negatives, validation documents, prefix states, the step."""
        cfg = self.train_cfg
        t0 = time.perf_counter()
        torch.manual_seed(cfg.seed)
        np.random.seed(cfg.seed % 2**32)
        random.seed(cfg.seed)
        from maw.data.splits import require_training_split

        train_qrels = require_training_split(self.splits, self.dataset.name)
        if not self.splits.val:
            raise DataError(
                f"dataset {self.dataset.name!r}: the validation split is empty; training needs validation queries "
                "for model selection (use --val-fraction > 0 or a dataset with a dev split)"
            )
        self.encoder = build_model(self.plan)
        self.encoder.to(self.device)
        if self.ctx.enabled and cfg.batch_size < self.ctx.world_size:
            raise ConfigError(
                f"--batch-size: {cfg.batch_size} is smaller than the number of processes ({self.ctx.world_size})"
            )

        if self.ctx.is_main:  # the model and data are valid: only now does the run folder appear
            self.run_dir.mkdir(parents=True, exist_ok=True)
            recover_checkpoint_dir(self.run_dir / "latest")
            recover_checkpoint_dir(self.run_dir / "best")
        dist_utils.barrier(self.ctx)
        self.examples = self._examples(train_qrels)
        self.relevant = relevant_documents(self.dataset, train_qrels)
        # shared with the prefix cache: in a benchmark, one folder per dataset for every cell and seed
        self.cache_dir = Path(cfg.prefix_cache_dir) if cfg.prefix_cache_dir else self.run_dir / "cache"
        bm25 = self.retrieve or LazyBM25(self.dataset.corpus)  # one index for negatives and the pool
        # --negatives bm25 | dense (the zero-shot backbone or --negatives-model), mined once per settings
        self.candidates, negatives_info = training_negatives(
            self.plan, self.dataset, train_qrels, self.cache_dir, self.ctx, bm25
        )
        self.val_qrels: Qrels = {q: d for q, d in self.splits.val.items() if any(g > 0 for g in d.values())}
        if not self.val_qrels:
            raise DataError(f"dataset {self.dataset.name!r}: no validation query has a relevant document")
        self.val_doc_ids, validation_info = validation_documents(
            self.dataset,
            self.val_qrels,
            self.cache_dir,
            self.ctx,
            bm25,
            pool_above=cfg.val_pool_above,
            pool_depth=cfg.val_pool_depth,
        )
        self.provider, self.cache_info = training_prefix(
            self.plan, self.encoder, self.dataset, self.splits, self.cache_dir, self.ctx, self.encode_dtype
        )
        self.cache_info.update(
            validation_info, hard_negatives_path=negatives_info["path"], hard_negatives=negatives_info
        )
        self.micro_per_epoch = self._micro_batches_per_epoch()
        self.steps_per_epoch = -(-self.micro_per_epoch // cfg.grad_accum)
        self.step = Step(
            self.plan,
            self.encoder,
            self.provider,
            self.examples,
            self.relevant,
            self.ctx,
            total_steps=self.steps_per_epoch * cfg.num_epochs,
            latest_dir=self.run_dir / "latest",
        )
        self.config = checkpoint_config(self.plan, self.dataset, self.splits)
        self.setup_seconds = time.perf_counter() - t0

    def _examples(self, train_qrels: Qrels) -> list[Example]:
        examples = training_examples(train_qrels)
        missing = [
            e
            for e in examples
            if e.doc_id not in self.dataset.corpus or e.query_id not in self.dataset.queries
        ]
        if missing:
            log.warning(
                "%d training pairs point at unknown documents/queries and are skipped, e.g. %s",
                len(missing),
                missing[:3],
            )
            examples = [e for e in examples if e not in set(missing)]
        if not examples:
            raise DataError(f"dataset {self.dataset.name!r}: no (query, positive document) pair to train on")
        return examples

    def _micro_batches_per_epoch(self) -> int:
        n, b = len(self.examples), self.train_cfg.batch_size
        full, rest = divmod(n, b)
        if rest and self.ctx.enabled and rest < self.ctx.world_size:
            return full  # a last batch with fewer examples than ranks is dropped
        return full + (1 if rest else 0)

    def epoch_data(self, epoch: int) -> tuple[list[list[int]], list[list[str]]]:
        """``epoch``'s micro-batches (example indices) and every example's negatives: functions of
        ``(seed, epoch)``, so a resumed epoch sees the batches of an uninterrupted one."""
        cfg = self.train_cfg
        batches = epoch_batches(len(self.examples), cfg.batch_size, cfg.seed, epoch)[: self.micro_per_epoch]
        negatives = epoch_negatives(self.examples, self.candidates, cfg.hard_negatives, cfg.seed, epoch)
        return batches, negatives

    # ------------------------------------------------------------------ validation
    def validate(self) -> tuple[dict[str, float], dict]:
        """Val metrics of retrieval from the full corpus or the validation pool (``setup["validation"]``
        says which), and the inference depth histogram (MAW)."""
        return validate(
            self.encoder,
            self.provider,
            self.val_qrels,
            list(self.dataset.corpus) if self.val_doc_ids is None else self.val_doc_ids,
            self.layers.first_trainable,
            top_k=self.train_cfg.val_top_k,
            batch_size=self.eval_cfg.eval_batch_size,
            device=self.device,
            precision=self._encode_precision,
            depth=self.router_kind is not None,
            ctx=self.ctx,
        )

    def _encode_precision(self):
        """The precision of the validation's encoding passes (``--precision``; CPU bfloat16 runs on
        cast weights, ``maw.utils.precision.inference_precision``)."""
        from maw.utils.precision import inference_precision

        return inference_precision(self.encoder, self.encode_dtype, self.device)

    def _validate_all_ranks(self) -> tuple[dict[str, float], dict, float]:
        t0 = time.perf_counter()
        result = self.validate()  # every rank encodes its share of the documents; rank 0 scores
        result = dist_utils.broadcast_object(result, self.ctx)
        return result[0], result[1], time.perf_counter() - t0

    # ------------------------------------------------------------------ the run
    def run(self) -> TrainResult:
        self.t_start = time.perf_counter()
        self.setup()
        self.state, self.seconds_before = TrainingState(), 0.0
        resumed_from = self._resume()
        if not self.state.history:  # a fresh run: epoch 0 is the model before training
            self._epoch0()
        if not self.state.finished:
            self._hooks("on_train_begin")
            try:
                while self.state.epoch <= self.train_cfg.num_epochs and not self.state.finished:
                    self._epoch(self.state.epoch)
            finally:
                self._hooks("on_train_end")
        return self._result(resumed_from)

    def _epoch0(self) -> None:
        """Validate the model before training (the zero-shot score): the first best epoch."""
        warm_start(self.encoder, self.plan)  # --router-init: a fresh run only (not a resume)
        metrics, depth, secs = self._validate_all_ranks()
        entry: dict[str, Any] = {
            "epoch": 0,
            "val": metrics,
            "validation": self.cache_info.get("validation"),
            "val_seconds": secs,
            "setup_seconds": self.setup_seconds,
        }
        if self.router_kind:
            entry["router"] = {"val_depth_statistics": depth}
        self.state.history.append(entry)
        for callback in self.epoch0_callbacks:
            callback.on_epoch_end(self, entry)

    def _epoch(self, epoch: int) -> None:
        """One epoch: batches -> optimiser steps -> validation -> the epoch-end hooks."""
        state = self.state
        batches, negatives = self.epoch_data(epoch)
        if state.step_in_epoch == 0 or state.epoch_partial is None:  # else resumed within the epoch
            state.epoch_partial = EpochPartial()
        self._start_stretch()
        self._hooks("on_epoch_begin", len(batches))
        while state.step_in_epoch < len(batches):
            group = batches[state.step_in_epoch : state.step_in_epoch + self.train_cfg.grad_accum]
            result = self.step(group, negatives, state)
            state.step_in_epoch += len(group)
            state.epoch_partial.add(result)
            self._hooks("on_step_end", result, len(batches))
        self.close_stretch()
        entry = self._validated_entry(epoch, state.epoch_partial)
        state.history.append(entry)
        state.epoch, state.step_in_epoch, state.epoch_partial = epoch + 1, 0, None
        self._hooks("on_epoch_end", entry)

    def _validated_entry(self, epoch: int, part: EpochPartial) -> dict[str, Any]:
        """Validate after ``epoch``'s steps; the epoch's history entry."""
        metrics, val_depth, val_seconds = self._validate_all_ranks()
        frozen_prefix_eval_mode(self.encoder, self.layers)
        entry: dict[str, Any] = {
            "epoch": epoch,
            "train_loss": part.train_loss,
            "step_losses": part.step_losses,
            "grad_norms": part.grad_norms,
            "optimizer_steps": self.state.global_step,
            "lr": self.step.scheduler.get_last_lr(),
            "val": metrics,
            "validation": self.cache_info.get("validation"),
            "train_seconds": part.train_seconds,
            "val_seconds": val_seconds,
            "seconds": part.train_seconds + val_seconds,
        }
        if self.router_kind:
            entry["router"] = router_log(
                self.router_kind, part.stats, part.labels, part.depth_statistics, val_depth, self.encoder
            )
        return entry

    def _hooks(self, event: str, *args: Any) -> None:
        for callback in self.callbacks:
            getattr(callback, event)(self, *args)

    def _resume(self) -> dict[str, int] | None:
        """Load ``run_dir/latest`` (and the best weights) when resuming; where it resumed, or None."""
        latest, cfg, step = self.run_dir / "latest", self.train_cfg, self.step
        if not (cfg.resume and cfg.save_checkpoints and (latest / "config.json").is_file()):
            return None
        self.state = load_checkpoint(
            latest,
            self.encoder,
            self.config,
            step.optimizer,
            step.scheduler,
            step.scaler,
            step.param_names,
            restore_rng=True,
        )
        self.seconds_before, self.t_start = self.state.train_seconds, time.perf_counter()
        resumed_from = {
            "epoch": self.state.epoch,
            "step_in_epoch": self.state.step_in_epoch,
            "global_step": self.state.global_step,
        }
        log.info("resuming %s from %s: %s", self.method, latest, resumed_from)
        if (self.run_dir / "best" / "model.safetensors").is_file():
            from safetensors.torch import load_file

            self.early_stopping.best_tensors = load_file(str(self.run_dir / "best" / "model.safetensors"))
        return resumed_from

    def _start_stretch(self) -> None:
        """Start timing the epoch's steps (from the first step, or from a checkpoint within it)."""
        if self.router_kind:
            from maw.models.maw_encoder import reset_depth_statistics

            reset_depth_statistics(self.encoder)
        frozen_prefix_eval_mode(self.encoder, self.layers)
        self._stretch_t0 = time.perf_counter()

    def close_stretch(self) -> None:
        """Fold the seconds (and the routers' depth histograms) since the stretch began into
        ``state.epoch_partial`` (before a checkpoint and at the epoch's end) and start a new one."""
        depth = None
        if self.router_kind:
            from maw.models.maw_encoder import reset_depth_statistics

            depth = depth_statistics_of(self.encoder)
            reset_depth_statistics(self.encoder)
        self.state.epoch_partial.add_time(time.perf_counter() - self._stretch_t0, depth)
        self._stretch_t0 = time.perf_counter()

    def elapsed(self) -> float:
        """Training seconds of the run, over every resume."""
        return self.seconds_before + (time.perf_counter() - self.t_start)

    def _result(self, resumed_from: dict | None) -> TrainResult:
        state = self.state
        if self.early_stopping.best_tensors is not None:
            load_model_tensors(self.encoder, self.early_stopping.best_tensors, "best weights")
        self.encoder.eval()
        best_epoch = state.best_epoch if state.best_epoch is not None else 0
        router_stats: dict[str, Any] = {}
        if self.router_kind:
            logs = [h.get("router", {}) for h in state.history]
            best = state.history[best_epoch].get("router", {}) if best_epoch < len(state.history) else {}
            router_stats = {
                "router": self.router_kind,
                "epochs": logs,
                "best_epoch": best,
                "eval_depth_statistics": best.get("val_depth_statistics", {}),
            }
        has_ckpt = self.train_cfg.save_checkpoints
        return TrainResult(
            encoder=self.encoder,
            history=state.history,
            best_dir=self.run_dir / "best" if has_ckpt else None,
            latest_dir=self.run_dir / "latest" if has_ckpt else None,
            router_stats=router_stats,
            params=count_parameters(self.encoder),
            train_seconds=self.elapsed(),
            best_epoch=best_epoch,
            best_score=state.best_score,
            plan=self.plan.to_dict(),
            resumed_from=resumed_from,
            setup={
                **self.cache_info,
                "setup_seconds": self.setup_seconds,
                "examples": len(self.examples),
                "optimizer_steps_per_epoch": self.steps_per_epoch,
                "warmup_steps": self.step.warmup_steps,
                "world_size": self.ctx.world_size,
                "rank": self.ctx.rank,
                "precision": precision_info(self.model_cfg.precision, self.device),
            },
        )


def train(
    plan: Plan,
    dataset: RetrievalDataset,
    splits: Splits,
    run_dir: str | Path,
    *,
    ctx: dist_utils.DistributedContext | None = None,
    retrieve: Callable | None = None,
    on_epoch_end: Callable[[int, dict[str, float]], bool] | None = None,
) -> TrainResult:
    """Train ``plan.method`` on ``splits.train``, select on ``splits.val``; see the module docstring.

    ``on_epoch_end(epoch, val_metrics) -> stop``: called (rank 0) after each epoch's validation;
    ``True`` ends training there unless early stopping or the last epoch ends it anyway (the history
    entry then says ``"pruned": true``; a rerun does not continue it). A sweep's pruner uses it.

    ``ctx``: a distributed context (default: join the ``torchrun`` group if launched by it, else a
    single process on ``plan.runtime.device``). ``retrieve(queries, k) -> run`` overrides the BM25
    retriever used to mine hard negatives (tests).
    """
    if not plan.trained:
        raise ConfigError(f"--method: {plan.method!r} is not trainable; choose lora, finetune, maw or full")
    own_ctx = ctx is None
    ctx = ctx or dist_utils.init_distributed(plan.runtime.device)
    try:
        with _deterministic_cpu(ctx.device.type == "cpu", plan.runtime.num_threads):
            return Trainer(plan, dataset, splits, run_dir, ctx, retrieve, on_epoch_end).run()
    finally:
        if own_ctx:
            dist_utils.shutdown(ctx)


def result_summary(result: TrainResult) -> dict[str, Any]:
    """The JSON-serialisable part of a TrainResult (what ``maw train`` writes to ``run_dir/result.json``)."""
    return {
        "best_epoch": result.best_epoch,
        "best_score": result.best_score,
        "selection_metric": SELECTION_METRIC,
        "history": result.history,
        "router_stats": result.router_stats,
        "params": result.params,
        "train_seconds": result.train_seconds,
        "best_dir": str(result.best_dir) if result.best_dir else None,
        "latest_dir": str(result.latest_dir) if result.latest_dir else None,
        "plan": result.plan,
        "resumed_from": result.resumed_from,
        "setup": result.setup,
    }


def train_from_plan(plan: Plan, run_dir: str | Path) -> TrainResult:
    """Load ``plan.data.dataset``, make its splits, :func:`train`, and write ``run_dir/result.json`` (rank 0).

    ``result.json`` also records the split provenance and the library versions.
    """
    from maw.data import load_dataset, make_splits
    from maw.data.subsample import subsample_for_splits
    from maw.utils.io import environment_info

    dataset = load_dataset(plan.data.dataset, plan.data.data_dir)
    splits = make_splits(dataset, plan.data)
    dataset = subsample_for_splits(dataset, splits, plan.data)  # --corpus-size (no-op by default)
    result = train(plan, dataset, splits, run_dir)
    if result.setup.get("rank", 0) == 0:
        summary = result_summary(result)
        summary.update(
            method=plan.method,
            dataset={
                "name": dataset.name,
                "fingerprint": dataset.fingerprint,
                "source": dataset.source,
                "provenance": splits.provenance,
            },
            versions=environment_info(),
        )
        atomic_write_json(Path(run_dir) / "result.json", summary)
    return result


__all__ = ["TrainResult", "Trainer", "TrainingError", "result_summary", "train", "train_from_plan"]
