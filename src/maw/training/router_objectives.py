"""Training objectives of one micro-batch: plain contrastive, GRPO, and the supervised router.

All three receive the hidden states *entering the sampling layer* ``m`` for the batch's queries
and documents (``q_shared``, ``d_shared``: the frozen prefix — cached or not — and any trainable
layers below the first MAW layer, computed ONCE per batch), and a ``head(hidden, mask) -> emb``
that runs layers ``[m, N)`` and pools. Only the MAW layers and above are re-run per sample.

Normalisation: every objective returns a loss already divided by the *global* denominators of the
optimiser step (``denom_queries``: queries of all micro-batches of the step on all ranks;
``denom_texts``: queries + documents), so summing micro-batches (gradient accumulation) and
averaging gradients over ranks (distributed) gives the mean over the global batch. The trainer
multiplies by the world size before ``backward`` (gradients are averaged over ranks).

GRPO (spec section 3), per micro-batch:

1. (shared prefix, computed by the caller once)
2. ``G = maw_cfg.group_size`` samples: each runs the MAW layers and above in training mode, every
   MAW module drawing fresh one-hot depth samples ``a ~ pi_theta``. The first MAW layer's input is
   the same for all samples, so its Q/K/V projections and router states are computed once
   (``shared_inputs``; exact) and their backward runs once with the summed gradient.
3. Reward ``r[g, b] = -InfoNCE_b`` of sample ``g`` (query ``b`` against the batch's documents of
   that sample), ``r`` (G, B_local). The texts of query ``b`` (the query, its positive, its mined
   negatives) share it.
4. Advantages ``Adv`` (G, B_local), per query ``b`` over its group of ``G`` samples, by
   ``maw_cfg.grpo_baseline`` (:func:`advantages`):

   * ``group`` (default; TRL's GRPO): ``Adv[g, b] = (r[g, b] - mean_g r[:, b]) / (std_g r[:, b] + 1e-6)``
     (``std`` unbiased). Every query's advantages have unit spread, however small its reward
     differences: a group whose samples differ by noise only (dropout; the routing while the gate
     ``a`` is still ~0) weighs as much as one where the routing decided the loss.
   * ``leave_one_out`` (RLOO, Kool et al. 2019; Ahmadian et al. 2024):
     ``Adv[g, b] = r[g, b] - mean_{g' != g} r[g', b] = G / (G - 1) * (r[g, b] - mean_g r[:, b])``.
     The baseline of sample ``g`` does not depend on its own reward, so the estimator is unbiased;
     no division by the group's std, so a query's weight is its real reward spread (in reward
     units, i.e. nats of InfoNCE). Per query the advantages sum to 0; for ``G = 2`` they are
     ``+-(r_1 - r_2)``, the same signs as ``group``'s ``+-1/sqrt(2)``.

   (With Adam, a constant factor on every advantage changes nothing, so ``leave_one_out`` differs
   from ``group`` by dropping the per-query std normalisation; its size relative to the KL term
   does change, see ``kl_beta``.)
5. Policy loss ``-mean(min(ratio * Adv, clip(ratio, 1 - eps, 1 + eps) * Adv))`` over samples, texts
   and MAW modules, with ``ratio`` = the module's ``last_record.ratio_mean`` of the text (value 1,
   gradient = mean grad log pi over the text's routing units: one on-policy update per group),
   plus ``kl_beta * mean(kl_ref_mean)`` against the frozen reference policy (refreshed by the
   trainer every ``ref_update`` optimiser steps). No value network. Shapes per sample ``g`` and
   module: ``Adv`` of the texts ``(B_local + N_local,)`` (documents take their query's), ``ratio``
   and ``kl_ref_mean`` the same.
6. The encoder is trained on the mean InfoNCE over the ``G`` samples. (The router's state is
   detached and its choice is one-hot, so InfoNCE reaches the encoder weights and the gate ``a``
   only, and the policy terms reach the router's policy network only.)

Credit assignment, the limit of both baselines: one reward per query is shared by all routing
units of the query's texts (``H`` heads x ~``L`` tokens x MAW layers), so each unit's share of the
policy gradient is ``Adv / units`` and its signal is buried under the other units' sampling noise.
The baselines above lower the variance *between queries and samples*, not between units.

Warm start (``maw_cfg.router_init``, ``maw.training.methods.warm_start``, applied when a fresh
run starts): the hard router's policy network starts from a trained router of a ``maw train``
checkpoint (e.g. the soft router, whose policy is ``softmax(z / tau)``: its last layer is copied
divided by its ``tau``, so the hard policy ``softmax(z)`` is the soft router's distribution). The
gate stays at 0, so the model is still the pretrained one at step 0; only the policy that GRPO
samples from (and its reference) is informed.

Supervised router: on oracle steps, every depth ``d`` is forced in turn (``force_depth``; the
first MAW layer's projections are shared by the D passes) under ``no_grad`` with the model in
eval mode (no dropout: the labels are a deterministic function of the weights), the per-query
InfoNCE is computed, and each query's texts are labelled with the depth of lowest loss. The
classifier then gets ``CE = -mean(log_probs_per_depth[text, label])``; the encoder trains on
InfoNCE with the depths the router selects (argmax) in the same forward.
"""

