"""The trainer's typed state: what one optimiser step reports, the epoch in progress, the run.

* :class:`StepResult`: one optimiser step's sums over every rank (loss, queries, objective
  statistics, oracle labels) and its gradient norm.
* :class:`EpochPartial`: the running sums of the epoch in progress, folded from its steps; it is
  checkpointed with the state, so an epoch resumed in its middle ends with the record of a whole one.
* :class:`TrainingState`: where training stands (epoch, step, history, early-stopping state); a
  checkpoint stores it (``maw.training.checkpoint``) and a resumed run starts from it.

On disk (``training_state.json``) the state is the plain JSON of these dataclasses, with the same
keys as before they were typed: ``epoch_partial`` is ``{}`` between epochs and the eight running
sums within one. :meth:`TrainingState.from_dict` reads that form back, whichever code wrote it.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

from maw.training.router_logs import merge_depth_stats


@dataclass
class StepResult:
    """One optimiser step, summed over every rank's micro-batches."""

    loss_sum: float  # InfoNCE summed over the step's queries
    n: float  # queries of the step
    stats: dict[str, float]  # the objective's running sums (GRPO, supervised; maw.training.router_logs)
    labels: list[int]  # the supervised router's oracle-label histogram ([] for other routers)
    grad_norm: float  # before clipping

    @property
    def loss(self) -> float:
        """The step's mean loss per query."""
        return self.loss_sum / max(self.n, 1.0)


@dataclass
class EpochPartial:
    """Running sums of the epoch in progress (checkpointed mid-epoch with :class:`TrainingState`)."""

    loss_sum: float = 0.0
    n: float = 0.0
    step_losses: list[float] = field(default_factory=list)
    stats: dict[str, float] = field(default_factory=dict)
    labels: list[int] = field(default_factory=list)
    depth_statistics: dict[str, Any] = field(default_factory=dict)  # training samples' depth histograms
    train_seconds: float = 0.0
    grad_norms: list[float] = field(default_factory=list)

    @property
    def train_loss(self) -> float:
        """The epoch's mean loss per query."""
        return self.loss_sum / max(self.n, 1.0)

    def add(self, step: StepResult) -> None:
        """Fold one optimiser step into the sums."""
        self.loss_sum += step.loss_sum
        self.n += step.n
        self.step_losses.append(step.loss)
        self.grad_norms.append(step.grad_norm)
        for k, v in step.stats.items():
            self.stats[k] = self.stats.get(k, 0.0) + v
        if step.labels:
            self.labels = [
                a + b for a, b in zip(self.labels or [0] * len(step.labels), step.labels, strict=True)
            ]

    def add_time(self, seconds: float, depth_statistics: dict[str, Any] | None = None) -> None:
        """Fold the training seconds (and the routers' depth histograms) of a stretch of the epoch."""
        self.train_seconds += seconds
        if depth_statistics is not None:
            self.depth_statistics = merge_depth_stats(self.depth_statistics, depth_statistics)


@dataclass
class TrainingState:
    """Where training stands. ``epoch`` is the 1-indexed epoch in progress (or next to start)."""

    epoch: int = 1
    step_in_epoch: int = 0  # micro-batches of ``epoch`` already done (always at an optimiser-step boundary)
    global_step: int = 0  # optimiser steps done
    history: list[dict[str, Any]] = field(default_factory=list)  # history.json: one entry per epoch
    best_score: float | None = None
    best_epoch: int | None = None
    bad_epochs: int = 0  # epochs since the best (early stopping)
    finished: bool = False
    train_seconds: float = 0.0
    epoch_partial: EpochPartial | None = None  # the epoch in progress (None between epochs)
    last_ref_refresh: int = 0  # global step of the last GRPO reference refresh

    def to_dict(self) -> dict[str, Any]:
        """The JSON form a checkpoint stores (``epoch_partial``: ``{}`` between epochs)."""
        out = asdict(self)
        out["epoch_partial"] = out["epoch_partial"] or {}
        return out

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> TrainingState:
        """Read :meth:`to_dict`'s form (also a checkpoint written before the state was typed)."""
        partial = data.get("epoch_partial")
        return cls(**{**data, "epoch_partial": EpochPartial(**partial) if partial else None})
