"""One optimiser step of the trainer, and what it owns: the optimiser, the LR schedule, the GradScaler.

``Step(...)(group, negatives, state) -> StepResult``: the micro-batches of ``group`` (lists of
example indices) become :class:`~maw.training.negatives.Batch` es; each runs its rank's shard
through the trainable layers ``[k, N)`` from the frozen-prefix states (``provider``), then the
objective (:mod:`~maw.training.router_objectives`: InfoNCE, GRPO or the supervised router), then
backward; then clipping, the optimiser and the scheduler step. The loss is normalised by the
examples of the whole step (``grad_accum`` micro-batches). ``state.global_step`` advances by one
(and GRPO's reference policy is refreshed every ``ref_update`` steps).

* AdamW with one parameter group per kind (:func:`make_optimizer`), a linear warmup over
  ``warmup_ratio`` of the optimiser steps (never more than exist) then linear decay.
* Mixed precision: the steps' autocast (``--precision``, ``maw.utils.precision``); fp16 (CUDA)
  with a GradScaler. Gradient checkpointing of the trainable layers on CUDA only.
* Data parallelism: one micro-batch's forward is a module (:class:`_StepModule`) wrapped in
  ``DistributedDataParallel``, which averages gradients over ranks in the last micro-batch's
  backward (``maw.training.distributed``).
* A non-finite loss or gradient norm raises :class:`TrainingError` naming the epoch and step.
"""

from __future__ import annotations

import logging
from contextlib import nullcontext
from pathlib import Path

import torch
from torch.utils.checkpoint import checkpoint as grad_checkpoint

from maw.config import ConfigError
from maw.models.encoder import Encoder
from maw.plan import Plan
from maw.training import distributed as dist_utils
from maw.training.methods import router_parameters
from maw.training.negatives import Batch, Example, make_batch
from maw.training.router_objectives import (
    LocalBatch,
    ObjectiveOutput,
    contrastive_objective,
    grpo_objective,
    supervised_objective,
)
from maw.training.state import StepResult, TrainingState

log = logging.getLogger(__name__)


class TrainingError(RuntimeError):
    """Training cannot continue (non-finite loss or gradient, unusable data); names epoch and step."""


def make_optimizer(
    plan: Plan, encoder: Encoder, named_params: list[tuple[str, torch.nn.Parameter]]
) -> tuple[torch.optim.Optimizer, list[str]]:
    """AdamW with one group per kind of parameter: pretrained weights (decay / no decay at
    ``learning_rate``), LoRA adapters (``lora_learning_rate``), MAW routers (``policy_lr``, no
    decay). Returns the optimiser and the parameter names in its order (checked on resume)."""
    cfg = plan.train
    router_ids = {id(p) for _, p in router_parameters(encoder)} if plan.layers.maw else set()

    def kind(n: str, p: torch.nn.Parameter) -> str:
        if id(p) in router_ids:
            return "router"
        if p.ndim < 2 or "LayerNorm" in n or n.endswith(".bias"):
            return "no_decay"
        return "lora" if "lora_" in n else "decay"

    settings = {
        "decay": (cfg.learning_rate, cfg.weight_decay),
        "no_decay": (cfg.learning_rate if plan.method != "lora" else cfg.lora_learning_rate, 0.0),
        "lora": (cfg.lora_learning_rate, cfg.weight_decay),
        "router": (plan.maw.policy_lr if plan.maw else cfg.learning_rate, 0.0),
    }
    groups, names = [], []
    for name, (lr, decay) in settings.items():
        params = [(n, p) for n, p in named_params if kind(n, p) == name]
        if params:
            groups.append({"params": [p for _, p in params], "weight_decay": decay, "lr": lr})
            names += [n for n, _ in params]
    return torch.optim.AdamW(groups), names


class _StepModule(torch.nn.Module):
    """One micro-batch's forward (local shard, objective) as a module, so that
    ``DistributedDataParallel`` can wrap it: the encoder is its only submodule."""

    def __init__(self, step: Step):
        super().__init__()
        self.encoder = step.encoder
        self._step = [step]  # not a submodule

    def forward(self, batch: Batch, denom_q: float, denom_t: float, global_step: int):
        step = self._step[0]
        out = step.objective(step.local_batch(batch, denom_q, denom_t), global_step)
        return out.loss, out  # the loss first: DDP finds the graph's used parameters from it