from __future__ import annotations

from collections.abc import Callable
from contextlib import contextmanager
from dataclasses import dataclass, field

import torch
from torch import nn

from maw.config import GRPO_BASELINES, MAWConfig
from maw.training.losses import info_nce_per_query

Head = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]
Gather = Callable[[torch.Tensor], torch.Tensor]


@dataclass
class LocalBatch:
    """This rank's part of a global micro-batch.

    q_hidden / q_mask: (B_local, Lq, d) / (B_local, Lq) states entering layer m of the local queries.
    d_hidden / d_mask: (N_local, Ld, d) / (N_local, Ld) of the local documents.
    positive_index: (B_local,) index of each local query's positive among the GATHERED documents.
    mask: (B_local, N_global) false-negative mask. doc_owner: (N_local,) local query of each document.
    """

    q_hidden: torch.Tensor
    q_mask: torch.Tensor
    d_hidden: torch.Tensor
    d_mask: torch.Tensor
    positive_index: torch.Tensor
    mask: torch.Tensor
    doc_owner: torch.Tensor
    denom_queries: float
    denom_texts: float


@dataclass
class ObjectiveOutput:
    """``loss``: differentiable, normalised (see module docstring). Sums below are local to the rank."""

    loss: torch.Tensor
    infonce_sum: float
    num_queries: int
    stats: dict[str, float] = field(default_factory=dict)
    oracle_labels: list[int] = field(default_factory=list)


@contextmanager
def eval_mode(module: nn.Module):
    """Temporarily put every submodule in eval mode, restoring each one's own flag afterwards."""
    flags = [(m, m.training) for m in module.modules()]
    module.eval()
    try:
        yield
    finally:
        for m, flag in flags:
            m.training = flag


def _per_query_loss(head: Head, b: LocalBatch, gather: Gather, temperature: float) -> torch.Tensor:
    q_emb = head(b.q_hidden, b.q_mask)
    d_emb = gather(head(b.d_hidden, b.d_mask))
    return info_nce_per_query(q_emb, d_emb, b.positive_index, temperature, b.mask)


def contrastive_objective(head: Head, b: LocalBatch, gather: Gather, temperature: float) -> ObjectiveOutput:
    """InfoNCE with in-batch + hard negatives (lora / finetune / full / maw soft and gumbel)."""
    per_q = _per_query_loss(head, b, gather, temperature)
    return ObjectiveOutput(
        loss=per_q.sum() / b.denom_queries, infonce_sum=float(per_q.detach().sum()), num_queries=len(per_q)
    )


def _records(encoder: nn.Module) -> list:
    from maw.models.maw_encoder import routing_records

    recs = routing_records(encoder)
    if not recs or any(r is None for r in recs):
        raise RuntimeError("GRPO / supervised training needs every MAW module's last_record (training mode)")
    return recs


def group_advantages(rewards: torch.Tensor) -> torch.Tensor:
    """TRL's GRPO: rewards (G, B) -> (r - mean_g r) / (std_g r + 1e-6), std unbiased (G >= 2)."""
    return (rewards - rewards.mean(0, keepdim=True)) / (rewards.std(0, keepdim=True) + 1e-6)


def leave_one_out_advantages(rewards: torch.Tensor) -> torch.Tensor:
    """RLOO: rewards (G, B) -> r[g] - mean of the other G - 1 samples' rewards of the same query."""
    G = rewards.shape[0]
    others = (rewards.sum(0, keepdim=True) - rewards) / (G - 1)  # (G, B)
    return rewards - others


def advantages(rewards: torch.Tensor, baseline: str) -> torch.Tensor:
    """Per-query advantages (G, B) of rewards (G, B) by ``baseline`` (see the module docstring)."""
    if baseline == "group":
        return group_advantages(rewards)
    if baseline == "leave_one_out":
        return leave_one_out_advantages(rewards)
    raise ValueError(f"grpo_baseline: unknown value {baseline!r}; choose one of {', '.join(GRPO_BASELINES)}")


