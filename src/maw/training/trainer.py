"""Contrastive fine-tuning of a dense encoder (methods lora / finetune / maw / full): the loop.

``train(plan, dataset, splits, run_dir) -> TrainResult``; ``plan`` is a :class:`maw.plan.Plan`
(``maw.plan.resolve``), read as is: nothing here parses or validates options.

The trainer is a few modules, each readable on its own: this one (setup, the optimiser step, the
epoch loop), :mod:`~maw.training.validation` (the per-epoch validation pass),
:mod:`~maw.training.checkpoint` (checkpoints and exact resume), :mod:`~maw.training.router_objectives`
(InfoNCE, GRPO and the supervised router's losses), :mod:`~maw.training.router_logs` (what is logged
about routers), :mod:`~maw.training.prefix_cache` and :mod:`~maw.training.negatives` (the data side).

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
* Mixed precision: ``--precision`` (``maw.utils.precision``) sets the autocast of the steps and of
  the encoding passes (validation, prefix cache); bf16 runs on CUDA and on CPUs (native on
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
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.checkpoint import checkpoint as grad_checkpoint

from maw.config import ConfigError
from maw.data.types import DataError, Qrels, RetrievalDataset, Splits
from maw.models.encoder import Encoder
from maw.plan import Plan
from maw.training import distributed as dist_utils
from maw.training.checkpoint import (
    TrainingState,
    checkpoint_config,
    load_checkpoint,
    load_model_tensors,
    model_tensors,
    recover_checkpoint_dir,
    save_checkpoint,
)
from maw.training.methods import (
    build_model,
    count_parameters,
    frozen_prefix_eval_mode,
    router_parameters,
    warm_start,
)
from maw.training.negatives import (
    Batch,
    Example,
    LazyBM25,
    epoch_batches,
    epoch_negatives,
    make_batch,
    rank0_first,
    relevant_documents,
    training_examples,
    training_negatives,
)
from maw.training.prefix_cache import (
    CachedPrefix,
    CorpusTexts,
    DocTexts,
    LivePrefix,
    PrefixCache,
    check_free_space,
    over_cap_reason,
)
from maw.training.router_logs import depth_statistics_of, merge_depth_stats, router_log
from maw.training.router_objectives import (
    LocalBatch,
    ObjectiveOutput,
    contrastive_objective,
    grpo_objective,
    supervised_objective,
)
from maw.training.validation import SELECTION_METRIC, validate, validation_documents
from maw.utils.io import atomic_write_json
from maw.utils.precision import precision_info

log = logging.getLogger(__name__)


class TrainingError(RuntimeError):
    """Training cannot continue (non-finite loss or gradient, unusable data); names epoch and step."""


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


# ---------------------------------------------------------------------------------------------- helpers
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


# ---------------------------------------------------------------------------------------------- trainer
class _StepModule(torch.nn.Module):
    """One micro-batch's forward (local shard, objective) as a module, so that
    ``DistributedDataParallel`` can wrap it: the encoder is its only submodule."""

    def __init__(self, trainer: Trainer):
        super().__init__()
        self.encoder = trainer.encoder
        self._trainer = [trainer]  # not a submodule

    def forward(self, batch: Batch, denom_q: float, denom_t: float, global_step: int):
        trainer = self._trainer[0]
        out = trainer._objective(trainer._local_batch(batch, denom_q, denom_t), global_step)
        return out.loss, out  # the loss first: DDP finds the graph's used parameters from it


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
        self.plan, self.dataset, self.splits = plan, dataset, splits
        self.on_epoch_end = on_epoch_end
        self.method, self.layers = plan.method, plan.layers
        self.model_cfg, self.maw_cfg, self.train_cfg, self.eval_cfg = (
            plan.model,
            plan.maw,
            plan.train,
            plan.eval,
        )
        self.router_kind = plan.maw.router if plan.maw is not None else None
        self.run_dir = Path(run_dir)
        self.ctx = ctx
        self.device = ctx.device
        self.retrieve = retrieve
        self.is_cuda = self.device.type == "cuda"
        from maw.utils.precision import autocast_dtype

        # --precision (maw.utils.precision): the steps' autocast, and the encoding passes' (validation)
        self.autocast_dtype = autocast_dtype(self.model_cfg.precision, self.device, training=True)
        self.encode_dtype = autocast_dtype(self.model_cfg.precision, self.device)
        self.grad_ckpt = bool(self.train_cfg.gradient_checkpointing and self.is_cuda)
        if self.train_cfg.gradient_checkpointing and not self.is_cuda:
            log.warning("--gradient-checkpointing applies on CUDA only; ignored on %s", self.device)

    # ------------------------------------------------------------------ setup
    def setup(self) -> None:
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
        self.provider, self.cache_info = self._provider()
        self.cache_info.update(
            validation_info, hard_negatives_path=negatives_info["path"], hard_negatives=negatives_info
        )

        self.named_params = [(n, p) for n, p in self.encoder.named_parameters() if p.requires_grad]
        if not self.named_params:
            raise ConfigError(f"--method {self.method}: nothing to train (no trainable parameter)")
        self.param_names = [n for n, _ in self.named_params]
        self.optimizer = self._optimizer()
        self.micro_per_epoch = self._micro_batches_per_epoch()
        self.steps_per_epoch = -(-self.micro_per_epoch // cfg.grad_accum)
        self.total_steps = self.steps_per_epoch * cfg.num_epochs
        warmup = min(int(round(cfg.warmup_ratio * self.total_steps)), self.total_steps)
        from transformers import get_linear_schedule_with_warmup

        self.scheduler = get_linear_schedule_with_warmup(self.optimizer, warmup, max(self.total_steps, 1))
        self.warmup_steps = warmup
        self.scaler = torch.amp.GradScaler("cuda") if self.autocast_dtype == torch.float16 else None
        self.step_module = _StepModule(self)
        if self.ctx.enabled:  # gradients are averaged over ranks by DDP's bucketed all-reduce in backward
            from torch.nn.parallel import DistributedDataParallel

            self.step_module = DistributedDataParallel(
                self.step_module,
                device_ids=[self.device.index] if self.is_cuda else None,
                find_unused_parameters=True,  # e.g. the supervised router between oracle steps
                broadcast_buffers=False,
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

    def _provider(self):
        """Frozen-prefix states: cached (rank 0 builds, the others open) or live when the cache is off,
        k = 0, or the caches would exceed ``prefix_cache_max_gb`` (default ``MAX_CACHE_BYTES``)."""
        cfg, k = self.train_cfg, self.layers.first_trainable
        q_ids = sorted(set(self.splits.train) | set(self.splits.val))
        q_texts = {q: self.dataset.queries[q] for q in q_ids}
        max_lengths = {"query": self.model_cfg.query_max_length, "doc": self.model_cfg.doc_max_length}

        def live(reason: str | None = None):
            texts = {"query": q_texts, "doc": DocTexts(self.dataset.corpus)}
            provider = LivePrefix(self.encoder, k, texts, max_lengths, trainable=self.layers.train_embeddings)
            info = {"prefix_cache": False, "first_trainable": k}
            return provider, info if reason is None else {**info, "prefix_cache_skipped": reason}

        if not (cfg.prefix_cache and k > 0):
            return live()
        t0 = time.perf_counter()
        max_bytes = int(cfg.prefix_cache_max_gb * 1e9)
        texts = {"queries": [q_texts[q] for q in q_ids], "docs": CorpusTexts(self.dataset.corpus)}
        lengths = {"queries": max_lengths["query"], "docs": max_lengths["doc"]}

        from maw.utils.precision import dtype_name

        amp = dtype_name(self.encode_dtype)

        def build():  # rank 0: plan both caches, apply the cap and the free-space check, build
            dtype = cfg.prefix_cache_dtype
            plans = [
                PrefixCache.plan(
                    self.encoder, texts[n], lengths[n], k, self.cache_dir, dtype, n, max_bytes, amp=amp
                )
                for n in ("queries", "docs")
            ]
            reason = over_cap_reason(plans, max_bytes)
            if reason is not None:
                return None, reason
            check_free_space(self.cache_dir, sum(p.write_bytes for p in plans))
            show = self.plan.runtime.progress
            batch = self.eval_cfg.eval_batch_size
            caches = [PrefixCache.build(p, self.encoder, texts[p.name], batch, show) for p in plans]
            return [str(c.folder) for c in caches], None

        folders, reason = rank0_first(self.ctx, build)
        if reason is not None:
            log.warning("%s: %s", self.method, reason)
            return live(reason)
        qc, dc = (PrefixCache(f) for f in folders)
        info = {
            "prefix_cache": True,
            "first_trainable": k,
            "cache_dir": str(self.cache_dir),
            "query_cache": str(qc.folder),
            "doc_cache": str(dc.folder),
            "cache_bytes": qc.nbytes + dc.nbytes,
            "cache_seconds": time.perf_counter() - t0,
            "dtype": cfg.prefix_cache_dtype,
            "amp": amp,
        }
        return CachedPrefix(qc, q_ids, dc, list(self.dataset.corpus)), info

    def _optimizer(self) -> torch.optim.Optimizer:
        """AdamW with one group per kind of parameter: pretrained weights (decay / no decay at
        ``learning_rate``), LoRA adapters (``lora_learning_rate``), MAW routers (``policy_lr``, no decay)."""
        cfg = self.train_cfg
        router_ids = {id(p) for _, p in router_parameters(self.encoder)} if self.layers.maw else set()

        def kind(n: str, p: torch.nn.Parameter) -> str:
            if id(p) in router_ids:
                return "router"
            if p.ndim < 2 or "LayerNorm" in n or n.endswith(".bias"):
                return "no_decay"
            return "lora" if "lora_" in n else "decay"

        settings = {
            "decay": (cfg.learning_rate, cfg.weight_decay),
            "no_decay": (cfg.learning_rate if self.method != "lora" else cfg.lora_learning_rate, 0.0),
            "lora": (cfg.lora_learning_rate, cfg.weight_decay),
            "router": (self.maw_cfg.policy_lr if self.maw_cfg else cfg.learning_rate, 0.0),
        }
        groups, names = [], []
        for name, (lr, decay) in settings.items():
            params = [(n, p) for n, p in self.named_params if kind(n, p) == name]
            if params:
                groups.append({"params": [p for _, p in params], "weight_decay": decay, "lr": lr})
                names += [n for n, _ in params]
        self.param_names = names
        return torch.optim.AdamW(groups)

    # ------------------------------------------------------------------ forward pieces
    def _run_layers(
        self, hidden: torch.Tensor, mask: torch.Tensor, start: int, end: int | None
    ) -> torch.Tensor:
        end = self.encoder.num_layers if end is None else end
        if start >= end:
            return hidden
        if not (self.grad_ckpt and torch.is_grad_enabled()):
            return self.encoder.run_layers(hidden, mask, start, end)
        inputs = self.encoder.layer_inputs(hidden, mask)  # the mask (and MPNet's position bias)
        for layer in self.encoder.layers[start:end]:

            def run(h, layer=layer):
                out = layer(h, **inputs)
                return out[0] if isinstance(out, tuple) else out

            hidden = grad_checkpoint(run, hidden, use_reentrant=False)
        return hidden

    def _sampling_layer(self) -> int:
        """m: where the per-sample part starts (first MAW layer for grpo/supervised, else k)."""
        if self.router_kind in ("grpo", "supervised"):
            return self.layers.first_maw
        return self.layers.first_trainable

    def _head(self, hidden: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        return self.encoder.pool(self._run_layers(hidden, mask, self._sampling_layer(), None), mask)

    def _gather(self, x: torch.Tensor) -> torch.Tensor:
        return dist_utils.gather_with_grad(x, self.ctx)

    def _autocast(self):
        """Autocast of the training steps (``--precision``)."""
        if self.autocast_dtype is None:
            return nullcontext()
        return torch.autocast(device_type=self.device.type, dtype=self.autocast_dtype)

    def _encode_autocast(self):
        """Autocast of the encoding passes: validation and the frozen-prefix cache build."""
        if self.encode_dtype is None:
            return nullcontext()
        return torch.autocast(device_type=self.device.type, dtype=self.encode_dtype)

    def _local_batch(self, batch: Batch, denom_q: float, denom_t: float) -> LocalBatch:
        B, N = len(batch), len(batch.doc_ids)
        e = dist_utils.shard(list(range(B)), self.ctx)
        e0, e1 = (e[0], e[-1] + 1) if e else (0, 0)
        d0 = int(batch.positive_index[e0]) if e0 < B else N
        d1 = int(batch.positive_index[e1]) if e1 < B else N
        k, m = self.layers.first_trainable, self._sampling_layer()
        q_h, q_m = self.provider.hidden("query", batch.query_ids[e0:e1], self.device)
        d_h, d_m = self.provider.hidden("doc", batch.doc_ids[d0:d1], self.device)
        q_h, d_h = self._run_layers(q_h, q_m, k, m), self._run_layers(d_h, d_m, k, m)  # shared part (k <= m)
        return LocalBatch(
            q_hidden=q_h,
            q_mask=q_m,
            d_hidden=d_h,
            d_mask=d_m,
            positive_index=batch.positive_index[e0:e1].to(self.device),
            mask=batch.mask[e0:e1].to(self.device),
            doc_owner=(batch.doc_owner[d0:d1] - e0).to(self.device),
            denom_queries=denom_q,
            denom_texts=denom_t,
        )

    def _backward(self, out: ObjectiveOutput, epoch: int, step_no: int) -> None:
        if not torch.isfinite(out.loss.detach()).all():
            raise TrainingError(
                f"non-finite loss ({float(out.loss.detach())}) at epoch {epoch}, optimiser step {step_no} "
                f"(global), micro-batch step {self.state.step_in_epoch + 1} of the epoch; the last good checkpoint "
                f"is {self.run_dir / 'latest'} (lower --learning-rate or check the data)"
            )
        # the loss is normalised by the global number of examples; DDP averages over ranks, hence * world size
        loss = out.loss * self.ctx.world_size
        (self.scaler.scale(loss) if self.scaler is not None else loss).backward()

    def _objective(self, lb: LocalBatch, global_step: int) -> ObjectiveOutput:
        t = self.train_cfg.temperature
        if self.router_kind == "grpo":
            return grpo_objective(self.encoder, self._head, lb, self._gather, t, self.maw_cfg)
        if self.router_kind == "supervised":
            oracle = global_step % max(self.maw_cfg.oracle_every, 1) == 0
            return supervised_objective(self.encoder, self._head, lb, self._gather, t, self.maw_cfg, oracle)
        return contrastive_objective(self._head, lb, self._gather, t)

    # ------------------------------------------------------------------ one optimiser step
    def _train_step(self, group: list[list[int]], negatives: list[list[str]], epoch: int) -> dict[str, Any]:
        state, cfg = self.state, self.train_cfg
        step_no = state.global_step + 1
        if self.router_kind == "gumbel":
            from maw.models.maw_encoder import set_gumbel_tau

            frac = min(1.0, state.global_step / max(1, self.total_steps - 1))
            set_gumbel_tau(
                self.encoder,
                self.maw_cfg.gumbel_tau_start
                + (self.maw_cfg.gumbel_tau_end - self.maw_cfg.gumbel_tau_start) * frac,
            )
        batches = [
            make_batch([self.examples[i] for i in mb], [negatives[i] for i in mb], self.relevant)
            for mb in group
        ]
        denom_q = float(sum(len(b) for b in batches))
        denom_t = denom_q + float(sum(len(b.doc_ids) for b in batches))
        self.optimizer.zero_grad(set_to_none=True)
        infonce_sum = 0.0
        n_queries = 0
        stats: dict[str, float] = {}
        labels = [0] * (self.maw_cfg.depth_dim if self.router_kind == "supervised" else 0)
        for n, batch in enumerate(batches):
            last = n == len(batches) - 1  # DDP synchronises gradients in the last micro-batch's backward
            sync = nullcontext() if last or not self.ctx.enabled else self.step_module.no_sync()
            with sync:
                with self._autocast():
                    _, out = self.step_module(batch, denom_q, denom_t, state.global_step)
                self._backward(out, epoch, step_no)
            infonce_sum += out.infonce_sum
            n_queries += out.num_queries
            for k2, v in out.stats.items():
                stats[k2] = stats.get(k2, 0.0) + v
            for lab in out.oracle_labels:
                labels[lab] += 1
        params = [p for _, p in self.named_params]
        if self.scaler is not None:
            self.scaler.unscale_(self.optimizer)
        norm = torch.nn.utils.clip_grad_norm_(params, cfg.max_grad_norm)
        if not torch.isfinite(norm) and self.scaler is None:
            raise TrainingError(
                f"non-finite gradient norm at epoch {epoch}, optimiser step {step_no}; the last good checkpoint is "
                f"{self.run_dir / 'latest'} (lower --learning-rate)"
            )
        if self.scaler is not None:
            self.scaler.step(self.optimizer)
            self.scaler.update()
        else:
            self.optimizer.step()
        self.scheduler.step()
        state.global_step += 1
        if (
            self.router_kind == "grpo"
            and state.global_step - state.last_ref_refresh >= self.maw_cfg.ref_update
        ):
            from maw.models.maw_encoder import refresh_reference

            refresh_reference(self.encoder)
            state.last_ref_refresh = state.global_step
        keys = sorted(stats)
        summed = dist_utils.all_reduce_sum(
            [infonce_sum, float(n_queries), *[stats[k2] for k2 in keys], *labels], self.ctx
        )
        return {
            "loss_sum": summed[0],
            "n": summed[1],
            "stats": dict(zip(keys, summed[2 : 2 + len(keys)], strict=True)),
            "labels": [int(round(x)) for x in summed[2 + len(keys) :]],
            "grad_norm": float(norm),
        }

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
            autocast=self._encode_autocast,
            depth=self.router_kind is not None,
            ctx=self.ctx,
        )

    def _validate_all_ranks(self) -> tuple[dict[str, float], dict, float]:
        t0 = time.perf_counter()
        result = self.validate()  # every rank encodes its share of the documents; rank 0 scores
        result = dist_utils.broadcast_object(result, self.ctx)
        return result[0], result[1], time.perf_counter() - t0

    # ------------------------------------------------------------------ checkpoints
    def _check_finite_weights(self, epoch: int) -> None:
        bad = [n for n, p in self.named_params if not torch.isfinite(p.detach()).all()]
        if bad:
            raise TrainingError(
                f"non-finite weights after epoch {epoch}, optimiser step {self.state.global_step} ({bad[:3]}); "
                f"not saving; the last good checkpoint is {self.run_dir / 'latest'}"
            )

    def _save_latest(self, epoch: int) -> None:
        if not self.train_cfg.save_checkpoints:
            return
        self._check_finite_weights(epoch)
        self.state.train_seconds = self._elapsed()
        if self.ctx.is_main:
            save_checkpoint(
                self.run_dir / "latest",
                self.encoder,
                self.config,
                self.state,
                self.optimizer,
                self.scheduler,
                self.scaler,
                self.param_names,
            )
        dist_utils.barrier(self.ctx)

    def _save_best(self, epoch: int) -> None:
        self._check_finite_weights(epoch)
        self.best_tensors = model_tensors(self.encoder)
        if self.train_cfg.save_checkpoints and self.ctx.is_main:
            best_state = TrainingState(
                epoch=epoch,
                global_step=self.state.global_step,
                best_score=self.state.best_score,
                best_epoch=epoch,
            )
            save_checkpoint(self.run_dir / "best", self.encoder, self.config, best_state, include_rng=False)

    def _elapsed(self) -> float:
        return self.seconds_before + (time.perf_counter() - self.t_start)

    def _write_history(self) -> None:
        if self.ctx.is_main:
            atomic_write_json(self.run_dir / "history.json", self.state.history)

    # ------------------------------------------------------------------ main loop
    def run(self) -> TrainResult:
        cfg = self.train_cfg
        self.t_start = time.perf_counter()
        self.setup()
        self.state = TrainingState()
        self.best_tensors: dict[str, torch.Tensor] | None = None
        self.seconds_before = 0.0
        resumed_from = None
        latest = self.run_dir / "latest"
        if cfg.resume and cfg.save_checkpoints and (latest / "config.json").is_file():
            self.state = load_checkpoint(
                latest,
                self.encoder,
                self.config,
                self.optimizer,
                self.scheduler,
                self.scaler,
                self.param_names,
                restore_rng=True,
            )
            self.seconds_before = self.state.train_seconds
            self.t_start = time.perf_counter()
            resumed_from = {
                "epoch": self.state.epoch,
                "step_in_epoch": self.state.step_in_epoch,
                "global_step": self.state.global_step,
            }
            log.info("resuming %s from %s: %s", self.method, latest, resumed_from)
            if (self.run_dir / "best" / "model.safetensors").is_file():
                from safetensors.torch import load_file

                self.best_tensors = load_file(str(self.run_dir / "best" / "model.safetensors"))
        if not self.state.history:
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
            self.state.best_score, self.state.best_epoch = metrics[SELECTION_METRIC], 0
            self._save_best(0)
            self._write_history()
        if not self.state.finished:
            self._loop()
        return self._result(resumed_from)

    def _loop(self) -> None:
        cfg, state = self.train_cfg, self.state
        progress = None
        if self.plan.runtime.progress and self.ctx.is_main:
            from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

            progress = Progress(
                TextColumn("[bold]{task.description}"),
                BarColumn(),
                MofNCompleteColumn(),
                TextColumn("loss {task.fields[loss]}"),
                TextColumn("{task.fields[rate]} steps/s"),
                TimeRemainingColumn(),
            )
            progress.start()
        try:
            while state.epoch <= cfg.num_epochs and not state.finished:
                self._epoch(state.epoch, progress)
        finally:
            if progress is not None:
                progress.stop()

    def _epoch(self, epoch: int, progress) -> None:
        cfg, state = self.train_cfg, self.state
        batches = epoch_batches(len(self.examples), cfg.batch_size, cfg.seed, epoch)[: self.micro_per_epoch]
        negatives = epoch_negatives(self.examples, self.candidates, cfg.hard_negatives, cfg.seed, epoch)
        if state.step_in_epoch == 0 or not state.epoch_partial:
            state.epoch_partial = {
                "loss_sum": 0.0,
                "n": 0.0,
                "step_losses": [],
                "stats": {},
                "labels": [],
                "depth_statistics": {},
                "train_seconds": 0.0,
                "grad_norms": [],
            }
        part = state.epoch_partial
        if self.router_kind:
            from maw.models.maw_encoder import reset_depth_statistics

            reset_depth_statistics(self.encoder)
        frozen_prefix_eval_mode(self.encoder, self.layers)
        task = None
        if progress is not None:
            task = progress.add_task(
                f"{self.method} epoch {epoch}/{cfg.num_epochs}",
                total=len(batches),
                completed=state.step_in_epoch,
                loss="-",
                rate="-",
            )
        t_epoch = time.perf_counter()
        t_rate, done_rate = time.perf_counter(), 0
        i = state.step_in_epoch
        while i < len(batches):
            group = batches[i : i + cfg.grad_accum]
            out = self._train_step(group, negatives, epoch)
            i += len(group)
            state.step_in_epoch = i
            step_loss = out["loss_sum"] / max(out["n"], 1.0)
            part["loss_sum"] += out["loss_sum"]
            part["n"] += out["n"]
            part["step_losses"].append(step_loss)
            part["grad_norms"].append(out["grad_norm"])
            for k, v in out["stats"].items():
                part["stats"][k] = part["stats"].get(k, 0.0) + v
            if out["labels"]:
                part["labels"] = [
                    a + b
                    for a, b in zip(part["labels"] or [0] * len(out["labels"]), out["labels"], strict=True)
                ]
            if task is not None:
                done_rate += len(group)
                rate = done_rate / max(time.perf_counter() - t_rate, 1e-9)
                progress.update(task, completed=i, loss=f"{step_loss:.4f}", rate=f"{rate:.2f}")
            if cfg.checkpoint_every and state.global_step % cfg.checkpoint_every == 0 and i < len(batches):
                self._stash_partial(part, t_epoch)
                t_epoch = time.perf_counter()
                self._save_latest(epoch)
        self._stash_partial(part, t_epoch)
        train_seconds = part["train_seconds"]
        train_depth = part["depth_statistics"]
        metrics, val_depth, val_seconds = self._validate_all_ranks()
        frozen_prefix_eval_mode(self.encoder, self.layers)
        entry: dict[str, Any] = {
            "epoch": epoch,
            "train_loss": part["loss_sum"] / max(part["n"], 1.0),
            "step_losses": part["step_losses"],
            "grad_norms": part["grad_norms"],
            "optimizer_steps": state.global_step,
            "lr": self.scheduler.get_last_lr(),
            "val": metrics,
            "validation": self.cache_info.get("validation"),
            "train_seconds": train_seconds,
            "val_seconds": val_seconds,
            "seconds": train_seconds + val_seconds,
        }
        if self.router_kind:
            entry["router"] = router_log(
                self.router_kind, part["stats"], part["labels"], train_depth, val_depth, self.encoder
            )
        state.history.append(entry)
        score = metrics[SELECTION_METRIC]
        improved = state.best_score is None or (score is not None and score > state.best_score)
        if improved:
            state.best_score, state.best_epoch, state.bad_epochs = score, epoch, 0
            self._save_best(epoch)
        else:
            state.bad_epochs += 1
        state.epoch, state.step_in_epoch, state.epoch_partial = epoch + 1, 0, {}
        stop = self._stop_requested(epoch, metrics)  # e.g. a sweep's pruner (maw.sweep.pruning)
        if state.bad_epochs >= cfg.patience or epoch >= cfg.num_epochs:
            state.finished = True
            if state.bad_epochs >= cfg.patience and epoch < cfg.num_epochs:
                entry["early_stopped"] = True
        elif stop:
            state.finished = True
            entry["pruned"] = True
        self._save_latest(epoch)
        self._write_history()
        if progress is not None:
            progress.console.log(
                f"{self.method} epoch {epoch}: train loss {entry['train_loss']:.4f}, val nDCG@10 {score:.4f} "
                f"(best {state.best_score:.4f} @ epoch {state.best_epoch}), {train_seconds:.1f}s train + {val_seconds:.1f}s val"
            )

    def _stop_requested(self, epoch: int, metrics: dict[str, float]) -> bool:
        """Whether ``on_epoch_end(epoch, val metrics)`` asks to stop here (rank 0 decides for all)."""
        if self.on_epoch_end is None:
            return False
        stop = bool(self.on_epoch_end(epoch, metrics)) if self.ctx.is_main else False
        return bool(dist_utils.broadcast_object(stop, self.ctx))

    def benchmark_epoch(self, epoch: int = 1, max_steps: int | None = None) -> dict[str, Any]:
        """Time the optimiser steps of one epoch (no validation, no checkpoint); for benchmarks.

        Call after :meth:`setup`. Returns ``{"seconds", "cpu_seconds" (process CPU time, less sensitive
        to other load on the machine), "steps", "step_seconds": [...], "losses": [...]}``.
        """
        self.state = TrainingState(epoch=epoch)
        cfg = self.train_cfg
        batches = epoch_batches(len(self.examples), cfg.batch_size, cfg.seed, epoch)[: self.micro_per_epoch]
        negatives = epoch_negatives(self.examples, self.candidates, cfg.hard_negatives, cfg.seed, epoch)
        frozen_prefix_eval_mode(self.encoder, self.layers)
        times, losses = [], []
        t_all, cpu_all = time.perf_counter(), time.process_time()
        for i in range(0, len(batches), cfg.grad_accum):
            if max_steps is not None and len(times) >= max_steps:
                break
            t0 = time.perf_counter()
            out = self._train_step(batches[i : i + cfg.grad_accum], negatives, epoch)
            times.append(time.perf_counter() - t0)
            losses.append(out["loss_sum"] / max(out["n"], 1.0))
        return {
            "seconds": time.perf_counter() - t_all,
            "cpu_seconds": time.process_time() - cpu_all,
            "steps": len(times),
            "step_seconds": times,
            "losses": losses,
        }

    def _stash_partial(self, part: dict, t_since: float) -> None:
        """Fold the time and depth statistics since ``t_since`` into the epoch's running record."""
        part["train_seconds"] += time.perf_counter() - t_since
        if self.router_kind:
            from maw.models.maw_encoder import reset_depth_statistics

            part["depth_statistics"] = merge_depth_stats(
                part["depth_statistics"], depth_statistics_of(self.encoder)
            )
            reset_depth_statistics(self.encoder)

    def _result(self, resumed_from: dict | None) -> TrainResult:
        state = self.state
        if self.best_tensors is not None:
            load_model_tensors(self.encoder, self.best_tensors, "best weights")
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
            train_seconds=self._elapsed(),
            best_epoch=best_epoch,
            best_score=state.best_score,
            plan=self.plan.to_dict(),
            resumed_from=resumed_from,
            setup={
                **self.cache_info,
                "setup_seconds": self.setup_seconds,
                "examples": len(self.examples),
                "optimizer_steps_per_epoch": self.steps_per_epoch,
                "warmup_steps": self.warmup_steps,
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