class Step:
    """The optimiser step of one run (module docstring); ``named_params`` are the trained parameters."""

    def __init__(
        self,
        plan: Plan,
        encoder: Encoder,
        provider,
        examples: list[Example],
        relevant: dict[str, set[str]],
        ctx: dist_utils.DistributedContext,
        total_steps: int,
        latest_dir: Path,
    ):
        from maw.utils.precision import autocast_dtype

        self.plan, self.encoder, self.provider, self.ctx = plan, encoder, provider, ctx
        self.examples, self.relevant, self.latest_dir = examples, relevant, latest_dir
        self.layers, self.maw_cfg, self.train_cfg = plan.layers, plan.maw, plan.train
        self.router_kind = plan.maw.router if plan.maw is not None else None
        self.device = ctx.device
        self.autocast_dtype = autocast_dtype(plan.model.precision, self.device, training=True)
        self.grad_ckpt = bool(plan.train.gradient_checkpointing and self.device.type == "cuda")
        if plan.train.gradient_checkpointing and not self.grad_ckpt:
            log.warning("--gradient-checkpointing applies on CUDA only; ignored on %s", self.device)
        self.named_params = [(n, p) for n, p in encoder.named_parameters() if p.requires_grad]
        if not self.named_params:
            raise ConfigError(f"--method {plan.method}: nothing to train (no trainable parameter)")
        self.optimizer, self.param_names = make_optimizer(plan, encoder, self.named_params)
        self.total_steps = total_steps
        self.warmup_steps = min(int(round(plan.train.warmup_ratio * total_steps)), total_steps)
        from transformers import get_linear_schedule_with_warmup

        self.scheduler = get_linear_schedule_with_warmup(
            self.optimizer, self.warmup_steps, max(total_steps, 1)
        )
        self.scaler = torch.amp.GradScaler("cuda") if self.autocast_dtype == torch.float16 else None
        self.module: torch.nn.Module = _StepModule(self)
        if ctx.enabled:  # gradients are averaged over ranks by DDP's bucketed all-reduce in backward
            from torch.nn.parallel import DistributedDataParallel

            self.module = DistributedDataParallel(
                self.module,
                device_ids=[self.device.index] if self.device.type == "cuda" else None,
                find_unused_parameters=True,  # e.g. the supervised router between oracle steps
                broadcast_buffers=False,
            )

    # ------------------------------------------------------------------ the step
    def __call__(
        self, group: list[list[int]], negatives: list[list[str]], state: TrainingState
    ) -> StepResult:
        """Run one optimiser step over the micro-batches ``group``; advances ``state.global_step``."""
        cfg, epoch, step_no = self.train_cfg, state.epoch, state.global_step + 1
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
        infonce_sum, n_queries = 0.0, 0
        stats: dict[str, float] = {}
        labels = [0] * (self.maw_cfg.depth_dim if self.router_kind == "supervised" else 0)
        for n, batch in enumerate(batches):
            last = n == len(batches) - 1  # DDP synchronises gradients in the last micro-batch's backward
            sync = nullcontext() if last or not self.ctx.enabled else self.module.no_sync()
            with sync:
                with self.autocast():
                    _, out = self.module(batch, denom_q, denom_t, state.global_step)
                self._backward(out, epoch, step_no, state.step_in_epoch)
            infonce_sum += out.infonce_sum
            n_queries += out.num_queries
            for k, v in out.stats.items():
                stats[k] = stats.get(k, 0.0) + v
            for lab in out.oracle_labels:
                labels[lab] += 1
        if self.scaler is not None:
            self.scaler.unscale_(self.optimizer)
        norm = torch.nn.utils.clip_grad_norm_([p for _, p in self.named_params], cfg.max_grad_norm)
        if not torch.isfinite(norm) and self.scaler is None:
            raise TrainingError(
                f"non-finite gradient norm at epoch {epoch}, optimiser step {step_no}; the last good checkpoint is "
                f"{self.latest_dir} (lower --learning-rate)"
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
            [infonce_sum, float(n_queries), *[stats[k] for k in keys], *labels], self.ctx
        )
        return StepResult(
            loss_sum=summed[0],
            n=summed[1],
            stats=dict(zip(keys, summed[2 : 2 + len(keys)], strict=True)),
            labels=[int(round(x)) for x in summed[2 + len(keys) :]],
            grad_norm=float(norm),
        )

    def _backward(self, out: ObjectiveOutput, epoch: int, step_no: int, step_in_epoch: int) -> None:
        if not torch.isfinite(out.loss.detach()).all():
            raise TrainingError(
                f"non-finite loss ({float(out.loss.detach())}) at epoch {epoch}, optimiser step {step_no} "
                f"(global), micro-batch step {step_in_epoch + 1} of the epoch; the last good checkpoint "
                f"is {self.latest_dir} (lower --learning-rate or check the data)"
            )
        # the loss is normalised by the global number of examples; DDP averages over ranks, hence * world size
        loss = out.loss * self.ctx.world_size
        (self.scaler.scale(loss) if self.scaler is not None else loss).backward()

    def autocast(self):
        """Autocast of the training steps (``--precision``)."""
        if self.autocast_dtype is None:
            return nullcontext()
        return torch.autocast(device_type=self.device.type, dtype=self.autocast_dtype)

    # ------------------------------------------------------------------ forward pieces
    def run_layers(
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
        return self.encoder.pool(self.run_layers(hidden, mask, self._sampling_layer(), None), mask)

    def _gather(self, x: torch.Tensor) -> torch.Tensor:
        return dist_utils.gather_with_grad(x, self.ctx)

    def local_batch(self, batch: Batch, denom_q: float, denom_t: float) -> LocalBatch:
        """This rank's shard of ``batch`` through the shared trainable layers ``[k, m)``."""
        B, N = len(batch), len(batch.doc_ids)
        e = dist_utils.shard(list(range(B)), self.ctx)
        e0, e1 = (e[0], e[-1] + 1) if e else (0, 0)
        d0 = int(batch.positive_index[e0]) if e0 < B else N
        d1 = int(batch.positive_index[e1]) if e1 < B else N
        k, m = self.layers.first_trainable, self._sampling_layer()
        q_h, q_m = self.provider.hidden("query", batch.query_ids[e0:e1], self.device)
        d_h, d_m = self.provider.hidden("doc", batch.doc_ids[d0:d1], self.device)
        q_h, d_h = self.run_layers(q_h, q_m, k, m), self.run_layers(d_h, d_m, k, m)  # shared part (k <= m)
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

    def objective(self, lb: LocalBatch, global_step: int) -> ObjectiveOutput:
        """The router's objective on a local batch: InfoNCE, GRPO, or the supervised router's."""
        t = self.train_cfg.temperature
        if self.router_kind == "grpo":
            return grpo_objective(self.encoder, self._head, lb, self._gather, t, self.maw_cfg)
        if self.router_kind == "supervised":
            oracle = global_step % max(self.maw_cfg.oracle_every, 1) == 0
            return supervised_objective(self.encoder, self._head, lb, self._gather, t, self.maw_cfg, oracle)
        return contrastive_objective(self._head, lb, self._gather, t)