def grpo_objective(
    encoder: nn.Module, head: Head, b: LocalBatch, gather: Gather, temperature: float, cfg: MAWConfig
) -> ObjectiveOutput:
    """GRPO (see module docstring): encoder on mean InfoNCE over G samples + clipped policy loss + KL."""
    from maw.models.maw_encoder import shared_inputs

    G = cfg.group_size
    losses, q_recs, d_recs = [], [], []
    with shared_inputs(encoder):  # the G samples share the first MAW layer's projections and states
        for _ in range(G):
            q_emb = head(b.q_hidden, b.q_mask)
            q_recs.append(_records(encoder))
            d_local = head(b.d_hidden, b.d_mask)
            d_recs.append(_records(encoder))
            losses.append(info_nce_per_query(q_emb, gather(d_local), b.positive_index, temperature, b.mask))
    L = torch.stack(losses)  # (G, B_local)
    rewards = -L.detach()
    adv = advantages(rewards, cfg.grpo_baseline)  # (G, B_local)
    eps = cfg.clip_eps
    n_modules = len(q_recs[0])
    owner = b.doc_owner.to(adv.device)
    surrogate = torch.zeros((), device=L.device)
    kl = torch.zeros((), device=L.device)
    entropy_sum = 0.0
    for g in range(G):
        a_text = torch.cat([adv[g], adv[g][owner]])  # (B_local + N_local,): documents take their query's
        for rq, rd in zip(q_recs[g], d_recs[g], strict=True):
            ratio = torch.cat([rq.ratio_mean, rd.ratio_mean])
            s = torch.minimum(ratio * a_text, torch.clamp(ratio, 1 - eps, 1 + eps) * a_text)
            surrogate = surrogate + s.sum()
            if rq.kl_ref_mean is not None:
                kl = kl + rq.kl_ref_mean.sum() + rd.kl_ref_mean.sum()
            entropy_sum += float(rq.entropy_mean.detach().sum() + rd.entropy_mean.detach().sum())
    text_units = G * n_modules * b.denom_texts
    policy_loss = -surrogate / text_units
    kl_loss = cfg.kl_beta * kl / text_units
    encoder_loss = L.sum() / (G * b.denom_queries)
    n_texts_local = L.shape[1] + len(b.doc_owner)
    has_kl = all(r.kl_ref_mean is not None for r in q_recs[0])
    return ObjectiveOutput(
        loss=encoder_loss + policy_loss + kl_loss,
        infonce_sum=float(L.detach().mean(0).sum()),
        num_queries=L.shape[1],
        stats={
            "reward_sum": float(rewards.sum()),
            "reward_count": float(rewards.numel()),
            "reward_std_sum": float(rewards.std(0).sum()),  # spread of the raw rewards within each group
            "reward_std_count": float(rewards.shape[1]),
            "advantage_abs_sum": float(adv.abs().sum()),
            "advantage_count": float(adv.numel()),
            "entropy_sum": entropy_sum,
            "entropy_count": float(G * n_modules * n_texts_local),
            "policy_loss_sum": float(-surrogate.detach()),
            "kl_sum": float(kl.detach()),
            "kl_count": float(G * n_modules * n_texts_local) if has_kl else 0.0,
            "policy_count": float(G * n_modules * n_texts_local),
        },
    )


def oracle_labels(
    encoder: nn.Module, head: Head, b: LocalBatch, gather: Gather, temperature: float, depth: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """(labels (B_local,) long, losses (D, B_local)): the depth of lowest InfoNCE for each query."""
    from maw.models.maw_encoder import force_depth, shared_inputs, statistics_paused

    rows = []
    # forced passes stay out of the depth histogram; one projection for all d
    with torch.no_grad(), eval_mode(encoder), statistics_paused(encoder), shared_inputs(encoder):
        for d in range(depth):
            with force_depth(encoder, d):
                rows.append(_per_query_loss(head, b, gather, temperature))
    losses = torch.stack(rows)  # (D, B_local)
    return losses.argmin(0), losses


def supervised_objective(
    encoder: nn.Module,
    head: Head,
    b: LocalBatch,
    gather: Gather,
    temperature: float,
    cfg: MAWConfig,
    oracle: bool,
) -> ObjectiveOutput:
    """InfoNCE with the router's argmax depths, plus CE of the router on oracle labels when ``oracle``."""
    labels = oracle_labels(encoder, head, b, gather, temperature, cfg.depth_dim)[0] if oracle else None
    q_emb = head(b.q_hidden, b.q_mask)
    q_recs = _records(encoder)
    d_local = head(b.d_hidden, b.d_mask)
    d_recs = _records(encoder)
    per_q = info_nce_per_query(q_emb, gather(d_local), b.positive_index, temperature, b.mask)
    loss = per_q.sum() / b.denom_queries
    stats: dict[str, float] = {}
    entropy_sum = sum(float(r.entropy_mean.detach().sum()) for r in q_recs + d_recs)
    n_texts_local = len(per_q) + len(b.doc_owner)
    stats.update(entropy_sum=entropy_sum, entropy_count=float(len(q_recs) * n_texts_local))
    label_list: list[int] = []
    if labels is not None:
        text_labels = torch.cat([labels, labels[b.doc_owner.to(labels.device)]])  # (B_local + N_local,)
        ce = torch.zeros((), device=per_q.device)
        for rq, rd in zip(q_recs, d_recs, strict=True):
            logp = torch.cat([rq.log_probs_per_depth, rd.log_probs_per_depth])  # (texts, D)
            ce = ce - logp.gather(1, text_labels[:, None].to(logp.device)).sum()
        loss = loss + ce / (len(q_recs) * b.denom_texts)
        stats.update(ce_sum=float(ce.detach()), ce_count=float(len(q_recs) * n_texts_local))
        label_list = labels.tolist()
    return ObjectiveOutput(
        loss=loss,
        infonce_sum=float(per_q.detach().sum()),
        num_queries=len(per_q),
        stats=stats,
        oracle_labels=label_list,
    )
